package ginmw

import (
	"net/http"
	"strconv"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
	"github.com/gin-gonic/gin"
)

// Lock returns a handler that runs the rest of the chain only while holding
// the lock on key(c), and releases it when the chain returns:
//
//	r.POST("/coupons/:id/claim", ginmw.Lock(locker, ginmw.Template("coupon:{id}")), claim)
//
// It fails fast by default (409 when the key is held); see WithWait.
func Lock(l core.Locker, key KeyFunc, opts ...Option) gin.HandlerFunc {
	if key == nil {
		panic("ginmw: Lock with a nil KeyFunc")
	}
	return newMiddleware("Lock", l, []KeyFunc{key}, opts)
}

// LockKeys is Lock over several keys, for routes that touch more than one
// resource, such as "/transfer/:from/:to":
//
//	ginmw.LockKeys(locker, []ginmw.KeyFunc{
//		ginmw.Template("account:{from}"), ginmw.Template("account:{to}"),
//	})
//
// The keys are acquired in sorted order, so two requests locking the same
// pair in opposite directions cannot deadlock; duplicates are locked once.
// The chain runs when all are held and they are released together.
func LockKeys(l core.Locker, keys []KeyFunc, opts ...Option) gin.HandlerFunc {
	if len(keys) == 0 {
		panic("ginmw: LockKeys with no KeyFunc")
	}
	for _, k := range keys {
		if k == nil {
			panic("ginmw: LockKeys with a nil KeyFunc")
		}
	}
	return newMiddleware("LockKeys", l, append([]KeyFunc(nil), keys...), opts)
}

func newMiddleware(fn string, l core.Locker, keys []KeyFunc, opts []Option) gin.HandlerFunc {
	if l == nil {
		panic("ginmw: " + fn + " with a nil core.Locker")
	}
	cfg := newConfig(opts)
	m := &middleware{l: l, keys: keys, cfg: cfg, outage: guard.NewOutageLog(0, nil),
		hints: &guard.Hints{Max: cfg.retryMax, Jitter: cfg.retryJitter, Expected: cfg.expectedHold},
		logs:  guard.Logger{L: cfg.logger, Pkg: pkgName}}
	return m.handle
}

type middleware struct {
	l    core.Locker
	keys []KeyFunc
	cfg  config
	// outage logs the first backend failure, then a summary per interval,
	// then the recovery: not one line per refused request.
	outage *guard.OutageLog
	hints  *guard.Hints // Retry-After from observed holds, capped, jittered
	logs   guard.Logger
}

func (m *middleware) handle(c *gin.Context) {
	route := c.FullPath()
	if route == "" {
		// No route matched: gin runs engine-level middleware for its
		// 404/405 handlers too. There is nothing to guard.
		c.Next()
		return
	}
	p := m.cfg.policy
	if p.Name == "" {
		p.Name = route
	}
	if m.cfg.shareSafe && guard.SafeMethod(c.Request.Method) {
		p.Mode = core.SharedMode
	}
	var buf [2]string
	keys := buf[:0]
	for _, kf := range m.keys {
		k, err := kf(c)
		if err != nil {
			m.fail(c, p.Name, guard.ClassifyKey(err))
			return
		}
		keys = append(keys, k)
	}

	req := c.Request
	h, res := guard.Acquire(req.Context(), m.l, keys, p)
	m.outage.Observe(res).Log(req.Context(), m.cfg.logger, pkgName, p.Name, res.Err)
	switch res.Outcome {
	case guard.Acquired, guard.FailedOpen:
	default:
		m.fail(c, p.Name, res)
		return
	}
	// Deferred, so the locks are also released when a handler panics; the
	// panic then goes on to gin.Recovery.
	defer m.release(c, req, h, p.Name, time.Now())

	c.Request = req.WithContext(h.Context())
	c.Next()
	if err := h.Lost(); err != nil && !c.Writer.Written() {
		m.fail(c, p.Name, guard.Result{Outcome: guard.Lost, Err: err})
	}
}

func (m *middleware) release(c *gin.Context, req *http.Request, h *guard.Held, name string, start time.Time) {
	c.Request = req
	if len(h.Locks()) > 0 {
		m.hints.ObserveHold(time.Since(start))
	}
	if err := h.Release(); err != nil {
		m.logs.ReleaseFailed(req.Context(), name, err)
	}
}

func (m *middleware) fail(c *gin.Context, name string, res guard.Result) {
	m.logs.Refused(c.Request.Context(), name, res)
	res.RetryAfter = m.hints.For(res, m.cfg.policy.TTL)
	e := newError(res)
	_ = c.Error(e).SetType(gin.ErrorTypePrivate)
	m.cfg.errorHandler(c, e)
	// Whatever the error handler did, the guarded handlers must not run.
	c.Abort()
}

// Error describes a response the middleware writes instead of (or, for a
// lost lock, after) the handlers. Err is the cause, for logs and
// errors.Is: core.ErrNotAcquired, core.ErrInvalidKey, core.ErrUnavailable,
// core.ErrLost, core.ErrModeMismatch, core.ErrModeUnsupported,
// ErrMisconfigured, context.DeadlineExceeded, context.Canceled. It may contain backend error text: do not send it to
// clients.
type Error struct {
	// Status is the HTTP status DefaultErrorHandler writes.
	Status int
	// Code names the failure for programs: "contended", "invalid_key",
	// "unavailable", "timeout", "canceled", "lost", "misconfigured" or
	// "limited" (429: no permit of a Limit freed up within the wait).
	Code string
	// Message is a short client-safe text; it never contains the key or
	// backend error text.
	Message string
	// RetryAfter is when to try again: for 409, the smaller of the holder's
	// remaining lease and the route's observed hold time (for 429, the same
	// from a permit holder's lease); for 503, about 2 s;
	// capped by WithMaxRetryAfter, jittered by WithRetryJitter (0 for other
	// statuses).
	RetryAfter time.Duration
	// Err is the underlying error.
	Err error

	contended bool
}

func newError(res guard.Result) *Error {
	return &Error{
		Status:     res.Outcome.HTTPStatus(),
		Code:       res.Outcome.String(),
		Message:    res.Outcome.Message(),
		RetryAfter: res.RetryAfter,
		Err:        res.Err,
		contended:  res.Outcome == guard.Contended || res.Outcome == guard.Limited,
	}
}

func (e *Error) Error() string {
	if e.Err == nil {
		return "ginmw: " + e.Message
	}
	return "ginmw: " + e.Message + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorHandler writes the response for an Error. The middleware aborts the
// chain after it returns.
type ErrorHandler func(c *gin.Context, e *Error)

// DefaultErrorHandler aborts with e.Status and the JSON body
// {"error": e.Code, "message": e.Message}, plus, for 409 (held elsewhere),
// 429 (no permit free) and 503 (backend unreachable), a Retry-After header:
// e.RetryAfter in whole seconds, rounded up (at least 1).
func DefaultErrorHandler(c *gin.Context, e *Error) {
	if e.contended || e.RetryAfter > 0 {
		c.Header("Retry-After", strconv.Itoa(guard.RetryAfterSeconds(e.RetryAfter)))
	}
	c.AbortWithStatusJSON(e.Status, gin.H{"error": e.Code, "message": e.Message})
}
