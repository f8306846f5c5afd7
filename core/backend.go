package core

import (
	"context"
	"time"
)

// Backend is the storage a Client drives: a single Redis (any topology), a
// Redlock set, a sharded set, or the in-memory fake of package locktest.
// The Client owns waiting, local queueing, validity deadlines, the watchdog
// and observers, so a Backend only answers one-shot questions. Every method
// must be safe for concurrent use.
//
// Errors: ErrNotHeld when a token does not match, an error wrapping
// ErrUnavailable (or ErrQuorum) when the store cannot be reached.
type Backend interface {
	// Name identifies the backend kind for telemetry ("redis", "redlock", ...).
	Name() string

	// Acquire makes one attempt to set keys.Lock to token with a lease of
	// ttl. On success it returns the new fence, strictly greater than every
	// fence handed out for this key before. When the key is held by another
	// token it returns Grant{Acquired: false, HolderTTL: remaining lease}.
	// When keys.Lock already holds token (a retried attempt that landed) it
	// must report success with the fence of that acquisition.
	Acquire(ctx context.Context, keys Keys, token string, ttl time.Duration) (Grant, error)

	// Handoff moves a held lock from one token to another in one step,
	// issuing a new fence and a fresh lease of ttl. It fails with ErrNotHeld
	// when keys.Lock no longer holds from.
	Handoff(ctx context.Context, keys Keys, from, to string, ttl time.Duration) (Grant, error)

	// Release deletes keys.Lock if it holds token and notifies waiters.
	Release(ctx context.Context, keys Keys, token string) error

	// Refresh renews many leases at once (the watchdog batches them). It
	// returns one error per request, in order.
	Refresh(ctx context.Context, reqs []RefreshRequest) []error

	// Subscribe registers notify to be called when a release notice for keys
	// arrives (and whenever notices may have been missed, such as after a
	// reconnect). It returns once the subscription is active, so a release
	// that happens after Subscribe returns is never missed.
	Subscribe(ctx context.Context, keys Keys, notify func()) (cancel func(), err error)

	// Close frees the backend's connections and goroutines it started. It
	// does not close clients it was given.
	Close() error
}

// Grant is the answer of Backend.Acquire and Backend.Handoff.
type Grant struct {
	Acquired  bool
	Fence     uint64
	HolderTTL time.Duration // when not acquired: the holder's remaining lease
	// Sent, when set by a NativeWaiter, is the local (monotonic) time at
	// which the command that started the granted lease was sent; the
	// validity deadline counts from it. Zero: from the start of the call.
	Sent time.Time
}

// RefreshRequest asks to renew one lease.
type RefreshRequest struct {
	Keys  Keys
	Token string
	TTL   time.Duration
}

// NativeWaiter is implemented by backends that queue waiters themselves
// (etcd: FIFO by revision, each waiter watching only its predecessor). The
// Client then calls AcquireWait instead of its notify-and-retry loop. It
// waits until the lock is granted, until (when non-zero) passes, or ctx
// ends; a wait that ends without the lock returns Grant{Acquired: false}
// and a nil error (or ctx.Err()). It must leave nothing behind for a wait
// that gave up.
type NativeWaiter interface {
	AcquireWait(ctx context.Context, keys Keys, token string, ttl time.Duration, until time.Time) (Grant, error)
}

// remoteWaiters is implemented by backends whose release can tell whether
// waiters in other processes received the notice (Redis: PUBLISH returns
// its receivers). After WithHandoffLimit local hand-offs the Client then
// lets its own next waiter yield briefly, so the remote ones get the lock.
type remoteWaiters interface {
	ReleaseWaiters(ctx context.Context, keys Keys, token string) (othersWaiting bool, err error)
}
