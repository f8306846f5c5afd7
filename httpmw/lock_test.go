package httpmw_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/fencedlock/fencedlock/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// witness is a deliberately non-atomic read-sleep-write counter: without
// mutual exclusion, concurrent handlers lose updates.
type witness struct {
	count, inflight, peak atomic.Int64
}

func (w *witness) handler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		n := w.inflight.Add(1)
		for p := w.peak.Load(); n > p && !w.peak.CompareAndSwap(p, n); p = w.peak.Load() {
		}
		v := w.count.Load()
		time.Sleep(50 * time.Microsecond)
		w.count.Store(v + 1)
		w.inflight.Add(-1)
	})
}

// hammer sends n POSTs spread over the servers from `workers` goroutines
// and counts the statuses.
func hammer(t *testing.T, servers []*httptest.Server, path func(i int) string, n, workers int) map[int]int {
	t.Helper()
	for _, ts := range servers {
		ts.Client().Transport.(*http.Transport).MaxIdleConnsPerHost = workers
	}
	var mu sync.Mutex
	statuses := map[int]int{}
	next := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				ts := servers[i%len(servers)]
				r := do(t, ts.Client(), "POST", ts.URL+path(i))
				mu.Lock()
				if r.err != nil {
					statuses[-1]++
				} else {
					statuses[r.status]++
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return statuses
}

func TestLock_concurrentRequestsSerialize(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		const instances, requests, workers = 3, 400, 48
		path := func(int) string { return "/counters/7/incr" }
		run := func(guarded bool) (*witness, map[int]int) {
			w := &witness{}
			var servers []*httptest.Server
			for range instances {
				h := w.handler()
				if guarded {
					h = httpmw.Lock(fx.client(), httpmw.Template("counter:{id}"), httpmw.WithWait(time.Minute))(h)
				}
				mux := http.NewServeMux()
				mux.Handle("POST /counters/{id}/incr", h)
				servers = append(servers, serve(t, mux))
			}
			return w, hammer(t, servers, path, requests, workers)
		}

		w, st := run(true)
		if st[http.StatusOK] != requests || w.count.Load() != requests || w.peak.Load() != 1 {
			t.Fatalf("with the lock: statuses %v, count %d of %d, peak concurrency %d; want all 200, no lost update, peak 1",
				st, w.count.Load(), requests, w.peak.Load())
		}
		if fx.held("counter:7") {
			t.Error("lock still held after every request finished")
		}

		// Negative control: the same run without the middleware must lose
		// updates, or the witness proves nothing.
		nw, st := run(false)
		if st[http.StatusOK] != requests {
			t.Fatalf("without the lock: statuses %v", st)
		}
		if nw.count.Load() >= requests || nw.peak.Load() < 2 {
			t.Fatalf("negative control: count %d of %d, peak %d; the witness did not detect the race", nw.count.Load(), requests, nw.peak.Load())
		}
		t.Logf("negative control lost %d of %d updates (peak concurrency %d)", requests-nw.count.Load(), requests, nw.peak.Load())
	})
}

func TestLock_distinctKeysRunInParallel(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		const n = 16
		var arrived atomic.Int64
		all := make(chan struct{})
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if arrived.Add(1) == n {
				close(all)
			}
			select {
			case <-all: // every request is inside its critical section at once
			case <-time.After(5 * time.Second):
				w.WriteHeader(http.StatusTeapot)
			}
		})
		mux := http.NewServeMux()
		mux.Handle("POST /counters/{id}/incr", httpmw.Lock(fx.client(), httpmw.Template("counter:{id}"))(h))
		ts := serve(t, mux)
		st := hammer(t, []*httptest.Server{ts}, func(i int) string { return fmt.Sprintf("/counters/%d/incr", i) }, n, n)
		if st[http.StatusOK] != n {
			t.Fatalf("statuses %v; want %d × 200 (distinct keys must not wait for each other)", st, n)
		}
	})
}

func okHandler(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("claimed")) }

func route(pattern string, mw func(http.Handler) http.Handler, h http.HandlerFunc) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle(pattern, mw(h))
	return mux
}

