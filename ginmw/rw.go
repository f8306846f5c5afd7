package ginmw

import (
	"slices"

	"github.com/gin-gonic/gin"

	"github.com/fencedlock/fencedlock/core"
)

// LockRW returns a handler that guards a route key as a read-write lock:
// safe methods (GET, HEAD, OPTIONS) take shared holds (core.Shared), so
// readers of one key run together, and every other method takes an
// exclusive hold, which waits for the readers in flight and excludes them
// all. Use one LockRW on every route of the resource:
//
//	rw := ginmw.LockRW(locker, ginmw.Template("doc:{id}"), ginmw.WithWait(2*time.Second))
//	r.GET("/docs/:id", rw, getDoc)
//	r.PUT("/docs/:id", rw, putDoc)
//
// A waiting writer makes new readers wait behind it, so a stream of GETs
// cannot starve a PUT. Statuses are Lock's; a key held in an incompatible
// mode elsewhere (say, by a Limit on the same key) or a backend that takes
// exclusive holds only (Redlock) is a configuration error: 500,
// logged at error level.
func LockRW(l core.Locker, key KeyFunc, opts ...Option) gin.HandlerFunc {
	if key == nil {
		panic("ginmw: LockRW with a nil KeyFunc")
	}
	rw := func(c *config) { c.shareSafe = true }
	return newMiddleware("LockRW", l, []KeyFunc{key}, append(slices.Clip(opts), rw))
}

// Limit returns a handler that lets at most n requests per key(c) run at
// once, in every process sharing the backend (core.Permits(n)): a
// per-tenant or per-upstream concurrency limit.
//
//	r.POST("/reports", ginmw.Limit(locker, ginmw.Header("X-Tenant"), 4, ginmw.WithWait(time.Second)), report)
//
// A request that finds no permit free within the wait (fail fast by
// default, see WithWait) gets 429 Too Many Requests with a Retry-After
// header. Every Limit on one key must use the same n: a disagreeing n, or a
// backend without permits (Redlock), answers 500 and logs a
// configuration error. n must be between 1 and core.MaxPermits.
func Limit(l core.Locker, key KeyFunc, n int, opts ...Option) gin.HandlerFunc {
	if key == nil {
		panic("ginmw: Limit with a nil KeyFunc")
	}
	permits := func(c *config) { c.policy.Mode, c.policy.Permits = core.PermitMode, n }
	return newMiddleware("Limit", l, []KeyFunc{key}, append(slices.Clip(opts), permits))
}
