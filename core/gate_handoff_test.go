package core_test

import (
	"context"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// TestPermits_handoffToParked: a permit released while a request of the
// same Client waits parked in its gate passes to it in the release's round
// trip: the waiter sends no acquire of its own, and its fence is above the
// releaser's. With a writer waiting, the permit is released instead, so the
// writer gets its turn (the control of the hand-off).
func TestPermits_handoffToParked(t *testing.T) {
	for _, writer := range []bool{false, true} {
		name := "no writer"
		if writer {
			name = "writer waits: no hand-off"
		}
		t.Run(name, func(t *testing.T) {
			srv := redistest.Start(t)
			admin := srv.Client(t)
			ctx := context.Background()
			c, w := core.New(srv.Client(t)), core.New(srv.Client(t))
			t.Cleanup(func() { _ = c.Close(); _ = w.Close() })
			first, err := c.Acquire(ctx, "sem", core.Permits(1))
			if err != nil {
				t.Fatal(err)
			}
			// a head that waits in Redis, then a request parked behind it
			heads := make(chan *core.Lock, 2)
			for range 2 {
				go func() {
					l, _ := c.Acquire(ctx, "sem", core.Permits(1), core.WithWait(5*time.Second))
					heads <- l
				}()
			}
			time.Sleep(100 * time.Millisecond)
			writerDone := make(chan error, 1)
			if writer {
				go func() {
					l, err := w.Acquire(ctx, "sem", core.WithWait(5*time.Second))
					if err == nil {
						err = l.Release(ctx)
					}
					writerDone <- err
				}()
				time.Sleep(100 * time.Millisecond) // its claim is recorded
			}
			if err := admin.ConfigResetStat(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			if err := first.Release(ctx); err != nil {
				t.Fatal(err)
			}
			next := <-heads
			if next == nil || next.Fence() <= first.Fence() {
				t.Fatalf("next holder %v, want a fence above %d", next, first.Fence())
			}
			// Handed off: the hand-off script ran (its ZSCORE of our lease)
			// and nothing else: no release notice (PUBLISH), no acquire of
			// the waiter's own (TYPE).
			calls := commandCalls(t, admin)
			handed := calls["zscore"] == 1 && calls["publish"] == 0 && calls["type"] == 0
			if handed == writer {
				t.Fatalf("hand-off %v with a writer waiting %v: %v", handed, writer, calls)
			}
			_ = next.Release(ctx)
			if l := <-heads; l != nil {
				_ = l.Release(ctx)
			}
			if writer {
				if err := <-writerDone; err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
