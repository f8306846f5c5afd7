package idempotency

import (
	"errors"
	"time"
)

// Sentinel errors. Check them with errors.Is; StatusCode maps them to the
// HTTP status the draft asks for.
var (
	// ErrMissingKey means a route that requires an Idempotency-Key got a
	// request without one (400).
	ErrMissingKey = errors.New("idempotency: missing Idempotency-Key")

	// ErrInvalidKey means the key is empty, longer than MaxKeyLen, not a
	// valid structured-field string, or holds characters outside printable
	// ASCII (400).
	ErrInvalidKey = errors.New("idempotency: invalid Idempotency-Key")

	// ErrMismatch means the key was first used with another request: a
	// different method, path or body (422).
	ErrMismatch = errors.New("idempotency: Idempotency-Key reused with a different request")

	// ErrInProgress means a request with the same key is still running and
	// this one did not wait for it, or waited past the bound (409).
	ErrInProgress = errors.New("idempotency: a request with this Idempotency-Key is in progress")

	// ErrStaleFence means the store refused a write because a holder with a
	// higher fence (a newer attempt for the same key) has claimed or answered
	// it: this holder lost its lock while it ran (409).
	ErrStaleFence = errors.New("idempotency: stale fence: a newer attempt owns this key")

	// ErrNotFound is returned by Store.Lookup when no completed answer is
	// stored for the key.
	ErrNotFound = errors.New("idempotency: no stored answer")

	// ErrUnavailable wraps failures to reach the lock backend or the store
	// (503).
	ErrUnavailable = errors.New("idempotency: lock or store unavailable")

	// ErrRequestTooLarge means the request body is above WithMaxRequestBody,
	// so it cannot be fingerprinted (413).
	ErrRequestTooLarge = errors.New("idempotency: request body too large")

	// ErrMisconfigured means the scope cannot be derived where the
	// middleware is mounted (no route pattern): a server fault (500).
	ErrMisconfigured = errors.New("idempotency: middleware misconfigured")

	// ErrCorruptRecord means a stored record could not be decoded.
	ErrCorruptRecord = errors.New("idempotency: corrupt stored record")
)

// InProgressError is the error behind ErrInProgress; RetryAfter is the
// running attempt's remaining lease when known.
type InProgressError struct {
	RetryAfter time.Duration
	Err        error // the lock error, for logs
}

func (e *InProgressError) Error() string { return ErrInProgress.Error() }

// Is makes errors.Is(err, ErrInProgress) true.
func (e *InProgressError) Is(target error) bool { return target == ErrInProgress }

func (e *InProgressError) Unwrap() error { return e.Err }
