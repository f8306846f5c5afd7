package guard_test

import (
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

func TestHints_contendedUsesObservedHoldCapAndJitter(t *testing.T) {
	h := guard.Hints{Jitter: 0.5}
	held := guard.Result{Outcome: guard.Contended, RetryAfter: 10 * time.Second}
	// Nothing observed: the holder's remaining lease, plus jitter.
	if d := h.For(held, 0); d < 10*time.Second || d > 15*time.Second {
		t.Fatalf("no observations: %v, want 10s..15s", d)
	}
	for range 100 {
		h.ObserveHold(5 * time.Millisecond)
	}
	seen := map[time.Duration]bool{}
	for range 200 {
		d := h.For(held, 0)
		if d < 5*time.Millisecond || d > 8*time.Millisecond {
			t.Fatalf("observed 5ms holds: hint %v, want 5ms..7.5ms", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("hints not jittered: %d distinct values in 200", len(seen))
	}
	// A holder whose lease ends sooner than the typical hold wins.
	if d := h.For(guard.Result{Outcome: guard.Contended, RetryAfter: time.Millisecond}, 0); d > 2*time.Millisecond {
		t.Fatalf("short remaining lease: %v", d)
	}
	// Unknown remaining lease and no observations: the TTL bounds it.
	fresh := guard.Hints{Jitter: 0.5}
	if d := fresh.For(guard.Result{Outcome: guard.Contended}, 4*time.Second); d < 4*time.Second || d > 6*time.Second {
		t.Fatalf("unknown lease: %v", d)
	}
	capped := guard.Hints{Max: time.Second, Jitter: 0.5}
	if d := capped.For(held, 0); d < time.Second || d > 1500*time.Millisecond {
		t.Fatalf("route cap 1s: %v", d)
	}
}

func TestHints_unavailableAndOthers(t *testing.T) {
	h := guard.Hints{Jitter: 0.5}
	if d := h.For(guard.Result{Outcome: guard.Unavailable}, 0); d < guard.UnavailableRetryAfter || d > guard.UnavailableRetryAfter*3/2 {
		t.Fatalf("unavailable: %v", d)
	}
	for _, oc := range []guard.Outcome{guard.Acquired, guard.InvalidKey, guard.Timeout, guard.Lost} {
		if d := h.For(guard.Result{Outcome: oc}, time.Second); d != 0 {
			t.Errorf("%v: hint %v, want none", oc, d)
		}
	}
}

// Concurrent observers and readers (run with -race).
func TestHints_concurrent(t *testing.T) {
	var h guard.Hints
	done := make(chan struct{})
	for i := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for j := range 1000 {
				h.ObserveHold(time.Duration(i*1000+j) * time.Microsecond)
				_ = h.For(guard.Result{Outcome: guard.Contended, RetryAfter: time.Second}, 0)
			}
		}()
	}
	for range 4 {
		<-done
	}
	if o := h.Observed(); o <= 0 || o > 4*time.Millisecond {
		t.Fatalf("observed mean %v out of range", o)
	}
}

// Without jitter the hint is deterministic (the adapters' default, so their
// documented examples hold).
func TestHints_noJitterIsExact(t *testing.T) {
	var h guard.Hints
	for range 50 {
		if d := h.For(guard.Result{Outcome: guard.Contended, RetryAfter: 2500 * time.Millisecond}, 0); d != 2500*time.Millisecond {
			t.Fatalf("hint %v, want exactly 2.5s", d)
		}
	}
}

// A declared expected hold replaces the lease before the first release is
// observed (the first burst of a fresh route used to be told the full
// lease); once holds are observed they win, and the lease still bounds it.
func TestHints_expectedHoldUntilObserved(t *testing.T) {
	held := guard.Result{Outcome: guard.Contended, RetryAfter: 5 * time.Second}
	if d := (&guard.Hints{}).For(held, 0); d != 5*time.Second {
		t.Fatalf("control, nothing known: %v, want the 5s lease", d)
	}
	h := guard.Hints{Expected: 100 * time.Millisecond}
	if d := h.For(held, 0); d != 100*time.Millisecond {
		t.Fatalf("expected 100ms, nothing observed: %v", d)
	}
	if d := h.For(guard.Result{Outcome: guard.Contended, RetryAfter: 20 * time.Millisecond}, 0); d != 20*time.Millisecond {
		t.Fatalf("lease ending before the expected hold: %v, want 20ms", d)
	}
	h.ObserveHold(300 * time.Millisecond)
	if d := h.For(held, 0); d != 300*time.Millisecond {
		t.Fatalf("observed 300ms: %v, want the observation over the expectation", d)
	}
	if d := (&guard.Hints{Expected: 10 * time.Second}).For(held, 0); d != 5*time.Second {
		t.Fatalf("expected longer than the lease: %v, want the 5s lease", d)
	}
}

// A refusal whose holder lease is unknown (RetryAfter 0) on a route with
// no TTL of its own is bounded by core.DefaultTTL, never hinted as 0.
func TestHints_unknownLeaseDefaultsToTheDefaultTTL(t *testing.T) {
	var h guard.Hints
	for _, oc := range []guard.Outcome{guard.Contended, guard.Limited} {
		if d := h.For(guard.Result{Outcome: oc}, 0); d != core.DefaultTTL {
			t.Errorf("%v, unknown lease, no route TTL: hint %v, want %v", oc, d, core.DefaultTTL)
		}
		if d := h.For(guard.Result{Outcome: oc}, 3*time.Second); d != 3*time.Second {
			t.Errorf("%v, unknown lease, route TTL 3s: hint %v", oc, d)
		}
	}
}
