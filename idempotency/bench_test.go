package idempotency_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/fencedlock/fencedlock/idempotency"
	"github.com/fencedlock/fencedlock/internal/redistest"
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

// counted is a locker and a store on one redis-server client whose round
// trips are counted.
func counted(tb testing.TB) (*core.Client, *idempotency.RedisStore, *roundTrips) {
	srv := redistest.Start(tb)
	rdb := srv.Client(tb)
	rt := &roundTrips{}
	rdb.AddHook(rt)
	c := core.New(rdb)
	tb.Cleanup(func() { _ = c.Close() })
	return c, idempotency.NewRedisStore(rdb, ""), rt
}

// answer1K is a handler with a 1 KiB JSON answer.
var answer1K = bytes.Repeat([]byte("x"), 1024)

func answer(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(answer1K)
}

// sink is a reusable ResponseWriter, so the benchmark measures the
// middleware rather than httptest.ResponseRecorder.
type sink struct {
	h    http.Header
	code int
	n    int
}

func (s *sink) Header() http.Header         { return s.h }
func (s *sink) Write(b []byte) (int, error) { s.n += len(b); return len(b), nil }
func (s *sink) WriteHeader(code int)        { s.code = code }
func (s *sink) reset()                      { clear(s.h); s.code, s.n = 0, 0 }

func idemMux(l core.Locker, s idempotency.Store) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /charges", idempotency.Middleware(l, s)(http.HandlerFunc(answer)))
	return mux
}

func keyed(key string) *http.Request {
	r := httptest.NewRequest("POST", "/charges", strings.NewReader(`{"amount":"9.99"}`))
	r.Header.Set("Idempotency-Key", key)
	return r
}

func TestMiddleware_replayIsOneRoundTrip(t *testing.T) {
	l, s, rt := counted(t)
	mux := idemMux(l, s)
	w := &sink{h: http.Header{}}
	mux.ServeHTTP(w, keyed("warm")) // loads the scripts
	rt.n.Store(0)
	mux.ServeHTTP(w, keyed("k"))
	first := rt.n.Load()
	rt.n.Store(0)
	w.reset()
	mux.ServeHTTP(w, keyed("k"))
	if got := rt.n.Load(); got != 1 || w.n != len(answer1K) || w.h.Get(idempotency.ReplayedHeader) != "true" {
		t.Fatalf("replay: %d round trips, %d bytes; want 1 and %d, replayed", got, w.n, len(answer1K))
	}
	// lookup, acquire, claim, store, release
	if first != 5 {
		t.Fatalf("first request: %d round trips, want 5", first)
	}
}

// The baseline: the same handler behind a plain lock on a per-request key
// (acquire and release).
func BenchmarkLockedRoute(b *testing.B) {
	l, _, rt := counted(b)
	mux := http.NewServeMux()
	mux.Handle("POST /charges", httpmw.Lock(l, httpmw.Header("Idempotency-Key"))(http.HandlerFunc(answer)))
	bench(b, mux, rt, func(i int) string { return fmt.Sprint("b", i) })
}

// The first request with each key: lookup, acquire, claim, store, release.
func BenchmarkIdempotent_firstRequest(b *testing.B) {
	l, s, rt := counted(b)
	bench(b, idemMux(l, s), rt, func(i int) string { return fmt.Sprint("f", i) })
}

// A replay of a stored 1 KiB answer: one lookup and the body copy.
func BenchmarkIdempotent_replay(b *testing.B) {
	l, s, rt := counted(b)
	mux := idemMux(l, s)
	mux.ServeHTTP(&sink{h: http.Header{}}, keyed("r"))
	bench(b, mux, rt, func(int) string { return "r" })
}

func bench(b *testing.B, h http.Handler, rt *roundTrips, key func(i int) string) {
	w := &sink{h: http.Header{}}
	h.ServeHTTP(w, keyed("warm-up")) // loads the scripts
	b.ReportAllocs()
	rt.n.Store(0)
	b.ResetTimer()
	for i := range b.N {
		w.reset()
		h.ServeHTTP(w, keyed(key(i)))
		if w.code >= 300 {
			b.Fatalf("status %d", w.code)
		}
	}
	b.ReportMetric(float64(rt.n.Load())/float64(b.N), "rtt/op")
}
