package grpcmw_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
)

func streamServer(t testing.TB, tr string, svc testpb.CounterServer, l core.Locker, key grpcmw.KeyFunc, opts ...grpcmw.Option) testpb.CounterClient {
	return serve(t, tr, svc, grpc.ChainStreamInterceptor(grpcmw.StreamServerInterceptor(l, key, opts...))).client()
}

// sumOnce runs a whole Sum stream with the given counter ids.
func sumOnce(c testpb.CounterClient, ids ...string) (*testpb.IncrReply, error) {
	st, err := c.Sum(context.Background())
	if err != nil {
		return nil, err
	}
	for _, id := range ids {
		if err := st.Send(&testpb.IncrRequest{CounterId: id}); err != nil {
			break // the status comes with CloseAndRecv
		}
	}
	return st.CloseAndRecv()
}

func TestStreamServerInterceptor_firstMessageLocksForTheStream(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		for _, tr := range transports {
			t.Run(tr, func(t *testing.T) {
				entered := make(chan struct{}, 8)
				svc := newService()
				svc.hook = func(ctx context.Context, _ string, req *testpb.IncrRequest) error {
					if l, ok := core.FromContext(ctx); !ok || l.Key() != "counter:"+req.GetCounterId() {
						t.Errorf("stream context carries no lock on the first message's key")
					}
					entered <- struct{}{}
					return nil
				}
				c := streamServer(t, tr, svc, b.client(), grpcmw.Template("counter:{counter_id}"))

				first, err := c.Sum(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if err := first.Send(&testpb.IncrRequest{CounterId: "s1"}); err != nil {
					t.Fatal(err)
				}
				recv(t, entered, "first message")
				if !b.held("counter:s1") {
					t.Fatal("key not held after the first message")
				}

				// A second stream on the same key is refused on its first message.
				_, err = sumOnce(c, "s1")
				wantCode(t, err, codes.Aborted)
				if d, ok := grpcmw.RetryDelay(err); !ok || d <= 0 {
					t.Errorf("retry delay %v, %v; want the holder's remaining lease", d, ok)
				}
				// Another key is free.
				if _, err := sumOnce(c, "s2"); err != nil {
					t.Fatalf("other key: %v", err)
				}

				// Later messages, even with another counter id, stay under the first lock.
				if err := first.Send(&testpb.IncrRequest{CounterId: "s1"}); err != nil {
					t.Fatal(err)
				}
				r, err := first.CloseAndRecv()
				if err != nil {
					t.Fatalf("first stream: %v", err)
				}
				if r.GetFence() == 0 || r.GetSeenKey() != "counter:s1" {
					t.Errorf("reply %v: want the first message's lock", r)
				}
				if b.held("counter:s1") {
					t.Error("key still held after the stream ended")
				}
			})
		}
	})
}

func TestStreamServerInterceptor_outlivesTheTTL(t *testing.T) {
	const ttl = 300 * time.Millisecond
	forEachBackend(t, func(t *testing.T, b *backend) {
		for _, tr := range transports {
			t.Run(tr, func(t *testing.T) {
				c := streamServer(t, tr, newService(), b.client(), grpcmw.Field("counter_id"), grpcmw.WithTTL(ttl))
				st, err := c.Watch(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				if g, err := st.Recv(); err != nil || g.GetValue() != -1 || g.GetFence() != 0 {
					t.Fatalf("greeting %v, %v: want one sent before the lock (fence 0)", g, err)
				}
				if err := st.Send(&testpb.IncrRequest{CounterId: "long"}); err != nil {
					t.Fatal(err)
				}
				r1, err := st.Recv()
				if err != nil {
					t.Fatal(err)
				}
				// Four TTLs: without renewal the lease would be long gone.
				for end := time.Now().Add(4 * ttl); time.Now().Before(end); time.Sleep(ttl / 4) {
					if !b.held("long") {
						t.Fatal("key expired while the stream was open")
					}
				}
				_, err = sumOnce(c, "long")
				wantCode(t, err, codes.Aborted)

				if err := st.Send(&testpb.IncrRequest{CounterId: "long"}); err != nil {
					t.Fatal(err)
				}
				r2, err := st.Recv()
				if err != nil {
					t.Fatalf("after 4 TTLs: %v", err)
				}
				if r2.GetFence() != r1.GetFence() {
					t.Errorf("fence %d then %d: the stream's lock changed", r1.GetFence(), r2.GetFence())
				}
				if err := st.CloseSend(); err != nil {
					t.Fatal(err)
				}
				if _, err := st.Recv(); err != io.EOF {
					t.Fatalf("end of stream: %v", err)
				}
				waitFor(t, "release after the stream", func() bool { return !b.held("long") })
			})
		}
	})
}

func TestStreamServerInterceptor_withoutAutoRefreshLosesTheLock(t *testing.T) {
	b := redisBackend(t)
	c := streamServer(t, "bufconn", newService(), b.client(), grpcmw.Field("counter_id"),
		grpcmw.WithTTL(400*time.Millisecond), grpcmw.WithLockOptions(core.WithoutAutoRefresh()), grpcmw.WithLogger(discard()))
	st, err := c.Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&testpb.IncrRequest{CounterId: "short"}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // greeting, reply
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Second)
	_ = st.Send(&testpb.IncrRequest{CounterId: "short"})
	_, err = st.Recv()
	wantCode(t, err, codes.Aborted)
}

