package core_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// TestAcquireAll_randomOverlappingSets: 8 Clients take random sets of 2–5
// of 8 keys, some with a short wait so that acquisitions fail part-way.
// Per-key witnesses (read, pause, write) see every grant exactly once (no
// double grants), nothing deadlocks, and after the run every key is free:
// no failed AcquireAll left a partial hold behind.
func TestAcquireAll_randomOverlappingSets(t *testing.T) {
	srv := redistest.Start(t)
	cs := clients(t, srv, 8, core.WithTTL(5*time.Second))
	keys := make([]string, 8)
	for i := range keys {
		keys[i] = "acct:" + strconv.Itoa(i)
	}
	var mu sync.Mutex // guards only the map, not the witness values
	count := make(map[string]*int, len(keys))
	for _, k := range keys {
		count[k] = new(int)
	}
	want := make(map[string]int)
	var failed int
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 25 {
				set := pick(rng, keys, 2+rng.IntN(4))
				wait := time.Duration(-1)
				if rng.IntN(3) == 0 {
					wait = time.Millisecond // often fails part-way
				}
				opts := []core.Option{}
				if wait > 0 {
					opts = append(opts, core.WithWait(wait))
				}
				locks, err := cs[g%8].AcquireAll(ctx, set, opts...)
				if err != nil {
					if !errors.Is(err, core.ErrNotAcquired) {
						t.Error(err)
						return
					}
					mu.Lock()
					failed++
					mu.Unlock()
					continue
				}
				for _, k := range set {
					p := count[k]
					v := *p // read, pause, write: a double grant loses an update
					time.Sleep(50 * time.Microsecond)
					*p = v + 1
				}
				mu.Lock()
				for _, k := range set {
					want[k]++
				}
				mu.Unlock()
				if err := core.ReleaseAll(ctx, locks); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, k := range keys {
		if *count[k] != want[k] {
			t.Fatalf("key %s: witness counted %d grants, %d were made: a double grant", k, *count[k], want[k])
		}
		l, err := cs[0].TryAcquire(context.Background(), k)
		if err != nil {
			t.Fatalf("key %s still held after the run: a partial hold was left behind (%v)", k, err)
		}
		_ = l.Release(context.Background())
	}
	if failed == 0 {
		t.Fatal("no AcquireAll failed: the all-or-none path was not exercised")
	}
	t.Logf("%d AcquireAll calls failed part-way or at once", failed)
}

func pick(rng *rand.Rand, keys []string, n int) []string {
	p := rng.Perm(len(keys))[:n]
	out := make([]string, n)
	for i, j := range p {
		out[i] = keys[j]
	}
	return out
}
