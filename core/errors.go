package core

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Check them with errors.Is; the concrete errors returned by
// the package wrap them and may carry more detail (see RetryAfter).
var (
	// ErrNotAcquired means the lock is held by someone else: a TryAcquire that
	// found it taken, or an Acquire whose wait ended before it was granted.
	ErrNotAcquired = errors.New("core: lock not acquired: held by another owner")

	// ErrNotHeld means the caller no longer owns the lock: it expired, was
	// released already, or was taken over by another owner. Release and
	// Refresh return it without touching the current holder's lock.
	ErrNotHeld = errors.New("core: lock not held")

	// ErrLost is reported by Lock.Err after the lock ended without a Release:
	// the lease could not be renewed before its local validity deadline, or a
	// renewal found another owner.
	ErrLost = errors.New("core: lock lost")

	// ErrUnavailable wraps failures to reach the lock backend (network errors,
	// timeouts, a Redis that is down or loading).
	ErrUnavailable = errors.New("core: lock backend unavailable")

	// ErrQuorum means a multi-node backend could not reach a majority of its
	// nodes.
	ErrQuorum = errors.New("core: quorum not reached")

	// ErrInvalidKey means the key is empty, too long, or holds bytes a lock key
	// must not have (control characters, invalid UTF-8).
	ErrInvalidKey = errors.New("core: invalid lock key")

	// ErrHoldCapReached is the cause recorded (wrapped in ErrLost) when a lock
	// reached its WithMaxHold cap and the watchdog stopped renewing it.
	ErrHoldCapReached = errors.New("core: maximum hold time reached")

	// ErrLeaseExpired is the cause (wrapped in ErrLost) when no renewal
	// succeeded before the lock's local validity deadline, or the lease was
	// found expired at Release.
	ErrLeaseExpired = errors.New("core: lease expired")

	// ErrOwnerChanged is the cause (wrapped in ErrLost) when a renewal found
	// the owner token gone from the backend: the lease expired there, or the
	// key was deleted or taken by another owner.
	ErrOwnerChanged = errors.New("core: owner token gone from the backend")

	// ErrClosed is returned by a Client after Close.
	ErrClosed = errors.New("core: client closed")

	// ErrInvalidFence means a forwarded fence token could not be parsed.
	ErrInvalidFence = errors.New("core: invalid fence token")

	// ErrInvalidOption is returned by Acquire and TryAcquire when an option
	// that only a constructor takes (WithClock, WithQuorum, ...) is passed
	// to a single call.
	ErrInvalidOption = errors.New("core: option not valid here")

	// ErrLateGrant means the backend granted the lock but its reply came
	// back after the lease had run out (a replica acknowledgement waited
	// out, a stalled connection): the lock would be lost on arrival and
	// another owner may hold it already, so the grant was released. The
	// error also matches ErrUnavailable. A TTL longer than the backend's
	// worst reply time (WithReplicaAck's timeout included) avoids it.
	ErrLateGrant = errors.New("core: grant arrived after its lease ran out")
)

// ContentionError is returned when a lock is held elsewhere. It matches
// ErrNotAcquired with errors.Is and tells how long the current holder's lease
// still runs, which adapters turn into Retry-After / RetryInfo hints.
type ContentionError struct {
	// RetryAfter is the holder's remaining TTL as last seen by the backend.
	// Zero when unknown.
	RetryAfter time.Duration
	// Attempts is how many times the backend was asked.
	Attempts int
}

func (e *ContentionError) Error() string { return ErrNotAcquired.Error() }

// Is makes errors.Is(err, ErrNotAcquired) true.
func (e *ContentionError) Is(target error) bool { return target == ErrNotAcquired }

// RetryAfter extracts the holder's remaining TTL from an error returned by
// Acquire or TryAcquire. ok is false when err carries no such hint.
func RetryAfter(err error) (d time.Duration, ok bool) {
	var ce *ContentionError
	if errors.As(err, &ce) && ce.RetryAfter > 0 {
		return ce.RetryAfter, true
	}
	return 0, false
}

// Unavailable wraps err so that it matches ErrUnavailable while keeping err
// in the chain for logs. Backends report transport failures with it.
func Unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	return &backendError{err: err}
}

type backendError struct{ err error }

func (e *backendError) Error() string   { return "core: lock backend unavailable: " + e.err.Error() }
func (e *backendError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

type lateGrantError struct{ took, ttl time.Duration }

func (e *lateGrantError) Error() string {
	return fmt.Sprintf("%s: the reply took %v, the lease %v", ErrLateGrant.Error(), e.took.Round(time.Millisecond), e.ttl)
}

func (e *lateGrantError) Unwrap() []error { return []error{ErrLateGrant, ErrUnavailable} }