func TestLock_statuses(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		c, other := fx.client(), fx.client()
		ctx := context.Background()
		const pattern = "POST /coupons/{id}/claim"

		t.Run("acquired", func(t *testing.T) {
			var fence box[uint64]
			ts := serve(t, route(pattern, httpmw.Lock(c, httpmw.Template("coupon:{id}")), func(w http.ResponseWriter, r *http.Request) {
				l, ok := core.FromContext(r.Context())
				if !ok || l.Key() != "coupon:1" {
					t.Errorf("lock in context: %v %v", l, ok)
					return
				}
				fence.set(l.Fence())
				okHandler(w, r)
			}))
			if r := do(t, ts.Client(), "POST", ts.URL+"/coupons/1/claim"); r.status != 200 || r.body != "claimed" {
				t.Fatalf("got %d %q", r.status, r.body)
			}
			if fence.get() == 0 || fx.held("coupon:1") {
				t.Fatalf("fence %d, still held %v", fence.get(), fx.held("coupon:1"))
			}
		})

		t.Run("contended 409 with Retry-After", func(t *testing.T) {
			l, err := other.TryAcquire(ctx, "coupon:2", core.WithTTL(2500*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(ctx)
			ts := serve(t, route(pattern, httpmw.Lock(c, httpmw.Template("coupon:{id}")), okHandler))
			r := do(t, ts.Client(), "POST", ts.URL+"/coupons/2/claim")
			if r.status != http.StatusConflict || r.retryAfter != "3" {
				t.Fatalf("got %d Retry-After %q; want 409 and 3 (2.5s rounded up)", r.status, r.retryAfter)
			}
			if strings.Contains(r.body, "coupon") {
				t.Fatalf("body echoes the key: %q", r.body)
			}
		})

		t.Run("waits then succeeds", func(t *testing.T) {
			l, err := other.TryAcquire(ctx, "coupon:3")
			if err != nil {
				t.Fatal(err)
			}
			time.AfterFunc(100*time.Millisecond, func() { _ = l.Release(context.Background()) })
			ts := serve(t, route(pattern, httpmw.Lock(c, httpmw.Template("coupon:{id}"), httpmw.WithWait(5*time.Second)), okHandler))
			if r := do(t, ts.Client(), "POST", ts.URL+"/coupons/3/claim"); r.status != 200 {
				t.Fatalf("got %d; want 200 after the holder released", r.status)
			}
		})

		t.Run("wait bound passes 409", func(t *testing.T) {
			l, err := other.TryAcquire(ctx, "coupon:4")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(ctx)
			ts := serve(t, route(pattern, httpmw.Lock(c, httpmw.Template("coupon:{id}"), httpmw.WithWait(100*time.Millisecond)), okHandler))
			r := do(t, ts.Client(), "POST", ts.URL+"/coupons/4/claim")
			if r.status != http.StatusConflict || r.retryAfter == "" {
				t.Fatalf("got %d Retry-After %q; want 409 with Retry-After", r.status, r.retryAfter)
			}
		})

		t.Run("request deadline while waiting 504", func(t *testing.T) {
			l, err := other.TryAcquire(ctx, "coupon:5")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(ctx)
			mux := route(pattern, httpmw.Lock(c, httpmw.Template("coupon:{id}"), httpmw.WithWait(10*time.Second)), okHandler)
			ts := serve(t, withTimeout(mux, 150*time.Millisecond))
			start := time.Now()
			r := do(t, ts.Client(), "POST", ts.URL+"/coupons/5/claim")
			if r.status != http.StatusGatewayTimeout || time.Since(start) > 5*time.Second {
				t.Fatalf("got %d after %v; want 504 soon after the 150ms deadline", r.status, time.Since(start))
			}
		})

		t.Run("invalid keys 400", func(t *testing.T) {
			var calls atomic.Int64
			count := func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }
			mux := http.NewServeMux()
			mux.Handle("GET /q", httpmw.Lock(c, httpmw.Query("k"))(http.HandlerFunc(count)))
			mux.Handle("GET /h", httpmw.Lock(c, httpmw.Header("X-Key"))(http.HandlerFunc(count)))
			mux.Handle("GET /p/{id}", httpmw.Lock(c, httpmw.PathValue("id"))(http.HandlerFunc(count)))
			mux.Handle("GET /t/{id}/{rest...}", httpmw.Lock(c, httpmw.Template("t:{id}:{rest}"))(http.HandlerFunc(count)))
			ts := serve(t, mux)
			var before int64
			if fx.rdb != nil {
				before = fx.rdb.DBSize(ctx).Val()
			}
			for _, path := range []string{
				"/q", "/q?k=", "/q?k=%00", "/q?k=a%0Ab", "/q?k=%ff", "/q?k=" + strings.Repeat("x", core.MaxKeyLen+1),
				"/h", "/p/%01", "/p/%C3%28", "/t/1/",
			} {
				r := do(t, ts.Client(), "GET", ts.URL+path)
				if r.status != http.StatusBadRequest || r.body != "invalid lock key\n" {
					t.Errorf("GET %.40s: got %d %q; want 400 invalid lock key", path, r.status, r.body)
				}
			}
			if n := calls.Load(); n != 0 {
				t.Errorf("handler ran %d times on invalid keys", n)
			}
			if fx.rdb != nil {
				if after := fx.rdb.DBSize(ctx).Val(); after != before {
					keys, _ := fx.rdb.Keys(ctx, "*").Result()
					t.Errorf("invalid keys reached Redis: %q", keys)
				}
			}
			// The longest valid key works (stored hashed).
			if r := do(t, ts.Client(), "GET", ts.URL+"/q?k="+strings.Repeat("x", core.MaxKeyLen)); r.status != 200 {
				t.Errorf("key of MaxKeyLen bytes: got %d", r.status)
			}
		})

		t.Run("backend unreachable 503", func(t *testing.T) {
			down := fx.unreachable()
			ts := serve(t, route(pattern, httpmw.Lock(down, httpmw.Template("coupon:{id}"), httpmw.WithLogger(discard())), okHandler))
			r := do(t, ts.Client(), "POST", ts.URL+"/coupons/6/claim")
			if r.status != http.StatusServiceUnavailable || r.body != "lock service unavailable\n" {
				t.Fatalf("got %d %q; want 503 with a fixed body", r.status, r.body)
			}
		})

		t.Run("backend unreachable fail open", func(t *testing.T) {
			down := fx.unreachable()
			ts := serve(t, route(pattern, httpmw.Lock(down, httpmw.Template("coupon:{id}"), httpmw.WithFailOpen(), httpmw.WithLogger(discard())),
				func(w http.ResponseWriter, r *http.Request) {
					if _, ok := core.FromContext(r.Context()); ok {
						t.Error("fail-open handler found a lock in its context")
					}
					okHandler(w, r)
				}))
			if r := do(t, ts.Client(), "POST", ts.URL+"/coupons/6/claim"); r.status != 200 {
				t.Fatalf("got %d; want 200 (fail open)", r.status)
			}
		})

		t.Run("client gone while waiting 499", func(t *testing.T) {
			l, err := other.TryAcquire(ctx, "coupon:8")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(ctx)
			mux := route(pattern, httpmw.Lock(c, httpmw.Template("coupon:{id}"), httpmw.WithWait(10*time.Second)), okHandler)
			rctx, cancel := context.WithCancel(ctx)
			time.AfterFunc(50*time.Millisecond, cancel)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequestWithContext(rctx, "POST", "/coupons/8/claim", nil))
			if rec.Code != 499 {
				t.Fatalf("got %d; want 499", rec.Code)
			}
		})

		t.Run("error handler", func(t *testing.T) {
			l, err := other.TryAcquire(ctx, "coupon:9")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(ctx)
			var seen box[*httpmw.Error]
			eh := func(w http.ResponseWriter, r *http.Request, e *httpmw.Error) {
				seen.set(e)
				w.WriteHeader(http.StatusTooManyRequests)
			}
			ts := serve(t, route(pattern, httpmw.Lock(c, httpmw.Template("coupon:{id}"), httpmw.WithErrorHandler(eh)), okHandler))
			r := do(t, ts.Client(), "POST", ts.URL+"/coupons/9/claim")
			got := seen.get()
			if r.status != http.StatusTooManyRequests || got == nil {
				t.Fatalf("got %d, handler saw %v", r.status, got)
			}
			if got.Status != http.StatusConflict || got.RetryAfter <= 0 || !errors.Is(got, core.ErrNotAcquired) {
				t.Fatalf("Error = %+v; want Status 409, RetryAfter > 0, matching core.ErrNotAcquired", got)
			}
		})
	})
}

// withTimeout gives every request a deadline, like http.TimeoutHandler.
func withTimeout(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), d)
		defer cancel()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer = testlog.Buffer

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestLock_misconfigured(t *testing.T) {
	c := newMemoryClient()
	t.Cleanup(func() { _ = c.Close() })
	var calls atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) })
	for _, tc := range []struct {
		name    string
		handler func(log *slog.Logger) http.Handler
		logs    string
	}{
		{"around the mux", func(log *slog.Logger) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("POST /coupons/{id}/claim", h)
			return httpmw.Lock(c, httpmw.PathValue("id"), httpmw.WithLogger(log))(mux)
		}, "mount the middleware on the route"},
		{"template around the mux", func(log *slog.Logger) http.Handler {
			mux := http.NewServeMux()
			mux.Handle("POST /coupons/{id}/claim", h)
			return httpmw.Lock(c, httpmw.Template("coupon:{id}"), httpmw.WithLogger(log))(mux)
		}, "not routed by a ServeMux pattern"},
		{"wildcard not in route", func(log *slog.Logger) http.Handler {
			return route("POST /coupons/{id}/claim", httpmw.Lock(c, httpmw.PathValue("coupon"), httpmw.WithLogger(log)), h)
		}, "has no wildcard {coupon}"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			ts := serve(t, tc.handler(slog.New(slog.NewTextHandler(&logs, nil))))
			r := do(t, ts.Client(), "POST", ts.URL+"/coupons/1/claim")
			if r.status != http.StatusInternalServerError || r.body != "internal server error\n" {
				t.Fatalf("got %d %q; want 500", r.status, r.body)
			}
			if !strings.Contains(logs.String(), tc.logs) || !strings.Contains(logs.String(), "level=ERROR") {
				t.Fatalf("log %q does not explain the misconfiguration (%q)", logs.String(), tc.logs)
			}
		})
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("handler ran %d times", n)
	}
}

func TestLock_lostMidRequest(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		c := fx.client()
		for _, tc := range []struct {
			name       string
			writeFirst bool
			status     int
		}{
			{"nothing written 409", false, http.StatusConflict},
			{"already written keeps status", true, http.StatusAccepted},
		} {
			t.Run(tc.name, func(t *testing.T) {
				g := newGate()
				var cause box[error]
				mw := httpmw.Lock(c, httpmw.Template("job:{id}"), httpmw.WithTTL(time.Second),
					httpmw.WithAutoRefresh(20*time.Millisecond), httpmw.WithLogger(discard()))
				ts := serve(t, route("POST /jobs/{id}", mw, func(w http.ResponseWriter, r *http.Request) {
					if tc.writeFirst {
						w.WriteHeader(http.StatusAccepted)
						http.NewResponseController(w).Flush()
					}
					g.entered <- struct{}{}
					select {
					case <-r.Context().Done():
						cause.set(context.Cause(r.Context()))
					case <-time.After(5 * time.Second):
					}
				}))
				res := make(chan reply, 1)
				go func() { res <- do(t, ts.Client(), "POST", ts.URL+"/jobs/1") }()
				g.wait(t)
				fx.expire("job:1") // the lease vanishes; the watchdog's next renewal finds out
				r := <-res
				if r.status != tc.status {
					t.Fatalf("got %d %q; want %d", r.status, r.body, tc.status)
				}
				if !errors.Is(cause.get(), core.ErrLost) {
					t.Fatalf("context.Cause = %v; want core.ErrLost", cause.get())
				}
			})
		}
	})
}

