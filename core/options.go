package core

import (
	"strings"
	"time"
)

// Defaults, in one place.
const (
	DefaultTTL            = 10 * time.Second
	DefaultPrefix         = "lock:"
	DefaultHandoffLimit   = 8
	DefaultReleaseTimeout = 2 * time.Second
	// MaxKeyLen bounds the caller's key in bytes. Longer keys are rejected
	// with ErrInvalidKey; keys above hashKeyLen are stored hashed.
	MaxKeyLen = 1024
	// minTTL keeps the drift allowance and the watchdog meaningful.
	minTTL = 10 * time.Millisecond
)

// Option configures a Client (passed to New) or one acquisition (passed to
// Acquire / TryAcquire, where it overrides the Client's setting).
type Option func(*config)

type config struct {
	ttl            time.Duration
	prefix         string
	wait           time.Duration // <0: until ctx ends
	autoRefresh    bool
	refreshEvery   time.Duration // 0: ttl/10
	maxHold        time.Duration // 0: no cap
	name           string
	observer       Observer
	handoffLimit   int
	localQueue     bool
	driftFactor    float64
	driftFixed     time.Duration
	releaseTimeout time.Duration
}

func defaultConfig() config {
	return config{
		ttl:            DefaultTTL,
		prefix:         DefaultPrefix,
		wait:           -1,
		observer:       nopObserver{},
		handoffLimit:   DefaultHandoffLimit,
		localQueue:     true,
		driftFactor:    0.01,
		driftFixed:     2 * time.Millisecond,
		releaseTimeout: DefaultReleaseTimeout,
	}
}

// WithTTL sets the lease length. The lock expires in Redis this long after
// it was acquired or last renewed. Values below 10ms are raised to 10ms.
func WithTTL(d time.Duration) Option {
	return func(c *config) {
		if d < minTTL {
			d = minTTL
		}
		c.ttl = d
	}
}

// WithPrefix sets the namespace prepended to every key (default "lock:").
// The prefix must not contain '{' or '}' (it would steer the Cluster slot);
// such a prefix makes every acquisition fail with ErrInvalidKey.
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithWait bounds how long Acquire waits for a held lock. Zero makes
// Acquire behave like TryAcquire. Without it Acquire waits until its context
// ends. TryAcquire ignores it.
func WithWait(d time.Duration) Option {
	return func(c *config) {
		if d < 0 {
			d = 0
		}
		c.wait = d
	}
}

// WithAutoRefresh turns on the watchdog: the lease is renewed while the lock
// is held, every interval (default: a tenth of the TTL). Renewals that fall
// due together are sent to the backend in one batch.
func WithAutoRefresh(interval ...time.Duration) Option {
	return func(c *config) {
		c.autoRefresh = true
		c.refreshEvery = 0
		if len(interval) > 0 && interval[0] > 0 {
			c.refreshEvery = interval[0]
		}
	}
}

// WithoutAutoRefresh turns the watchdog off for one call when the Client
// enables it by default.
func WithoutAutoRefresh() Option { return func(c *config) { c.autoRefresh = false } }

// WithMaxHold caps the total time a lock may be held through auto-refresh.
// After it the watchdog stops renewing, the lease runs out, and the holder
// is told through Done/Err (ErrLost wrapping ErrHoldCapReached). A hung
// holder therefore cannot keep a key forever.
func WithMaxHold(d time.Duration) Option { return func(c *config) { c.maxHold = d } }

// WithName sets a low-cardinality name for telemetry (a route template, an
// RPC method). Observers see it instead of the raw key.
func WithName(name string) Option { return func(c *config) { c.name = name } }

// WithObserver installs hooks that see every acquire, release, refresh and
// loss (see Observer). The otel package provides one.
func WithObserver(o Observer) Option {
	return func(c *config) {
		if o == nil {
			o = nopObserver{}
		}
		c.observer = o
	}
}

// WithHandoffLimit caps how many times in a row a lock is handed from one
// local holder straight to the next local waiter (one round trip instead of
// release plus acquire). After the cap the lock is released in the backend
// so waiters in other processes get their turn. 0 disables hand-offs.
func WithHandoffLimit(n int) Option {
	return func(c *config) {
		if n < 0 {
			n = 0
		}
		c.handoffLimit = n
	}
}

// WithLocalQueue controls whether goroutines of one Client waiting on the
// same key queue locally so that only the head contends in the backend
// (default true). Turning it off is meant for comparisons and tests.
func WithLocalQueue(on bool) Option { return func(c *config) { c.localQueue = on } }

// WithDrift sets the clock-drift allowance subtracted from the TTL when the
// local validity deadline is computed: factor*TTL + fixed (default 1% + 2ms).
func WithDrift(factor float64, fixed time.Duration) Option {
	return func(c *config) {
		if factor < 0 {
			factor = 0
		}
		if fixed < 0 {
			fixed = 0
		}
		c.driftFactor, c.driftFixed = factor, fixed
	}
}

// WithReleaseTimeout bounds the detached context used for clean-up releases
// (a cancelled acquire whose command may have reached Redis, and releases
// done on behalf of adapters). Default 2s.
func WithReleaseTimeout(d time.Duration) Option {
	return func(c *config) {
		if d > 0 {
			c.releaseTimeout = d
		}
	}
}

func (c *config) renewEvery() time.Duration {
	if c.refreshEvery > 0 {
		return c.refreshEvery
	}
	d := c.ttl / 10
	if d <= 0 {
		d = time.Millisecond
	}
	return d
}

func (c *config) validPrefix() bool { return !strings.ContainsAny(c.prefix, "{}") }

func (c *config) driftFor(ttl time.Duration) time.Duration {
	return time.Duration(float64(ttl)*c.driftFactor) + c.driftFixed
}
