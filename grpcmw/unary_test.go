package grpcmw_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
)

// hammer sends n Incr calls for one counter, spread over the clients, from
// `workers` goroutines, and counts the status codes.
func hammer(t *testing.T, clients []testpb.CounterClient, n, workers int) map[codes.Code]int {
	t.Helper()
	var mu sync.Mutex
	got := map[codes.Code]int{}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_, err := clients[i%len(clients)].Incr(ctx, &testpb.IncrRequest{CounterId: "7"})
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

func TestUnaryServerInterceptor_serializesCalls(t *testing.T) {
	const instances, calls, workers = 3, 300, 32
	forEachBackend(t, func(t *testing.T, b *backend) {
		for _, tr := range transports {
			t.Run(tr, func(t *testing.T) {
				run := func(t *testing.T, guarded bool) (*witness, map[codes.Code]int) {
					w := &witness{}
					var clients []testpb.CounterClient
					for range instances {
						svc := newService()
						svc.w = w // one "database" behind every instance
						var opts []grpc.ServerOption
						if guarded {
							opts = append(opts, grpc.ChainUnaryInterceptor(grpcmw.UnaryServerInterceptor(
								b.client(), grpcmw.Template("counter:{counter_id}"), grpcmw.WithWait(30*time.Second))))
						}
						clients = append(clients, serve(t, tr, svc, opts...).client())
					}
					return w, hammer(t, clients, calls, workers)
				}

				t.Run("without interceptor loses updates", func(t *testing.T) {
					w, codes_ := run(t, false)
					if codes_[codes.OK] != calls {
						t.Fatalf("codes = %v, want %d OK", codes_, calls)
					}
					if got := w.count.Load(); got >= calls {
						t.Fatalf("count = %d after %d unguarded calls: the witness failed to show lost updates", got, calls)
					}
					if w.peak.Load() < 2 {
						t.Fatalf("peak concurrency %d: the control did not run calls concurrently", w.peak.Load())
					}
				})
				t.Run("with interceptor serializes", func(t *testing.T) {
					w, codes_ := run(t, true)
					if codes_[codes.OK] != calls {
						t.Fatalf("codes = %v, want %d OK", codes_, calls)
					}
					if got := w.count.Load(); got != calls {
						t.Fatalf("count = %d, want %d: lost updates under the lock", got, calls)
					}
					if p := w.peak.Load(); p != 1 {
						t.Fatalf("peak concurrency in the critical section = %d, want 1", p)
					}
				})
			})
		}
	})
}

func TestUnaryServerInterceptor_contended(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		holder := b.hold("counter:7", 5*time.Second)
		rec := newRecorder()
		svc := newService()
		c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(rec.unary(),
			grpcmw.UnaryServerInterceptor(b.client(), grpcmw.Template("counter:{counter_id}")))).client()

		_, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "7"})
		st := wantCode(t, err, codes.Aborted)
		if strings.Contains(st.Message(), "counter") || strings.Contains(st.Message(), "7") {
			t.Errorf("message %q echoes the key", st.Message())
		}
		d, ok := grpcmw.RetryDelay(err)
		if !ok {
			t.Fatalf("no RetryInfo in %v", st.Details())
		}
		if d <= 0 || d > 5*time.Second {
			t.Errorf("retry delay %v, want the holder's remaining lease (0, 5s]", d)
		}
		wantCode(t, rec.next(t), codes.Aborted)
		if got := svc.w.count.Load(); got != 0 {
			t.Errorf("handler ran %d times while the key was held", got)
		}

		// Once the holder lets go, the same call goes through.
		if err := holder.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
		r, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "7"})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetFence() <= holder.Fence() {
			t.Errorf("fence %d, want > the previous holder's %d", r.GetFence(), holder.Fence())
		}
	})
}

