package backendtest

import (
	"sync"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// witness is a deliberately non-atomic counter: read, pause, write. Two
// holders at once lose updates.
type witness struct{ n int }

func runWitness(t *testing.T, h Harness, locked bool) (got, want int) {
	g, nc, total := h.Goroutines, h.Clients, h.Sections
	if g == 0 {
		g = 32
	}
	if nc == 0 {
		nc = 4
	}
	if total == 0 {
		total = 2000
	}
	clients := make([]*core.Client, nc)
	for i := range clients {
		clients[i] = h.client(t, core.WithTTL(5*time.Second))
	}
	var mu sync.Mutex // only guards the shared int against the race detector
	w := &witness{}
	per := (total + g - 1) / g
	var wg sync.WaitGroup
	for i := range g {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[i%nc]
			for range per {
				if !locked {
					// Same read-pause-write, no lock: the mutex only makes each
					// single access race-free; the read and the write are
					// still separate critical sections.
					mu.Lock()
					v := w.n
					mu.Unlock()
					time.Sleep(20 * time.Microsecond)
					mu.Lock()
					w.n = v + 1
					mu.Unlock()
					continue
				}
				l, err := c.Acquire(bg, "witness", core.WithWait(30*time.Second))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				v := w.n
				mu.Unlock()
				time.Sleep(20 * time.Microsecond)
				mu.Lock()
				w.n = v + 1
				mu.Unlock()
				if err := l.Release(bg); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return w.n, per * g
}

func testWitness(t *testing.T, h Harness) {
	got, want := runWitness(t, h, true)
	if got != want {
		t.Fatalf("witness = %d, want %d: lost updates under the lock", got, want)
	}
	t.Logf("witness exact: %d critical sections", got)
}

func testWitnessNegative(t *testing.T, h Harness) {
	got, want := runWitness(t, h, false)
	if got >= want {
		t.Fatalf("negative control: witness = %d of %d without the lock; the witness cannot detect races", got, want)
	}
	t.Logf("negative control: %d of %d updates survived without the lock", got, want)
}
