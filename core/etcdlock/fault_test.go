package etcdlock_test

import (
	"context"
	"errors"
	"flag"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/etcdlock"
	"github.com/fencedlock/fencedlock/internal/etcdtest"
)

var long = flag.Bool("etcd.long", false, "run the etcd fault tests for longer (several leader kills)")

// TestFault_leaderKill kills the leader of a 3-member cluster while 4
// clients (16 goroutines) contend for one lock, then restarts it, and does
// so again with -etcd.long. Under the lock each holder does a deliberately
// non-atomic read-pause-write of a shared counter and checks that its fence
// is above every fence seen before: no double grant, fences keep
// increasing across the failover, and the waiters carry on afterwards.
func TestFault_leaderKill(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	rounds := 1
	if *long {
		rounds = 5
	}
	var clients []*core.Client
	for range 4 {
		cli := c.Client(t) // one connection per client, like separate processes
		clients = append(clients, newClient(t, cli, core.WithTTL(5*time.Second), core.WithAutoRefresh()))
	}

	var (
		mu        sync.Mutex // makes each access race-free, not the section
		counter   int
		lastFence uint64
		done      atomic.Int64
		failures  atomic.Int64
		stop      atomic.Bool
		wg        sync.WaitGroup
	)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := clients[i%len(clients)]
			for !stop.Load() {
				ctx, cancel := context.WithTimeout(bg, 20*time.Second)
				l, err := cl.Acquire(ctx, "fault", core.WithWait(15*time.Second))
				cancel()
				if err != nil {
					// A leader election can fail an attempt; the caller
					// retries, as a service would.
					if !errors.Is(err, core.ErrUnavailable) && !errors.Is(err, core.ErrNotAcquired) {
						t.Errorf("acquire: %v", err)
						return
					}
					failures.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				mu.Lock()
				v, fence := counter, l.Fence()
				if fence <= lastFence {
					t.Errorf("fence %d granted after %d", fence, lastFence)
				}
				lastFence = fence
				mu.Unlock()
				time.Sleep(100 * time.Microsecond)
				mu.Lock()
				if l.Err() == nil {
					counter = v + 1
					done.Add(1)
				}
				mu.Unlock()
				rctx, rcancel := context.WithTimeout(bg, 5*time.Second)
				_ = l.Release(rctx) // may fail during the election: the entry is deleted later
				rcancel()
			}
		}()
	}

	progress := func(what string) {
		t.Helper()
		start := done.Load()
		deadline := time.Now().Add(15 * time.Second)
		for done.Load() < start+50 {
			if time.Now().After(deadline) {
				stop.Store(true)
				wg.Wait()
				t.Fatalf("%s: only %d critical sections in 15s", what, done.Load()-start)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	progress("before the failover")
	for r := range rounds {
		leader := c.Leader()
		leader.Kill()
		killedAt := time.Now()
		progress("after killing the leader")
		t.Logf("round %d: %s killed; 50 sections %v later", r, leader.Name(), time.Since(killedAt).Round(time.Millisecond))
		leader.Restart()
		progress("after restarting the old leader")
	}
	stop.Store(true)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if counter != int(done.Load()) {
		t.Fatalf("witness = %d after %d critical sections: two holders at once", counter, done.Load())
	}
	t.Logf("%d critical sections, %d failed attempts, last fence %d", counter, failures.Load(), lastFence)
	_ = etcdlock.DefaultSessionTTL
}