func TestUnaryServerInterceptor_statusCodes(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		key := grpcmw.Template("counter:{counter_id}")
		long := strings.Repeat("x", core.MaxKeyLen+1)

		t.Run("invalid key is InvalidArgument", func(t *testing.T) {
			c := serve(t, "bufconn", newService(), grpc.ChainUnaryInterceptor(
				grpcmw.UnaryServerInterceptor(b.client(), key))).client()
			for name, id := range map[string]string{"empty": "", "too long": long, "control char": "a\x01b"} {
				_, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: id})
				st := wantCode(t, err, codes.InvalidArgument)
				if id != "" && strings.Contains(st.Message(), id) {
					t.Errorf("%s: message echoes the key", name)
				}
			}
		})

		t.Run("unreachable backend is Unavailable", func(t *testing.T) {
			l, addr := b.unreachable()
			svc := newService()
			c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(
				grpcmw.UnaryServerInterceptor(l, key, grpcmw.WithLogger(discard())))).client()
			_, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "7"})
			st := wantCode(t, err, codes.Unavailable)
			for _, leak := range []string{"refused", "dial", "redis", "store", "counter:7"} {
				if strings.Contains(strings.ToLower(st.Message()), leak) {
					t.Errorf("message %q leaks %q", st.Message(), leak)
				}
			}
			if addr != "" && strings.Contains(st.Message(), addr) {
				t.Errorf("message %q leaks the backend address", st.Message())
			}
			if svc.w.count.Load() != 0 {
				t.Error("handler ran without the lock")
			}
		})

		t.Run("fail open runs the handler unlocked", func(t *testing.T) {
			l, _ := b.unreachable()
			var logs bytes.Buffer
			c := serve(t, "bufconn", newService(), grpc.ChainUnaryInterceptor(
				grpcmw.UnaryServerInterceptor(l, key, grpcmw.WithFailOpen(), grpcmw.WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))))).client()
			r, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "7"})
			if err != nil {
				t.Fatalf("fail-open call: %v", err)
			}
			if r.GetFence() != 0 {
				t.Errorf("fence %d in a fail-open handler, want none", r.GetFence())
			}
			if !strings.Contains(logs.String(), "WithFailOpen") || strings.Contains(logs.String(), "counter:7") {
				t.Errorf("log = %q, want a fail-open warning without the key", logs.String())
			}
		})

		t.Run("deadline while waiting is DeadlineExceeded", func(t *testing.T) {
			b.hold("counter:8", 10*time.Second)
			// A deadline of the server's own (a budget set by an outer
			// interceptor), so the status seen by the client is the
			// interceptor's: with a client deadline the client reports its
			// own DeadlineExceeded whatever the server says.
			budget := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
				defer cancel()
				return h(ctx, req)
			}
			c := serve(t, "bufconn", newService(), grpc.ChainUnaryInterceptor(budget,
				grpcmw.UnaryServerInterceptor(b.client(), key, grpcmw.WithWait(time.Minute)))).client()
			_, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "8"})
			wantCode(t, err, codes.DeadlineExceeded)

			// And with the client's deadline, the client sees DeadlineExceeded.
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			_, err = c.Incr(ctx, &testpb.IncrRequest{CounterId: "8"})
			wantCode(t, err, codes.DeadlineExceeded)
		})

		t.Run("wait bound passing is Aborted", func(t *testing.T) {
			b.hold("counter:9", 10*time.Second)
			c := serve(t, "bufconn", newService(), grpc.ChainUnaryInterceptor(
				grpcmw.UnaryServerInterceptor(b.client(), key, grpcmw.WithWait(150*time.Millisecond)))).client()
			start := time.Now()
			_, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "9"})
			wantCode(t, err, codes.Aborted)
			if el := time.Since(start); el < 150*time.Millisecond {
				t.Errorf("answered after %v, before the 150ms wait bound", el)
			}
			if _, ok := grpcmw.RetryDelay(err); !ok {
				t.Error("no RetryInfo after a bounded wait")
			}
		})

		t.Run("client going away while waiting is Canceled", func(t *testing.T) {
			b.hold("counter:10", 10*time.Second)
			rec := newRecorder()
			c := serve(t, "bufconn", newService(), grpc.ChainUnaryInterceptor(rec.unary(),
				grpcmw.UnaryServerInterceptor(b.client(), key, grpcmw.WithWait(time.Minute)))).client()
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(200*time.Millisecond, cancel)
			_, err := c.Incr(ctx, &testpb.IncrRequest{CounterId: "10"})
			wantCode(t, err, codes.Canceled)
			wantCode(t, rec.next(t), codes.Canceled)
		})

		t.Run("key the method cannot give is Internal", func(t *testing.T) {
			var logs bytes.Buffer
			lg := slog.New(slog.NewTextHandler(&logs, nil))
			for name, kf := range map[string]grpcmw.KeyFunc{
				"unknown field": grpcmw.Field("nope"),
				"float field":   grpcmw.Field("ratio"),
				"no LockKey":    grpcmw.MessageKey,
				"message field": grpcmw.Template("x:{ref}"),
			} {
				c := serve(t, "bufconn", newService(), grpc.ChainUnaryInterceptor(
					grpcmw.UnaryServerInterceptor(b.client(), kf, grpcmw.WithLogger(lg)))).client()
				_, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "7", Ratio: 0.5, Ref: &testpb.Ref{Id: "r"}})
				st := wantCode(t, err, codes.Internal)
				if strings.Contains(st.Message(), "nope") || strings.Contains(st.Message(), "ratio") {
					t.Errorf("%s: message %q tells the client about the server's setup", name, st.Message())
				}
			}
			if !strings.Contains(logs.String(), "level=ERROR") {
				t.Errorf("misconfiguration not logged as an error: %q", logs.String())
			}
		})
	})
}

