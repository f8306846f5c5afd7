// Package backendtest is the conformance suite a core.Backend must pass,
// for the backends in this module and for third-party ones: the core
// contract (fences, release and refresh ownership, waiting, deadlines, loss
// notice, cancellation, invalid keys) and a non-atomic witness with its
// negative control, all driven through a real core.Client. A backend runs
// it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, backendtest.Harness{
//			NewClient: func(t testing.TB, opts ...core.Option) *core.Client {
//				return core.NewWithBackend(newMyBackend(t), opts...)
//			},
//		})
//	}
package backendtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// Harness gives the suite access to one backend deployment.
type Harness struct {
	// NewClient returns a new Client on the shared store; the suite closes it.
	NewClient func(t testing.TB, opts ...core.Option) *core.Client
	// Advance lets d pass for the store's TTLs in addition to real time
	// (miniredis.FastForward); nil for real servers.
	Advance func(d time.Duration)
	// DeleteKey removes a backend key behind the holder's back.
	DeleteKey func(t testing.TB, key string)
	// Exists reports whether a backend key exists.
	Exists func(t testing.TB, key string) bool
	// Witness sizes the witness run (0: defaults: 32 goroutines, 4 clients,
	// 2 000 critical sections).
	Goroutines, Clients, Sections int
}

func (h Harness) client(t *testing.T, opts ...core.Option) *core.Client {
	c := h.NewClient(t, opts...)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// sleep lets d pass locally and in the store.
func (h Harness) sleep(d time.Duration) {
	time.Sleep(d)
	if h.Advance != nil {
		h.Advance(d)
	}
}

// Run runs every behaviour test as a subtest of t.
func Run(t *testing.T, h Harness) {
	tests := []struct {
		name string
		fn   func(*testing.T, Harness)
	}{
		{"AcquireRelease", testAcquireRelease},
		{"TryAcquire_held", testTryAcquireHeld},
		{"FenceIncreases", testFenceIncreases},
		{"Release_afterExpiry_notHeld", testReleaseAfterExpiry},
		{"Refresh", testRefresh},
		{"Refresh_afterExpiry_doesNotRecreate", testRefreshAfterExpiry},
		{"Acquire_wakesOnRelease", testWakesOnRelease},
		{"Acquire_waitBound", testWaitBound},
		{"Acquire_contextCancel", testContextCancel},
		{"Deadline_lostBeforeExpiry", testDeadlineLost},
		{"AutoRefresh_keepsLock", testAutoRefresh},
		{"AutoRefresh_tokenGone_lost", testTokenGone},
		{"MaxHold_cap", testMaxHold},
		{"InvalidKey", testInvalidKey},
		{"LocalHandoff_fenced", testLocalHandoff},
		{"Context_carriesLock", testContext},
		{"Witness", testWitness},
		{"Witness_negativeControl", testWitnessNegative},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, h) })
	}
}

var bg = context.Background()

func testAcquireRelease(t *testing.T, h Harness) {
	c := h.client(t)
	l, err := c.Acquire(bg, "ar")
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Token()) != 32 || l.Key() != "ar" || l.Fence() == 0 {
		t.Fatalf("token %q key %q fence %d", l.Token(), l.Key(), l.Fence())
	}
	if h.Exists != nil && !h.Exists(t, core.KeysFor(core.DefaultPrefix, "ar").Lock) {
		t.Fatal("lock key missing in the backend while held")
	}
	if err := l.Release(bg); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed after Release")
	}
	if l.Err() != nil {
		t.Fatalf("Err after release = %v", l.Err())
	}
	if err := l.Release(bg); !errors.Is(err, core.ErrNotHeld) {
		t.Fatalf("second Release = %v, want ErrNotHeld", err)
	}
	if h.Exists != nil && h.Exists(t, core.KeysFor(core.DefaultPrefix, "ar").Lock) {
		t.Fatal("lock key left in the backend after release")
	}
}

func testTryAcquireHeld(t *testing.T, h Harness) {
	a, b := h.client(t), h.client(t)
	l, err := a.Acquire(bg, "try", core.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(bg)
	_, err = b.TryAcquire(bg, "try")
	if !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("TryAcquire on a held key = %v, want ErrNotAcquired", err)
	}
	ra, ok := core.RetryAfter(err)
	if !ok || ra <= 0 || ra > 5*time.Second {
		t.Fatalf("RetryAfter = %v %v, want (0, 5s]", ra, ok)
	}
	// The same Client: its local holder answers without a round trip.
	if _, err := a.TryAcquire(bg, "try"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("TryAcquire on own held key = %v", err)
	}
}

func testFenceIncreases(t *testing.T, h Harness) {
	a, b := h.client(t), h.client(t)
	var last uint64
	for i := range 20 {
		c := a
		if i%2 == 1 {
			c = b
		}
		l, err := c.Acquire(bg, "fence")
		if err != nil {
			t.Fatal(err)
		}
		if l.Fence() <= last {
			t.Fatalf("fence %d after %d", l.Fence(), last)
		}
		last = l.Fence()
		if err := l.Release(bg); err != nil {
			t.Fatal(err)
		}
	}
}