func TestLock_lostOnPartition(t *testing.T) {
	fx := redisFixture(t)
	proxy := redistest.NewProxy(t, fx.srv.Addr())
	rdb := redis.NewClient(&redis.Options{Addr: proxy.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	c := core.New(rdb)
	t.Cleanup(func() { _ = c.Close() })

	g := newGate()
	var cause box[error]
	mw := httpmw.Lock(c, httpmw.Template("job:{id}"), httpmw.WithTTL(300*time.Millisecond),
		httpmw.WithAutoRefresh(30*time.Millisecond), httpmw.WithReleaseTimeout(100*time.Millisecond), httpmw.WithLogger(discard()))
	ts := serve(t, route("POST /jobs/{id}", mw, func(w http.ResponseWriter, r *http.Request) {
		g.entered <- struct{}{}
		<-r.Context().Done()
		cause.set(context.Cause(r.Context()))
	}))
	res := make(chan reply, 1)
	start := time.Now()
	go func() { res <- do(t, ts.Client(), "POST", ts.URL+"/jobs/1") }()
	g.wait(t)
	proxy.Block() // renewals hang: the lock is lost at its validity deadline
	r := <-res
	proxy.Unblock()
	if r.status != http.StatusConflict || !errors.Is(cause.get(), core.ErrLost) {
		t.Fatalf("got %d, cause %v; want 409 and core.ErrLost", r.status, cause.get())
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("loss noticed after %v; want about the 300ms TTL", d)
	}
}

func TestLock_panicReleases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		c := fx.client()
		mw := httpmw.Lock(c, httpmw.Template("p:{id}"))

		t.Run("value", func(t *testing.T) {
			mux := route("POST /p/{id}", mw, func(w http.ResponseWriter, r *http.Request) { panic("boom") })
			got := func() (v any) {
				defer func() { v = recover() }()
				mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/p/1", nil))
				return nil
			}()
			if got != "boom" {
				t.Fatalf("recovered %v; want the handler's panic to go on", got)
			}
			if fx.held("p:1") {
				t.Fatal("lock still held after the panic")
			}
		})

		t.Run("http.ErrAbortHandler", func(t *testing.T) {
			done := make(chan any, 1)
			mux := route("POST /p/{id}", mw, func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) })
			ts := serve(t, after(mux, done))
			r := do(t, ts.Client(), "POST", ts.URL+"/p/2")
			if v := waitDone(t, done); v != http.ErrAbortHandler {
				t.Fatalf("panic %v; want http.ErrAbortHandler", v)
			}
			if r.err == nil {
				t.Fatalf("client got %d; want the connection aborted", r.status)
			}
			if fx.held("p:2") {
				t.Fatal("lock still held after the aborted handler")
			}
		})
	})
}

func TestLock_clientDisconnectReleases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		g := newGate()
		done := make(chan any, 1)
		var cause box[error]
		mw := httpmw.Lock(fx.client(), httpmw.Template("coupon:{id}"))
		ts := serve(t, after(route("POST /coupons/{id}/claim", mw, func(w http.ResponseWriter, r *http.Request) {
			g.entered <- struct{}{}
			<-r.Context().Done()
			cause.set(context.Cause(r.Context()))
		}), done))
		ctx, cancel := context.WithCancel(context.Background())
		res := make(chan reply, 1)
		go func() { res <- doCtx(ctx, t, ts.Client(), "POST", ts.URL+"/coupons/1/claim") }()
		g.wait(t)
		if !fx.held("coupon:1") {
			t.Fatal("lock not held while the handler runs")
		}
		cancel()
		<-res
		waitDone(t, done)
		if !errors.Is(cause.get(), context.Canceled) || errors.Is(cause.get(), core.ErrLost) {
			t.Fatalf("cause %v; want context.Canceled", cause.get())
		}
		if fx.held("coupon:1") {
			t.Fatal("the disconnected request left its lock behind")
		}
	})
}

// observer records acquisitions.
type observer struct {
	core.NopObserver
	mu    sync.Mutex
	names []string
	keys  []string
}

func (o *observer) AcquireStart(ctx context.Context, e core.AcquireStartEvent) context.Context {
	o.mu.Lock()
	o.names = append(o.names, e.Name)
	o.keys = append(o.keys, e.Key)
	o.mu.Unlock()
	return ctx
}

func (o *observer) snapshot() (names, keys []string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.names...), append([]string(nil), o.keys...)
}

