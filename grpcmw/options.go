package grpcmw

import (
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

// Option configures UnaryServerInterceptor and StreamServerInterceptor.
// Invalid values panic when the option or the interceptor is built, never
// at call time.
type Option func(*config)

const pkgName = "grpcmw"

// policy adapts a shared guard setter (validated there once for all the
// adapters) to this package's Option.
func policy(set func(*guard.Policy)) Option { return func(c *config) { set(&c.policy) } }

type config struct {
	policy       guard.Policy
	errorHandler ErrorHandler
	logger       *slog.Logger        // nil: slog.Default() at log time
	methods      map[string]struct{} // nil: every method
	shared       map[string]struct{} // WithShared: methods taking shared holds
	expectedHold time.Duration       // WithExpectedHold
}

// newConfig applies opts over the defaults. Streams renew their lease by
// default (see StreamServerInterceptor); unary calls do not, as in httpmw.
func newConfig(opts []Option, stream bool) config {
	c := config{errorHandler: DefaultErrorHandler}
	c.policy.AutoRefresh = stream
	for _, o := range opts {
		if o == nil {
			panic("grpcmw: nil Option")
		}
		o(&c)
	}
	if err := c.policy.Validate(); err != nil {
		panic("grpcmw: " + err.Error())
	}
	if c.shared != nil && c.policy.Mode == core.PermitMode {
		panic("grpcmw: WithShared and WithPermits exclude each other: a key is either read-write or a limit")
	}
	return c
}

// selects reports whether calls to method are locked.
func (c *config) selects(method string) bool {
	if c.methods == nil {
		return true
	}
	_, ok := c.methods[method]
	if !ok {
		_, ok = c.shared[method]
	}
	return ok
}

// WithShared makes calls to the given full method names take shared
// (reader) holds, core.Shared: they run together on one key, while calls
// to the interceptor's other methods take exclusive holds that wait for
// them and exclude them all. A read-write lock per method:
//
//	grpcmw.UnaryServerInterceptor(locker, grpcmw.Template("doc:{doc_id}"),
//		grpcmw.WithShared("/docs.Docs/Get", "/docs.Docs/List"))
//
// The shared methods are locked even when WithMethods leaves them out.
// Once an exclusive call waits, new shared calls wait behind it (no
// writer starvation). Repeated options add up. A key held in another mode
// (a WithPermits interceptor on the same key) or a backend without shared
// holds (Redlock) ends the call Internal and logs a configuration
// error.
func WithShared(methods ...string) Option {
	if len(methods) == 0 {
		panic("grpcmw: WithShared with no method")
	}
	for _, m := range methods {
		if !isFullMethod(m) {
			panic(fmt.Sprintf("grpcmw: WithShared: %q is not a full method name such as \"/pkg.Service/Method\"", m))
		}
	}
	return func(c *config) {
		if c.shared == nil {
			c.shared = make(map[string]struct{}, len(methods))
		}
		for _, m := range methods {
			c.shared[m] = struct{}{}
		}
	}
}

// WithPermits turns the interceptor into a concurrency limit: at most n
// calls per key run at once, across every process sharing the backend
// (core.Permits(n)). A call that finds no permit free within the wait
// (fail fast by default, see WithWait) ends ResourceExhausted with an
// errdetails.RetryInfo. Every interceptor on one key must use the same n;
// one that disagrees, or a backend without permits (Redlock), ends
// the call Internal and logs a configuration error. n must be between 1
// and core.MaxPermits.
//
//	grpcmw.UnaryServerInterceptor(locker, grpcmw.Metadata("x-tenant"), grpcmw.WithPermits(4))
func WithPermits(n int) Option {
	if n < 1 || n > core.MaxPermits {
		panic(fmt.Sprintf("grpcmw: WithPermits(%d): n must be between 1 and %d", n, core.MaxPermits))
	}
	return func(c *config) { c.policy.Mode, c.policy.Permits = core.PermitMode, n }
}

// WithExpectedHold declares how long a call usually holds its lock, so that
// an Aborted answer's RetryInfo is based on it until the interceptor has
// released holds of its own to observe (then on their moving mean), instead
// of on the holder's whole remaining lease; never above that lease.
func WithExpectedHold(d time.Duration) Option {
	if d <= 0 {
		panic("grpcmw: WithExpectedHold needs a positive duration")
	}
	return func(c *config) { c.expectedHold = d }
}

// WithTTL sets the lease length (default: the Locker's, core.DefaultTTL).
// Without auto-refresh, a handler running longer than the TTL loses the
// lock and the call ends Aborted.
func WithTTL(d time.Duration) Option { return policy(guard.SetTTL(pkgName, d)) }

// WithWait makes a call wait up to d for a held lock before ending
// Aborted. The default, and WithWait(0), is to fail fast. The call's own
// deadline still wins (DeadlineExceeded).
func WithWait(d time.Duration) Option { return policy(guard.SetWait(pkgName, d)) }

// WithAutoRefresh renews the lease while the handler runs, every interval
// (default: a tenth of the TTL). Stream interceptors renew by default; this
// option turns renewal on for unary calls or sets the interval. Bound long
// holders with WithMaxHold. To turn the stream default off, pass
// WithLockOptions(core.WithoutAutoRefresh()).
func WithAutoRefresh(interval ...time.Duration) Option {
	return policy(guard.SetAutoRefresh(pkgName, interval))
}

// WithMaxHold caps how long auto-refresh keeps the lock; after it the lock
// is lost, the handler's context cancelled and the call ends Aborted, so a
// hung handler or an endless stream cannot hold a key forever.
func WithMaxHold(d time.Duration) Option { return policy(guard.SetMaxHold(pkgName, d)) }

// WithFailOpen runs the handler without the lock when the lock backend is
// unreachable, instead of ending the call Unavailable. The handler then
// finds no lock in its context (core.FromContext reports false). Only for
// methods where a duplicate is cheaper than an outage.
func WithFailOpen() Option { return policy(guard.SetFailOpen()) }

// WithErrorHandler replaces DefaultErrorHandler, which turns an Error into
// the status the call ends with.
func WithErrorHandler(h ErrorHandler) Option {
	if h == nil {
		panic("grpcmw: WithErrorHandler with a nil handler")
	}
	return func(c *config) { c.errorHandler = h }
}

// WithName sets the low-cardinality lock name telemetry and logs see. The
// default is the full method name ("/pkg.Service/Method"), never the key.
func WithName(name string) Option { return policy(guard.SetName(name)) }

// WithReleaseTimeout bounds the release after the handler returns, which
// runs on a context detached from the call (default 2s).
func WithReleaseTimeout(d time.Duration) Option {
	return policy(guard.SetReleaseTimeout(pkgName, d))
}

// WithLockOptions passes core options (core.WithPrefix, core.WithObserver,
// core.WithoutAutoRefresh, ...) to every acquisition, after the ones the
// other options imply, so they win.
func WithLockOptions(opts ...core.Option) Option {
	return policy(guard.AddLockOptions(pkgName, opts))
}

// WithMethods restricts the interceptor to the given full method names
// ("/pkg.Service/Method", as in grpc.UnaryServerInfo.FullMethod); calls to
// other methods pass through unlocked. Repeated options add up. For richer
// matching, leave WithMethods out and wrap the interceptor in
// go-grpc-middleware's selector (see the package documentation).
func WithMethods(methods ...string) Option {
	if len(methods) == 0 {
		panic("grpcmw: WithMethods with no method")
	}
	for _, m := range methods {
		if !isFullMethod(m) {
			panic(fmt.Sprintf("grpcmw: WithMethods: %q is not a full method name such as \"/pkg.Service/Method\"", m))
		}
	}
	return func(c *config) {
		if c.methods == nil {
			c.methods = make(map[string]struct{}, len(methods))
		}
		for _, m := range methods {
			c.methods[m] = struct{}{}
		}
	}
}

// WithLogger sets where the interceptors report what no status shows:
// misconfiguration, an unreachable backend, lost locks and failed releases
// (default slog.Default()). Records carry the lock name, never the key.
func WithLogger(l *slog.Logger) Option {
	if l == nil {
		panic("grpcmw: WithLogger with a nil logger")
	}
	return func(c *config) { c.logger = l }
}

// isFullMethod reports whether m looks like "/service/method".
func isFullMethod(m string) bool {
	if len(m) < 4 || m[0] != '/' {
		return false
	}
	svc, name, ok := strings.Cut(m[1:], "/")
	return ok && svc != "" && name != "" && !strings.Contains(name, "/")
}
