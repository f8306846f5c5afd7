package core_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// TestQueueScripts_refusalReportsFenceCounter: a queued refusal carries
// the key's fence counter, which the waiter compares grant notices with.
func TestQueueScripts_refusalReportsFenceCounter(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	q := newQueueScripts(t, rdb, "seen")
	first := q.take("A", 0)
	res := q.take("B", 5*time.Second)
	if len(res) != 5 || res[0] != 0 || res[3] != 1 || res[4] != first[1] {
		t.Fatalf("queued refusal %v, want {0, pttl, 0, 1, %d} (the counter at A's fence)", res, first[1])
	}
}

// TestQueue_lateGrantNoticeIgnored: a grant notice the waiter reads only
// after a later refused attempt (it was paused between them) has lapsed:
// its fence is not above the counter that refusal saw. The waiter must
// ignore it and wait on, or it would believe it holds the lock beside the
// holder. The notice is published here by hand, naming the queued waiter,
// with the holder's fence: exactly what such a waiter would read.
func TestQueue_lateGrantNoticeIgnored(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	hc, wc := core.New(srv.Client(t)), core.New(srv.Client(t))
	t.Cleanup(func() { _ = hc.Close(); _ = wc.Close() })
	k := core.KeysFor(core.DefaultPrefix, "late")
	h, err := hc.Acquire(ctx, "late", core.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *core.Lock, 1)
	go func() {
		l, err := wc.Acquire(ctx, "late", core.WithWait(10*time.Second))
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	waitFor(t, func() bool { return admin.LLen(ctx, k.Queue).Val() == 1 }, "the waiter queued")
	waitFor(t, func() bool { return admin.PubSubNumSub(ctx, k.Channel).Val()[k.Channel] == 1 }, "the waiter subscribed")
	time.Sleep(50 * time.Millisecond) // its attempt after subscribing is refused too
	tok := admin.LIndex(ctx, k.Queue, 0).Val()
	msg := fmt.Sprintf("g %s %d %d", sha1hex(tok), h.Fence(), 100)
	if n := admin.Publish(ctx, k.Channel, msg).Val(); n != 1 {
		t.Fatalf("the late grant reached %d subscribers", n)
	}
	select {
	case l := <-got:
		t.Fatalf("the waiter took a lapsed grant (fence %d) while the holder (fence %d) holds", l.Fence(), h.Fence())
	case <-time.After(300 * time.Millisecond):
	}
	if err := h.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-got:
		if l == nil || l.Fence() <= h.Fence() {
			t.Fatalf("after the release the waiter got %v, want a fence above %d", l, h.Fence())
		}
		_ = l.Release(ctx)
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter never got the lock after the release")
	}
}
