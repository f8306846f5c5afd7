package httpmw

import (
	"net/http"
	"slices"

	"github.com/fencedlock/fencedlock/core"
)

// LockRW is a middleware that guards a route key as a read-write lock:
// safe methods (GET, HEAD, OPTIONS) take shared holds (core.Shared), so
// readers of one key run together, and every other method takes an
// exclusive hold, which waits for the readers in flight and excludes them
// all. Mount it on every route of the resource with the same key:
//
//	rw := httpmw.LockRW(locker, httpmw.Template("doc:{id}"), httpmw.WithWait(2*time.Second))
//	mux.Handle("GET /docs/{id}", rw(get))
//	mux.Handle("PUT /docs/{id}", rw(put))
//
// A waiting writer makes new readers wait behind it, so a stream of GETs
// cannot starve a PUT. Statuses are Lock's; a key held in an incompatible
// mode elsewhere (say, by a Limit on the same key) or a backend that takes
// exclusive holds only (Redlock) is a configuration error: 500,
// logged at error level.
func LockRW(l core.Locker, key KeyFunc, opts ...Option) func(http.Handler) http.Handler {
	if key == nil {
		panic("httpmw: LockRW with a nil KeyFunc")
	}
	rw := func(c *config) { c.shareSafe = true }
	return newMiddleware("LockRW", l, []KeyFunc{key}, append(slices.Clip(opts), rw))
}

// Limit is a middleware that lets at most n requests per key(r) run at
// once, in every process sharing the backend (core.Permits(n)): a
// per-tenant or per-upstream concurrency limit.
//
//	mux.Handle("POST /reports", httpmw.Limit(locker, httpmw.Header("X-Tenant"), 4,
//		httpmw.WithWait(time.Second))(h))
//
// A request that finds no permit free within the wait (fail fast by
// default, see WithWait) gets 429 Too Many Requests with a Retry-After
// header. Every Limit on one key must use the same n: a disagreeing n, or a
// backend without permits (Redlock), answers 500 and logs a
// configuration error. n must be between 1 and core.MaxPermits.
func Limit(l core.Locker, key KeyFunc, n int, opts ...Option) func(http.Handler) http.Handler {
	if key == nil {
		panic("httpmw: Limit with a nil KeyFunc")
	}
	permits := func(c *config) { c.policy.Mode, c.policy.Permits = core.PermitMode, n }
	return newMiddleware("Limit", l, []KeyFunc{key}, append(slices.Clip(opts), permits))
}
