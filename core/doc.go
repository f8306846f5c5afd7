// Package core is the lock of fencedlock: one holder per key at a time
// across processes, with a fencing token that storage can check.
//
// A Client hands out Locks from a Backend (Redis in any topology through
// New, or another Backend through NewWithBackend). Acquire is one round
// trip: a Lua script sets the key with NX PX and a 128-bit random owner
// token, bumps the key's fence counter and returns the fence. Release is one
// round trip: compare the token, delete, publish a release notice.
//
// Waiting never polls. Goroutines of one Client that want the same key queue
// locally and only the head asks Redis; it sleeps until a release notice
// (all waiters of a Client share one pub/sub connection) or until the
// holder's lease runs out. A release with local waiters hands the lock
// straight to the next one in a single round trip (new token, new fence),
// at most WithHandoffLimit times in a row so other processes get a turn.
// Across processes the waiting heads queue in Redis (WithStoreQueue, on by
// default on a single Redis and NewSharded): a release grants the lock to
// the first of them in the same script (new token, new fence, a short
// grant lease, WithGrantLease) and wakes no one else, so instances take
// turns in arrival order and the next one holds the lock without an
// acquire of its own. See docs/how-it-works.md.
//
// Every lock keeps a validity deadline on the monotonic clock: the time its
// acquiring command was sent, plus the TTL, minus a drift allowance. When
// the deadline passes without a renewal (the watchdog of WithAutoRefresh, or
// Refresh), the lock is lost: Done is closed and Err reports ErrLost before
// the lease can have expired in Redis. Wall-clock time is never used.
//
// Adapters (httpmw, ginmw, grpcmw) depend on the Locker interface and find
// the lock in the request context with FromContext; sqlguard reads its
// fence from there.
package core
