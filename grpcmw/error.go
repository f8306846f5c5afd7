package grpcmw

import (
	"context"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fencedlock/fencedlock/internal/guard"
)

// Error describes why the interceptor ended a call instead of (or, for a
// lost lock, after) the handler. Err is the cause, for logs and errors.Is:
// core.ErrNotAcquired, core.ErrInvalidKey, core.ErrUnavailable,
// core.ErrLost, core.ErrModeMismatch, core.ErrModeUnsupported,
// ErrMisconfigured, context.DeadlineExceeded, context.Canceled. Err may contain backend error text; it never reaches
// the client through GRPCStatus.
type Error struct {
	// Code is the status code DefaultErrorHandler ends the call with.
	Code codes.Code
	// Message is a short client-safe text; it never contains the key or
	// backend error text.
	Message string
	// RetryAfter is when to try again: for Aborted (and ResourceExhausted,
	// from a permit holder's lease), the smaller of the holder's remaining
	// lease and the method's observed hold time; for
	// Unavailable, about 2 s (0 for other codes).
	RetryAfter time.Duration
	// Err is the underlying error.
	Err error

	contended bool
}

func newError(res guard.Result) *Error {
	return &Error{
		Code:       code(res.Outcome),
		Message:    res.Outcome.Message(),
		RetryAfter: res.RetryAfter,
		Err:        res.Err,
		contended:  res.Outcome == guard.Contended || res.Outcome == guard.Limited,
	}
}

// code is the status code of an outcome: the whole mapping in one place.
func code(o guard.Outcome) codes.Code {
	switch o {
	case guard.Contended, guard.Lost:
		return codes.Aborted
	case guard.Limited:
		return codes.ResourceExhausted
	case guard.InvalidKey:
		return codes.InvalidArgument
	case guard.Unavailable:
		return codes.Unavailable
	case guard.Timeout:
		return codes.DeadlineExceeded
	case guard.Canceled:
		return codes.Canceled
	case guard.Misconfigured:
		return codes.Internal
	}
	return codes.Unknown
}

func (e *Error) Error() string {
	if e.Err == nil {
		return "grpcmw: " + e.Message
	}
	return "grpcmw: " + e.Message + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// GRPCStatus is the client-safe status for e: Code and Message and, when
// the key was held elsewhere, no permit was free or the backend was
// unreachable, an
// errdetails.RetryInfo whose delay is
// RetryAfter rounded up to the millisecond. Returning e itself from a handler or an ErrorHandler sends
// this status, not Error's text.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.Code, e.Message)
	if !e.contended && e.RetryAfter <= 0 {
		return st
	}
	d := (e.RetryAfter + time.Millisecond - 1).Truncate(time.Millisecond)
	if ds, err := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(d)}); err == nil {
		st = ds
	}
	return st
}

// ErrorHandler returns the error a call ends with when the interceptor
// refuses or aborts it; method is the full method name. It must return a
// non-nil error (a nil one is replaced by DefaultErrorHandler's). Status
// messages reach the client: do not put e.Err's text in them.
type ErrorHandler func(ctx context.Context, method string, e *Error) error

// DefaultErrorHandler ends the call with e.GRPCStatus(): e.Code, e.Message
// and, on contention, a RetryInfo detail.
func DefaultErrorHandler(_ context.Context, _ string, e *Error) error {
	return e.GRPCStatus().Err()
}

// RetryDelay returns the RetryInfo delay of an error received by a client,
// as sent by DefaultErrorHandler on contention.
func RetryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return ri.GetRetryDelay().AsDuration(), true
		}
	}
	return 0, false
}