func testReleaseAfterExpiry(t *testing.T, h Harness) {
	a, b := h.client(t), h.client(t)
	l, err := a.Acquire(bg, "exp", core.WithTTL(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	h.sleep(150 * time.Millisecond)
	l2, err := b.Acquire(bg, "exp", core.WithTTL(5*time.Second), core.WithWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(bg); !errors.Is(err, core.ErrNotHeld) {
		t.Fatalf("stale Release = %v, want ErrNotHeld", err)
	}
	if err := l.Refresh(bg, time.Second); !errors.Is(err, core.ErrNotHeld) {
		t.Fatalf("stale Refresh = %v, want ErrNotHeld", err)
	}
	// The new holder is untouched.
	if _, err := a.TryAcquire(bg, "exp"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("key free after a stale release: %v", err)
	}
	if err := l2.Release(bg); err != nil {
		t.Fatalf("new holder's Release = %v", err)
	}
}

func testRefresh(t *testing.T, h Harness) {
	c := h.client(t)
	l, err := c.Acquire(bg, "refresh", core.WithTTL(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		h.sleep(100 * time.Millisecond)
		if err := l.Refresh(bg, 200*time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	if l.Err() != nil {
		t.Fatalf("lost while refreshed: %v", l.Err())
	}
	if err := l.Refresh(bg, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Until(l.Deadline()); d < 4*time.Second {
		t.Fatalf("deadline after Refresh(5s) is only %v away", d)
	}
	if err := l.Release(bg); err != nil {
		t.Fatal(err)
	}
}

func testRefreshAfterExpiry(t *testing.T, h Harness) {
	c := h.client(t)
	l, err := c.Acquire(bg, "refexp", core.WithTTL(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	h.sleep(100 * time.Millisecond)
	if err := l.Refresh(bg, time.Second); !errors.Is(err, core.ErrNotHeld) {
		t.Fatalf("Refresh after expiry = %v, want ErrNotHeld", err)
	}
	if h.Exists != nil && h.Exists(t, core.KeysFor(core.DefaultPrefix, "refexp").Lock) {
		t.Fatal("Refresh re-created an expired lock")
	}
}

func testWakesOnRelease(t *testing.T, h Harness) {
	a, b := h.client(t), h.client(t)
	l, err := a.Acquire(bg, "wake", core.WithTTL(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = l.Release(bg)
	}()
	start := time.Now()
	l2, err := b.Acquire(bg, "wake", core.WithWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// Woken by the release notice, not by the 20 s lease running out.
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("waiter woke after %v", d)
	}
	_ = l2.Release(bg)
}

func testWaitBound(t *testing.T, h Harness) {
	a, b := h.client(t), h.client(t)
	l, err := a.Acquire(bg, "bound", core.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(bg)
	start := time.Now()
	_, err = b.Acquire(bg, "bound", core.WithWait(150*time.Millisecond))
	if !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("bounded wait = %v", err)
	}
	if d := time.Since(start); d < 140*time.Millisecond || d > 3*time.Second {
		t.Fatalf("bounded wait took %v", d)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("a wait bound is not a context deadline")
	}
}

func testContextCancel(t *testing.T, h Harness) {
	a, b := h.client(t), h.client(t)
	l, err := a.Acquire(bg, "cancel", core.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(bg)
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	_, err = b.Acquire(ctx, "cancel")
	if !errors.Is(err, core.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acquire with an expiring ctx = %v", err)
	}
	// A local waiter behind a local holder is cancelled too.
	ctx2, cancel2 := context.WithCancel(bg)
	go func() { time.Sleep(50 * time.Millisecond); cancel2() }()
	_, err = a.Acquire(ctx2, "cancel")
	if !errors.Is(err, core.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
		t.Fatalf("local waiter cancel = %v", err)
	}
}

func testDeadlineLost(t *testing.T, h Harness) {
	a, b := h.client(t), h.client(t)
	ttl := 300 * time.Millisecond
	l, err := a.Acquire(bg, "deadline", core.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	// b acquires as soon as the backend lets it. At that moment the first
	// holder must already have been told: its Done closed before the grant.
	// (Checked right after the grant rather than by timestamps taken in
	// another goroutine, whose scheduling delay would blur the order.)
	var l2 *core.Lock
	if h.Advance == nil {
		l2, err = b.Acquire(bg, "deadline", core.WithWait(5*time.Second))
	} else {
		h.sleep(ttl)
		l2, err = b.Acquire(bg, "deadline")
	}
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Release(bg)
	select {
	case <-l.Done():
	default:
		t.Fatal("another client acquired while the first holder had not been told of its loss")
	}
	if !errors.Is(l.Err(), core.ErrLost) {
		t.Fatalf("Err = %v, want ErrLost", l.Err())
	}
}

func testAutoRefresh(t *testing.T, h Harness) {
	c := h.client(t)
	l, err := c.Acquire(bg, "auto", core.WithTTL(150*time.Millisecond), core.WithAutoRefresh())
	if err != nil {
		t.Fatal(err)
	}
	for range 6 {
		h.sleep(100 * time.Millisecond)
	}
	if l.Err() != nil {
		t.Fatalf("auto-refreshed lock lost: %v", l.Err())
	}
	other := h.client(t)
	if _, err := other.TryAcquire(bg, "auto"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("auto-refreshed lock acquired by another client: %v", err)
	}
	if err := l.Release(bg); err != nil {
		t.Fatal(err)
	}
}

func testTokenGone(t *testing.T, h Harness) {
	if h.DeleteKey == nil {
		t.Skip("harness cannot delete keys")
	}
	c := h.client(t)
	l, err := c.Acquire(bg, "gone", core.WithTTL(time.Second), core.WithAutoRefresh(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	h.DeleteKey(t, core.KeysFor(core.DefaultPrefix, "gone").Lock)
	select {
	case <-l.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("no loss notice after the token vanished")
	}
	if !errors.Is(l.Err(), core.ErrLost) {
		t.Fatalf("Err = %v", l.Err())
	}
	if err := l.Release(bg); !errors.Is(err, core.ErrNotHeld) {
		t.Fatalf("Release after loss = %v", err)
	}
}

// testMaxHold: renewals keep the lock past its TTL until the cap ends it.
// The TTL leaves the watchdog a quarter of a second of slack: with 100 ms,
// a stall of the race-instrumented test binary on a loaded CI machine let
// the lease lapse first (a genuine loss, but not the one under test).
func testMaxHold(t *testing.T, h Harness) {
	c := h.client(t)
	l, err := c.Acquire(bg, "cap", core.WithTTL(250*time.Millisecond), core.WithAutoRefresh(), core.WithMaxHold(600*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for {
		select {
		case <-l.Done():
		default:
			if time.Since(start) > 3*time.Second {
				t.Fatal("hold cap never ended the lock")
			}
			h.sleep(20 * time.Millisecond)
			continue
		}
		break
	}
	if !errors.Is(l.Err(), core.ErrLost) || !errors.Is(l.Err(), core.ErrHoldCapReached) {
		t.Fatalf("Err = %v", l.Err())
	}
	if d := time.Since(start); d < 500*time.Millisecond {
		t.Fatalf("ended after %v, before the cap", d)
	}
}

func testInvalidKey(t *testing.T, h Harness) {
	c := h.client(t)
	for _, k := range []string{"", string(make([]byte, core.MaxKeyLen+1)), "a\nb", "nul\x00", "\xff\xfe"} {
		if _, err := c.TryAcquire(bg, k); !errors.Is(err, core.ErrInvalidKey) {
			t.Errorf("key %q: err = %v, want ErrInvalidKey", k, err)
		}
		if _, err := c.Acquire(bg, k); !errors.Is(err, core.ErrInvalidKey) {
			t.Errorf("key %q: err = %v, want ErrInvalidKey", k, err)
		}
	}
	if _, err := c.TryAcquire(bg, "x", core.WithPrefix("a{b}")); !errors.Is(err, core.ErrInvalidKey) {
		t.Errorf("brace prefix: %v", err)
	}
	// Braces in keys are fine: escaped, they cannot steer the slot.
	l, err := c.TryAcquire(bg, "{evil}")
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Release(bg)
}

func testLocalHandoff(t *testing.T, h Harness) {
	c := h.client(t)
	l, err := c.Acquire(bg, "handoff")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *core.Lock)
	go func() {
		l2, err := c.Acquire(bg, "handoff", core.WithWait(5*time.Second))
		if err != nil {
			t.Error(err)
		}
		got <- l2
	}()
	time.Sleep(50 * time.Millisecond)
	if err := l.Release(bg); err != nil {
		t.Fatal(err)
	}
	l2 := <-got
	if l2 == nil {
		return
	}
	if l2.Fence() <= l.Fence() || l2.Token() == l.Token() {
		t.Fatalf("hand-off fence %d after %d", l2.Fence(), l.Fence())
	}
	if err := l.Release(bg); !errors.Is(err, core.ErrNotHeld) {
		t.Fatalf("old holder Release after hand-off = %v", err)
	}
	if err := l2.Release(bg); err != nil {
		t.Fatal(err)
	}
}

func testContext(t *testing.T, h Harness) {
	c := h.client(t)
	l, err := c.Acquire(bg, "ctx", core.WithTTL(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := l.Context(bg)
	defer cancel()
	if got, ok := core.FromContext(ctx); !ok || got != l {
		t.Fatal("FromContext lost the lock")
	}
	if ft, ok := core.FenceFromContext(ctx); !ok || ft.Fence != l.Fence() || ft.Key != "ctx" {
		t.Fatalf("FenceFromContext = %+v", ft)
	}
	h.sleep(150 * time.Millisecond)
	select {
	case <-ctx.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("lock context not cancelled after the loss")
	}
	if !errors.Is(context.Cause(ctx), core.ErrLost) {
		t.Fatalf("cause = %v", context.Cause(ctx))
	}
}
