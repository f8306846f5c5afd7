package grpcmw_test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// roundTrips is a go-redis hook counting commands and pipelines sent: each
// is one round trip.
type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmd)
	}
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// fastService answers Incr at once, so a benchmark measures the plumbing.
type fastService struct {
	testpb.UnimplementedCounterServer
}

func (fastService) Incr(ctx context.Context, _ *testpb.IncrRequest) (*testpb.IncrReply, error) {
	return reply(ctx, 1), nil
}

// countedLocker is a core.Client on a real redis-server whose round trips
// are counted.
func countedLocker(tb testing.TB) (*core.Client, *roundTrips) {
	srv := redistest.Start(tb)
	rdb := srv.Client(tb)
	rt := &roundTrips{}
	rdb.AddHook(rt)
	l := core.New(rdb)
	tb.Cleanup(func() { _ = l.Close() })
	return l, rt
}

func TestUnaryServerInterceptor_twoRoundTripsPerCall(t *testing.T) {
	l, rt := countedLocker(t)
	c := serve(t, "bufconn", fastService{}, grpc.ChainUnaryInterceptor(
		grpcmw.UnaryServerInterceptor(l, grpcmw.Template("counter:{counter_id}")))).client()
	req := &testpb.IncrRequest{CounterId: "rt"}
	if _, err := c.Incr(context.Background(), req); err != nil { // loads the scripts
		t.Fatal(err)
	}
	const calls = 50
	rt.n.Store(0)
	for range calls {
		if _, err := c.Incr(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if got := rt.n.Load(); got != 2*calls {
		t.Fatalf("%d Redis round trips for %d calls, want exactly 2 per call (acquire, release)", got, calls)
	}
}

func TestUnaryServerInterceptorKeys_twoRoundTripsPerKey(t *testing.T) {
	l, rt := countedLocker(t)
	svc := &transferService{ledger: newLedger(0, "a", "b")}
	c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(
		grpcmw.UnaryServerInterceptorKeys(l, accountKeys()))).client()
	if _, err := c.Transfer(context.Background(), &testpb.TransferRequest{From: "a", To: "b"}); err != nil { // loads the scripts
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from, to string
		want     int64
	}{{"a", "b", 4}, {"b", "b", 2}} {
		const calls = 20
		rt.n.Store(0)
		for range calls {
			if _, err := c.Transfer(context.Background(), &testpb.TransferRequest{From: tc.from, To: tc.to}); err != nil {
				t.Fatal(err)
			}
		}
		if got := rt.n.Load(); got != tc.want*calls {
			t.Errorf("%s→%s: %d Redis round trips for %d calls, want %d per call (acquire and release per distinct key)",
				tc.from, tc.to, got, calls, tc.want)
		}
	}
}

// BenchmarkUnaryServerInterceptor measures a unary call over bufconn bare
// and behind the interceptor on a real redis-server (uncontended, one key),
// reporting Redis round trips per call:
//
//	go test -run '^$' -bench UnaryServerInterceptor -benchmem ./grpcmw
func BenchmarkUnaryServerInterceptor(b *testing.B) {
	l, rt := countedLocker(b)
	for _, bc := range []struct {
		name string
		opts []grpc.ServerOption
	}{
		{"bare", nil},
		{"locked", []grpc.ServerOption{grpc.ChainUnaryInterceptor(
			grpcmw.UnaryServerInterceptor(l, grpcmw.Template("counter:{counter_id}")))}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			c := serve(b, "bufconn", fastService{}, bc.opts...).client()
			req := &testpb.IncrRequest{CounterId: "bench"}
			ctx := context.Background()
			for range 10 { // connection, script cache
				if _, err := c.Incr(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
			rt.n.Store(0)
			n := 0
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Incr(ctx, req); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(rt.n.Load())/float64(n), "redis-rt/op")
		})
	}
}
