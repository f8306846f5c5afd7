package httpmw

import (
	"net/http"
	"strconv"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

// Lock returns middleware that runs the handler only while holding the lock
// on key(r), and releases it after the handler returns. Mount it per route,
// after routing (see the package documentation):
//
//	mux.Handle("POST /coupons/{id}/claim", httpmw.Lock(locker, httpmw.Template("coupon:{id}"))(h))
//
// It fails fast by default (409 when the key is held); see WithWait.
func Lock(l core.Locker, key KeyFunc, opts ...Option) func(http.Handler) http.Handler {
	if key == nil {
		panic("httpmw: Lock with a nil KeyFunc")
	}
	return newMiddleware("Lock", l, []KeyFunc{key}, opts)
}

// LockKeys is Lock over several keys, for routes that touch more than one
// resource, such as "POST /transfer/{from}/{to}":
//
//	httpmw.LockKeys(locker, []httpmw.KeyFunc{
//		httpmw.Template("account:{from}"), httpmw.Template("account:{to}"),
//	})
//
// The keys are acquired in sorted order, so two requests locking the same
// pair in opposite directions cannot deadlock; duplicates are locked once.
// The handler runs when all are held and they are released together.
func LockKeys(l core.Locker, keys []KeyFunc, opts ...Option) func(http.Handler) http.Handler {
	if len(keys) == 0 {
		panic("httpmw: LockKeys with no KeyFunc")
	}
	for _, k := range keys {
		if k == nil {
			panic("httpmw: LockKeys with a nil KeyFunc")
		}
	}
	return newMiddleware("LockKeys", l, append([]KeyFunc(nil), keys...), opts)
}

func newMiddleware(fn string, l core.Locker, keys []KeyFunc, opts []Option) func(http.Handler) http.Handler {
	if l == nil {
		panic("httpmw: " + fn + " with a nil core.Locker")
	}
	cfg := newConfig(opts)
	outage := guard.NewOutageLog(0, nil) // shared by every handler this middleware wraps
	hints := &guard.Hints{Max: cfg.retryMax, Jitter: cfg.retryJitter, Expected: cfg.expectedHold}
	return func(next http.Handler) http.Handler {
		if next == nil {
			panic("httpmw: " + fn + " middleware applied to a nil http.Handler")
		}
		return &middleware{l: l, keys: keys, cfg: cfg, next: next, outage: outage, hints: hints,
			logs: guard.Logger{L: cfg.logger, Pkg: pkgName}}
	}
}

type middleware struct {
	l    core.Locker
	keys []KeyFunc
	cfg  config
	next http.Handler
	// outage logs the first backend failure, then a summary per interval,
	// then the recovery: not one line per refused request.
	outage *guard.OutageLog
	hints  *guard.Hints // Retry-After from observed holds, capped, jittered
	logs   guard.Logger
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := m.cfg.policy
	if p.Name == "" {
		p.Name = r.Pattern
	}
	if m.cfg.shareSafe && guard.SafeMethod(r.Method) {
		p.Mode = core.SharedMode
	}
	var buf [2]string
	keys := buf[:0]
	for _, kf := range m.keys {
		k, err := kf(r)
		if err != nil {
			m.fail(w, r, p.Name, guard.ClassifyKey(err))
			return
		}
		keys = append(keys, k)
	}

	h, res := guard.Acquire(r.Context(), m.l, keys, p)
	m.outage.Observe(res).Log(r.Context(), m.cfg.logger, pkgName, p.Name, res.Err)
	switch res.Outcome {
	case guard.Acquired, guard.FailedOpen:
	default:
		m.fail(w, r, p.Name, res)
		return
	}
	// Deferred, so the locks are also released when the handler panics;
	// the panic then continues to the server (http.ErrAbortHandler too).
	defer m.release(h, r, p.Name, time.Now())

	rw := &responseWriter{ResponseWriter: w}
	m.next.ServeHTTP(rw, r.WithContext(h.Context()))
	if err := h.Lost(); err != nil && !rw.written {
		m.fail(rw, r, p.Name, guard.Result{Outcome: guard.Lost, Err: err})
	}
}

func (m *middleware) release(h *guard.Held, r *http.Request, name string, start time.Time) {
	if len(h.Locks()) > 0 {
		m.hints.ObserveHold(time.Since(start))
	}
	if err := h.Release(); err != nil {
		m.logs.ReleaseFailed(r.Context(), name, err)
	}
}

func (m *middleware) fail(w http.ResponseWriter, r *http.Request, name string, res guard.Result) {
	m.logs.Refused(r.Context(), name, res)
	res.RetryAfter = m.hints.For(res, m.cfg.policy.TTL)
	m.cfg.errorHandler(w, r, newError(res))
}

// Error describes a response the middleware writes instead of (or, for a
// lost lock, after) the handler. Err is the cause, for logs and errors.Is:
// core.ErrNotAcquired, core.ErrInvalidKey, core.ErrUnavailable,
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
		return "httpmw: " + e.Message
	}
	return "httpmw: " + e.Message + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ErrorHandler writes the response for an Error. It runs on the request's
// goroutine; for a lost lock, after the handler returned without writing.
type ErrorHandler func(w http.ResponseWriter, r *http.Request, e *Error)

// DefaultErrorHandler answers e.Status with e.Message as plain text and,
// for 409 (held elsewhere), 429 (no permit free) and 503 (backend
// unreachable), a Retry-After header: e.RetryAfter in whole seconds,
// rounded up (at least 1).
func DefaultErrorHandler(w http.ResponseWriter, _ *http.Request, e *Error) {
	if e.contended || e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(guard.RetryAfterSeconds(e.RetryAfter)))
	}
	http.Error(w, e.Message, e.Status)
}
