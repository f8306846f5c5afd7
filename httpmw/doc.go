// Package httpmw guards net/http routes with a distributed lock: one holder
// per key at a time across every instance of a service.
//
//	claim := httpmw.Lock(locker, httpmw.Template("coupon:{id}"))
//	mux.Handle("POST /coupons/{id}/claim", claim(claimHandler))
//
// # Where to mount
//
// Mount the middleware on each route, after routing: wrap the handler you
// pass to ServeMux.Handle, not the mux. Only then does the request carry
// its pattern (r.Pattern) and path values, which PathValue and Template
// read and which names the lock in telemetry. Wrapped around the mux, every
// request has an empty pattern and the middleware answers 500 (and logs the
// misconfiguration) rather than lock on an empty or wrong key.
//
// # What the handler sees
//
// The handler runs with the lock in its request context: core.FromContext
// returns it, and core.FenceFromContext its fence for guarded writes (see
// sqlguard). The context is cancelled when the lock is lost mid-request (the
// lease could not be renewed, WithMaxHold was reached), with
// context.Cause(r.Context()) matching core.ErrLost. A handler doing work
// that must not outlive the lock watches r.Context().Done() and passes the
// context to everything it calls; if it returns without writing, the client
// gets 409. Long handlers should use WithAutoRefresh.
//
// The lock is released after the handler returns, also when it panics (the
// panic then goes on) or the client went away, with a context detached from
// the request and a timeout of its own (WithReleaseTimeout).
//
// # Readers and writers, concurrency limits
//
// LockRW guards a resource as a read-write lock: GET, HEAD and OPTIONS take
// shared holds and run together, every other method takes an exclusive
// hold that waits for the readers in flight and excludes them; once a
// writer waits, new readers queue behind it (no writer starvation):
//
//	rw := httpmw.LockRW(locker, httpmw.Template("doc:{id}"), httpmw.WithWait(2*time.Second))
//	mux.Handle("GET /docs/{id}", rw(getDoc))
//	mux.Handle("PUT /docs/{id}", rw(putDoc))
//
// Limit lets at most n requests per key run at once, across every instance
// (one of n permits, core.Permits); a request that finds none free within
// the wait gets 429 with Retry-After:
//
//	mux.Handle("POST /reports", httpmw.Limit(locker, httpmw.Header("X-Tenant"), 4)(report))
//
// Each shared hold and each permit is its own lock with its own lease and
// fence, renewed and released like Lock's.
//
// # Status codes
//
//	409 Conflict             held by another request (Retry-After: the holder's
//	                         remaining lease, whole seconds rounded up), or the
//	                         lock was lost before the handler wrote anything
//	400 Bad Request          missing, empty, invalid or oversized key
//	503 Service Unavailable  lock backend unreachable (unless WithFailOpen)
//	504 Gateway Timeout      the request's deadline passed while waiting
//	429 Too Many Requests    Limit: no permit freed up within the wait
//	                         (Retry-After as for 409)
//	500 Internal Server Error the key cannot be derived where the middleware
//	                         is mounted (ErrMisconfigured), or the key's mode
//	                         conflicts (core.ErrModeMismatch: a Limit with
//	                         another n, LockRW and Limit on one key) or the
//	                         backend has no shared or permit holds
//	                         (core.ErrModeUnsupported: Redlock, etcd); logged
//	                         at error level, never 409, since waiting cannot help
//	499                      the client went away while waiting (for logs)
//
// Bodies are short fixed texts; they never contain the key or backend error
// text. WithErrorHandler replaces the response.
//
// # Fences across services
//
// Transport forwards the fence of the lock in an outgoing request's context
// in the Fence-Token header; AcceptFence reads it on the receiving service
// so its own guarded writes use it.
package httpmw
