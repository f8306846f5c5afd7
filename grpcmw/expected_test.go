package grpcmw_test

import (
	"context"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// TestWithExpectedHold: before the interceptor has observed a hold, the
// RetryInfo of an Aborted call comes from the declared expected hold, not
// from the holder's 5 s lease (the control, without the option).
func TestWithExpectedHold(t *testing.T) {
	for _, c := range []struct {
		name   string
		opts   []grpcmw.Option
		lo, hi time.Duration
	}{
		{"declared 1s", []grpcmw.Option{grpcmw.WithExpectedHold(time.Second)}, time.Second, time.Second},
		{"control: none", nil, 4 * time.Second, 5 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := redisBackend(t)
			b.hold("counter:7", 5*time.Second)
			cl := serve(t, "bufconn", newService(), grpc.ChainUnaryInterceptor(
				grpcmw.UnaryServerInterceptor(b.client(), grpcmw.Template("counter:{counter_id}"), c.opts...))).client()
			_, err := cl.Incr(context.Background(), &testpb.IncrRequest{CounterId: "7"})
			wantCode(t, err, codes.Aborted)
			if d, ok := grpcmw.RetryDelay(err); !ok || d < c.lo || d > c.hi {
				t.Fatalf("retry delay %v (%v), want %v..%v", d, ok, c.lo, c.hi)
			}
		})
	}
}