func TestStreamServerInterceptor_metadataKeyLocksBeforeTheHandler(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		for name, key := range map[string]grpcmw.KeyFunc{
			"Metadata": grpcmw.Metadata("X-Counter"),
			"Template": grpcmw.Template("{:service}:{md:x-counter}"),
		} {
			t.Run(name, func(t *testing.T) {
				c := streamServer(t, "bufconn", newService(), b.client(), key)
				ctx := metadata.AppendToOutgoingContext(context.Background(), "x-counter", "m1")
				st, err := c.Watch(ctx)
				if err != nil {
					t.Fatal(err)
				}
				g, err := st.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if g.GetFence() == 0 {
					t.Fatal("greeting sent before any message carries no lock: want the stream locked before the handler")
				}
				want := map[string]string{"Metadata": "m1", "Template": "fencedlock.grpcmw.test.Counter:m1"}[name]
				if g.GetSeenKey() != want {
					t.Errorf("locked %q, want %q", g.GetSeenKey(), want)
				}

				// A second stream with the same metadata is refused before its handler runs.
				st2, err := c.Watch(ctx)
				if err != nil {
					t.Fatal(err)
				}
				_, err = st2.Recv()
				wantCode(t, err, codes.Aborted)

				// Without the metadata the stream is InvalidArgument.
				st3, err := c.Watch(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				_, err = st3.Recv()
				wantCode(t, err, codes.InvalidArgument)

				if err := st.CloseSend(); err != nil {
					t.Fatal(err)
				}
				if _, err := st.Recv(); err != io.EOF {
					t.Fatalf("end of stream: %v", err)
				}
				waitFor(t, "release", func() bool { return !b.held(want) })
			})
		}
	})
}

// earlyCtxService's Sum takes the stream context before its first Recv,
// as many handlers do, and reports when that context is cancelled.
type earlyCtxService struct {
	*service
	entered chan struct{}
	causes  chan error
}

func (s *earlyCtxService) Sum(stream grpc.ClientStreamingServer[testpb.IncrRequest, testpb.IncrReply]) error {
	early := stream.Context()
	if _, err := stream.Recv(); err != nil {
		return err
	}
	s.entered <- struct{}{}
	select {
	case <-early.Done():
		s.causes <- context.Cause(early)
	case <-time.After(10 * time.Second):
		s.causes <- errors.New("early context not cancelled within 10s")
	}
	if _, err := stream.Recv(); err != nil {
		return err // the loss, not the next message or EOF
	}
	return stream.SendAndClose(&testpb.IncrReply{})
}

func TestStreamServerInterceptor_lostMidStream(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		svc := &earlyCtxService{service: newService(), entered: make(chan struct{}, 1), causes: make(chan error, 1)}
		c := streamServer(t, "bufconn", svc, b.client(), grpcmw.Field("counter_id"),
			grpcmw.WithTTL(time.Second), grpcmw.WithAutoRefresh(20*time.Millisecond), grpcmw.WithLogger(discard()))
		st, err := c.Sum(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&testpb.IncrRequest{CounterId: "gone"}); err != nil {
			t.Fatal(err)
		}
		recv(t, svc.entered, "first message")
		b.expire("gone")
		if cause := recv(t, svc.causes, "context cancel"); !isLost(cause) {
			t.Fatalf("cause of the context taken before the lock = %v, want core.ErrLost", cause)
		}
		_ = st.Send(&testpb.IncrRequest{CounterId: "gone"})
		_, err = st.CloseAndRecv()
		wantCode(t, err, codes.Aborted)
	})
}