func TestUnaryServerInterceptor_lostMidCall(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		t.Run("lease deleted under auto-refresh", func(t *testing.T) {
			entered := make(chan struct{}, 1)
			causes := make(chan error, 1)
			svc := newService()
			svc.hook = func(ctx context.Context, _ string, _ *testpb.IncrRequest) error {
				entered <- struct{}{}
				select {
				case <-ctx.Done():
					causes <- context.Cause(ctx)
				case <-time.After(10 * time.Second):
					causes <- errors.New("context not cancelled within 10s")
				}
				return nil // pretend the work finished: the interceptor must still say Aborted
			}
			c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(grpcmw.UnaryServerInterceptor(
				b.client(), grpcmw.Field("counter_id"),
				grpcmw.WithTTL(time.Second), grpcmw.WithAutoRefresh(20*time.Millisecond), grpcmw.WithLogger(discard())))).client()
			errc := make(chan error, 1)
			go func() {
				_, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "lost-1"})
				errc <- err
			}()
			recv(t, entered, "handler entry")
			b.expire("lost-1")
			if cause := recv(t, causes, "handler context"); !isLost(cause) {
				t.Fatalf("context.Cause = %v, want core.ErrLost", cause)
			}
			st := wantCode(t, recv(t, errc, "call result"), codes.Aborted)
			if strings.Contains(st.Message(), "lost-1") {
				t.Errorf("message %q echoes the key", st.Message())
			}
			if _, ok := grpcmw.RetryDelay(st.Err()); ok {
				t.Error("RetryInfo on a lost lock: there is no holder to wait for")
			}
		})

		t.Run("lease ran out without refresh", func(t *testing.T) {
			svc := newService()
			c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(grpcmw.UnaryServerInterceptor(
				b.client(), grpcmw.Field("counter_id"), grpcmw.WithTTL(100*time.Millisecond), grpcmw.WithLogger(discard())))).client()
			_, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "lost-2", HoldMs: 400})
			wantCode(t, err, codes.Aborted)
		})
	})
}

func TestUnaryServerInterceptor_releases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		t.Run("after the handler returns", func(t *testing.T) {
			svc := newService()
			var inside atomic.Bool
			svc.hook = func(ctx context.Context, _ string, _ *testpb.IncrRequest) error {
				inside.Store(b.held("counter:1"))
				if l, ok := core.FromContext(ctx); !ok || l.Key() != "counter:1" {
					t.Errorf("handler context has no lock on counter:1")
				}
				return status.Error(codes.FailedPrecondition, "handler says no")
			}
			c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(
				grpcmw.UnaryServerInterceptor(b.client(), grpcmw.Template("counter:{counter_id}")))).client()
			_, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "1"})
			wantCode(t, err, codes.FailedPrecondition) // the handler's own status passes through
			if !inside.Load() {
				t.Error("key not held while the handler ran")
			}
			if b.held("counter:1") {
				t.Error("key still held after the call")
			}
		})

		t.Run("when the handler panics", func(t *testing.T) {
			panics := make(chan any, 1)
			svc := newService()
			svc.hook = func(context.Context, string, *testpb.IncrRequest) error { panic("boom") }
			c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(recoverer(panics),
				grpcmw.UnaryServerInterceptor(b.client(), grpcmw.Template("counter:{counter_id}")))).client()
			_, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "2"})
			wantCode(t, err, codes.Internal)
			if v := recv(t, panics, "the panic"); v != "boom" {
				t.Errorf("recovered %v, want the handler's panic to go on", v)
			}
			if b.held("counter:2") {
				t.Error("key still held after a panicking handler")
			}
		})

		t.Run("when the client goes away", func(t *testing.T) {
			svc := newService()
			entered := make(chan struct{}, 1)
			rec := newRecorder()
			svc.hook = func(ctx context.Context, _ string, _ *testpb.IncrRequest) error {
				entered <- struct{}{}
				<-ctx.Done()
				return ctx.Err()
			}
			c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(rec.unary(),
				grpcmw.UnaryServerInterceptor(b.client(), grpcmw.Template("counter:{counter_id}")))).client()
			ctx, cancel := context.WithCancel(context.Background())
			go func() { recv(t, entered, "handler entry"); cancel() }()
			_, err := c.Incr(ctx, &testpb.IncrRequest{CounterId: "3"})
			wantCode(t, err, codes.Canceled)
			rec.next(t)
			if b.held("counter:3") {
				t.Error("key still held after the client went away")
			}
		})
	})
}

