package core_test

import (
	"context"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/backendtest"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The behaviour suite over every topology beyond a single server: Redlock
// over five independent servers, a Sentinel group with replica
// acknowledgement, a three-master Cluster, and keys sharded over three
// servers. All on real redis-server processes.

// nodeClient is a client for one Redlock node or shard: the context's
// deadline (the backend's per-node timeout) also ends the socket wait.
func nodeClient(t testing.TB, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ContextTimeoutEnabled: true,
		ReadTimeout:           time.Second,
		WriteTimeout:          time.Second,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func nodeClients(t testing.TB, addrs ...string) []redis.UniversalClient {
	nodes := make([]redis.UniversalClient, len(addrs))
	for i, a := range addrs {
		nodes[i] = nodeClient(t, a)
	}
	return nodes
}

func addrsOf(servers []*redistest.Server) []string {
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.Addr()
	}
	return addrs
}

// countKey reports on how many of nodes key exists.
func countKey(t testing.TB, nodes []redis.UniversalClient, key string) int {
	n := 0
	for _, c := range nodes {
		x, err := c.Exists(context.Background(), key).Result()
		if err != nil {
			t.Fatal(err)
		}
		n += int(x)
	}
	return n
}

func deleteKey(t testing.TB, nodes []redis.UniversalClient, key string) {
	for _, c := range nodes {
		if err := c.Del(context.Background(), key).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// deleteEverywhere removes key from every node until it stays gone. A
// Redlock renewal re-creates the key on nodes that lost it while one node
// still holds the token (a node restarted empty), so one pass of DELs can
// be undone by a renewal that lands between two of them, or by an acquire
// write still on its way to the slower nodes.
func deleteEverywhere(t testing.TB, nodes []redis.UniversalClient, key string) {
	for deadline := time.Now().Add(3 * time.Second); ; {
		deleteKey(t, nodes, key)
		time.Sleep(100 * time.Millisecond) // a few renewal rounds of the suite's watchdog
		if countKey(t, nodes, key) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s keeps coming back on %d nodes", key, countKey(t, nodes, key))
		}
	}
}

func TestSuite_redlock(t *testing.T) {
	nodes := nodeClients(t, addrsOf(redistest.StartN(t, 5))...)
	backendtest.Run(t, backendtest.Harness{
		NewClient: func(t testing.TB, opts ...core.Option) *core.Client { return core.NewRedlock(nodes, opts...) },
		DeleteKey: func(t testing.TB, key string) { deleteEverywhere(t, nodes, key) },
		// Held in the Redlock sense: on a majority.
		Exists: func(t testing.TB, key string) bool { return countKey(t, nodes, key) >= 3 },
	})
}

func TestSuite_sentinel(t *testing.T) {
	g := redistest.StartSentinel(t)
	rdb := g.Client(t)
	backend := func() core.Backend { return core.NewRedisBackend(rdb, core.WithReplicaAck(1, time.Second)) }
	backendtest.Run(t, backendtest.Harness{
		NewClient: func(t testing.TB, opts ...core.Option) *core.Client { return core.NewWithBackend(backend(), opts...) },
		DeleteKey: func(t testing.TB, key string) { deleteKey(t, []redis.UniversalClient{rdb}, key) },
		Exists:    func(t testing.TB, key string) bool { return countKey(t, []redis.UniversalClient{rdb}, key) == 1 },
	})
}

func TestSuite_cluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	cc := cl.Client(t)
	backendtest.Run(t, backendtest.Harness{
		NewClient: func(t testing.TB, opts ...core.Option) *core.Client { return core.New(cc, opts...) },
		DeleteKey: func(t testing.TB, key string) { deleteKey(t, []redis.UniversalClient{cc}, key) },
		Exists:    func(t testing.TB, key string) bool { return countKey(t, []redis.UniversalClient{cc}, key) == 1 },
	})
}

func TestSuite_sharded(t *testing.T) {
	shards := nodeClients(t, addrsOf(redistest.StartN(t, 3))...)
	backendtest.Run(t, backendtest.Harness{
		NewClient: func(t testing.TB, opts ...core.Option) *core.Client { return core.NewSharded(shards, opts...) },
		DeleteKey: func(t testing.TB, key string) { deleteKey(t, shards, key) },
		Exists:    func(t testing.TB, key string) bool { return countKey(t, shards, key) == 1 },
	})
}
