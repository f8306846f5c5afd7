package guard_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/internal/guard"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// 50 clients failing every 100 ms for 25 s (12 500 failures) give one first
// line, two summaries (at 10 s and 20 s) and one recovery line.
func TestOutageLog_firstSummariesRecovery(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	o := guard.NewOutageLog(10*time.Second, clk.now)
	var buf bytes.Buffer
	lg := slog.New(slog.NewTextHandler(&buf, nil))
	fail := guard.Result{Outcome: guard.Unavailable, Err: errors.New("dial tcp: connection refused")}
	log := func(res guard.Result) { o.Observe(res).Log(context.Background(), lg, "httpmw", "POST /x", res.Err) }

	log(guard.Result{Outcome: guard.Acquired}) // healthy: nothing
	for step := 0; step < 250; step++ {
		var wg sync.WaitGroup
		for range 50 {
			wg.Add(1)
			go func() { defer wg.Done(); log(fail) }()
		}
		wg.Wait()
		clk.add(100 * time.Millisecond)
	}
	log(guard.Result{Outcome: guard.Contended}) // the backend answered
	log(guard.Result{Outcome: guard.Acquired})

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("got %d lines, want 4 (first, 2 summaries, recovery):\n%s", len(lines), buf.String())
	}
	for i, want := range []string{"further failures are summarised", "failures=5000", "failures=5000", "answering again"} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d lacks %q: %s", i, want, lines[i])
		}
	}
	if !strings.Contains(lines[3], "total=12500") || !strings.Contains(lines[3], "failures=2499") {
		t.Errorf("recovery line miscounts: %s", lines[3])
	}
}

// A second outage starts over with a first line; failures that say nothing
// about the backend (bad keys, timeouts) neither start nor end one.
func TestOutageLog_secondOutageAndNeutralOutcomes(t *testing.T) {
	clk := &fakeClock{t: time.Unix(0, 0)}
	o := guard.NewOutageLog(time.Second, clk.now)
	ev := func(oc guard.Outcome) guard.OutageEvent { return o.Observe(guard.Result{Outcome: oc}).Event }
	seq := []struct {
		oc   guard.Outcome
		want guard.OutageEvent
	}{
		{guard.InvalidKey, guard.OutageQuiet},
		{guard.FailedOpen, guard.OutageFirst},
		{guard.Timeout, guard.OutageQuiet},
		{guard.Unavailable, guard.OutageQuiet},
		{guard.Acquired, guard.OutageRecovered},
		{guard.Acquired, guard.OutageQuiet},
		{guard.Unavailable, guard.OutageFirst},
	}
	for i, s := range seq {
		if got := ev(s.oc); got != s.want {
			t.Fatalf("step %d (%v): event %d, want %d", i, s.oc, got, s.want)
		}
	}
}
