package etcdlock

import "time"

// Defaults, in one place.
const (
	// DefaultSessionTTL is the length of the one lease a Backend keeps for
	// all its locks and queue entries. It caps the lock TTL (core.WithTTL)
	// and bounds how long the locks and queue entries of a crashed process
	// outlive it. Lock TTLs up to four fifths of it (24s) never wait for a
	// lease renewal.
	DefaultSessionTTL = 30 * time.Second

	// DefaultRetryFor is how long a waiting Acquire rides out transient etcd
	// errors (a leader election, a member restarting) before it reports
	// core.ErrUnavailable. A waiter keeps its place in the queue meanwhile.
	DefaultRetryFor = 5 * time.Second

	// DefaultMaxTxnOps matches etcd's --max-txn-ops default; batched
	// renewals are split into transactions of at most this many reads.
	DefaultMaxTxnOps = 128

	// keepAliveDiv: the session lease is renewed every TTL/keepAliveDiv, so
	// at any moment at least (1-1/keepAliveDiv) of it is known to remain.
	keepAliveDiv = 5

	// opTimeout bounds one background round trip (keep-alive, clean-up
	// delete, revoke) so that a silent network cannot wedge them.
	opTimeout = 2 * time.Second

	// retryMin and retryMax bound the back-off between retries of failed
	// background work and of transient errors during a wait.
	retryMin = 10 * time.Millisecond
	retryMax = 250 * time.Millisecond
)

// Option configures a Backend.
type Option func(*config)

type config struct {
	sessionTTL time.Duration
	retryFor   time.Duration
	maxTxnOps  int
}

func defaultConfig() config {
	return config{
		sessionTTL: DefaultSessionTTL,
		retryFor:   DefaultRetryFor,
		maxTxnOps:  DefaultMaxTxnOps,
	}
}

// WithSessionTTL sets the length of the Backend's session lease (default
// 30s), rounded up to whole seconds as etcd counts leases in seconds (and
// raised by the server to its minimum, 1.5 election timeouts). Every lock
// TTL must be at most this long: a longer core.WithTTL fails the acquisition
// with ErrTTLTooLong. The lease is renewed every fifth of its length, so
// lock TTLs up to four fifths of it never cost an extra round trip.
func WithSessionTTL(d time.Duration) Option {
	if d <= 0 {
		panic("etcdlock: WithSessionTTL needs a positive duration")
	}
	d = (d + time.Second - 1) / time.Second * time.Second
	return func(c *config) { c.sessionTTL = d }
}

// WithRetryFor sets how long a waiting Acquire keeps retrying transient etcd
// errors before it gives up with core.ErrUnavailable (default 5s). Its
// context and wait bound still end it earlier.
func WithRetryFor(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			d = 0
		}
		c.retryFor = d
	}
}

// WithMaxTxnOps sets how many reads one renewal transaction may carry; keep
// it at or below the server's --max-txn-ops (default 128).
func WithMaxTxnOps(n int) Option {
	if n < 1 {
		panic("etcdlock: WithMaxTxnOps needs n >= 1")
	}
	return func(c *config) { c.maxTxnOps = n }
}

func (c *config) keepAliveEvery() time.Duration { return c.sessionTTL / keepAliveDiv }

func (c *config) sessionSeconds() int64 {
	s := int64(c.sessionTTL / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}
