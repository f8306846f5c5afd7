package core

import (
	"context"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/internal/redistest"
)

// TestGate_declinedHandoffWakesTheWaiter replays, step by step with the
// real functions, the interleaving that hung TestShared_readersNever...
// about once in 30 runs: a share ends while a request waits parked; the
// release takes it out of the gate to hand the share over; the gate's head
// leaves meanwhile (it saw no waiter to wake); Redis declines the hand-off
// because a writer waits. The parked request must be woken to contend on
// its own: put back into the gate, nobody would ever wake it.
func TestGate_declinedHandoffWakesTheWaiter(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	c, wc := New(srv.Client(t)), New(srv.Client(t))
	t.Cleanup(func() { _ = c.Close(); _ = wc.Close() })
	s, err := c.Acquire(ctx, "k", Shared())
	if err != nil {
		t.Fatal(err)
	}
	// A writer of another Client waits: its claim makes Redis decline.
	writer := make(chan error, 1)
	go func() {
		l, err := wc.Acquire(ctx, "k", WithWait(10*time.Second))
		if err == nil {
			err = l.Release(ctx)
		}
		writer <- err
	}()
	waitForClaim(t, srv, s.keys.Claims)

	// The gate: a head waiting in Redis and one parked request.
	gk := gateKey(s.keys, modeTag(SharedMode, 0))
	g := &shareGate{head: true}
	parked := &waiter{ch: make(chan grantMsg, 1), cfg: &s.cfg}
	g.waiters = []*waiter{parked}
	c.mu.Lock()
	c.gates[gk] = g
	c.mu.Unlock()

	w := c.nextParked(s)
	if w != parked {
		t.Fatalf("nextParked took %v, want the parked request", w)
	}
	head := &acquisition{c: c, gate: g, gateKey: gk, gateHead: true}
	head.leaveGate(nil) // the head gives up: nobody left to wake
	done, err := c.handOffShare(ctx, s, w)
	if done || err != nil {
		t.Fatalf("hand-off with a writer waiting: done=%v err=%v, want declined", done, err)
	}
	select {
	case m := <-parked.ch:
		if m.lock != nil || m.closed {
			t.Fatalf("woken with %+v, want a plain wake-up", m)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the parked request was never woken after the declined hand-off")
	}
	if err := s.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-writer; err != nil {
		t.Fatal(err)
	}
}

// waitForClaim waits until a writer's claim is recorded in Redis.
func waitForClaim(t *testing.T, srv *redistest.Server, claims string) {
	t.Helper()
	rdb := srv.Client(t)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if n, _ := rdb.ZCard(context.Background(), claims).Result(); n > 0 {
			return
		}
	}
	t.Fatal("the writer's claim never appeared")
}
