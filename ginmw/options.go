package ginmw

import (
	"log/slog"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

// Option configures Lock, LockKeys, LockRW and Limit. Invalid values panic when the option
// is built or the middleware is, never at request time.
type Option func(*config)

const pkgName = "ginmw"

// policy adapts a shared guard setter (validated there once for all the
// adapters) to this package's Option.
func policy(set func(*guard.Policy)) Option { return func(c *config) { set(&c.policy) } }

type config struct {
	policy       guard.Policy
	errorHandler ErrorHandler
	logger       *slog.Logger // nil: slog.Default() at log time
	retryMax     time.Duration
	retryJitter  float64
	expectedHold time.Duration
	shareSafe    bool // LockRW: safe methods take shared holds
}

func newConfig(opts []Option) config {
	c := config{errorHandler: DefaultErrorHandler}
	for _, o := range opts {
		if o == nil {
			panic("ginmw: nil Option")
		}
		o(&c)
	}
	if err := c.policy.Validate(); err != nil {
		panic("ginmw: " + err.Error())
	}
	return c
}

// WithTTL sets the lease length (default: the Locker's, core.DefaultTTL).
// Without WithAutoRefresh, a handler running longer than the TTL loses the
// lock.
func WithTTL(d time.Duration) Option { return policy(guard.SetTTL(pkgName, d)) }

// WithWait makes a request wait up to d for a held lock before answering
// 409. The default, and WithWait(0), is to fail fast. The request's own
// deadline still wins (504).
func WithWait(d time.Duration) Option { return policy(guard.SetWait(pkgName, d)) }

// WithAutoRefresh renews the lease while the handler runs, every interval
// (default: a tenth of the TTL). Use it for handlers that may outlast the
// TTL; bound them with WithMaxHold.
func WithAutoRefresh(interval ...time.Duration) Option {
	return policy(guard.SetAutoRefresh(pkgName, interval))
}

// WithMaxHold caps how long auto-refresh keeps the lock; after it the lock
// is lost and the request context cancelled, so a hung handler cannot hold
// a key forever.
func WithMaxHold(d time.Duration) Option { return policy(guard.SetMaxHold(pkgName, d)) }

// WithFailOpen runs the handler without the lock when the lock backend is
// unreachable, instead of answering 503. The handler then finds no lock in
// c.Request.Context() (core.FromContext reports false). Only for routes where a
// duplicate is cheaper than an outage.
func WithFailOpen() Option { return policy(guard.SetFailOpen()) }

// WithErrorHandler replaces DefaultErrorHandler for the responses the
// middleware writes itself.
func WithErrorHandler(h ErrorHandler) Option {
	if h == nil {
		panic("ginmw: WithErrorHandler with a nil handler")
	}
	return func(c *config) { c.errorHandler = h }
}

// WithName sets the low-cardinality lock name telemetry sees. The default
// is the route (c.FullPath(), such as "/coupons/:id/claim"), never the raw
// path.
func WithName(name string) Option { return policy(guard.SetName(name)) }

// WithReleaseTimeout bounds the release after the handler returns, which
// runs on a context detached from the request (default 2s).
func WithReleaseTimeout(d time.Duration) Option {
	return policy(guard.SetReleaseTimeout(pkgName, d))
}

// WithLockOptions passes core options (core.WithPrefix, core.WithObserver,
// ...) to every acquisition, after the ones the other options imply.
func WithLockOptions(opts ...core.Option) Option {
	return policy(guard.AddLockOptions(pkgName, opts))
}

// WithMaxRetryAfter caps the Retry-After hint of this route's 409 and 503
// answers. Without it a 409 hint is the smaller of the holder's remaining
// lease and the hold time observed on the route (a moving mean of released
// holds), and a 503 hint is about 2 s.
func WithMaxRetryAfter(d time.Duration) Option {
	if d <= 0 {
		panic("ginmw: WithMaxRetryAfter needs a positive duration")
	}
	return func(c *config) { c.retryMax = d }
}

// WithExpectedHold declares how long this route usually holds its lock, so
// that a 409's Retry-After is based on it until the route has released
// holds of its own to observe (then on their moving mean), instead of on
// the holder's whole remaining lease. The hint never exceeds the holder's
// lease or WithMaxRetryAfter.
func WithExpectedHold(d time.Duration) Option {
	if d <= 0 {
		panic("ginmw: WithExpectedHold needs a positive duration")
	}
	return func(c *config) { c.expectedHold = d }
}

// WithRetryJitter adds up to fraction (0 < fraction <= 1) of the hint at
// random to each Retry-After, so that clients refused in the same moment
// spread out. Off by default: the header counts whole seconds, so jitter
// only spreads hints of a few seconds or more.
func WithRetryJitter(fraction float64) Option {
	if !(fraction > 0 && fraction <= 1) {
		panic("ginmw: WithRetryJitter needs a fraction in (0, 1]")
	}
	return func(c *config) { c.retryJitter = fraction }
}

// WithLogger sets where the middleware reports what no response shows:
// misconfiguration, an unreachable backend, lost locks and failed releases
// (default slog.Default()). Records carry the lock name, never the key.
func WithLogger(l *slog.Logger) Option {
	if l == nil {
		panic("ginmw: WithLogger with a nil logger")
	}
	return func(c *config) { c.logger = l }
}