func TestUnaryServerInterceptor_fenceIncreases(t *testing.T) {
	b := redisBackend(t)
	c := serve(t, "tcp", newService(), grpc.ChainUnaryInterceptor(
		grpcmw.UnaryServerInterceptor(b.client(), grpcmw.Template("counter:{counter_id}")))).client()
	var last uint64
	for range 5 {
		r, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "f"})
		if err != nil {
			t.Fatal(err)
		}
		if r.GetFence() <= last {
			t.Fatalf("fence %d after %d: not strictly increasing", r.GetFence(), last)
		}
		last = r.GetFence()
	}
}

func TestWithMethods(t *testing.T) {
	b := redisBackend(t)
	b.hold("account:alice", 10*time.Second)
	b.hold("counter:7", 10*time.Second)
	c := serve(t, "bufconn", newService(), grpc.ChainUnaryInterceptor(
		grpcmw.UnaryServerInterceptor(b.client(), grpcmw.MessageKey, grpcmw.WithMethods(mTransfer)))).client()

	// Incr is not selected: it runs although "counter:7" is held, and the
	// MessageKey that would not fit its request is never asked.
	if _, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "7"}); err != nil {
		t.Fatalf("unselected method: %v", err)
	}
	_, err := c.Transfer(context.Background(), &testpb.TransferRequest{From: "alice", To: "bob"})
	wantCode(t, err, codes.Aborted)
	r, err := c.Transfer(context.Background(), &testpb.TransferRequest{From: "carol", To: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetSeenKey() != "account:carol" {
		t.Errorf("locked %q, want the message's LockKey account:carol", r.GetSeenKey())
	}
	_, err = c.Transfer(context.Background(), &testpb.TransferRequest{To: "bob"})
	wantCode(t, err, codes.InvalidArgument)
}

func TestWithErrorHandler(t *testing.T) {
	b := redisBackend(t)
	b.hold("counter:7", 10*time.Second)
	var mu sync.Mutex
	var got *grpcmw.Error
	var method string
	seen := func() (*grpcmw.Error, string) {
		mu.Lock()
		defer mu.Unlock()
		return got, method
	}
	c := serve(t, "bufconn", newService(), grpc.ChainUnaryInterceptor(grpcmw.UnaryServerInterceptor(
		b.client(), grpcmw.Template("counter:{counter_id}"),
		grpcmw.WithErrorHandler(func(ctx context.Context, m string, e *grpcmw.Error) error {
			mu.Lock()
			got, method = e, m
			mu.Unlock()
			if e.Code == codes.Aborted {
				return status.Error(codes.ResourceExhausted, "busy")
			}
			return nil // falls back to the default
		})))).client()

	_, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "7"})
	wantCode(t, err, codes.ResourceExhausted)
	if e, m := seen(); m != mIncr || !errors.Is(e, core.ErrNotAcquired) || e.RetryAfter <= 0 {
		t.Errorf("handler saw method %q, error %v", m, e)
	}
	_, err = c.Incr(context.Background(), &testpb.IncrRequest{})
	wantCode(t, err, codes.InvalidArgument)
	if got, _ := seen(); !errors.Is(got, core.ErrInvalidKey) {
		t.Errorf("handler saw %v, want core.ErrInvalidKey", got)
	}
}

func TestUnaryServerInterceptor_chainsWithOthers(t *testing.T) {
	b := redisBackend(t)
	var order []string
	var mu sync.Mutex
	mark := func(s string) grpc.UnaryServerInterceptor {
		return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			_, locked := core.FromContext(ctx)
			mu.Lock()
			order = append(order, fmt.Sprintf("%s:%v", s, locked))
			mu.Unlock()
			return h(ctx, req)
		}
	}
	c := serve(t, "bufconn", newService(), grpc.ChainUnaryInterceptor(mark("before"),
		grpcmw.UnaryServerInterceptor(b.client(), grpcmw.Template("counter:{counter_id}")),
		mark("after"))).client()
	if _, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "7"}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(order, " "); got != "before:false after:true" {
		t.Errorf("chain saw %q, want the lock in the context of later interceptors only", got)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }
