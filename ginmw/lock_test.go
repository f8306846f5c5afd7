package ginmw_test

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
	"github.com/fencedlock/fencedlock/ginmw"
	"github.com/fencedlock/fencedlock/internal/testlog"
	"github.com/gin-gonic/gin"
)

// witness is a deliberately non-atomic read-sleep-write counter.
type witness struct{ count, inflight, peak atomic.Int64 }

func (w *witness) handler(c *gin.Context) {
	n := w.inflight.Add(1)
	for p := w.peak.Load(); n > p && !w.peak.CompareAndSwap(p, n); p = w.peak.Load() {
	}
	v := w.count.Load()
	time.Sleep(50 * time.Microsecond)
	w.count.Store(v + 1)
	w.inflight.Add(-1)
	c.Status(http.StatusNoContent)
}

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
		const instances, requests, workers = 3, 300, 48
		run := func(guarded bool) (*witness, map[int]int) {
			w := &witness{}
			var servers []*httptest.Server
			for range instances {
				e := newEngine()
				handlers := []gin.HandlerFunc{w.handler}
				if guarded {
					handlers = append([]gin.HandlerFunc{ginmw.Lock(fx.client(), ginmw.Template("counter:{id}"), ginmw.WithWait(time.Minute))}, handlers...)
				}
				e.POST("/counters/:id/incr", handlers...)
				servers = append(servers, serve(t, e))
			}
			return w, hammer(t, servers, func(int) string { return "/counters/7/incr" }, requests, workers)
		}
		w, st := run(true)
		if st[http.StatusNoContent] != requests || w.count.Load() != requests || w.peak.Load() != 1 {
			t.Fatalf("with the lock: statuses %v, count %d of %d, peak %d", st, w.count.Load(), requests, w.peak.Load())
		}
		if fx.held("counter:7") {
			t.Error("lock still held")
		}
		nw, st := run(false)
		if st[http.StatusNoContent] != requests || nw.count.Load() >= requests || nw.peak.Load() < 2 {
			t.Fatalf("negative control: statuses %v, count %d of %d, peak %d; the witness did not detect the race",
				st, nw.count.Load(), requests, nw.peak.Load())
		}
	})
}

func TestLock_distinctKeysRunInParallel(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		const n = 16
		var arrived atomic.Int64
		all := make(chan struct{})
		e := newEngine()
		e.POST("/counters/:id/incr", ginmw.Lock(fx.client(), ginmw.Template("counter:{id}")), func(c *gin.Context) {
			if arrived.Add(1) == n {
				close(all)
			}
			select {
			case <-all:
				c.Status(http.StatusNoContent)
			case <-time.After(5 * time.Second):
				c.Status(http.StatusTeapot)
			}
		})
		ts := serve(t, e)
		st := hammer(t, []*httptest.Server{ts}, func(i int) string { return fmt.Sprintf("/counters/%d/incr", i) }, n, n)
		if st[http.StatusNoContent] != n {
			t.Fatalf("statuses %v; want %d × 204", st, n)
		}
	})
}

func claimed(c *gin.Context) { c.JSON(http.StatusOK, gin.H{"claimed": true}) }

