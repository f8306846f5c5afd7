package core

import (
	"fmt"
	"strings"
	"time"
)

// Defaults, in one place.
const (
	DefaultTTL    = 10 * time.Second
	DefaultPrefix = "lock:"
	// MaxKeyLen bounds the caller's key in bytes. Longer keys are rejected
	// with ErrInvalidKey; keys above hashKeyLen are stored hashed.
	MaxKeyLen = 1024

	defaultHandoffLimit   = 8
	defaultReleaseTimeout = 2 * time.Second
	// minTTL keeps the drift allowance and the watchdog meaningful.
	minTTL = 10 * time.Millisecond
)

// Option configures a Client, one acquisition, or a backend. There is one
// Option type; where an option may go is part of its doc:
//
//   - Call options (WithTTL, WithWait, WithAutoRefresh, ...) given to a
//     Client constructor set defaults; given to Acquire or TryAcquire they
//     override the default for that call.
//   - Client options (WithClock) go to the Client constructors only.
//   - Redis options (WithReplicaAck, WithShardedPubSub) go to the
//     constructors that build a Redis backend: New, NewSharded, NewRedlock,
//     NewRedisBackend, NewRedlockBackend.
//   - Redlock options (WithQuorum, WithNodeTimeout) go to NewRedlock and
//     NewRedlockBackend.
//
// A constructor given an option it does not take panics (a configuration
// mistake); Acquire and TryAcquire return an error matching
// ErrInvalidOption.
type Option interface{ spec() *optionSpec }

type scope uint8

const (
	scopeCall scope = 1 << iota
	scopeClient
	scopeRedis
	scopeRedlock
)

const (
	scopesClient  = scopeCall | scopeClient
	scopesNew     = scopesClient | scopeRedis
	scopesRedlock = scopesNew | scopeRedlock
)

type optionSpec struct {
	name  string
	scope scope
	apply func(*config)
}

func (o *optionSpec) spec() *optionSpec { return o }

func callOption(name string, f func(*config)) Option {
	return &optionSpec{name: name, scope: scopeCall, apply: f}
}

func clientOption(name string, f func(*config)) Option {
	return &optionSpec{name: name, scope: scopeClient, apply: f}
}

// applyOptions applies opts to cfg, refusing those outside allowed.
func applyOptions(cfg *config, opts []Option, allowed scope, where string) error {
	for _, o := range opts {
		if o == nil {
			return fmt.Errorf("%w: nil Option given to %s", ErrInvalidOption, where)
		}
		s := o.spec()
		if s.scope&allowed == 0 {
			return fmt.Errorf("%w: %s is not valid for %s; %s take it", ErrInvalidOption, s.name, where, s.scope.takers())
		}
		s.apply(cfg)
	}
	return nil
}

// mustApply is applyOptions for constructors: a mistake panics.
func mustApply(cfg *config, opts []Option, allowed scope, where string) {
	if err := applyOptions(cfg, opts, allowed, where); err != nil {
		panic(err.Error())
	}
}

func (s scope) takers() string {
	switch s {
	case scopeClient:
		return "only the Client constructors (New, NewRedlock, NewSharded, NewWithBackend)"
	case scopeRedis:
		return "only the constructors of Redis backends (New, NewSharded, NewRedlock, NewRedisBackend, NewRedlockBackend)"
	case scopeRedlock:
		return "only NewRedlock and NewRedlockBackend"
	}
	return "Client constructors and single calls"
}

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
	mode           Mode // Shared, Permits
	permits        int
	storeQueue     bool          // WithStoreQueue
	grantLease     time.Duration // WithGrantLease
	// grantFromArrival counts a store-queue grant's validity from the
	// notice's arrival (tests only: the negative control of the rule in
	// grantedLock)
	grantFromArrival bool
	// acceptLateGrants keeps a grant whose reply came after its validity
	// (tests only: the negative control of lockFrom's check)
	acceptLateGrants bool

	clock   Clock
	redis   redisConfig
	redlock redlockConfig
}

func defaultConfig() config {
	return config{
		ttl:            DefaultTTL,
		prefix:         DefaultPrefix,
		wait:           -1,
		observer:       NopObserver{},
		handoffLimit:   defaultHandoffLimit,
		localQueue:     true,
		storeQueue:     true,
		grantLease:     DefaultGrantLease,
		driftFactor:    0.01,
		driftFixed:     2 * time.Millisecond,
		releaseTimeout: defaultReleaseTimeout,
		clock:          systemClock{},
	}
}

// WithTTL sets the lease length (default 10s). The lock expires in the
// backend this long after it was acquired or last renewed. Values below
// 10ms are raised to 10ms. A call option.
func WithTTL(d time.Duration) Option {
	return callOption("WithTTL", func(c *config) { c.ttl = max(d, minTTL) })
}

// WithPrefix sets the namespace prepended to every key (default "lock:").
// The prefix must not contain '{' or '}' (it would steer the Cluster slot):
// a constructor panics on one, a call fails with ErrInvalidKey. A call
// option.
func WithPrefix(p string) Option {
	return callOption("WithPrefix", func(c *config) { c.prefix = p })
}

