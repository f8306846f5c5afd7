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
// # Keys
//
// A KeyFunc derives the key from the request: PathValue(name) and
// Template("coupon:{id}") read path values, Header(name) and Query(name)
// the request, and Prefix("tenant:", k) prefixes another KeyFunc; any
// func(*http.Request) (string, error) will do. Keys are validated
// (non-empty, at most 1024 bytes, UTF-8, no control characters); core
// prefixes them (lock: by default), escapes braces and stores keys over
// 128 bytes hashed. LockKeys takes several keys for one route (a transfer
// between two accounts): they are taken in one sorted order, all or none,
// and released together.
//
//	transfer := httpmw.LockKeys(locker, []httpmw.KeyFunc{
//		httpmw.Template("account:{from}"), httpmw.Template("account:{to}"),
//	}, httpmw.WithWait(2*time.Second))
//	mux.Handle("POST /transfer/{from}/{to}", transfer(transferHandler))
//
// # Options
//
// The same names as in ginmw and grpcmw: WithTTL, WithWait (default: fail
// fast), WithAutoRefresh, WithMaxHold, WithFailOpen, WithErrorHandler,
// WithName (default: the route pattern; never the key), WithReleaseTimeout
// (default 2s), WithLockOptions (core options, applied last), WithLogger,
// and WithMaxRetryAfter / WithRetryJitter for the Retry-After hint. Invalid
// values panic when the middleware is built, with an "httpmw:" prefix.
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
// the request and a timeout of its own (WithReleaseTimeout). A panic goes
// on after the release, http.ErrAbortHandler included.
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
//	409 Conflict             held by another request (fail fast, or the WithWait
//	                         bound passed), with Retry-After; or the lock was
//	                         lost before the handler wrote anything (a response
//	                         already started is left alone)
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
//	                         (core.ErrModeUnsupported: Redlock); logged
//	                         at error level, never 409, since waiting cannot help
//	499                      the client went away while waiting (for logs)
//
// Retry-After counts whole seconds, at least 1: on 409 the smaller of the
// holder's remaining lease and the hold time observed on the route, on 503
// about 2s (docs/operators.md in the repository explains the hint and the
// outage logs).
//
// Bodies are short fixed plain texts; they never contain the key or backend
// error text. WithErrorHandler replaces the response: it receives an *Error
// with Status, Code, Message, RetryAfter and the cause Err, which matches
// core.ErrNotAcquired, core.ErrInvalidKey, core.ErrUnavailable, core.ErrLost
// and so on with errors.Is.
//
// # Fences across services
//
// Transport forwards the fence of the innermost lock in an outgoing
// request's context (or of a fence received upstream) in the Fence-Token
// header:
//
//	Fence-Token: <fence>;owner=<owner id>;key=<URL-escaped key>
//	Fence-Token: 42;owner=9f86d081884c7d65;key=coupon%3A7
//
// The owner id is derived from the secret owner token and cannot release
// the lock. On the receiving service AcceptSignedFence checks the header's
// signature (see package fencesign; SignedTransport adds it) and puts the
// fence into the context, where core.FenceFromContext and sqlguard find it;
// a malformed or repeated header is 400, a bad signature 401.
// AcceptUnsignedFence trusts the header as sent: use it only on routes that
// only trusted services can reach. The header carries the lock key:
// forward it only to services you trust with it.
//
//	client := &http.Client{Transport: httpmw.SignedTransport(nil, signer)} // calling service
//	req, _ := http.NewRequestWithContext(r.Context(), "POST", url, body)    // the handler's context
//	mux.Handle("POST /reserve", httpmw.AcceptSignedFence(verifier)(reserve)) // called service
//
// # Cost
//
// Two Redis round trips per request (acquire, release), plus renewals when
// WithAutoRefresh is on and the handler outlives the renewal interval;
// about ten allocations of the adapter's own. docs/benchmarks.md in the
// repository has the figures and the command.
package httpmw
