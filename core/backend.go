package core

import (
	"context"
	"time"
)

// Backend is the storage a Client drives: a single Redis (any topology), a
// Redlock set, a sharded set, etcd (package etcdlock), or the in-memory fake
// of package locktest. The Client owns waiting, local queueing, validity
// deadlines, the watchdog and observers, so a Backend only answers one-shot
// calls. Every method must be safe for concurrent use. Package backendtest
// holds the conformance suite a Backend must pass.
//
// Errors: ErrNotHeld when a token does not hold the lock; an error matching
// ErrUnavailable (see Unavailable) when the store cannot be reached.
type Backend interface {
	// Name identifies the backend kind for telemetry ("redis", "redlock", ...).
	Name() string

	// Acquire makes one attempt to grant h with a lease of ttl. On success
	// it returns the new fence, strictly greater than every fence handed
	// out for the key before. When the key is held by another token it
	// returns Grant{Acquired: false, HolderTTL: remaining lease}. When the
	// key already holds h.Token (a retried attempt that landed) it reports
	// success with the fence of that acquisition.
	Acquire(ctx context.Context, h Hold, ttl time.Duration) (Grant, error)

	// Handoff moves the lock held by from to the token to in one step,
	// issuing a new fence and a fresh lease of ttl. It fails with
	// ErrNotHeld when from no longer holds the lock. A backend that cannot
	// hand off at the moment may release from instead and return an error
	// that does not match ErrNotHeld; the next local waiter then contends.
	Handoff(ctx context.Context, from Hold, to string, ttl time.Duration) (Grant, error)

	// Release deletes the hold if h.Token holds it and notifies waiters.
	Release(ctx context.Context, h Hold) (Released, error)

	// Refresh renews many leases at once (the watchdog batches them). It
	// returns one error per request, in order, and never re-creates a
	// lease that expired on a single store.
	Refresh(ctx context.Context, reqs []RefreshRequest) []error

	// Subscribe registers notify to be called when a release notice for
	// keys arrives (and whenever notices may have been missed, such as
	// after a reconnect). It returns once the subscription is active, so a
	// release that happens after Subscribe returns is never missed.
	Subscribe(ctx context.Context, keys Keys, notify func()) (cancel func(), err error)

	// Close frees the backend's connections and the goroutines it started.
	// It does not close clients it was given.
	Close() error
}

// Hold names one hold of a lock in a backend: the key, the secret owner
// token that holds (or asks for) it and, once granted, its fence.
type Hold struct {
	Keys  Keys
	Token string
	// Fence is the fence the backend granted; zero in Acquire. Release
	// uses it to recognise a hold that is gone with no holder after it
	// (a re-sent release); a multi-node backend that re-creates the hold
	// on a node that lost it (a Redlock node restarted empty) raises that
	// node's fence counter to it.
	Fence uint64

	// Mode and, for PermitMode, Permits: the kind of hold asked for. A
	// backend that takes exclusive holds only refuses the others with an
	// error matching ErrModeUnsupported; one whose key is held with
	// another ModeTag answers with an error matching ErrModeMismatch.
	Mode    Mode
	Permits int
	// Queue marks an exclusive request that waits if refused: a backend
	// with writer preference records its claim, so that new shared and
	// permit holds queue behind it (Grant.Claimed). Claimed marks a token
	// whose claim was recorded: a grant to it, or a Release of it, withdraws
	// the claim.
	Queue, Claimed bool

	// QueueFor, when non-zero, asks a QueueBackend to queue a refused
	// exclusive request in the store for that long (or renew its entry),
	// so that a release grants it the lock (Grant.Queued). InQueue marks a
	// token an earlier attempt queued: a grant to it, or a Release of it,
	// takes it out of the queue.
	QueueFor time.Duration
	InQueue  bool
	// GrantLease is, in a Release of an exclusive hold, the lease of a hold
	// the release grants to the head of the store's queue: short, so that
	// a waiter that does not confirm its grant (crashed, paused) blocks
	// the key no longer than that.
	GrantLease time.Duration
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
	// Free is, for a granted shared or permit hold, how many more holds of
	// the kind the key takes right now (-1: no limit). The Client wakes that
	// many local waiters.
	Free int
	// Claimed: a refused exclusive request's claim was recorded (see
	// Hold.Queue).
	Claimed bool
	// Queued: a refused request joined (or renewed its place in) the
	// store's queue (see Hold.QueueFor).
	Queued bool
	// SeenFence, with Queued, is the key's fence counter when the store
	// refused the request: a grant notice with a fence at or below it was
	// sent before the refusal and has lapsed (the waiter read it late),
	// so the waiter ignores it. Zero: unknown, no notice is ignored.
	SeenFence uint64
}

// Released is what Backend.Release reports besides an error.
type Released struct {
	// RemoteWaiters is true when the release notice reached waiters outside
	// this backend's own connection (Redis: PUBLISH counted another
	// subscriber). After a run of local hand-offs the Client then lets its
	// own next waiter stand back briefly, so those waiters get their turn.
	RemoteWaiters bool
	// Granted: the release handed the lock to the head of the store's
	// queue (a QueueBackend).
	Granted bool
}

// RefreshRequest asks to renew one lease.
type RefreshRequest struct {
	Hold
	TTL time.Duration
}

// NativeWaiter is implemented by backends that queue waiters themselves
// (etcd: FIFO by revision, each waiter watching only its predecessor). The
// Client then calls AcquireWait instead of its notify-and-retry loop. It
// waits until the lock is granted, until (when non-zero) passes, or ctx
// ends; a wait that ends without the lock returns Grant{Acquired: false}
// and a nil error (or ctx.Err()). It must leave nothing behind for a wait
// that gave up.
type NativeWaiter interface {
	AcquireWait(ctx context.Context, h Hold, ttl time.Duration, until time.Time) (Grant, error)
}