func TestLock_reentrantByContext(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		obs := &observer{}
		c := fx.client(core.WithObserver(obs))
		outer := httpmw.Lock(c, httpmw.Template("coupon:{id}"))
		inner := httpmw.Lock(c, httpmw.Template("coupon:{id}")) // same key: proceeds
		audit := httpmw.Lock(c, httpmw.Template("audit:{id}"))  // another key: acquired
		var inCtx box[[]*core.Lock]
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { inCtx.set(core.LocksFromContext(r.Context())) })
		ts := serve(t, route("POST /coupons/{id}/claim", outer, inner(audit(h)).ServeHTTP))
		if r := do(t, ts.Client(), "POST", ts.URL+"/coupons/1/claim"); r.status != 200 {
			t.Fatalf("got %d; a nested guard on a held key must not conflict with itself", r.status)
		}
		_, keys := obs.snapshot()
		if strings.Join(keys, ",") != "coupon:1,audit:1" {
			t.Fatalf("acquired %q; want coupon:1 once, then audit:1", keys)
		}
		locks := inCtx.get()
		if len(locks) != 2 || locks[0].Key() != "audit:1" || locks[1].Key() != "coupon:1" {
			t.Fatalf("locks in context: %v", locks)
		}
		if fx.held("coupon:1") || fx.held("audit:1") {
			t.Fatal("locks still held after the request")
		}
	})
}

func TestLock_nameIsRoutePattern(t *testing.T) {
	obs := &observer{}
	c := newMemoryClient(core.WithObserver(obs))
	t.Cleanup(func() { _ = c.Close() })
	mux := http.NewServeMux()
	mux.Handle("POST /coupons/{id}/claim", httpmw.Lock(c, httpmw.Template("coupon:{id}"))(http.HandlerFunc(okHandler)))
	mux.Handle("POST /orders/{id}", httpmw.Lock(c, httpmw.Template("order:{id}"), httpmw.WithName("orders"))(http.HandlerFunc(okHandler)))
	ts := serve(t, mux)
	do(t, ts.Client(), "POST", ts.URL+"/coupons/12345/claim")
	do(t, ts.Client(), "POST", ts.URL+"/orders/777")
	names, _ := obs.snapshot()
	if strings.Join(names, "|") != "POST /coupons/{id}/claim|orders" {
		t.Fatalf("lock names %q; want the route pattern, or WithName", names)
	}
}

func TestLockKeys_transfer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		const initial, each = 1000, 150
		var balances sync.Map // account -> *atomic.Int64
		for _, a := range []string{"a", "b", "c"} {
			v := &atomic.Int64{}
			v.Store(initial)
			balances.Store(a, v)
		}
		bal := func(a string) *atomic.Int64 { v, _ := balances.Load(a); return v.(*atomic.Int64) }
		transfer := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			from, to := bal(r.PathValue("from")), bal(r.PathValue("to"))
			fv, tv := from.Load(), to.Load() // non-atomic read-modify-write on both
			time.Sleep(20 * time.Microsecond)
			from.Store(fv - 1)
			to.Store(tv + 1)
		})
		keys := []httpmw.KeyFunc{httpmw.Template("account:{from}"), httpmw.Template("account:{to}")}
		var servers []*httptest.Server
		for range 2 {
			mux := http.NewServeMux()
			mux.Handle("POST /transfer/{from}/{to}", httpmw.LockKeys(fx.client(), keys, httpmw.WithWait(time.Minute))(transfer))
			servers = append(servers, serve(t, withTimeout(mux, 30*time.Second)))
		}
		// Opposite directions at once: unsorted acquisition would deadlock.
		st := hammer(t, servers, func(i int) string {
			if i%2 == 0 {
				return "/transfer/a/b"
			}
			return "/transfer/b/a"
		}, 2*each, 32)
		if st[http.StatusOK] != 2*each {
			t.Fatalf("statuses %v; want all 200", st)
		}
		if a, b := bal("a").Load(), bal("b").Load(); a != initial || b != initial {
			t.Fatalf("balances a=%d b=%d; want %d each (lost update)", a, b, initial)
		}
		if fx.held("account:a") || fx.held("account:b") {
			t.Fatal("locks left behind")
		}

		// All or nothing: one key held elsewhere fails the request and
		// leaves the other free.
		l, err := fx.client().TryAcquire(context.Background(), "account:b")
		if err != nil {
			t.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.Handle("POST /transfer/{from}/{to}", httpmw.LockKeys(fx.client(), keys)(transfer))
		ts := serve(t, mux)
		if r := do(t, ts.Client(), "POST", ts.URL+"/transfer/c/b"); r.status != http.StatusConflict {
			t.Fatalf("got %d; want 409", r.status)
		}
		if fx.held("account:c") {
			t.Fatal("partial acquisition not released")
		}
		_ = l.Release(context.Background())
		if r := do(t, ts.Client(), "POST", ts.URL+"/transfer/c/c"); r.status != 200 {
			t.Fatalf("same account twice: got %d; want 200 (the key is locked once)", r.status)
		}
	})
}

