// Package ginmw guards gin routes with a distributed lock: one holder per
// key at a time across every instance of a service.
//
//	r.POST("/coupons/:id/claim", ginmw.Lock(locker, ginmw.Template("coupon:{id}")), claim)
//
// Lock returns a gin.HandlerFunc. Put it in front of the handlers it
// guards: in the route's handler list, or with Use on a group or the engine
// (gin routes first, so c.Param works either way). Requests that match no
// route (gin's 404/405 handlers also run engine-level middleware) pass
// through unlocked. Mount gin.Recovery before it, so that a panicking
// handler's lock is released before the panic is recovered.
//
// # Keys and options
//
// Key functions: Param(name), Template (braces over route parameters, as in
// httpmw: "coupon:{id}" for the route parameter :id), Header, Query and
// Prefix, or any func(*gin.Context) (string, error). LockKeys takes several
// keys for one route, in one sorted order, all or none:
//
//	r.POST("/transfer/:from/:to", ginmw.LockKeys(locker, []ginmw.KeyFunc{
//		ginmw.Template("account:{from}"), ginmw.Template("account:{to}"),
//	}, ginmw.WithWait(2*time.Second)), transfer)
//
// Options have the same names and meaning as in httpmw (WithTTL, WithWait,
// WithAutoRefresh, WithMaxHold, WithFailOpen, WithErrorHandler, WithName,
// WithReleaseTimeout, WithLockOptions, WithMaxRetryAfter, WithRetryJitter,
// WithLogger); invalid values panic when the handler is built, with a
// "ginmw:" prefix. The default lock name is c.FullPath(), the route
// template, never the key.
//
// # What the handler sees
//
// The lock rides in c.Request.Context(): core.FromContext returns it and
// core.FenceFromContext its fence. That context is cancelled when the lock
// is lost mid-request, with context.Cause matching core.ErrLost. Use
// c.Request.Context() (or set gin.Engine.ContextWithFallback, so that c
// itself delegates to it) when calling code that must stop with the lock.
// If the handler returns without having written a body, the client gets 409.
//
// The lock is released after the rest of the chain returns, also when it
// panics or the client went away, with a context detached from the
// request and a timeout of its own (WithReleaseTimeout).
//
// # Readers and writers, concurrency limits
//
// LockRW guards a resource as a read-write lock: GET, HEAD and OPTIONS take
// shared holds and run together, every other method takes an exclusive
// hold that waits for the readers in flight and excludes them; once a
// writer waits, new readers queue behind it (no writer starvation).
// Limit lets at most n requests per key run at once, across every instance
// (one of n permits, core.Permits):
//
//	rw := ginmw.LockRW(locker, ginmw.Template("doc:{id}"), ginmw.WithWait(2*time.Second))
//	r.GET("/docs/:id", rw, getDoc)
//	r.PUT("/docs/:id", rw, putDoc)
//	r.POST("/reports", ginmw.Limit(locker, ginmw.Header("X-Tenant"), 4), report)
//
// # Status codes
//
// As httpmw: 409 Conflict with Retry-After (contention, or a lock lost
// before anything was written), 429 Too Many Requests with Retry-After (a
// Limit with no permit free within the wait), 400 (invalid key), 503
// (backend unreachable, unless WithFailOpen), 504 (deadline while
// waiting), 500 (ErrMisconfigured, or a lock-mode configuration error:
// core.ErrModeMismatch when routes disagree on a key's mode or n,
// core.ErrModeUnsupported on Redlock; logged at error level,
// never 409), 499 (client gone while waiting). Responses abort the
// chain with a small JSON body, {"error":"<code>","message":"<text>"},
// that never contains the key or backend error text; the error is also
// attached to c.Errors as a private gin error. WithErrorHandler replaces
// the response.
//
// # Fences across services
//
// AcceptSignedFence reads a signed Fence-Token header (see httpmw and
// package fencesign) into c.Request.Context(), where core.FenceFromContext
// and sqlguard find it: a malformed header is 400, a refused signature 401.
// AcceptUnsignedFence trusts the header as sent, for routes only trusted
// services can reach. Outgoing calls made with c.Request.Context() forward
// the fence through httpmw.Transport or httpmw.SignedTransport.
//
// # Cost
//
// As httpmw: two Redis round trips per request (acquire, release);
// docs/benchmarks.md in the repository has the figures and the command.
// examples/ginserver fires concurrent claims at one coupon and prints the
// 409s.
package ginmw