func TestLock_statuses(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		c, other := fx.client(), fx.client()
		ctx := context.Background()
		const route = "/coupons/:id/claim"
		engine := func(mw gin.HandlerFunc, h ...gin.HandlerFunc) *httptest.Server {
			e := newEngine()
			if len(h) == 0 {
				h = []gin.HandlerFunc{claimed}
			}
			e.POST(route, append([]gin.HandlerFunc{mw}, h...)...)
			return serve(t, e)
		}
		hold := func(key string, opts ...core.Option) {
			t.Helper()
			l, err := other.TryAcquire(ctx, key, opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Release(context.Background()) })
		}

		t.Run("acquired", func(t *testing.T) {
			var key box[string]
			ts := engine(ginmw.Lock(c, ginmw.Template("coupon:{id}")), func(g *gin.Context) {
				if l, ok := core.FromContext(g.Request.Context()); ok {
					key.set(l.Key())
				}
				claimed(g)
			})
			if r := do(t, ts.Client(), "POST", ts.URL+"/coupons/1/claim"); r.status != 200 || key.get() != "coupon:1" {
				t.Fatalf("got %d, lock %q in context", r.status, key.get())
			}
			if fx.held("coupon:1") {
				t.Fatal("still held")
			}
		})

		t.Run("contended 409 JSON", func(t *testing.T) {
			hold("coupon:2", core.WithTTL(2500*time.Millisecond))
			ts := engine(ginmw.Lock(c, ginmw.Template("coupon:{id}")))
			r := do(t, ts.Client(), "POST", ts.URL+"/coupons/2/claim")
			want := `{"error":"contended","message":"resource is locked by another request"}`
			if r.status != http.StatusConflict || r.retryAfter != "3" || r.body != want {
				t.Fatalf("got %d Retry-After %q %s; want 409, 3, %s", r.status, r.retryAfter, r.body, want)
			}
		})

		t.Run("waits then succeeds", func(t *testing.T) {
			l, err := other.TryAcquire(ctx, "coupon:3")
			if err != nil {
				t.Fatal(err)
			}
			time.AfterFunc(100*time.Millisecond, func() { _ = l.Release(context.Background()) })
			ts := engine(ginmw.Lock(c, ginmw.Template("coupon:{id}"), ginmw.WithWait(5*time.Second)))
			if r := do(t, ts.Client(), "POST", ts.URL+"/coupons/3/claim"); r.status != 200 {
				t.Fatalf("got %d", r.status)
			}
		})

		t.Run("deadline while waiting 504", func(t *testing.T) {
			hold("coupon:5")
			e := newEngine()
			e.Use(func(g *gin.Context) {
				ctx, cancel := context.WithTimeout(g.Request.Context(), 150*time.Millisecond)
				defer cancel()
				g.Request = g.Request.WithContext(ctx)
				g.Next()
			})
			e.POST(route, ginmw.Lock(c, ginmw.Template("coupon:{id}"), ginmw.WithWait(10*time.Second)), claimed)
			ts := serve(t, e)
			if r := do(t, ts.Client(), "POST", ts.URL+"/coupons/5/claim"); r.status != http.StatusGatewayTimeout || !strings.Contains(r.body, `"timeout"`) {
				t.Fatalf("got %d %s; want 504", r.status, r.body)
			}
		})

		t.Run("invalid keys 400", func(t *testing.T) {
			var calls atomic.Int64
			count := func(g *gin.Context) { calls.Add(1) }
			e := newEngine()
			e.GET("/q", ginmw.Lock(c, ginmw.Query("k")), count)
			e.GET("/h", ginmw.Lock(c, ginmw.Header("X-Key")), count)
			e.GET("/p/:id", ginmw.Lock(c, ginmw.Param("id")), count)
			ts := serve(t, e)
			for _, path := range []string{"/q", "/q?k=%00", "/q?k=%ff", "/q?k=" + strings.Repeat("x", core.MaxKeyLen+1), "/h", "/p/%01"} {
				r := do(t, ts.Client(), "GET", ts.URL+path)
				if r.status != http.StatusBadRequest || r.body != `{"error":"invalid_key","message":"invalid lock key"}` {
					t.Errorf("GET %.40s: got %d %s", path, r.status, r.body)
				}
			}
			if calls.Load() != 0 {
				t.Errorf("handler ran %d times", calls.Load())
			}
		})

		t.Run("unreachable 503 and fail open", func(t *testing.T) {
			down := fx.unreachable()
			ts := engine(ginmw.Lock(down, ginmw.Template("coupon:{id}"), ginmw.WithLogger(discard())))
			if r := do(t, ts.Client(), "POST", ts.URL+"/coupons/6/claim"); r.status != http.StatusServiceUnavailable ||
				r.body != `{"error":"unavailable","message":"lock service unavailable"}` {
				t.Fatalf("got %d %s", r.status, r.body)
			}
			ts = engine(ginmw.Lock(down, ginmw.Template("coupon:{id}"), ginmw.WithFailOpen(), ginmw.WithLogger(discard())))
			if r := do(t, ts.Client(), "POST", ts.URL+"/coupons/6/claim"); r.status != 200 {
				t.Fatalf("fail open: got %d", r.status)
			}
		})

		t.Run("error handler cannot let the handler run", func(t *testing.T) {
			hold("coupon:9")
			var ran atomic.Bool
			var seen box[*ginmw.Error]
			eh := func(g *gin.Context, e *ginmw.Error) { seen.set(e); g.Status(http.StatusTooManyRequests) }
			ts := engine(ginmw.Lock(c, ginmw.Template("coupon:{id}"), ginmw.WithErrorHandler(eh)), func(g *gin.Context) { ran.Store(true) })
			r := do(t, ts.Client(), "POST", ts.URL+"/coupons/9/claim")
			e := seen.get()
			if r.status != http.StatusTooManyRequests || ran.Load() || e == nil || e.Status != 409 || !errors.Is(e, core.ErrNotAcquired) {
				t.Fatalf("got %d, handler ran %v, Error %+v", r.status, ran.Load(), e)
			}
		})
	})
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer = testlog.Buffer

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestLock_misconfiguredAndUnmatched(t *testing.T) {
	c := newMemoryClient(t)
	var logs syncBuffer
	e := newEngine()
	e.Use(ginmw.Lock(c, ginmw.Param("id"), ginmw.WithLogger(slog.New(slog.NewTextHandler(&logs, nil)))))
	e.POST("/coupons/:id/claim", claimed)
	e.POST("/health", claimed) // no :id
	ts := serve(t, e)
	if r := do(t, ts.Client(), "POST", ts.URL+"/coupons/1/claim"); r.status != 200 {
		t.Fatalf("engine-level Use on a route with :id: got %d", r.status)
	}
	r := do(t, ts.Client(), "POST", ts.URL+"/health")
	if r.status != 500 || r.body != `{"error":"misconfigured","message":"internal server error"}` {
		t.Fatalf("route without :id: got %d %s; want 500", r.status, r.body)
	}
	if !strings.Contains(logs.String(), `has no parameter \"id\"`) {
		t.Fatalf("log %q does not explain the misconfiguration", logs.String())
	}
	if r := do(t, ts.Client(), "POST", ts.URL+"/nowhere"); r.status != 404 {
		t.Fatalf("unmatched route: got %d; want gin's 404", r.status)
	}
}

