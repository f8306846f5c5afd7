package etcdlock

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/etcdtest"
)

// TestRelease_lateDoesNotDeleteNewerHolder is the trap of etcd issue 22082
// on a reused entry name: the same Backend acquires the same key twice in a
// row (slot 0 both times, so the same etcd key), and a late delete of the
// first acquisition, by token or by revision, must leave the second alone.
func TestRelease_lateDoesNotDeleteNewerHolder(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	b, err := NewBackend(cli)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	keys := core.KeysFor(core.DefaultPrefix, "guard")

	g1, err := b.Acquire(ctx, core.Hold{Keys: keys, Token: "token-1"}, time.Second)
	if err != nil || !g1.Acquired {
		t.Fatalf("first acquire: %+v %v", g1, err)
	}
	b.mu.Lock()
	e1 := *b.held["token-1"]
	b.mu.Unlock()
	if _, err := b.Release(ctx, core.Hold{Keys: keys, Token: "token-1"}); err != nil {
		t.Fatal(err)
	}
	g2, err := b.Acquire(ctx, core.Hold{Keys: keys, Token: "token-2"}, time.Second)
	if err != nil || !g2.Acquired || g2.Fence <= g1.Fence {
		t.Fatalf("second acquire: %+v %v (first fence %d)", g2, err, g1.Fence)
	}
	b.mu.Lock()
	e2 := *b.held["token-2"]
	b.mu.Unlock()
	if e1.key != e2.key {
		t.Fatalf("entry names differ (%s, %s): the test needs a reused name", e1.key, e2.key)
	}

	if _, err := b.Release(ctx, core.Hold{Keys: keys, Token: "token-1"}); !errors.Is(err, core.ErrNotHeld) {
		t.Fatalf("late release by token = %v, want ErrNotHeld", err)
	}
	if ok, err := b.deleteGuarded(ctx, e1.key, e1.rev, ""); ok || err != nil {
		t.Fatalf("late guarded delete by revision = %v, %v; want no delete", ok, err)
	}
	if ok, err := b.deleteGuarded(ctx, e1.key, 0, entryValue(time.Second, "token-1")); ok || err != nil {
		t.Fatalf("late guarded delete by value = %v, %v; want no delete", ok, err)
	}
	resp, err := cli.Get(ctx, e2.key)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != int64(g2.Fence) {
		t.Fatalf("the newer holder's entry is gone: %v %v", resp, err)
	}
	if _, err := b.Release(ctx, core.Hold{Keys: keys, Token: "token-2"}); err != nil {
		t.Fatal(err)
	}
}

// TestSlots_reusedAndFreed: names are reused, so a busy queue does not fill
// etcd's index with tombstones, and every path frees its slot.
func TestSlots_reusedAndFreed(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	b, err := NewBackend(cli)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := NewClient(b)
	ctx := context.Background()
	names := map[string]bool{}
	for range 20 {
		l, err := c.Acquire(ctx, "slots", core.WithTTL(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(ctx, QueuePrefix(core.DefaultPrefix, "slots"), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("queue: %v %v", resp, err)
		}
		names[string(resp.Kvs[0].Key)] = true
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if len(names) != 1 {
		t.Fatalf("%d entry names for 20 sequential acquisitions, want 1", len(names))
	}
	// A TryAcquire that finds the lock held, an expired lock and a wait
	// that gives up all return their slots.
	l, err := c.Acquire(ctx, "slots", core.WithTTL(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	other := NewClient(b)
	if _, err := other.TryAcquire(ctx, "slots"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("TryAcquire on a held key = %v", err)
	}
	if _, err := other.Acquire(ctx, "slots", core.WithWait(10*time.Millisecond)); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("bounded wait = %v", err)
	}
	<-l.Done()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		n := len(b.slots)
		b.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slots still reserved: %v", b.slots)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
