package grpcmw_test

import (
	"context"
	"io"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// pairKeys locks the same two accounts whatever the message.
func pairKeys(context.Context, string, any) ([]string, error) {
	return []string{"account:b", "account:a"}, nil
}

// parkedPairServers is parkedServers over pairKeys.
func parkedPairServers(t *testing.T, srv *redistest.Server, svc *parkedService, n int, opts ...grpcmw.Option) []testpb.CounterClient {
	t.Helper()
	var cs []testpb.CounterClient
	for range n {
		c := core.New(srv.Client(t))
		t.Cleanup(func() { _ = c.Close() })
		in := grpcmw.UnaryServerInterceptorKeys(c, pairKeys, opts...)
		cs = append(cs, serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(in)).client())
	}
	return cs
}

func TestUnaryServerInterceptorKeys_withShared(t *testing.T) {
	srv := redistest.Start(t)

	t.Run("readers of both keys overlap, a writer of both excludes them", func(t *testing.T) {
		svc := newParked()
		cs := parkedPairServers(t, srv, svc, 2, grpcmw.WithShared(mIncr), grpcmw.WithWait(10*time.Second))
		r1, r2 := call(cs[0], mIncr), call(cs[1], mIncr)
		recv(t, svc.entered, "first reader") // both inside at once: impossible if they serialize
		recv(t, svc.entered, "second reader")
		w := call(cs[1], mTransfer)
		svc.noEntry(t, 300*time.Millisecond, "writer while two readers held both keys")
		close(svc.release)
		for _, ch := range []<-chan error{r1, r2, w} {
			if err := recv(t, ch, "call"); err != nil {
				t.Fatal(err)
			}
		}
		if m := recv(t, svc.entered, "writer"); m != mTransfer {
			t.Fatalf("%s entered after the readers; want the writer", m)
		}
	})

	t.Run("one key written elsewhere: the reader is refused and holds nothing", func(t *testing.T) {
		other := core.New(srv.Client(t))
		t.Cleanup(func() { _ = other.Close() })
		// account:b sorts after account:a, so the reader takes a share of
		// account:a first and must give it back.
		l, err := other.TryAcquire(context.Background(), "account:b")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release(context.Background())
		svc := newParked()
		cs := parkedPairServers(t, srv, svc, 1, grpcmw.WithShared(mIncr))
		_, err = cs[0].Incr(context.Background(), &testpb.IncrRequest{})
		wantCode(t, err, codes.Aborted)
		// A share left behind would make this exclusive hold fail.
		lb, err := other.TryAcquire(context.Background(), "account:a")
		if err != nil {
			t.Fatalf("account:a after the refused reader: %v; want it free", err)
		}
		_ = lb.Release(context.Background())
	})
}

func TestUnaryServerInterceptorKeys_withPermits(t *testing.T) {
	srv := redistest.Start(t)

	t.Run("two in, the third exhausted", func(t *testing.T) {
		svc := newParked()
		cs := parkedPairServers(t, srv, svc, 2, grpcmw.WithPermits(2), grpcmw.WithWait(100*time.Millisecond))
		r1, r2 := call(cs[0], mIncr), call(cs[1], mTransfer)
		recv(t, svc.entered, "first permit holder")
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
	})

	t.Run("one key exhausted elsewhere: no permit of the other is kept", func(t *testing.T) {
		other := core.New(srv.Client(t))
		t.Cleanup(func() { _ = other.Close() })
		ctx := context.Background()
		// account:b sorts last, so the call takes a permit of account:a
		// first and must give it back.
		var bs []*core.Lock
		for range 2 {
			l, err := other.TryAcquire(ctx, "account:b", core.Permits(2))
			if err != nil {
				t.Fatal(err)
			}
			bs = append(bs, l)
		}
		defer core.ReleaseAll(ctx, bs)
		cs := parkedPairServers(t, srv, newParked(), 1, grpcmw.WithPermits(2))
		_, err := cs[0].Incr(ctx, &testpb.IncrRequest{})
		wantCode(t, err, codes.ResourceExhausted)
		var as []*core.Lock
		for range 2 {
			a, err := other.TryAcquire(ctx, "account:a", core.Permits(2))
			if err != nil {
				t.Fatalf("permit %d of account:a after the refused call: %v; want both free", len(as)+1, err)
			}
			as = append(as, a)
		}
		core.ReleaseAll(ctx, as)
	})
}

func TestStreamServerInterceptorKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		t.Run("field keys lock together on the first message", func(t *testing.T) {
			svc := newService()
			seen := make(chan []string, 4)
			svc.hook = func(ctx context.Context, _ string, _ *testpb.IncrRequest) error {
				var keys []string
				for _, l := range core.LocksFromContext(ctx) {
					if b.held(l.Key()) {
						keys = append(keys, l.Key())
					}
				}
				slices.Sort(keys)
				seen <- keys
				return nil
			}
			keys := grpcmw.Keys(grpcmw.Template("counter:{counter_id}"), grpcmw.Template("ref:{ref.id}"))
			c := serve(t, "bufconn", svc, grpc.ChainStreamInterceptor(
				grpcmw.StreamServerInterceptorKeys(b.client(), keys))).client()
			st, err := c.Sum(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if err := st.Send(&testpb.IncrRequest{CounterId: "s1", Ref: &testpb.Ref{Id: "r1"}}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := st.CloseAndRecv(); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if got := recv(t, seen, "message"); !slices.Equal(got, []string{"counter:s1", "ref:r1"}) {
					t.Fatalf("held while handling a message: %q; want both keys", got)
				}
			}
			if b.held("counter:s1") || b.held("ref:r1") {
				t.Error("a key is still held after the stream")
			}
		})

		t.Run("one key held elsewhere: the first Recv is refused, nothing held", func(t *testing.T) {
			b.hold("ref:r2", 5*time.Second)
			keys := grpcmw.Keys(grpcmw.Template("counter:{counter_id}"), grpcmw.Template("ref:{ref.id}"))
			c := serve(t, "bufconn", newService(), grpc.ChainStreamInterceptor(
				grpcmw.StreamServerInterceptorKeys(b.client(), keys))).client()
			st, err := c.Sum(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&testpb.IncrRequest{CounterId: "s2", Ref: &testpb.Ref{Id: "r2"}}); err != nil && err != io.EOF {
				t.Fatal(err)
			}
			_, err = st.CloseAndRecv()
			wantCode(t, err, codes.Aborted)
			if b.held("counter:s2") {
				t.Error("the free key stayed held after the refusal")
			}
		})

		t.Run("metadata keys lock before the handler", func(t *testing.T) {
			keys := grpcmw.Keys(grpcmw.Metadata("x-tenant"), grpcmw.Template("{:service}:{md:x-tenant}"))
			c := serve(t, "bufconn", newService(), grpc.ChainStreamInterceptor(
				grpcmw.StreamServerInterceptorKeys(b.client(), keys))).client()
			ctx := metadata.AppendToOutgoingContext(context.Background(), "x-tenant", "t9")
			st, err := c.Watch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			greeting, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if greeting.GetFence() == 0 || !b.held("t9") || !b.held("fencedlock.grpcmw.test.Counter:t9") {
				t.Errorf("greeting fence %d; want both keys held before anything was received", greeting.GetFence())
			}
			if err := st.CloseSend(); err != nil {
				t.Fatal(err)
			}
			if _, err := st.Recv(); err != io.EOF {
				t.Fatalf("end of stream: %v", err)
			}
			waitFor(t, "release after the stream", func() bool { return !b.held("t9") && !b.held("fencedlock.grpcmw.test.Counter:t9") })
		})
	})
}
