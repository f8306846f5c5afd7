package locktest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
)

func TestFake_sharedAndPermits(t *testing.T) {
	s := locktest.NewStore()
	a, b := s.Client(), s.Client()
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	ctx := context.Background()
	r1, err := a.Acquire(ctx, "doc", core.Shared())
	if err != nil {
		t.Fatal(err)
	}
	r2, err := b.TryAcquire(ctx, "doc", core.Shared())
	if err != nil || r2.Fence() <= r1.Fence() {
		t.Fatalf("second reader = %v (fences %d, %d)", err, r1.Fence(), r2.Fence())
	}
	if _, err := b.TryAcquire(ctx, "doc"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("writer among readers = %v", err)
	}
	if _, err := b.TryAcquire(ctx, "doc", core.Permits(2)); !errors.Is(err, core.ErrModeMismatch) {
		t.Fatalf("permits on a shared key = %v; want ErrModeMismatch", err)
	}
	if s.Holders(core.DefaultPrefix, "doc") != 2 {
		t.Fatalf("Holders = %d", s.Holders(core.DefaultPrefix, "doc"))
	}
	// writer preference: a waiting writer holds new readers back
	got := make(chan *core.Lock, 1)
	go func() {
		w, _ := b.Acquire(ctx, "doc", core.WithWait(5*time.Second))
		got <- w
	}()
	time.Sleep(100 * time.Millisecond)
	if _, err := a.TryAcquire(ctx, "doc", core.Shared()); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("reader while a writer waits = %v", err)
	}
	_ = r1.Release(ctx)
	_ = r2.Release(ctx)
	w := <-got
	if w == nil || w.Fence() <= r2.Fence() {
		t.Fatal("writer not granted after the readers, or with a lower fence")
	}
	_ = w.Release(ctx)

	p1, _ := a.Acquire(ctx, "sem", core.Permits(1), core.WithTTL(200*time.Millisecond))
	if _, err := b.TryAcquire(ctx, "sem", core.Permits(1)); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("second of one permit = %v", err)
	}
	start := time.Now()
	p2, err := b.Acquire(ctx, "sem", core.Permits(1), core.WithWait(2*time.Second))
	if err != nil || time.Since(start) > time.Second {
		t.Fatalf("permit of a dead holder: %v after %v", err, time.Since(start))
	}
	_ = p2.Release(ctx)
	_ = p1
}
