package core_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

func shardNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = strconv.Itoa(i) // what NewSharded names its shards
	}
	return names
}

// TestSharded_addShard_movesFewKeys: rendezvous hashing moves about 1/N of
// the keys when an N-th shard joins, all of them to the new shard, and
// spreads keys evenly.
func TestSharded_addShard_movesFewKeys(t *testing.T) {
	const keys = 20000
	four, five := shardNames(4), shardNames(5)
	moved := 0
	per := make([]int, 5)
	for i := range keys {
		k := "coupon:" + strconv.Itoa(i)
		before, after := core.ShardOf(four, k), core.ShardOf(five, k)
		per[after]++
		if before != after {
			moved++
			if after != 4 {
				t.Fatalf("key %s moved from shard %d to %d, not to the new shard", k, before, after)
			}
		}
	}
	if f := float64(moved) / keys; f < 0.18 || f > 0.22 {
		t.Fatalf("adding a 5th shard moved %.3f of the keys, want about 0.2", f)
	}
	for i, n := range per {
		if f := float64(n) / keys; f < 0.18 || f > 0.22 {
			t.Fatalf("shard %d holds %.3f of the keys, want about 0.2", i, f)
		}
	}
}

// TestSharded_keysLiveOnTheirShard: each lock lives on the shard its key
// hashes to, and keys spread over every shard.
func TestSharded_keysLiveOnTheirShard(t *testing.T) {
	servers := redistest.StartN(t, 3)
	shards := nodeClients(t, addrsOf(servers)...)
	c := core.NewSharded(shards, core.WithTTL(5*time.Second))
	defer c.Close()
	names := shardNames(3)
	per := make([]int, 3)
	for i := range 30 {
		k := "k" + strconv.Itoa(i)
		l, err := c.Acquire(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		want := core.ShardOf(names, k)
		per[want]++
		lock := core.KeysFor(core.DefaultPrefix, k).Lock
		for s, rdb := range shards {
			n, err := rdb.Exists(context.Background(), lock).Result()
			if err != nil {
				t.Fatal(err)
			}
			if (n == 1) != (s == want) {
				t.Fatalf("key %s on shard %d: exists=%d, want it on shard %d only", k, s, n, want)
			}
		}
		defer l.Release(context.Background())
	}
	for s, n := range per {
		if n == 0 {
			t.Fatalf("no key on shard %d of 3 (spread %v)", s, per)
		}
	}
}