func TestLock_lostMidRequest(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		c := fx.client()
		entered := make(chan struct{})
		var cause box[error]
		e := newEngine()
		e.POST("/jobs/:id", ginmw.Lock(c, ginmw.Template("job:{id}"), ginmw.WithTTL(time.Second),
			ginmw.WithAutoRefresh(20*time.Millisecond), ginmw.WithLogger(discard())), func(g *gin.Context) {
			close(entered)
			select {
			case <-g.Request.Context().Done():
				cause.set(context.Cause(g.Request.Context()))
			case <-time.After(5 * time.Second):
			}
		})
		ts := serve(t, e)
		res := make(chan reply, 1)
		go func() { res <- do(t, ts.Client(), "POST", ts.URL+"/jobs/1") }()
		waitFor(t, entered)
		fx.expire("job:1")
		r := <-res
		if r.status != http.StatusConflict || r.body != `{"error":"lost","message":"lock lost while handling the request"}` {
			t.Fatalf("got %d %s; want 409 lost", r.status, r.body)
		}
		if !errors.Is(cause.get(), core.ErrLost) {
			t.Fatalf("context.Cause = %v; want core.ErrLost", cause.get())
		}
	})
}

func TestLock_panicAndDisconnectRelease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		c := fx.client()
		finished := make(chan struct{}, 1)
		entered := make(chan struct{}, 1)
		e := gin.New()
		e.Use(func(g *gin.Context) {
			defer func() { finished <- struct{}{} }()
			g.Next()
		}, gin.CustomRecoveryWithWriter(discardWriter{}, func(g *gin.Context, _ any) { g.AbortWithStatus(500) }))
		e.POST("/p/:id", ginmw.Lock(c, ginmw.Template("p:{id}")), func(g *gin.Context) { panic("boom") })
		e.POST("/d/:id", ginmw.Lock(c, ginmw.Template("d:{id}")), func(g *gin.Context) {
			entered <- struct{}{}
			<-g.Request.Context().Done()
		})
		ts := serve(t, e)

		if r := do(t, ts.Client(), "POST", ts.URL+"/p/1"); r.status != 500 {
			t.Fatalf("panic: got %d; want gin.Recovery's 500", r.status)
		}
		waitFor(t, finished)
		if fx.held("p:1") {
			t.Fatal("lock still held after the panic")
		}

		ctx, cancel := context.WithCancel(context.Background())
		go func() { doCtx(ctx, t, ts.Client(), "POST", ts.URL+"/d/1") }()
		waitFor(t, entered)
		if !fx.held("d:1") {
			t.Fatal("not held while the handler runs")
		}
		cancel()
		waitFor(t, finished)
		if fx.held("d:1") {
			t.Fatal("the disconnected request left its lock behind")
		}
	})
}