func TestLock_responseWriterInterfaces(t *testing.T) {
	c := newMemoryClient()
	t.Cleanup(func() { _ = c.Close() })
	ts := serve(t, route("GET /s/{id}", httpmw.Lock(c, httpmw.PathValue("id")), func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(http.Flusher); !ok {
			t.Error("http.Flusher lost")
		}
		if _, ok := w.(http.Hijacker); !ok {
			t.Error("http.Hijacker lost")
		}
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Errorf("ResponseController.SetWriteDeadline through the wrapper: %v", err)
		}
		_, _ = w.Write([]byte("a"))
		if err := rc.Flush(); err != nil {
			t.Errorf("ResponseController.Flush: %v", err)
		}
		w.(http.Flusher).Flush()
	}))
	if r := do(t, ts.Client(), "GET", ts.URL+"/s/1"); r.status != 200 || r.body != "a" {
		t.Fatalf("got %d %q", r.status, r.body)
	}
}

func TestOptions_panicAtConstruction(t *testing.T) {
	c := newMemoryClient()
	t.Cleanup(func() { _ = c.Close() })
	key := httpmw.PathValue("id")
	for name, f := range map[string]func(){
		"nil locker":            func() { httpmw.Lock(nil, key) },
		"nil key":               func() { httpmw.Lock(c, nil) },
		"no keys":               func() { httpmw.LockKeys(c, nil) },
		"nil key in keys":       func() { httpmw.LockKeys(c, []httpmw.KeyFunc{key, nil}) },
		"nil handler":           func() { httpmw.Lock(c, key)(nil) },
		"nil option":            func() { httpmw.Lock(c, key, nil) },
		"WithTTL 0":             func() { httpmw.WithTTL(0) },
		"WithWait negative":     func() { httpmw.WithWait(-time.Second) },
		"WithAutoRefresh 0":     func() { httpmw.WithAutoRefresh(0) },
		"WithAutoRefresh two":   func() { httpmw.WithAutoRefresh(time.Second, time.Second) },
		"refresh not below TTL": func() { httpmw.Lock(c, key, httpmw.WithAutoRefresh(time.Second), httpmw.WithTTL(time.Second)) },
		"WithMaxHold 0":         func() { httpmw.WithMaxHold(0) },
		"WithReleaseTimeout 0":  func() { httpmw.WithReleaseTimeout(0) },
		"WithErrorHandler nil":  func() { httpmw.WithErrorHandler(nil) },
		"WithLockOptions nil":   func() { httpmw.WithLockOptions(nil) },
		"WithLogger nil":        func() { httpmw.WithLogger(nil) },
		"Template empty":        func() { httpmw.Template("") },
		"Template unclosed":     func() { httpmw.Template("coupon:{id") },
		"Template stray }":      func() { httpmw.Template("coupon:id}") },
		"Template empty name":   func() { httpmw.Template("coupon:{}") },
		"PathValue empty":       func() { httpmw.PathValue("") },
		"Header empty":          func() { httpmw.Header("") },
		"Query empty":           func() { httpmw.Query("") },
		"Prefix nil":            func() { httpmw.Prefix("x:", nil) },
		"Prefix control":        func() { httpmw.Prefix("x\n", key) },
		"AcceptFence nil":       func() { httpmw.AcceptFence(nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				msg, _ := recover().(string)
				if !strings.HasPrefix(msg, "httpmw: ") {
					t.Fatalf("panic %q; want a message starting with \"httpmw: \"", msg)
				}
			}()
			f()
		})
	}
}
