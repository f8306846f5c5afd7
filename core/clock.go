package core

import "time"

// Clock is the Client's source of time: validity deadlines, the watchdog,
// wait bounds and lease timers all read it. Only durations between its
// readings are used (Go's monotonic clock by default), never the wall clock.
// Tests replace it with WithClock; locktest.Clock is a clock that moves only
// when told, so lock expiry and loss can be tested without sleeping.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that sends on its channel after d.
	NewTimer(d time.Duration) Timer
	// AfterFunc returns a timer that calls f in its own goroutine after d.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a stoppable timer of a Clock, like *time.Timer.
type Timer interface {
	// C is the channel the timer sends on (nil for AfterFunc timers).
	C() <-chan time.Time
	Stop() bool
	Reset(d time.Duration) bool
}

// WithClock replaces the Client's clock (default: the system's monotonic
// clock). A constructor option: New, NewRedlock, NewSharded and
// NewWithBackend take it, a single Acquire does not. Use it with a backend
// whose leases follow the same clock (locktest.Store with the same
// locktest.Clock); Redis expires leases on its own clock.
func WithClock(c Clock) Option {
	if c == nil {
		panic("core: WithClock with a nil Clock")
	}
	return clientOption("WithClock", func(s *config) { s.clock = c })
}

type systemClock struct{}

func (systemClock) Now() time.Time                 { return time.Now() }
func (systemClock) NewTimer(d time.Duration) Timer { return sysTimer{time.NewTimer(d)} }
func (systemClock) AfterFunc(d time.Duration, f func()) Timer {
	return sysTimer{time.AfterFunc(d, f)}
}

// sysTimer is pointer-shaped, so storing it in a Timer does not allocate.
type sysTimer struct{ t *time.Timer }

func (t sysTimer) C() <-chan time.Time        { return t.t.C }
func (t sysTimer) Stop() bool                 { return t.t.Stop() }
func (t sysTimer) Reset(d time.Duration) bool { return t.t.Reset(d) }
