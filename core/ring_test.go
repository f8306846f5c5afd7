package core_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func ringOf(t *testing.T, servers []*redistest.Server) *redis.Ring {
	addrs := map[string]string{}
	for i, s := range servers {
		addrs[fmt.Sprintf("shard%d", i)] = s.Addr()
	}
	r := redis.NewRing(&redis.RingOptions{Addrs: addrs})
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// TestRing_waitAcrossClients: two Clients on a real Ring of three servers;
// one waits for the other's lock on keys spread over the shards, and both
// close without hanging (defect 1: the subscriber used to panic on a Ring
// and leave its mutex locked).
func TestRing_waitAcrossClients(t *testing.T) {
	servers := redistest.StartN(t, 3)
	a, b := core.New(ringOf(t, servers)), core.New(ringOf(t, servers))
	ctx := context.Background()
	for i := range 6 {
		key := fmt.Sprintf("ring:%d", i)
		held, err := a.Acquire(ctx, key, core.WithTTL(30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			l, err := b.Acquire(ctx, key, core.WithWait(5*time.Second))
			if err == nil {
				err = l.Release(ctx)
			}
			got <- err
		}()
		time.Sleep(50 * time.Millisecond) // let b subscribe and wait
		start := time.Now()
		if err := held.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("%s: waiter: %v", key, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("%s: the waiter took %v after the release (no notice?)", key, d)
		}
	}
	closed := make(chan struct{})
	go func() { _ = a.Close(); _ = b.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung on a Ring")
	}
}
