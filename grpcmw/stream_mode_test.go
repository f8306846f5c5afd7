package grpcmw_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// TestStreamServerInterceptor_permits: WithPermits on the stream
// interceptor: one stream holds the only permit, a second stream on the
// same key ends ResourceExhausted with RetryInfo after the wait, and the
// first stream's context carries a permit hold.
func TestStreamServerInterceptor_permits(t *testing.T) {
	srv := redistest.Start(t)
	locker := core.New(srv.Client(t))
	t.Cleanup(func() { _ = locker.Close() })
	entered, release := make(chan struct{}, 4), make(chan struct{})
	svc := newService()
	svc.hook = func(ctx context.Context, _ string, _ *testpb.IncrRequest) error {
		if l, ok := core.FromContext(ctx); !ok || l.Mode() != core.PermitMode {
			t.Errorf("stream context carries no permit hold")
		}
		entered <- struct{}{}
		<-release
		return nil
	}
	c := streamServer(t, "bufconn", svc, locker, grpcmw.Template("counter:{counter_id}"),
		grpcmw.WithPermits(1), grpcmw.WithWait(100*time.Millisecond))
	first := make(chan error, 1)
	go func() {
		_, err := sumOnce(c, "s1")
		first <- err
	}()
	recv(t, entered, "first stream")
	_, err := sumOnce(c, "s1")
	close(release)
	wantCode(t, err, codes.ResourceExhausted)
	if d, ok := grpcmw.RetryDelay(err); !ok || d <= 0 {
		t.Fatalf("RetryInfo = %v, %v; want a positive delay", d, ok)
	}
	if err := recv(t, first, "first stream's end"); err != nil {
		t.Fatal(err)
	}
}
