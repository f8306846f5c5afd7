package core

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"time"
)

type lockState int

const (
	stateHeld lockState = iota
	stateReleased
	stateLost
)

// Lock is one acquisition of a key. It is safe for concurrent use. A Lock
// ends exactly once (see end.go): released by Release (Err stays nil), handed
// off by Release to the next local waiter (also a release), or lost (Err
// reports ErrLost); Done is closed either way.
type Lock struct {
	c       *Client
	key     string
	prefix  string
	keys    Keys
	token   string
	fence   uint64
	cfg     config
	start   time.Time // when the acquiring command was sent (Client clock)
	handoff bool
	// confirmBy: a hold granted from the store queue and not confirmed yet
	// (queue_remote.go) is renewed at this time, watchdog or not.
	confirmBy time.Time
	data      any // observer state
	done      chan struct{}

	mu        sync.Mutex
	state     lockState
	err       error
	releasing bool          // Release has started: a renewal that finds the token gone lost a race with it
	ttl       time.Duration // the lease length renewals ask for
	capped    bool          // the lease was shortened to end at the WithMaxHold cap
	renewals  int           // successful renewals
	deadline  time.Time     // local validity deadline (Client clock)
	timer     Timer         // fires at deadline
	callbacks map[*int]func()

	// watchdog bookkeeping, guarded by the renewer's mutex
	due     time.Time
	heapIdx int
}

func (c *Client) newLock(key string, cfg *config, h Hold, fence uint64, sent time.Time) *Lock {
	l := &Lock{
		c: c, key: key, prefix: cfg.prefix, keys: h.Keys, token: h.Token, fence: fence,
		cfg: *cfg, start: sent, done: make(chan struct{}), ttl: cfg.ttl,
		deadline: sent.Add(cfg.ttl - cfg.driftFor(cfg.ttl)), heapIdx: -1,
	}
	l.capped = cfg.maxHold > 0 && cfg.ttl >= cfg.maxHold
	return l
}

// lateOnArrival reports whether a lock just granted is already (all but)
// past its validity deadline: the reply came back after the lease, so the
// lock would be lost on arrival and another owner may hold the key.
func (l *Lock) lateOnArrival(now time.Time) bool {
	return l.deadline.Sub(now) < minTTL && !l.cfg.acceptLateGrants
}

// Key returns the caller's key (without prefix).
func (l *Lock) Key() string { return l.key }

// Prefix returns the namespace the lock was taken under (see WithPrefix).
func (l *Lock) Prefix() string { return l.prefix }

// Token returns the 128-bit random owner token, hex-encoded. It is a secret:
// whoever has it can release the lock.
func (l *Lock) Token() string { return l.token }

// Fence returns the fencing token: strictly greater than the fence of every
// earlier acquisition of the same key. Storage that records the highest
// fence it has seen can refuse writes from older holders (see sqlguard).
func (l *Lock) Fence() uint64 { return l.fence }

// Owner returns an id derived from the owner token (a hash prefix) that may
// be shared with other services; it cannot be used to release the lock.
func (l *Lock) Owner() string { return ownerID(l.token) }

// FenceToken returns what a downstream service needs to guard its writes.
func (l *Lock) FenceToken() FenceToken {
	return FenceToken{Key: l.key, Fence: l.fence, Owner: l.Owner()}
}

// Deadline returns the local validity deadline: the lock is certainly held
// until then (on the Client's clock), unless Done is closed earlier.
func (l *Lock) Deadline() time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deadline
}

// TTL returns the lease length that renewals ask for (the last one given to
// WithTTL or Refresh). A lease shortened by WithMaxHold may end sooner.
func (l *Lock) TTL() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ttl
}

// Done returns a channel that is closed when the lock ends: released, or
// lost. After a loss it is closed before the lease can have expired in the
// backend, so the holder hears of it before anyone else can hold the key.
func (l *Lock) Done() <-chan struct{} { return l.done }

// Err returns nil while the lock is held and after a Release; after a loss
// it returns an error matching ErrLost.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Refresh extends the lease to ttl from now (ttl <= 0 keeps the current
// length), never past the WithMaxHold cap: at the cap it returns an error
// matching ErrHoldCapReached and leaves the lease to run out. It fails with
// ErrNotHeld when the lock is no longer ours, and never re-creates an
// expired lock.
func (l *Lock) Refresh(ctx context.Context, ttl time.Duration) error {
	return l.c.refresh(ctx, l, ttl)
}

// Release gives the lock up: to the next local waiter in one round trip, or
// back to the backend (which notifies waiters elsewhere). Releasing a lock
// that is no longer ours returns ErrNotHeld and leaves the holder's lock
// alone. Use a context that outlives the request (context.WithoutCancel
// plus a timeout) so that a cancelled caller cannot leak the lock.
func (l *Lock) Release(ctx context.Context) error {
	return l.c.release(ctx, l)
}

// Context returns a copy of parent that carries the lock (see FromContext)
// and is cancelled, with the loss as its cause, when the lock is lost. Call
// the CancelFunc when done to free resources.
func (l *Lock) Context(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ContextWithLock(parent, l))
	stop := l.afterEnd(func() {
		if err := l.Err(); err != nil {
			cancel(err)
		}
	})
	return ctx, func() { stop(); cancel(context.Canceled) }
}

// afterEnd registers f to run once when the lock ends (immediately if it
// has). The returned func unregisters it.
func (l *Lock) afterEnd(f func()) (stop func()) {
	l.mu.Lock()
	if l.state != stateHeld {
		l.mu.Unlock()
		f()
		return func() {}
	}
	if l.callbacks == nil {
		l.callbacks = make(map[*int]func())
	}
	id := new(int)
	l.callbacks[id] = f
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		delete(l.callbacks, id)
		l.mu.Unlock()
	}
}

func (l *Lock) hold() Hold {
	return Hold{Keys: l.keys, Token: l.token, Fence: l.fence, Mode: l.cfg.mode, Permits: l.cfg.permits,
		GrantLease: min(l.cfg.grantLease, l.cfg.ttl)}
}

// Mode returns the kind of hold: Exclusive, SharedMode or PermitMode.
func (l *Lock) Mode() Mode { return l.cfg.mode }

// Permits returns n of Permits(n) for a permit hold, else 0.
func (l *Lock) Permits() int {
	if l.cfg.mode != PermitMode {
		return 0
	}
	return l.cfg.permits
}

func (l *Lock) info() LockInfo {
	return LockInfo{Key: l.key, Name: l.cfg.name, Prefix: l.prefix, Backend: l.c.b.Name(), Mode: l.cfg.mode}
}

func (l *Lock) fenceOrZero() uint64 {
	if l == nil {
		return 0
	}
	return l.fence
}

func (l *Lock) isHeld() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state == stateHeld
}

func newToken() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("core: crypto/rand failed: " + err.Error())
	}
	return hex.EncodeToString(b[:])
}

// OwnerID is Lock.Owner's derivation from an owner token (the first 8
// bytes of its SHA-256, hex), for tools that read tokens from the backend
// and must show holders the way the holders name themselves.
func OwnerID(token string) string { return ownerID(token) }

func ownerID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:8])
}
