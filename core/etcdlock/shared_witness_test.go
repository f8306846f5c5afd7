package etcdlock_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/etcdtest"
)

// TestShared_witnessAcrossInstances: readers and writers of 4 instances on
// one etcd key, with a non-atomic witness. A writer writes a two-part value
// one half at a time with a pause between and checks nobody else is inside;
// a reader reads the halves with a pause between and checks they match and
// no writer is inside. Readers must also overlap (shared holds are not
// serialized). Control: writers taking shared holds, as a route mapped
// wrongly would, must tear reads or overlap.
func TestShared_witnessAcrossInstances(t *testing.T) {
	cluster := etcdtest.Start(t)
	cs := instances(t, cluster, 4)
	if n, most := rwWitness(t, cs, "rw", nil); n != 0 {
		t.Fatalf("%d violations with exclusive writers", n)
	} else if most < 2 {
		t.Fatalf("readers never overlapped (at most %d at once): shared holds were serialized", most)
	}
	waitEntries(t, cluster.Client(t), "rw", 0)
	if n, _ := rwWitness(t, cs, "rw-control", []core.Option{core.Shared()}); n == 0 {
		t.Fatal("control: writers taking shared holds caused no violation; the witness cannot fail")
	}
}

// rwWitness runs 12 goroutines over the instances (every fourth a writer),
// 8 holds each; it returns the violations seen and the most readers inside
// at once.
func rwWitness(t *testing.T, cs []*core.Client, key string, writerOpts []core.Option) (int64, int64) {
	var a, b, writers, readers, violations, most atomic.Int64
	var wg sync.WaitGroup
	for g := range 12 {
		wg.Go(func() {
			c := cs[g%len(cs)]
			for i := range 8 {
				writer := g%4 == 0
				opts := []core.Option{core.Shared()}
				if writer {
					opts = writerOpts
				}
				l, err := c.Acquire(bg, key, append([]core.Option{core.WithWait(30 * time.Second)}, opts...)...)
				if err != nil {
					t.Error(err)
					return
				}
				if writer {
					if writers.Add(1) > 1 || readers.Load() > 0 {
						violations.Add(1)
					}
					v := a.Load() + 1
					a.Store(v)
					time.Sleep(2 * time.Millisecond)
					b.Store(v)
					writers.Add(-1)
				} else {
					n := readers.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					x := a.Load()
					time.Sleep(time.Duration(1+i%3) * time.Millisecond)
					if y := b.Load(); x != y || writers.Load() > 0 {
						violations.Add(1)
					}
					readers.Add(-1)
				}
				if err := l.Release(bg); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return violations.Load(), most.Load()
}
