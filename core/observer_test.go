package core_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
)

type recorder struct {
	mu       sync.Mutex
	ends     []core.AcquireEndEvent
	releases []core.ReleaseEvent
	lost     []core.LostEvent
	refresh  []core.RefreshEvent
}

func (r *recorder) AcquireStart(ctx context.Context, _ core.AcquireStartEvent) context.Context {
	return ctx
}
func (r *recorder) AcquireEnd(_ context.Context, e core.AcquireEndEvent) any {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ends = append(r.ends, e)
	return len(r.ends)
}
func (r *recorder) Released(_ context.Context, e core.ReleaseEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.releases = append(r.releases, e)
}
func (r *recorder) Refreshed(_ context.Context, e core.RefreshEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refresh = append(r.refresh, e)
}
func (r *recorder) Lost(e core.LostEvent) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost = append(r.lost, e)
}

func TestObserver_events(t *testing.T) {
	rec := &recorder{}
	store := locktest.NewStore()
	c := store.Client(core.WithObserver(rec), core.WithName("coupon"))
	defer c.Close()
	ctx := context.Background()

	l, err := c.Acquire(ctx, "obs", core.WithTTL(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryAcquire(ctx, "obs"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatal(err)
	}
	waited := make(chan *core.Lock)
	go func() {
		l2, err := c.Acquire(ctx, "obs", core.WithWait(time.Second))
		if err != nil {
			t.Error(err)
		}
		waited <- l2
	}()
	time.Sleep(30 * time.Millisecond)
	if err := l.Refresh(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := <-waited
	store.Expire(core.DefaultPrefix, "obs")
	if err := l2.Refresh(ctx, 0); !errors.Is(err, core.ErrNotHeld) {
		t.Fatal(err)
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.ends) != 3 {
		t.Fatalf("%d acquire ends", len(rec.ends))
	}
	first, try, wait := rec.ends[0], rec.ends[1], rec.ends[2]
	if !first.Acquired || first.Contended || first.Attempts != 1 || first.Fence == 0 || first.Name != "coupon" || first.Backend != "memory" {
		t.Errorf("first acquire: %+v", first)
	}
	if try.Acquired || !try.Contended || !errors.Is(try.Err, core.ErrNotAcquired) {
		t.Errorf("failed try: %+v", try)
	}
	if !wait.Acquired || !wait.Contended || !wait.Handoff || wait.Wait < 20*time.Millisecond || wait.Fence <= first.Fence {
		t.Errorf("waited acquire: %+v", wait)
	}
	if len(rec.releases) != 1 || !rec.releases[0].Handoff || rec.releases[0].Held <= 0 || rec.releases[0].Data != 1 {
		t.Errorf("releases: %+v", rec.releases)
	}
	if len(rec.refresh) != 2 || rec.refresh[0].Err != nil || !errors.Is(rec.refresh[1].Err, core.ErrNotHeld) {
		t.Errorf("refreshes: %+v", rec.refresh)
	}
	if len(rec.lost) != 1 || !errors.Is(rec.lost[0].Cause, core.ErrLost) || rec.lost[0].Data != 3 {
		t.Errorf("lost: %+v", rec.lost)
	}
}
