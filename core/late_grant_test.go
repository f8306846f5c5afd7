package core_test

import (
	"context"
	"errors"
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
