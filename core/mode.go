package core

import (
	"errors"
	"fmt"
	"strconv"
)

// Mode is the kind of a hold: exclusive (the default), shared, or one of n
// permits.
//
// An exclusive hold excludes every other hold of the key. Shared holds
// coexist with each other; permit holds coexist up to the key's n. Every
// hold, of any kind, is its own Lock: own owner token, own lease and
// watchdog renewal, own loss notice, and its own fence from the key's one
// counter, so fences increase across all kinds of hold.
//
// Writer preference: once an exclusive acquirer is refused because shared
// or permit holds are in place and it goes on waiting, new shared and
// permit requests for the key wait behind it (in every process), so a
// stream of readers cannot starve a writer. The writer's claim lives in
// the backend with a lease of its own, renewed on each of its attempts, and
// is withdrawn when it gives up or is granted.
type Mode uint8

const (
	// Exclusive is the default: one holder at a time.
	Exclusive Mode = iota
	// SharedMode is a reader's hold (see Shared).
	SharedMode
	// PermitMode is one of n permits (see Permits).
	PermitMode
)

// String returns "exclusive", "shared" or "permit" (the lock.mode value
// telemetry records).
func (m Mode) String() string {
	switch m {
	case Exclusive:
		return "exclusive"
	case SharedMode:
		return "shared"
	case PermitMode:
		return "permit"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// MaxPermits bounds n in Permits.
const MaxPermits = 1 << 20

var (
	// ErrModeMismatch means the key is held in another, incompatible
	// configuration: Shared against Permits, or Permits(n) against holders
	// that use another n. It is not contention: waiting would not help.
	ErrModeMismatch = errors.New("core: lock mode or permit count differs from the key's holders")

	// ErrModeUnsupported means the backend cannot take shared or permit
	// holds (Redlock takes exclusive holds only).
	ErrModeUnsupported = errors.New("core: lock mode not supported by this backend")
)

// Shared makes Acquire take a shared (reader) hold: shared holders of a key
// coexist, an exclusive hold excludes them all. A call option.
func Shared() Option {
	return callOption("Shared", func(c *config) { c.mode, c.permits = SharedMode, 0 })
}

// Permits makes Acquire take one of n permits of the key (a semaphore):
// up to n permit holders coexist. Every holder of a key must use the same
// n; one that disagrees gets ErrModeMismatch. n must be between 1 and
// MaxPermits (else ErrInvalidOption). A call option.
func Permits(n int) Option {
	return callOption("Permits", func(c *config) { c.mode, c.permits = PermitMode, n })
}

// checkMode validates the call's mode settings.
func (c *config) checkMode() error {
	if c.mode == PermitMode && (c.permits < 1 || c.permits > MaxPermits) {
		return fmt.Errorf("%w: Permits(%d) outside 1..%d", ErrInvalidOption, c.permits, MaxPermits)
	}
	return nil
}

// modeTag is how a backend records a non-exclusive key's configuration:
// "s" for shared, "p<n>" for n permits.
func modeTag(m Mode, n int) string {
	switch m {
	case SharedMode:
		return "s"
	case PermitMode:
		return "p" + strconv.Itoa(n)
	}
	return ""
}

// ModeTag is the marker a backend stores with a key's shared or permit
// holders ("s", "p<n>"); holders whose tags differ get ErrModeMismatch.
// Exclusive holds have none. For backend implementations.
func (h Hold) ModeTag() string { return modeTag(h.Mode, h.Permits) }

// ModeError reports an ErrModeMismatch: what the caller asked for and what
// the key's holders use.
type ModeError struct {
	Want, Have string // mode tags, "s" or "p<n>"
}

func (e *ModeError) Error() string {
	return fmt.Sprintf("%s: asked for %s, held as %s", ErrModeMismatch, describeTag(e.Want), describeTag(e.Have))
}

// Is makes errors.Is(err, ErrModeMismatch) true.
func (e *ModeError) Is(target error) bool { return target == ErrModeMismatch }

func describeTag(t string) string {
	switch {
	case t == "s":
		return "shared"
	case len(t) > 1 && t[0] == 'p':
		return "Permits(" + t[1:] + ")"
	}
	return strconv.Quote(t)
}
