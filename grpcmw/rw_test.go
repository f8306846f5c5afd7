package grpcmw_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/fencedlock/fencedlock/internal/testlog"
)

// parkedService signals each call's entry with its method and holds it
// until release is closed. Incr reads, Transfer writes.
type parkedService struct {
	testpb.UnimplementedCounterServer
	entered chan string
	release chan struct{}
}

func newParked() *parkedService {
	return &parkedService{entered: make(chan string, 16), release: make(chan struct{})}
}

func (s *parkedService) park(method string) {
	s.entered <- method
	<-s.release
}

func (s *parkedService) Incr(context.Context, *testpb.IncrRequest) (*testpb.IncrReply, error) {
	s.park(mIncr)
	return &testpb.IncrReply{}, nil
}

func (s *parkedService) Transfer(context.Context, *testpb.TransferRequest) (*testpb.IncrReply, error) {
	s.park(mTransfer)
	return &testpb.IncrReply{}, nil
}

func (s *parkedService) noEntry(t *testing.T, d time.Duration, why string) {
	t.Helper()
	select {
	case m := <-s.entered:
		t.Fatalf("%s: %s reached the handler", why, m)
	case <-time.After(d):
	}
}

// docKey locks one document whatever the message.
func docKey(context.Context, string, any) (string, error) { return "doc:1", nil }

// parkedServers starts n servers with svc, each with its own core.Client
// on srv and the interceptor built by mw.
func parkedServers(t *testing.T, srv *redistest.Server, svc *parkedService, n int, opts ...grpcmw.Option) []testpb.CounterClient {
	t.Helper()
	var cs []testpb.CounterClient
	for range n {
		c := core.New(srv.Client(t))
		t.Cleanup(func() { _ = c.Close() })
		in := grpcmw.UnaryServerInterceptor(c, docKey, opts...)
		cs = append(cs, serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(in)).client())
	}
	return cs
}

func call(c testpb.CounterClient, method string) <-chan error {
	ch := make(chan error, 1)
	go func() {
		var err error
		if method == mIncr {
			_, err = c.Incr(context.Background(), &testpb.IncrRequest{})
		} else {
			_, err = c.Transfer(context.Background(), &testpb.TransferRequest{})
		}
		ch <- err
	}()
	return ch
}

func TestWithShared_readersOverlapWriterExcludes(t *testing.T) {
	svc := newParked()
	cs := parkedServers(t, redistest.Start(t), svc, 2, grpcmw.WithShared(mIncr), grpcmw.WithWait(10*time.Second))
	r1, r2 := call(cs[0], mIncr), call(cs[1], mIncr)
	recv(t, svc.entered, "first reader") // both inside at once: impossible if they serialize
	recv(t, svc.entered, "second reader")
	w := call(cs[1], mTransfer)
	svc.noEntry(t, 300*time.Millisecond, "writer while two readers held the key")
	close(svc.release)
	for _, ch := range []<-chan error{r1, r2, w} {
		if err := recv(t, ch, "call"); err != nil {
			t.Fatal(err)
		}
	}
	if m := recv(t, svc.entered, "writer"); m != mTransfer {
		t.Fatalf("%s entered after the readers; want the writer", m)
	}
}

func TestWithShared_writerFailsFastWhileRead(t *testing.T) {
	svc := newParked()
	cs := parkedServers(t, redistest.Start(t), svc, 2, grpcmw.WithShared(mIncr))
	r := call(cs[0], mIncr)
	recv(t, svc.entered, "reader")
	_, err := cs[1].Transfer(context.Background(), &testpb.TransferRequest{})
	close(svc.release)
	wantCode(t, err, codes.Aborted)
	if err := recv(t, r, "reader"); err != nil {
		t.Fatal(err)
	}
}

func TestWithPermits_twoInThirdExhausted(t *testing.T) {
	svc := newParked()
	cs := parkedServers(t, redistest.Start(t), svc, 2, grpcmw.WithPermits(2), grpcmw.WithWait(100*time.Millisecond))
	r1, r2 := call(cs[0], mIncr), call(cs[1], mTransfer)
	recv(t, svc.entered, "first permit holder") // two permits in use at once
	recv(t, svc.entered, "second permit holder")
	_, err := cs[0].Incr(context.Background(), &testpb.IncrRequest{})
	close(svc.release)
	wantCode(t, err, codes.ResourceExhausted)
	if d, ok := grpcmw.RetryDelay(err); !ok || d <= 0 {
		t.Fatalf("RetryInfo = %v, %v; want a positive delay", d, ok)
	}
	for _, ch := range []<-chan error{r1, r2} {
		if err := recv(t, ch, "admitted call"); err != nil {
			t.Fatal(err)
		}
	}
	if len(svc.entered) != 0 {
		t.Fatal("the refused call reached the handler")
	}
}

func TestWithPermits_modeMismatchIsInternal(t *testing.T) {
	srv := redistest.Start(t)
	svc := newParked()
	holder := parkedServers(t, srv, svc, 1, grpcmw.WithPermits(2))[0]
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	other := parkedServers(t, srv, svc, 1, grpcmw.WithPermits(3), grpcmw.WithLogger(log))[0]
	reader := parkedServers(t, srv, svc, 1, grpcmw.WithShared(mIncr), grpcmw.WithLogger(log))[0]
	h := call(holder, mIncr)
	recv(t, svc.entered, "permit holder")
	_, err1 := other.Incr(context.Background(), &testpb.IncrRequest{})
	_, err2 := reader.Incr(context.Background(), &testpb.IncrRequest{})
	close(svc.release)
	for _, err := range []error{err1, err2} {
		wantCode(t, err, codes.Internal)
		if _, ok := grpcmw.RetryDelay(err); ok {
			t.Errorf("RetryInfo on a configuration error: %v", err)
		}
	}
	if err := recv(t, h, "holder"); err != nil {
		t.Fatal(err)
	}
	if s := logs.String(); strings.Count(s, "configuration error") != 2 {
		t.Fatalf("log %q does not report both configuration errors", s)
	}
}

func TestWithShared_unsupportedBackendIsInternal(t *testing.T) {
	srv := redistest.Start(t)
	c := core.NewRedlock([]redis.UniversalClient{srv.Client(t), srv.Client(t), srv.Client(t)})
	t.Cleanup(func() { _ = c.Close() })
	svc := newParked()
	close(svc.release)
	in := grpcmw.UnaryServerInterceptor(c, docKey, grpcmw.WithShared(mIncr), grpcmw.WithLogger(discard()))
	cl := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(in)).client()
	_, err := cl.Incr(context.Background(), &testpb.IncrRequest{})
	wantCode(t, err, codes.Internal)
	if len(svc.entered) != 0 {
		t.Fatal("handler ran")
	}
}

func TestWithPermits_panics(t *testing.T) {
	lt := locktest.New()
	t.Cleanup(func() { _ = lt.Close() })
	for name, f := range map[string]func(){
		"zero":         func() { grpcmw.WithPermits(0) },
		"too many":     func() { grpcmw.WithPermits(core.MaxPermits + 1) },
		"shared+limit": func() { grpcmw.UnaryServerInterceptor(lt, docKey, grpcmw.WithShared(mIncr), grpcmw.WithPermits(2)) },
		"bad method":   func() { grpcmw.WithShared("Incr") },
	} {
		func() {
			defer func() {
				if v, _ := recover().(string); !strings.HasPrefix(v, "grpcmw: With") {
					t.Errorf("%s: panic %q; want a grpcmw: With... panic", name, v)
				}
			}()
			f()
		}()
	}
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer = testlog.Buffer
