package core_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// TestShared_readersNeverSeeAWriteInProgress: readers and writers from 4
// Clients on one key. A writer changes a two-part value non-atomically
// (write one half, pause, write the other) and checks nobody else is
// inside; a reader reads both halves with a pause between and checks they
// match and nobody writes meanwhile. The negative control runs the writers
// with Shared() too (as a route mapped wrongly would) and must see torn
// reads or overlapping writers.
func TestShared_readersNeverSeeAWriteInProgress(t *testing.T) {
	srv := redistest.Start(t)
	cs := clients(t, srv, 4)
	if n := rwViolations(t, cs, "rw", nil); n != 0 {
		t.Fatalf("%d violations with exclusive writers", n)
	}
	if n := rwViolations(t, cs, "rw-broken", []core.Option{core.Shared()}); n == 0 {
		t.Fatal("negative control: writers taking shared holds caused no violation; the test cannot fail")
	}
}

func rwViolations(t *testing.T, cs []*core.Client, key string, writerOpts []core.Option) int64 {
	var (
		a, b       atomic.Int64 // the two halves of the value
		writers    atomic.Int64
		readers    atomic.Int64
		violations atomic.Int64
		maxReaders atomic.Int64
	)
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 12 {
		wg.Go(func() {
			c := cs[g%len(cs)]
			for i := range 12 {
				if g%4 == 0 { // a writer
					l, err := c.Acquire(ctx, key, writerOpts...)
					if err != nil {
						t.Error(err)
						return
					}
					if writers.Add(1) > 1 || readers.Load() > 0 {
						violations.Add(1)
					}
					v := a.Load() + 1
					a.Store(v)
					time.Sleep(500 * time.Microsecond)
					b.Store(v)
					writers.Add(-1)
					_ = l.Release(ctx)
					continue
				}
				l, err := c.Acquire(ctx, key, core.Shared())
				if err != nil {
					t.Error(err)
					return
				}
				n := readers.Add(1)
				if n > maxReaders.Load() {
					maxReaders.Store(n)
				}
				x := a.Load()
				time.Sleep(time.Duration(200+100*(i%3)) * time.Microsecond)
				if y := b.Load(); x != y || writers.Load() > 0 {
					violations.Add(1)
				}
				readers.Add(-1)
				_ = l.Release(ctx)
			}
		})
	}
	wg.Wait()
	if writerOpts == nil && maxReaders.Load() < 2 {
		t.Errorf("readers never overlapped (at most %d at once): shared holds were serialized", maxReaders.Load())
	}
	return violations.Load()
}
