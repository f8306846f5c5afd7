package locktest

import (
	"sync"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// Clock is a core.Clock that moves only when Advance is called, so tests
// can let a lease run out, a watchdog fall due or a wait bound pass without
// sleeping. Give the same Clock to a Store (NewStoreWithClock): the Store's
// leases then expire on it and its Clients read it.
//
// Timers due within an Advance fire during it, in deadline order: a
// timer's channel receives the time, and an AfterFunc function runs on
// Advance's goroutine, so its effect (a lock declared lost, say) is visible
// when Advance returns. Work that other goroutines do in response, such as
// a watchdog's renewal round trip, completes on its own schedule.
type Clock struct {
	mu     sync.Mutex
	now    time.Time
	timers map[*fakeTimer]struct{}
}

var _ core.Clock = (*Clock)(nil)

// NewClock returns a Clock that starts at the current time.
func NewClock() *Clock {
	return &Clock{now: time.Now(), timers: make(map[*fakeTimer]struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// NewTimer implements core.Clock.
func (c *Clock) NewTimer(d time.Duration) core.Timer {
	t := &fakeTimer{c: c, ch: make(chan time.Time, 1)}
	t.Reset(d)
	return t
}

// AfterFunc implements core.Clock.
func (c *Clock) AfterFunc(d time.Duration, f func()) core.Timer {
	t := &fakeTimer{c: c, f: f}
	t.Reset(d)
	return t
}

// Advance moves the clock forward by d, firing every timer that falls due
// on the way.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	target := c.now.Add(max(d, 0))
	for {
		t := c.nextDueLocked(target)
		if t == nil {
			break
		}
		delete(c.timers, t)
		if t.when.After(c.now) {
			c.now = t.when
		}
		now := c.now
		c.mu.Unlock()
		t.fire(now)
		c.mu.Lock()
	}
	c.now = target
	c.mu.Unlock()
}

func (c *Clock) nextDueLocked(target time.Time) *fakeTimer {
	var next *fakeTimer
	for t := range c.timers {
		if !t.when.After(target) && (next == nil || t.when.Before(next.when)) {
			next = t
		}
	}
	return next
}

type fakeTimer struct {
	c    *Clock
	ch   chan time.Time
	f    func()
	when time.Time // guarded by c.mu
}

func (t *fakeTimer) C() <-chan time.Time { return t.ch }

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	_, active := t.c.timers[t]
	delete(t.c.timers, t)
	return active
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	t.c.mu.Lock()
	_, active := t.c.timers[t]
	t.when = t.c.now.Add(d)
	t.c.timers[t] = struct{}{}
	due := d <= 0
	now := t.c.now
	if due {
		delete(t.c.timers, t)
	}
	t.c.mu.Unlock()
	if due {
		// Like a real timer with a non-positive duration: fire at once.
		if t.f != nil {
			go t.f()
		} else {
			t.fire(now)
		}
	}
	return active
}

func (t *fakeTimer) fire(now time.Time) {
	if t.f != nil {
		t.f()
		return
	}
	select {
	case t.ch <- now:
	default:
	}
}
