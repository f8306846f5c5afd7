package guard

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/fencedlock/fencedlock/core"
)

// Outcomes the adapters report themselves rather than Acquire: they share
// the Outcome type so that status mapping and telemetry stay in one place.
const (
	// Lost: a lock ended while the handler ran; the request context was
	// cancelled with a cause matching core.ErrLost.
	Lost Outcome = Canceled + 1 + iota
	// Misconfigured: no key could be derived because of where or how the
	// adapter is mounted (a server fault, not the client's), or the lock
	// mode conflicts with the key's holders or the backend.
	Misconfigured
	// Limited: every permit of a concurrency limit was in use until the
	// wait ended (429 / ResourceExhausted).
	Limited
)

// StatusClientClosedRequest is the status recorded when the client went
// away while waiting for the lock (nginx's 499). Nobody reads the
// response; it keeps access logs honest instead of showing a 200.
const StatusClientClosedRequest = 499

// ErrMisconfigured is wrapped by the adapters' own misconfiguration errors
// (httpmw.ErrMisconfigured, ginmw.ErrMisconfigured) so that ClassifyKey can
// tell a server fault from a bad request.
var ErrMisconfigured = errors.New("guard: adapter misconfigured")

// ClassifyKey maps an error from an adapter's key function to an outcome:
// a misconfiguration is a server fault, a context error is the request
// ending, and everything else is the client's fault (InvalidKey).
func ClassifyKey(err error) Result {
	switch {
	case err == nil:
		return Result{Outcome: Acquired}
	case errors.Is(err, ErrMisconfigured):
		return Result{Outcome: Misconfigured, Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return Result{Outcome: Timeout, Err: err}
	case errors.Is(err, context.Canceled):
		return Result{Outcome: Canceled, Err: err}
	default:
		return Result{Outcome: InvalidKey, Err: err}
	}
}

// HTTPStatus is the status code the HTTP adapters answer for o. Acquired
// and FailedOpen run the handler and have no status of their own (200).
func (o Outcome) HTTPStatus() int {
	switch o {
	case Contended, Lost:
		return http.StatusConflict
	case Limited:
		return http.StatusTooManyRequests
	case InvalidKey:
		return http.StatusBadRequest
	case Unavailable:
		return http.StatusServiceUnavailable
	case Timeout:
		return http.StatusGatewayTimeout
	case Canceled:
		return StatusClientClosedRequest
	case Misconfigured:
		return http.StatusInternalServerError
	}
	return http.StatusOK
}

// Message is a short client-safe description of o for response bodies. It
// never contains the key or a backend error.
func (o Outcome) Message() string {
	switch o {
	case Acquired, FailedOpen:
		return ""
	case Contended:
		return "resource is locked by another request"
	case InvalidKey:
		return "invalid lock key"
	case Unavailable:
		return "lock service unavailable"
	case Timeout:
		return "timed out waiting for the lock"
	case Canceled:
		return "request canceled while waiting for the lock"
	case Lost:
		return "lock lost while handling the request"
	case Misconfigured:
		return "internal server error"
	case Limited:
		return "too many concurrent requests"
	}
	return o.String()
}

// Validate reports configuration mistakes in p that no single option can
// see on its own. Adapters panic with it, prefixed by their package name,
// when the middleware is built.
func (p Policy) Validate() error {
	switch {
	case p.TTL < 0:
		return errors.New("WithTTL: the TTL must be positive")
	case p.Wait < 0:
		return errors.New("WithWait: the wait must not be negative")
	case p.RefreshEvery < 0:
		return errors.New("WithAutoRefresh: the interval must be positive")
	case p.MaxHold < 0:
		return errors.New("WithMaxHold: the cap must be positive")
	case p.Mode == core.PermitMode && (p.Permits < 1 || p.Permits > core.MaxPermits):
		return fmt.Errorf("the n of Limit or WithPermits (%d) must be between 1 and %d", p.Permits, core.MaxPermits)
	case p.ReleaseTimeout < 0:
		return errors.New("WithReleaseTimeout: the timeout must be positive")
	case p.AutoRefresh && p.RefreshEvery > 0 && p.TTL > 0 && p.RefreshEvery >= p.TTL:
		return fmt.Errorf("WithAutoRefresh: the interval (%v) must be shorter than the TTL (%v)", p.RefreshEvery, p.TTL)
	}
	return nil
}

// FenceHeader is the HTTP header that carries a forwarded fence
// (core.FenceToken.String) between services; httpmw and ginmw export it.
const FenceHeader = "Fence-Token"
