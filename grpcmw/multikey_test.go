package grpcmw_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
)

// account is one row of the test "database": every field is changed by a
// deliberately non-atomic read-pause-write, so calls that overlap on an
// account lose updates; inflight and peak count the calls inside it.
type account struct {
	balance, ops, inflight, peak atomic.Int64
}

func (a *account) enter() {
	n := a.inflight.Add(1)
	for p := a.peak.Load(); n > p && !a.peak.CompareAndSwap(p, n); p = a.peak.Load() {
	}
}

// ledger is a fixed set of accounts, shared by every instance of the
// service; the map is never written after newLedger.
type ledger map[string]*account

func newLedger(balance int64, names ...string) ledger {
	l := ledger{}
	for _, n := range names {
		a := &account{}
		a.balance.Store(balance)
		l[n] = a
	}
	return l
}

// transferService moves 1 from req.From to req.To. hook, when set, runs
// first, in the critical section, with the handler's context.
type transferService struct {
	testpb.UnimplementedCounterServer
	ledger ledger
	hold   time.Duration
	hook   func(ctx context.Context, req *testpb.TransferRequest) error
}

func (s *transferService) Transfer(ctx context.Context, req *testpb.TransferRequest) (*testpb.IncrReply, error) {
	if s.hook != nil {
		if err := s.hook(ctx, req); err != nil {
			return nil, err
		}
	}
	from, to := s.ledger[req.GetFrom()], s.ledger[req.GetTo()]
	if from == nil || to == nil {
		return nil, status.Error(codes.NotFound, "no such account")
	}
	touched := []*account{from}
	if to != from {
		touched = append(touched, to)
	}
	for _, a := range touched {
		a.enter()
	}
	fb, tb := from.balance.Load(), to.balance.Load()
	ops := make([]int64, len(touched))
	for i, a := range touched {
		ops[i] = a.ops.Load()
	}
	time.Sleep(s.hold)
	if to != from {
		from.balance.Store(fb - 1)
		to.balance.Store(tb + 1)
	}
	for i, a := range touched {
		a.ops.Store(ops[i] + 1)
		a.inflight.Add(-1)
	}
	return reply(ctx, 0), nil
}

// accountKeys locks both accounts of a transfer.
func accountKeys() grpcmw.KeysFunc {
	return grpcmw.Keys(grpcmw.Template("account:{from}"), grpcmw.Template("account:{to}"))
}

// transfers sends n transfers, alternately a→b and b→a, spread over the
// clients, from `workers` goroutines, and counts the status codes.
func transfers(clients []testpb.CounterClient, n, workers int) map[codes.Code]int {
	var mu sync.Mutex
	got := map[codes.Code]int{}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				req := &testpb.TransferRequest{From: "a", To: "b"}
				if i%2 == 1 {
					req.From, req.To = "b", "a"
				}
				// A deadlock would hold both calls until this deadline.
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				_, err := clients[i%len(clients)].Transfer(ctx, req)
				cancel()
				mu.Lock()
				got[status.Code(err)]++
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return got
}

func TestUnaryServerInterceptorKeys_oppositeTransfersNeverOverlap(t *testing.T) {
	const instances, calls, workers, initial = 2, 200, 16, 1000
	forEachBackend(t, func(t *testing.T, b *backend) {
		for _, tr := range transports {
			t.Run(tr, func(t *testing.T) {
				run := func(guarded bool) (ledger, map[codes.Code]int) {
					accts := newLedger(initial, "a", "b")
					var clients []testpb.CounterClient
					for range instances {
						svc := &transferService{ledger: accts, hold: 200 * time.Microsecond}
						var opts []grpc.ServerOption
						if guarded {
							opts = append(opts, grpc.ChainUnaryInterceptor(grpcmw.UnaryServerInterceptorKeys(
								b.client(), accountKeys(), grpcmw.WithWait(20*time.Second))))
						}
						clients = append(clients, serve(t, tr, svc, opts...).client())
					}
					return accts, transfers(clients, calls, workers)
				}

				t.Run("without interceptor loses updates", func(t *testing.T) {
					accts, got := run(false)
					if got[codes.OK] != calls {
						t.Fatalf("codes = %v, want %d OK", got, calls)
					}
					a := accts["a"]
					if a.ops.Load() >= calls || a.peak.Load() < 2 {
						t.Fatalf("account a: %d of %d updates kept, peak %d inside at once: the witness failed to show the race",
							a.ops.Load(), calls, a.peak.Load())
					}
				})

				t.Run("with interceptor", func(t *testing.T) {
					accts, got := run(true)
					if got[codes.OK] != calls {
						t.Fatalf("codes = %v, want %d OK (a DeadlineExceeded is a deadlock)", got, calls)
					}
					for name, a := range accts {
						if a.ops.Load() != calls || a.balance.Load() != initial || a.peak.Load() != 1 {
							t.Errorf("account %s: ops %d (want %d), balance %d (want %d), peak %d inside at once (want 1)",
								name, a.ops.Load(), calls, a.balance.Load(), initial, a.peak.Load())
						}
					}
					if b.held("account:a") || b.held("account:b") {
						t.Error("locks left behind")
					}
				})
			})
		}
	})
}

// TestUnaryServerInterceptorKeys_noDeadlock pins the hazard the sorted
// order removes: two calls that each take their first account and then
// wait for the other's.
func TestUnaryServerInterceptorKeys_noDeadlock(t *testing.T) {
	b := redisBackend(t)
	const wait = 500 * time.Millisecond
	// Both calls are let through the barrier only once both arrived at it.
	barrier := func(n int) grpc.UnaryServerInterceptor {
		var arrived sync.WaitGroup
		arrived.Add(n)
		return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			arrived.Done()
			arrived.Wait()
			return h(ctx, req)
		}
	}
	pair := func(t *testing.T, chain ...grpc.UnaryServerInterceptor) []error {
		svc := &transferService{ledger: newLedger(0, "a", "b")}
		c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(chain...)).client()
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, req := range []*testpb.TransferRequest{{From: "a", To: "b"}, {From: "b", To: "a"}} {
			wg.Go(func() { _, errs[i] = c.Transfer(context.Background(), req) })
		}
		wg.Wait()
		return errs
	}

	t.Run("one interceptor per field deadlocks (negative control)", func(t *testing.T) {
		// from, then to: a→b holds a and waits for b, b→a holds b and
		// waits for a; only the wait budget ends it.
		c := b.client()
		errs := pair(t,
			grpcmw.UnaryServerInterceptor(c, grpcmw.Template("account:{from}"), grpcmw.WithWait(wait)),
			barrier(2),
			grpcmw.UnaryServerInterceptor(c, grpcmw.Template("account:{to}"), grpcmw.WithWait(wait)))
		for i, err := range errs {
			if status.Code(err) != codes.Aborted {
				t.Errorf("call %d: %v; want Aborted: the two calls should have deadlocked until the wait ran out", i, err)
			}
		}
	})

	t.Run("UnaryServerInterceptorKeys", func(t *testing.T) {
		errs := pair(t, barrier(2), grpcmw.UnaryServerInterceptorKeys(b.client(), accountKeys(), grpcmw.WithWait(wait)))
		for i, err := range errs {
			if err != nil {
				t.Errorf("call %d: %v; want both to succeed one after the other", i, err)
			}
		}
	})
}
