package core_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// renewals reads the renewal count of the one lock c holds.
func renewals(t *testing.T, c *core.Client) int {
	t.Helper()
	s := c.Snapshot()
	if len(s.Held) != 1 {
		t.Fatalf("holds %d locks, want 1", len(s.Held))
	}
	return s.Held[0].Renewals
}

// eventually polls cond on the real clock: the watchdog's round trip runs
// on its own goroutine after the fake clock fired it.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
	}
}

// TestWatchdog_defaultIsATenthOfTheTTL pins the default renewal interval
// (ttl/2 would pass every other test).
func TestWatchdog_defaultIsATenthOfTheTTL(t *testing.T) {
	clk := locktest.NewClock()
	c := locktest.NewStoreWithClock(clk).Client()
	t.Cleanup(func() { _ = c.Close() })
	l, err := c.Acquire(context.Background(), "wd", core.WithTTL(10*time.Second), core.WithAutoRefresh())
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	clk.Advance(999 * time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if n := renewals(t, c); n != 0 {
		t.Fatalf("%d renewals before a tenth of the TTL", n)
	}
	clk.Advance(time.Millisecond)
	eventually(t, "no renewal at a tenth of the TTL", func() bool { return renewals(t, c) == 1 })
	clk.Advance(time.Second)
	eventually(t, "no second renewal one interval later", func() bool { return renewals(t, c) == 2 })
}

// TestRefresh_byHandHonoursMaxHold: WithMaxHold binds Lock.Refresh too
// (defect 3), not only the watchdog.
func TestRefresh_byHandHonoursMaxHold(t *testing.T) {
	clk := locktest.NewClock()
	c := locktest.NewStoreWithClock(clk).Client()
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	l, err := c.Acquire(ctx, "cap", core.WithTTL(time.Second), core.WithMaxHold(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	start := clk.Now()
	clk.Advance(500 * time.Millisecond)
	if err := l.Refresh(ctx, time.Hour); err != nil {
		t.Fatal(err)
	}
	if end := start.Add(3 * time.Second); l.Deadline().After(end) {
		t.Fatalf("deadline %v after the cap %v", l.Deadline().Sub(start), 3*time.Second)
	}
	clk.Advance(2600 * time.Millisecond)
	if err := l.Refresh(ctx, time.Hour); !errors.Is(err, core.ErrHoldCapReached) {
		t.Fatalf("Refresh at the cap = %v; want ErrHoldCapReached", err)
	}
}

// blockingRefresh holds every Refresh until proceed is closed.
type blockingRefresh struct {
	core.Backend
	entered chan struct{}
	proceed chan struct{}
	once    sync.Once
}

func (b *blockingRefresh) Refresh(ctx context.Context, reqs []core.RefreshRequest) []error {
	b.once.Do(func() { close(b.entered) })
	<-b.proceed
	return b.Backend.Refresh(ctx, reqs)
}

type refreshRecorder struct {
	core.NopObserver
	mu     sync.Mutex
	failed []error
	lost   []error
}

func (r *refreshRecorder) Refreshed(_ context.Context, e core.RefreshEvent) {
	if e.Err != nil {
		r.mu.Lock()
		r.failed = append(r.failed, e.Err)
		r.mu.Unlock()
	}
}

func (r *refreshRecorder) Lost(e core.LostEvent) {
	r.mu.Lock()
	r.lost = append(r.lost, e.Cause)
	r.mu.Unlock()
}

// TestWatchdog_renewalRacingReleaseIsNoFailure: a renewal that finds the
// token gone because we released it is not a failed refresh (defect 7).
func TestWatchdog_renewalRacingReleaseIsNoFailure(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	b := &blockingRefresh{Backend: core.NewRedisBackend(rdb), entered: make(chan struct{}), proceed: make(chan struct{})}
	rec := &refreshRecorder{}
	c := core.NewWithBackend(b, core.WithObserver(rec))
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	l, err := c.Acquire(ctx, "race", core.WithTTL(10*time.Second), core.WithAutoRefresh(10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	<-b.entered // the watchdog is renewing
	released := make(chan error, 1)
	go func() { released <- l.Release(ctx) }()
	var rerr error
	select {
	case rerr = <-released:
	case <-time.After(time.Second):
		t.Fatal("Release waited for the watchdog's renewal")
	}
	close(b.proceed) // the renewal reaches Redis after the release
	if rerr != nil {
		t.Fatal(rerr)
	}
	_ = c.Close() // waits for the watchdog
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.failed) > 0 || len(rec.lost) > 0 {
		t.Fatalf("refresh failures %v, losses %v; want none after our own release", rec.failed, rec.lost)
	}
}
