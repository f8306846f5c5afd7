package guard_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/internal/guard"
	"go.uber.org/goleak"
)

// leakCheck verifies, after every other cleanup, that the test left no
// goroutine behind. (No TestMain here: other files of this package may be
// written by other adapters' authors.)
func leakCheck(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

type recorder struct {
	core.NopObserver
	mu   sync.Mutex
	keys []string
}

func (r *recorder) AcquireStart(ctx context.Context, e core.AcquireStartEvent) context.Context {
	r.mu.Lock()
	r.keys = append(r.keys, e.Key)
	r.mu.Unlock()
	return ctx
}

func (r *recorder) acquired() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.keys, ",")
}

func newClient(t *testing.T, s *locktest.Store, opts ...core.Option) *core.Client {
	c := s.Client(opts...)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestAcquire_sortedDedupedAndReleasedTogether(t *testing.T) {
	leakCheck(t)
	s := locktest.NewStore()
	rec := &recorder{}
	c := newClient(t, s, core.WithObserver(rec))
	h, res := guard.Acquire(context.Background(), c, []string{"b", "a", "b"}, guard.Policy{})
	if res.Outcome != guard.Acquired || len(h.Locks()) != 2 {
		t.Fatalf("Acquire = %+v, %d locks", res, len(h.Locks()))
	}
	if got := rec.acquired(); got != "a,b" {
		t.Fatalf("acquired %q; want sorted and deduplicated a,b", got)
	}
	if n := len(core.LocksFromContext(h.Context())); n != 2 {
		t.Fatalf("%d locks in the context; want 2", n)
	}
	if err := h.Release(); err != nil || s.Held(core.DefaultPrefix, "a") || s.Held(core.DefaultPrefix, "b") {
		t.Fatalf("Release = %v; a held %v, b held %v", err, s.Held(core.DefaultPrefix, "a"), s.Held(core.DefaultPrefix, "b"))
	}
	if err := h.Release(); err != nil {
		t.Fatalf("second Release = %v", err)
	}
}

func TestAcquire_allOrNothing(t *testing.T) {
	leakCheck(t)
	s := locktest.NewStore()
	c, other := newClient(t, s), newClient(t, s)
	l, err := other.TryAcquire(context.Background(), "b", core.WithTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	h, res := guard.Acquire(context.Background(), c, []string{"b", "a"}, guard.Policy{})
	if h != nil || res.Outcome != guard.Contended || res.RetryAfter <= 2*time.Second {
		t.Fatalf("Acquire = %v, %+v; want Contended with the holder's TTL", h, res)
	}
	if s.Held(core.DefaultPrefix, "a") {
		t.Fatal("a still held after the acquisition of b failed")
	}
}

func TestAcquire_invalidKeySendsNothing(t *testing.T) {
	leakCheck(t)
	rec := &recorder{}
	c := newClient(t, locktest.NewStore(), core.WithObserver(rec))
	for _, keys := range [][]string{{"a", ""}, {"a\x00"}, {strings.Repeat("k", core.MaxKeyLen+1)}} {
		if h, res := guard.Acquire(context.Background(), c, keys, guard.Policy{}); h != nil || res.Outcome != guard.InvalidKey {
			t.Fatalf("Acquire(%q) = %v, %v; want InvalidKey", keys, h, res.Outcome)
		}
	}
	if got := rec.acquired(); got != "" {
		t.Fatalf("acquisitions %q; want none", got)
	}
}

func TestAcquire_reentrant(t *testing.T) {
	leakCheck(t)
	s := locktest.NewStore()
	rec := &recorder{}
	c := newClient(t, s, core.WithObserver(rec))
	outer, res := guard.Acquire(context.Background(), c, []string{"a"}, guard.Policy{})
	if res.Outcome != guard.Acquired {
		t.Fatal(res)
	}
	inner, res := guard.Acquire(outer.Context(), c, []string{"a", "b"}, guard.Policy{})
	if res.Outcome != guard.Acquired || len(inner.Locks()) != 1 || inner.Locks()[0].Key() != "b" {
		t.Fatalf("nested Acquire = %+v; want only b acquired", res)
	}
	if err := inner.Release(); err != nil {
		t.Fatal(err)
	}
	if !s.Held(core.DefaultPrefix, "a") || s.Held(core.DefaultPrefix, "b") {
		t.Fatal("the nested release must release b and leave the outer a")
	}
	_ = outer.Release()
	if got := rec.acquired(); got != "a,b" {
		t.Fatalf("acquired %q; want a once and b", got)
	}
}

func TestAcquire_failOpen(t *testing.T) {
	leakCheck(t)
	s := locktest.NewStore()
	s.SetDown(true)
	c := newClient(t, s)
	if h, res := guard.Acquire(context.Background(), c, []string{"a"}, guard.Policy{}); h != nil || res.Outcome != guard.Unavailable || !errors.Is(res.Err, core.ErrUnavailable) {
		t.Fatalf("fail closed: %v, %+v", h, res)
	}
	h, res := guard.Acquire(context.Background(), c, []string{"a"}, guard.Policy{FailOpen: true})
	if h == nil || res.Outcome != guard.FailedOpen || len(h.Locks()) != 0 || h.Lost() != nil {
		t.Fatalf("fail open: %v, %+v", h, res)
	}
	if _, ok := core.FromContext(h.Context()); ok {
		t.Fatal("a lock in the fail-open context")
	}
	if err := h.Release(); err != nil {
		t.Fatal(err)
	}
}

func TestAcquire_waitAndDeadline(t *testing.T) {
	leakCheck(t)
	s := locktest.NewStore()
	c, other := newClient(t, s), newClient(t, s)
	l, err := other.TryAcquire(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, res := guard.Acquire(ctx, c, []string{"a"}, guard.Policy{Wait: 5 * time.Second}); res.Outcome != guard.Timeout {
		t.Fatalf("deadline while waiting: %v; want Timeout", res.Outcome)
	}
	time.AfterFunc(30*time.Millisecond, func() { _ = l.Release(context.Background()) })
	h, res := guard.Acquire(context.Background(), c, []string{"a"}, guard.Policy{Wait: 5 * time.Second})
	if res.Outcome != guard.Acquired {
		t.Fatalf("wait: %v; want Acquired after the release", res.Outcome)
	}
	_ = h.Release()
}

func TestHeld_contextCancelledOnLoss(t *testing.T) {
	leakCheck(t)
	s := locktest.NewStore()
	c := newClient(t, s)
	h, res := guard.Acquire(context.Background(), c, []string{"a", "b"}, guard.Policy{
		TTL: 500 * time.Millisecond, AutoRefresh: true, RefreshEvery: 10 * time.Millisecond,
	})
	if res.Outcome != guard.Acquired {
		t.Fatal(res)
	}
	defer h.Release()
	s.Expire(core.DefaultPrefix, "a")
	select {
	case <-h.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not cancelled after the lease vanished")
	}
	if cause := context.Cause(h.Context()); !errors.Is(cause, core.ErrLost) || !errors.Is(h.Lost(), core.ErrLost) {
		t.Fatalf("Cause %v, Lost %v; want core.ErrLost", cause, h.Lost())
	}
	if err := h.Release(); err != nil {
		t.Fatalf("Release after a loss = %v; want nil (not held is not an error here)", err)
	}
	if s.Held(core.DefaultPrefix, "b") {
		t.Fatal("b still held")
	}
}

func TestHeld_releaseIsDetachedFromTheRequest(t *testing.T) {
	leakCheck(t)
	s := locktest.NewStore()
	c := newClient(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	h, res := guard.Acquire(ctx, c, []string{"a"}, guard.Policy{ReleaseTimeout: time.Second})
	if res.Outcome != guard.Acquired {
		t.Fatal(res)
	}
	cancel() // the client went away
	if err := h.Release(); err != nil || s.Held(core.DefaultPrefix, "a") {
		t.Fatalf("Release after cancel = %v, held %v", err, s.Held(core.DefaultPrefix, "a"))
	}
}

// TestAcquire_reentrant_onlySameLockerAndPrefix: a nested guard on another
// Locker, or under another prefix, with the same key is not the outer
// lock: it must take its own (defect 2: reentrancy compared the key only).
func TestAcquire_reentrant_onlySameLockerAndPrefix(t *testing.T) {
	leakCheck(t)
	s := locktest.NewStore()
	c, other := newClient(t, s), newClient(t, s)
	outer, res := guard.Acquire(context.Background(), c, []string{"a"}, guard.Policy{})
	if res.Outcome != guard.Acquired {
		t.Fatal(res)
	}
	defer outer.Release()
	// Another Locker on the same store: the key is held by c, so this is
	// contention, not a free pass.
	if h, res := guard.Acquire(outer.Context(), other, []string{"a"}, guard.Policy{}); res.Outcome != guard.Contended {
		if h != nil {
			_ = h.Release()
		}
		t.Fatalf("nested guard on another Locker: %v; want Contended", res.Outcome)
	}
	// The same Locker under another prefix: a different lock, taken anew.
	inner, res := guard.Acquire(outer.Context(), c, []string{"a"}, guard.Policy{Options: []core.Option{core.WithPrefix("other:")}})
	if res.Outcome != guard.Acquired || len(inner.Locks()) != 1 {
		t.Fatalf("nested guard under another prefix: %+v; want a new lock", res)
	}
	if !s.Held("other:", "a") {
		t.Fatal("the lock under the other prefix is not held")
	}
	_ = inner.Release()
}
