package core_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// keysOnEachPrimary finds, for each primary of the cluster, a lock key
// whose slot it serves.
func keysOnEachPrimary(t *testing.T, cl *redistest.Cluster, cc *redis.ClusterClient, n int) []string {
	t.Helper()
	keys := make([]string, n)
	found := 0
	for i := 0; found < n && i < 10000; i++ {
		k := "k" + strconv.Itoa(i)
		slot, err := cc.ClusterKeySlot(context.Background(), core.KeysFor(core.DefaultPrefix, k).Lock).Result()
		if err != nil {
			t.Fatal(err)
		}
		for j, s := range cl.Servers {
			if keys[j] == "" && cl.Owner(int(slot)) == s {
				keys[j] = k
				found++
			}
		}
	}
	if found < n {
		t.Fatal("no key for every primary")
	}
	return keys
}

// TestCluster_waitersOnEveryPrimary: one Client waits on keys served by
// three different primaries at once. Release notices are shard channels,
// which a primary only serves for its own slots, so the Client needs a
// subscription on each primary; with one, the waiters on the other
// primaries would only wake when the 20s leases ran out.
func TestCluster_waitersOnEveryPrimary(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	cc := cl.Client(t)
	keys := keysOnEachPrimary(t, cl, cc, 3)
	holder := core.New(cc, core.WithTTL(20*time.Second))
	defer holder.Close()
	waiter := core.New(cc)
	defer waiter.Close()

	held := make([]*core.Lock, len(keys))
	for i, k := range keys {
		l, err := holder.Acquire(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		held[i] = l
	}
	start := time.Now()
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() {
			l, err := waiter.Acquire(context.Background(), k, core.WithWait(10*time.Second))
			if err != nil {
				t.Error(err)
				return
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("waiter on %s woke after %v: no release notice", k, d)
			}
			_ = l.Release(context.Background())
		})
	}
	time.Sleep(200 * time.Millisecond) // the waiters are subscribed
	for _, l := range held {
		if err := l.Release(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

// TestCluster_subscription_followsMovedSlot: when the slot of a waited-on
// key moves to another primary, the old one unsubscribes its shard
// channels; the subscription must move along and keep delivering.
func TestCluster_subscription_followsMovedSlot(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	cc := cl.Client(t)
	keys := core.KeysFor(core.DefaultPrefix, keysOnEachPrimary(t, cl, cc, 3)[0])
	slot, err := cc.ClusterKeySlot(context.Background(), keys.Lock).Result()
	if err != nil {
		t.Fatal(err)
	}
	b := core.NewRedisBackend(cc)
	defer b.Close()
	notices := make(chan struct{}, 16)
	cancel, err := b.Subscribe(context.Background(), keys, func() { notices <- struct{}{} })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()

	cl.MoveSlot(int(slot), 1)
	// Moving wakes the waiter once (it may have missed a notice).
	select {
	case <-notices:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake-up after the slot moved")
	}
	// Then notices published on the new owner arrive.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := cc.SPublish(context.Background(), keys.Channel, "1").Err(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-notices:
			return
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			for _, srv := range cl.Servers {
				out, _ := srv.Client(t).ClientList(context.Background()).Result()
				t.Log(srv.Addr(), out)
			}
			t.Fatal("notices on the new owner never arrived")
		}
	}
}
