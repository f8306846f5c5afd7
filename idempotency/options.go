package idempotency

import (
	"context"
	"log/slog"
	"net/http"
	"net/textproto"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

// Defaults, in one place.
const (
	DefaultHeader         = "Idempotency-Key"
	ReplayedHeader        = "Idempotent-Replayed"
	DefaultWait           = 10 * time.Second
	DefaultMaxBody        = 1 << 20 // stored response body
	DefaultMaxRequestBody = 1 << 20 // fingerprinted request body
	DefaultStoreTimeout   = 2 * time.Second
)

// Option configures the middleware (HTTP, gin, gRPC). Invalid values panic
// when the option is built, never at request time.
type Option func(*config)

type config struct {
	policy         guard.Policy
	header         string
	optional       bool
	tenant         func(*http.Request) string
	ctxTenant      func(context.Context) string
	methods        map[string]bool // gRPC: nil means every unary method
	route          func(*http.Request) string
	retention      time.Duration
	maxBody        int
	maxRequestBody int64
	store5xx       bool
	storeHeaders   []string
	storeTimeout   time.Duration
	logger         *slog.Logger
}

func newConfig(opts []Option) config {
	c := config{
		policy:         guard.Policy{Wait: DefaultWait},
		header:         DefaultHeader,
		route:          func(r *http.Request) string { return r.Pattern },
		retention:      DefaultRetention,
		maxBody:        DefaultMaxBody,
		maxRequestBody: DefaultMaxRequestBody,
		storeHeaders:   []string{"Content-Type", "Location"},
		storeTimeout:   DefaultStoreTimeout,
	}
	for _, o := range opts {
		if o == nil {
			panic("idempotency: nil Option")
		}
		o(&c)
	}
	if err := c.policy.Validate(); err != nil {
		panic("idempotency: " + err.Error())
	}
	return c
}

func positive(name string, d time.Duration) {
	if d <= 0 {
		panic("idempotency: " + name + " needs a positive duration")
	}
}

// WithWait bounds how long a duplicate waits for the running attempt with
// the same key before it answers 409 (default DefaultWait); after the wait
// it gets the stored answer. 0 answers 409 at once, as the draft describes.
func WithWait(d time.Duration) Option {
	set := guard.SetWait("idempotency", d)
	return func(c *config) { set(&c.policy) }
}

// WithTTL sets the lease of the per-key lock (default core.DefaultTTL).
func WithTTL(d time.Duration) Option {
	set := guard.SetTTL("idempotency", d)
	return func(c *config) { set(&c.policy) }
}

// WithAutoRefresh renews the per-key lock while the handler runs.
func WithAutoRefresh(interval ...time.Duration) Option {
	set := guard.SetAutoRefresh("idempotency", interval)
	return func(c *config) { set(&c.policy) }
}

// WithLockOptions passes core options (core.WithPrefix, ...) to every
// acquisition.
func WithLockOptions(opts ...core.Option) Option {
	set := guard.AddLockOptions("idempotency", opts)
	return func(c *config) { set(&c.policy) }
}

// WithRetention sets how long answers are kept (default 24h).
func WithRetention(d time.Duration) Option {
	positive("WithRetention", d)
	return func(c *config) { c.retention = d }
}

// WithHeader reads the key from another header (default Idempotency-Key).
func WithHeader(name string) Option {
	if name == "" {
		panic("idempotency: WithHeader with an empty name")
	}
	return func(c *config) { c.header = textproto.CanonicalMIMEHeaderKey(name) }
}

// WithOptionalKey runs requests without a key unguarded instead of
// answering 400.
func WithOptionalKey() Option { return func(c *config) { c.optional = true } }

// WithTenant scopes keys by what f returns (a tenant, account or
// principal id), so two clients sending the same key never share an answer.
func WithTenant(f func(*http.Request) string) Option {
	if f == nil {
		panic("idempotency: WithTenant with a nil func")
	}
	return func(c *config) { c.tenant = f }
}

// WithContextTenant scopes keys by what f finds in the request context
// (an authenticated principal put there by earlier middleware). It is how
// gRPC methods are scoped by tenant; over HTTP it is used when WithTenant
// is not given.
func WithContextTenant(f func(context.Context) string) Option {
	if f == nil {
		panic("idempotency: WithContextTenant with a nil func")
	}
	return func(c *config) { c.ctxTenant = f }
}

// WithMethods limits a gRPC interceptor to these full method names
// ("/pkg.Service/Method"); other methods pass through. The default is
// every unary method. HTTP middleware ignores it.
func WithMethods(methods ...string) Option {
	if len(methods) == 0 {
		panic("idempotency: WithMethods with no method")
	}
	return func(c *config) {
		c.methods = make(map[string]bool, len(methods))
		for _, m := range methods {
			c.methods[m] = true
		}
	}
}

// WithRoute replaces the scope's route (default r.Pattern). ginmw uses it
// for gin's route template.
func WithRoute(f func(*http.Request) string) Option {
	if f == nil {
		panic("idempotency: WithRoute with a nil func")
	}
	return func(c *config) { c.route = f }
}

// WithMaxBody bounds the stored response body (default 1 MiB). A larger
// response is sent as it is but not stored, so a retry runs the handler
// again; the miss is logged.
func WithMaxBody(n int) Option {
	if n < 0 {
		panic("idempotency: WithMaxBody needs n >= 0")
	}
	return func(c *config) { c.maxBody = n }
}

// WithMaxRequestBody bounds the request body that is read to fingerprint
// it (default 1 MiB); above it the answer is 413.
func WithMaxRequestBody(n int64) Option {
	if n < 0 {
		panic("idempotency: WithMaxRequestBody needs n >= 0")
	}
	return func(c *config) { c.maxRequestBody = n }
}

// WithStoreServerErrors stores 5xx answers (and gRPC server-fault codes)
// too, so a retry replays the failure instead of running again.
func WithStoreServerErrors() Option { return func(c *config) { c.store5xx = true } }

// WithStoredHeaders names the response headers kept with an answer
// (default Content-Type and Location).
func WithStoredHeaders(names ...string) Option {
	hs := make([]string, len(names))
	for i, n := range names {
		hs[i] = textproto.CanonicalMIMEHeaderKey(n)
	}
	return func(c *config) { c.storeHeaders = hs }
}

// WithStoreTimeout bounds the store write after the handler, which runs on
// a context detached from the request (default 2s).
func WithStoreTimeout(d time.Duration) Option {
	positive("WithStoreTimeout", d)
	return func(c *config) { c.storeTimeout = d }
}

// WithLogger sets where failures no response shows are reported (default
// slog.Default()). Records never carry the key.
func WithLogger(l *slog.Logger) Option {
	if l == nil {
		panic("idempotency: WithLogger with a nil logger")
	}
	return func(c *config) { c.logger = l }
}
