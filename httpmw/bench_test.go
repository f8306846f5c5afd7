package httpmw_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// roundTrips counts what a go-redis client sends: one per command, one per
// pipeline.
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

// countedLocker is a core.Client on a fresh redis-server whose round trips
// are counted.
func countedLocker(tb testing.TB) (*core.Client, *roundTrips, *redis.Client) {
	srv := redistest.Start(tb)
	rdb := srv.Client(tb)
	rt := &roundTrips{}
	rdb.AddHook(rt)
	c := core.New(rdb)
	tb.Cleanup(func() { _ = c.Close() })
	return c, rt, rdb
}

func noContent(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }

// requests prebuilds n requests on distinct keys, reused round-robin.
func requests(n int) []*http.Request {
	rs := make([]*http.Request, n)
	for i := range rs {
		rs[i] = httptest.NewRequest("POST", fmt.Sprintf("/coupons/%d/claim", i), nil)
	}
	return rs
}

// sink is a reusable ResponseWriter, so the benchmark measures the
// middleware rather than httptest.ResponseRecorder.
type sink struct {
	h    http.Header
	code int
}

func (s *sink) Header() http.Header         { return s.h }
func (s *sink) Write(b []byte) (int, error) { return len(b), nil }
func (s *sink) WriteHeader(code int)        { s.code = code }
func (s *sink) reset()                      { clear(s.h); s.code = 0 }

func TestLock_twoRoundTripsPerRequest(t *testing.T) {
	c, rt, _ := countedLocker(t)
	mux := http.NewServeMux()
	mux.Handle("POST /coupons/{id}/claim", httpmw.Lock(c, httpmw.Template("coupon:{id}"), httpmw.WithAutoRefresh())(http.HandlerFunc(noContent)))
	rs := requests(51)
	w := &sink{h: http.Header{}}
	mux.ServeHTTP(w, rs[50]) // loads the scripts (EVALSHA, NOSCRIPT, EVAL)
	rt.n.Store(0)
	for _, r := range rs[:50] {
		w.reset()
		mux.ServeHTTP(w, r)
		if w.code != http.StatusNoContent {
			t.Fatalf("status %d", w.code)
		}
	}
	if n := rt.n.Load(); n != 100 {
		t.Fatalf("%d round trips for 50 requests; want exactly 2 each (acquire, release)", n)
	}
}

// BenchmarkLock_distinctKeys measures the middleware's overhead over a bare
// handler behind the same ServeMux, on uncontended keys: against a real
// redis-server (2 round trips per request) and the in-memory locktest
// backend (CPU and allocations only). "floor" is two PINGs on the same
// connection pool: the network cost no lock can avoid.
func BenchmarkLock_distinctKeys(b *testing.B) {
	c, rt, rdb := countedLocker(b)
	mem := locktest.New()
	b.Cleanup(func() { _ = mem.Close() })
	const pattern = "POST /coupons/{id}/claim"
	handlers := []struct {
		name string
		mw   func(http.Handler) http.Handler
	}{
		{"bare", func(h http.Handler) http.Handler { return h }},
		{"redis", httpmw.Lock(c, httpmw.Template("coupon:{id}"))},
		{"memory", httpmw.Lock(mem, httpmw.Template("coupon:{id}"))},
	}
	rs := requests(4096)
	b.Run("floor-2-pings", func(b *testing.B) {
		ctx := context.Background()
		b.ReportAllocs()
		for b.Loop() {
			if err := rdb.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			if err := rdb.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, hc := range handlers {
		mux := http.NewServeMux()
		mux.Handle(pattern, hc.mw(http.HandlerFunc(noContent)))
		b.Run(hc.name, func(b *testing.B) {
			w := &sink{h: http.Header{}}
			mux.ServeHTTP(w, rs[0])
			rt.n.Store(0)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				w.reset()
				mux.ServeHTTP(w, rs[i%len(rs)])
				if w.code != http.StatusNoContent {
					b.Fatalf("status %d", w.code)
				}
				i++
			}
			b.ReportMetric(float64(rt.n.Load())/float64(i), "roundtrips/op")
		})
	}
}