// swallowService ignores every error of its stream and reports success.
type swallowService struct{ *service }

func (s *swallowService) Sum(stream grpc.ClientStreamingServer[testpb.IncrRequest, testpb.IncrReply]) error {
	for {
		if _, err := stream.Recv(); err != nil {
			break
		}
	}
	_ = stream.SendAndClose(&testpb.IncrReply{Value: 42})
	return nil
}

func TestStreamServerInterceptor_refusals(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		dead, _ := b.unreachable()
		b.hold("held", 10*time.Second)
		for _, tc := range []struct {
			name string
			l    core.Locker
			key  grpcmw.KeyFunc
			id   string
			want codes.Code
		}{
			{"held", b.client(), grpcmw.Field("counter_id"), "held", codes.Aborted},
			{"empty key", b.client(), grpcmw.Field("counter_id"), "", codes.InvalidArgument},
			{"unreachable", dead, grpcmw.Field("counter_id"), "x", codes.Unavailable},
			{"misconfigured", b.client(), grpcmw.Field("ratio"), "x", codes.Internal},
		} {
			t.Run(tc.name, func(t *testing.T) {
				// The handler swallows the refusal; the stream still ends with it.
				svc := &swallowService{newService()}
				c := streamServer(t, "bufconn", svc, tc.l, tc.key, grpcmw.WithLogger(discard()))
				_, err := sumOnce(c, tc.id, tc.id)
				st := wantCode(t, err, tc.want)
				if tc.id != "" && tc.id != "x" && st.Message() == tc.id {
					t.Errorf("message echoes the key")
				}
				if svc.w.count.Load() != 0 {
					t.Error("handler worked on a message without the lock")
				}
			})
		}
	})
}

func TestStreamServerInterceptor_emptyStreamRunsUnlocked(t *testing.T) {
	b := redisBackend(t)
	c := streamServer(t, "bufconn", newService(), b.client(), grpcmw.Field("counter_id"))
	r, err := sumOnce(c)
	if err != nil {
		t.Fatal(err)
	}
	if r.GetFence() != 0 {
		t.Errorf("fence %d for a stream without messages", r.GetFence())
	}
}

func TestStreamServerInterceptor_withMethods(t *testing.T) {
	b := redisBackend(t)
	b.hold("sel", 10*time.Second)
	c := streamServer(t, "bufconn", newService(), b.client(), grpcmw.Field("counter_id"), grpcmw.WithMethods(mSum))
	st, err := c.Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&testpb.IncrRequest{CounterId: "sel"}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := st.Recv(); err != nil {
			t.Fatalf("unselected stream method: %v", err)
		}
	}
	_ = st.CloseSend()
	_, err = sumOnce(c, "sel")
	wantCode(t, err, codes.Aborted)
}

func TestStreamServerInterceptor_releasesOnPanic(t *testing.T) {
	b := redisBackend(t)
	panics := make(chan any, 1)
	recoverStream := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if v := recover(); v != nil {
				panics <- v
				err = status.Error(codes.Internal, "panic")
			}
		}()
		return h(srv, ss)
	}
	svc := newService()
	svc.hook = func(context.Context, string, *testpb.IncrRequest) error { panic("boom") }
	c := serve(t, "bufconn", svc, grpc.ChainStreamInterceptor(recoverStream,
		grpcmw.StreamServerInterceptor(b.client(), grpcmw.Field("counter_id")))).client()
	_, err := sumOnce(c, "p")
	wantCode(t, err, codes.Internal)
	recv(t, panics, "the panic")
	if b.held("p") {
		t.Error("key still held after a panicking stream handler")
	}
}

func TestStreamServerInterceptor_maxHoldEndsTheStream(t *testing.T) {
	b := redisBackend(t)
	c := streamServer(t, "bufconn", newService(), b.client(), grpcmw.Field("counter_id"),
		grpcmw.WithTTL(100*time.Millisecond), grpcmw.WithMaxHold(300*time.Millisecond), grpcmw.WithLogger(discard()))
	st, err := c.Watch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&testpb.IncrRequest{CounterId: "capped"}); err != nil {
		t.Fatal(err)
	}
	for range 2 { // greeting, reply
		if _, err := st.Recv(); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the hold cap to end the lock", func() bool { return !b.held("capped") })
	_ = st.Send(&testpb.IncrRequest{CounterId: "capped"})
	_, err = st.Recv()
	wantCode(t, err, codes.Aborted)
}
