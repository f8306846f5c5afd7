package core_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// TestAcquire_lateGrantRefused: a real redis-server holds the acquire
// script back (CLIENT PAUSE WRITE) for longer than the TTL, then runs it.
// The reply arrives after the lease the Client counts from the send: the
// Client must not hand out a lock that is already over (another owner may
// hold the key by then) and must give the grant back. Control: with the
// check off, Acquire returns a lock that is dead on arrival.
func TestAcquire_lateGrantRefused(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	c := core.New(rdb)
	t.Cleanup(func() { _ = c.Close() })
	// Connect and load the scripts outside the pause.
	if l, err := c.Acquire(ctx, "warm-up"); err != nil {
		t.Fatal(err)
	} else if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	pause := func() {
		if err := srv.Client(t).Do(ctx, "CLIENT", "PAUSE", 600, "WRITE").Err(); err != nil {
			t.Fatal(err)
		}
	}
	const ttl = 250 * time.Millisecond
	lockKey := core.KeysFor(core.DefaultPrefix, "late").Lock

	pause()
	start := time.Now()
	l, err := c.Acquire(ctx, "late", core.WithTTL(ttl))
	took := time.Since(start)
	if !errors.Is(err, core.ErrLateGrant) || !errors.Is(err, core.ErrUnavailable) || l != nil {
		t.Fatalf("Acquire after %v = %v, %v; want ErrLateGrant (and ErrUnavailable)", took, l, err)
	}
	if took < 500*time.Millisecond {
		t.Fatalf("Acquire came back in %v: the pause did not hold the script back", took)
	}
	// The grant is given back, not left to expire: the key is gone well
	// before its Redis-side lease (counted from the script's run) ends.
	for rdb.Exists(ctx, lockKey).Val() != 0 {
		if time.Since(start) > took+150*time.Millisecond {
			t.Fatal("the late grant was not released; it stays until its Redis lease ends")
		}
		time.Sleep(2 * time.Millisecond)
	}

	pause()
	l, err = c.Acquire(ctx, "late", core.WithTTL(ttl), core.AcceptLateGrants())
	if err != nil {
		t.Fatalf("control: %v", err)
	}
	if time.Until(l.Deadline()) > 0 {
		t.Fatalf("control: the late lock still has %v of validity; the test cannot tell a late grant", time.Until(l.Deadline()))
	}
	select {
	case <-l.Done():
	case <-time.After(time.Second):
		t.Fatal("control: a lock past its deadline was never reported lost")
	}
}

// TestHandOff_lateHandOffRefused: the holder's release hands the key to a
// waiter of the same Client in one script (an exclusive hold to the local
// queue's head; a permit to a request parked in the gate behind the one
// waiting in Redis), held back by CLIENT PAUSE WRITE past the waiters'
// TTL. No waiter may get that dead lock: the new token is given back and
// the waiter contends itself, so every lock is valid when Acquire returns.
// Control: accepting late grants, a waiter's lock is over on arrival.
func TestHandOff_lateHandOffRefused(t *testing.T) {
	modes := []struct {
		name    string
		opts    []core.Option
		waiters int
		parked  func(core.WaitingKey) bool
	}{
		{"exclusive", nil, 1, func(w core.WaitingKey) bool { return w.Waiters > 0 }},
		{"permit", []core.Option{core.Permits(1)}, 2, func(w core.WaitingKey) bool { return w.Parked > 0 && w.Contending }},
	}
	for _, m := range modes {
		for _, control := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/control=%v", m.name, control), func(t *testing.T) {
				dead := lateHandOff(t, m.opts, m.waiters, m.parked, control)
				if !control && dead > 0 {
					t.Fatalf("%d waiters got a lock past its deadline: a late hand-off", dead)
				}
				if control && dead == 0 {
					t.Fatal("control: every waiter's lock was valid; the pause did not make the hand-off late")
				}
			})
		}
	}
}

// lateHandOff runs n waiters behind a holder, pauses Redis writes and
// releases the holder; it returns how many waiters got a lock already past
// its deadline.
func lateHandOff(t *testing.T, mode []core.Option, n int, parked func(core.WaitingKey) bool, control bool) int {
	srv := redistest.Start(t)
	c := core.New(srv.Client(t))
	defer c.Close()
	ctx := context.Background()
	holder, err := c.Acquire(ctx, "late-handoff", append([]core.Option{core.WithTTL(5 * time.Second)}, mode...)...)
	if err != nil {
		t.Fatal(err)
	}
	opts := append([]core.Option{core.WithTTL(250 * time.Millisecond), core.WithWait(5 * time.Second)}, mode...)
	if control {
		opts = append(opts, core.AcceptLateGrants())
	}
	var dead atomic.Int32
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			l, err := c.Acquire(ctx, "late-handoff", opts...)
			if err != nil {
				t.Errorf("waiter: %v", err)
				return
			}
			if time.Until(l.Deadline()) <= 0 {
				dead.Add(1)
			}
			_ = l.Release(ctx)
		})
	}
	waitFor(t, func() bool {
		s := c.Snapshot()
		return len(s.Waiting) == 1 && parked(s.Waiting[0])
	}, "the waiters to park")
	if err := srv.Client(t).Do(ctx, "CLIENT", "PAUSE", 600, "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := holder.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	return int(dead.Load())
}