// WithWait bounds how long Acquire waits for a held lock. Zero makes
// Acquire behave like TryAcquire. Without it Acquire waits until its context
// ends. TryAcquire ignores it. A call option.
func WithWait(d time.Duration) Option {
	return callOption("WithWait", func(c *config) { c.wait = max(d, 0) })
}

// WithAutoRefresh turns on the watchdog: the lease is renewed while the lock
// is held, every interval (default: a tenth of the TTL). Renewals that fall
// due together are sent to the backend in one batch. A call option.
func WithAutoRefresh(interval ...time.Duration) Option {
	return callOption("WithAutoRefresh", func(c *config) {
		c.autoRefresh = true
		c.refreshEvery = 0
		if len(interval) > 0 && interval[0] > 0 {
			c.refreshEvery = interval[0]
		}
	})
}

// WithoutAutoRefresh turns the watchdog off for one call when the Client
// enables it by default. A call option.
func WithoutAutoRefresh() Option {
	return callOption("WithoutAutoRefresh", func(c *config) { c.autoRefresh = false })
}

// WithMaxHold caps the total time a lock may be held. No renewal, by the
// watchdog or by Lock.Refresh, extends the lease past the cap; when the
// lease runs out the holder is told through Done/Err (ErrLost wrapping
// ErrHoldCapReached). A hung holder therefore cannot keep a key forever. A
// call option.
func WithMaxHold(d time.Duration) Option {
	return callOption("WithMaxHold", func(c *config) { c.maxHold = d })
}

// WithName sets a low-cardinality name for telemetry (a route template, an
// RPC method). Observers see it instead of the raw key. A call option.
func WithName(name string) Option {
	return callOption("WithName", func(c *config) { c.name = name })
}

// WithObserver installs hooks that see every acquire, release, refresh and
// loss (see Observer). The otel package provides one. A call option.
func WithObserver(o Observer) Option {
	if o == nil {
		o = NopObserver{}
	}
	return callOption("WithObserver", func(c *config) { c.observer = o })
}

// WithHandoffLimit caps how many times in a row a lock is handed from one
// local holder straight to the next local waiter (one round trip instead of
// release plus acquire; default 8). After the cap the lock is released in
// the backend so waiters in other processes get their turn. 0 disables
// hand-offs. A call option.
func WithHandoffLimit(n int) Option {
	return callOption("WithHandoffLimit", func(c *config) { c.handoffLimit = max(n, 0) })
}

// WithStoreQueue turns the store queue on or off (default on, on the
// backends that have one: a single Redis without WithReplicaAck, and
// NewSharded over it). With it, an exclusive request that waits joins a
// queue in Redis, and a release grants the lock to the head of that queue
// in the same script: instances take turns in arrival order, the next one
// holds the lock without an acquire round trip, and a release wakes nobody
// else. Off, waiters of other processes race for the key after each
// release notice (a spread of up to 1ms, shorter for those that lost
// more). The default is on because it is fairer and does less work; off
// exists for comparisons. A Client with it off that shares a key with
// Clients using it gets the key only while their queue is empty (a grant
// notice wakes only its grantee). A call option.
func WithStoreQueue(on bool) Option {
	return callOption("WithStoreQueue", func(c *config) { c.storeQueue = on })
}

// WithGrantLease sets the lease of a hold that a release grants to a
// waiter from the store queue, until the waiter confirms it with its first
// renewal (default DefaultGrantLease, at most the TTL). A waiter that
// crashed or was paused when granted blocks the key no longer than this;
// a waiter that cannot confirm within it loses the grant (Done closes,
// fenced storage refuses it). A call option.
func WithGrantLease(d time.Duration) Option {
	return callOption("WithGrantLease", func(c *config) { c.grantLease = max(d, minTTL) })
}

// WithDrift sets the clock-drift allowance subtracted from the TTL when the
// local validity deadline is computed: factor*TTL + fixed (default 1% +
// 2ms). A call option.
func WithDrift(factor float64, fixed time.Duration) Option {
	return callOption("WithDrift", func(c *config) {
		c.driftFactor, c.driftFixed = max(factor, 0), max(fixed, 0)
	})
}

// WithReleaseTimeout bounds the detached context used for clean-up releases
// (a cancelled acquire whose command may have reached the backend, locks
// ended by Close). Default 2s. A call option.
func WithReleaseTimeout(d time.Duration) Option {
	return callOption("WithReleaseTimeout", func(c *config) {
		if d > 0 {
			c.releaseTimeout = d
		}
	})
}

// withLocalQueue turns the local queue off (comparisons and tests only;
// export_test.go exports it to the package's tests).
func withLocalQueue(on bool) Option {
	return callOption("withLocalQueue", func(c *config) { c.localQueue = on })
}

func (c *config) renewEvery() time.Duration {
	if c.refreshEvery > 0 {
		return c.refreshEvery
	}
	return max(c.ttl/10, time.Millisecond)
}

func (c *config) validPrefix() bool { return !strings.ContainsAny(c.prefix, "{}") }

func (c *config) driftFor(ttl time.Duration) time.Duration {
	return time.Duration(float64(ttl)*c.driftFactor) + c.driftFixed
}