type discardWriter struct{}

func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }

func TestLockKeys_transfer(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		const initial, each = 1000, 100
		var a, b atomic.Int64
		a.Store(initial)
		b.Store(initial)
		acct := map[string]*atomic.Int64{"a": &a, "b": &b}
		keys := []ginmw.KeyFunc{ginmw.Template("account:{from}"), ginmw.Template("account:{to}")}
		var servers []*httptest.Server
		for range 2 {
			e := newEngine()
			e.POST("/transfer/:from/:to", ginmw.LockKeys(fx.client(), keys, ginmw.WithWait(time.Minute)), func(g *gin.Context) {
				from, to := acct[g.Param("from")], acct[g.Param("to")]
				fv, tv := from.Load(), to.Load()
				time.Sleep(20 * time.Microsecond)
				from.Store(fv - 1)
				to.Store(tv + 1)
			})
			servers = append(servers, serve(t, e))
		}
		st := hammer(t, servers, func(i int) string {
			if i%2 == 0 {
				return "/transfer/a/b"
			}
			return "/transfer/b/a"
		}, 2*each, 32)
		if st[200] != 2*each || a.Load() != initial || b.Load() != initial {
			t.Fatalf("statuses %v, a=%d b=%d; want all 200 and %d each", st, a.Load(), b.Load(), initial)
		}
		if fx.held("account:a") || fx.held("account:b") {
			t.Fatal("locks left behind")
		}
	})
}

type observer struct {
	core.NopObserver
	mu    sync.Mutex
	names []string
}

func (o *observer) AcquireStart(ctx context.Context, e core.AcquireStartEvent) context.Context {
	o.mu.Lock()
	o.names = append(o.names, e.Name)
	o.mu.Unlock()
	return ctx
}

func TestLock_nameIsFullPath(t *testing.T) {
	obs := &observer{}
	c := newMemoryClient(t, core.WithObserver(obs))
	e := newEngine()
	e.POST("/coupons/:id/claim", ginmw.Lock(c, ginmw.Template("coupon:{id}")), claimed)
	e.POST("/orders/:id", ginmw.Lock(c, ginmw.Template("order:{id}"), ginmw.WithName("orders")), claimed)
	ts := serve(t, e)
	do(t, ts.Client(), "POST", ts.URL+"/coupons/12345/claim")
	do(t, ts.Client(), "POST", ts.URL+"/orders/9")
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if strings.Join(obs.names, "|") != "/coupons/:id/claim|orders" {
		t.Fatalf("names %q; want the route, or WithName", obs.names)
	}
}

func TestOptions_panicAtConstruction(t *testing.T) {
	c := newMemoryClient(t)
	key := ginmw.Param("id")
	for name, f := range map[string]func(){
		"nil locker":            func() { ginmw.Lock(nil, key) },
		"nil key":               func() { ginmw.Lock(c, nil) },
		"no keys":               func() { ginmw.LockKeys(c, nil) },
		"nil option":            func() { ginmw.Lock(c, key, nil) },
		"WithTTL 0":             func() { ginmw.WithTTL(0) },
		"WithWait negative":     func() { ginmw.WithWait(-1) },
		"WithAutoRefresh 0":     func() { ginmw.WithAutoRefresh(0) },
		"refresh not below TTL": func() { ginmw.Lock(c, key, ginmw.WithTTL(time.Second), ginmw.WithAutoRefresh(2*time.Second)) },
		"WithMaxHold 0":         func() { ginmw.WithMaxHold(0) },
		"WithReleaseTimeout 0":  func() { ginmw.WithReleaseTimeout(0) },
		"WithErrorHandler nil":  func() { ginmw.WithErrorHandler(nil) },
		"WithLockOptions nil":   func() { ginmw.WithLockOptions(nil) },
		"WithLogger nil":        func() { ginmw.WithLogger(nil) },
		"Template bad":          func() { ginmw.Template("coupon:{id") },
		"Param empty":           func() { ginmw.Param("") },
		"Header empty":          func() { ginmw.Header("") },
		"Query empty":           func() { ginmw.Query("") },
		"Prefix nil":            func() { ginmw.Prefix("p:", nil) },
	} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if msg, _ := recover().(string); !strings.HasPrefix(msg, "ginmw: ") {
					t.Fatalf("panic %q; want a \"ginmw: \" prefix", msg)
				}
			}()
			f()
		})
	}
}
