package core_test

import (
	"context"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

func TestClient_Snapshot(t *testing.T) {
	srv := redistest.Start(t)
	c := core.New(srv.Client(t), core.WithTTL(time.Second))
	defer c.Close()
	ctx := context.Background()

	l, err := c.Acquire(ctx, "snap:a", core.WithName("route"), core.WithAutoRefresh())
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() {
		l2, err := c.Acquire(ctx, "snap:a", core.WithWait(5*time.Second))
		if err == nil {
			err = l2.Release(ctx)
		}
		waited <- err
	}()
	var s core.Snapshot
	for i := 0; i < 200; i++ {
		s = c.Snapshot()
		if len(s.Waiting) == 1 && s.Waiting[0].Waiters == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(s.Held) != 1 || len(s.Waiting) != 1 {
		t.Fatalf("snapshot = %+v", s)
	}
	h := s.Held[0]
	if h.Key != "snap:a" || h.Name != "route" || h.Fence != l.Fence() || h.Owner != l.Owner() || !h.AutoRefresh {
		t.Fatalf("held = %+v", h)
	}
	if h.Remaining <= 0 || h.Remaining > time.Second || h.TTL != time.Second {
		t.Fatalf("remaining %v, ttl %v", h.Remaining, h.TTL)
	}
	w := s.Waiting[0]
	if w.Key != core.KeysFor(core.DefaultPrefix, "snap:a").Lock || !w.Held || w.Waiters != 1 {
		t.Fatalf("waiting = %+v", w)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatal(err)
	}
	if s := c.Snapshot(); len(s.Held) != 0 || len(s.Waiting) != 0 {
		t.Fatalf("after release: %+v", s)
	}
}
