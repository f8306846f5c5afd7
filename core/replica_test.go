package core_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Failover tests on a Sentinel group: one master, one replica (reached
// through a proxy, so replication can be held back) and three sentinels.
// The master is killed right after an acquisition; the sentinels promote
// the replica. Without replica acknowledgement the promoted replica may
// not have the lock (a second holder is granted) nor the last fence (a
// fence is handed out twice); with it, an acquisition that was not
// replicated is refused up front.

const failoverKey = "coupon"

func failoverOptions() *redis.FailoverOptions {
	return &redis.FailoverOptions{
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  2 * time.Second,
		WriteTimeout: 2 * time.Second,
	}
}

func sentinelLocker(t *testing.T, g *redistest.SentinelGroup, opts ...core.Option) *core.Client {
	c := core.NewWithBackend(core.NewRedisBackend(g.Client(t, failoverOptions()), opts...), core.WithTTL(30*time.Second))
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// failover kills the master and waits until the sentinels promoted the
// replica.
func failover(t *testing.T, g *redistest.SentinelGroup) {
	g.Master.Kill()
	start := time.Now()
	g.WaitFailover(30 * time.Second)
	t.Logf("failover took %v", time.Since(start))
}

func TestSentinel_failover_withoutAck_negativeControl(t *testing.T) {
	g := redistest.StartSentinel(t)
	g.WaitDiscovered(20 * time.Second)
	ctx := context.Background()
	a := sentinelLocker(t, g)

	f0 := cycle(t, a, failoverKey)
	g.WaitSynced(2 * time.Second)

	requireLink(t, g)
	g.Link.Block() // replication held back: the next writes never reach the replica
	l1, err := a.TryAcquire(ctx, failoverKey)
	if err != nil {
		t.Fatal(err)
	}
	failover(t, g)

	b := sentinelLocker(t, g)
	l2, err := b.TryAcquire(ctx, failoverKey)
	if err != nil {
		t.Fatalf("negative control: no second grant after losing the unreplicated lock: %v", err)
	}
	if l1.Err() != nil || !time.Now().Before(l1.Deadline()) {
		t.Fatalf("negative control: the first holder no longer believes it holds the lock: %v", l1.Err())
	}
	t.Logf("double grant: fences %d and %d, both valid", l1.Fence(), l2.Fence())
	if l2.Fence() > l1.Fence() {
		t.Fatalf("negative control: fence %d after %d (f0 %d): the lost increment was not observable", l2.Fence(), l1.Fence(), f0)
	}
	t.Logf("fence repeated: %d after %d", l2.Fence(), l1.Fence())
	_ = l2.Release(ctx)
}

func TestSentinel_failover_replicaAck(t *testing.T) {
	g := redistest.StartSentinel(t)
	g.WaitDiscovered(20 * time.Second)
	ctx := context.Background()
	ack := core.WithReplicaAck(1, time.Second)
	a := sentinelLocker(t, g, ack)

	var fences []uint64
	fences = append(fences, cycle(t, a, failoverKey))
	l1, err := a.TryAcquire(ctx, failoverKey)
	if err != nil {
		t.Fatal(err)
	}
	fences = append(fences, l1.Fence())

	// Replication stalls: an acquisition is refused and undone.
	requireLink(t, g)
	g.Link.Block()
	_, err = a.TryAcquire(ctx, "other")
	if !errors.Is(err, core.ErrNotReplicated) || !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("TryAcquire without a replica's acknowledgement = %v, want ErrNotReplicated and ErrUnavailable", err)
	}
	failover(t, g)

	// The old master comes back, empty, as a replica of the new one, so
	// that acknowledgements are possible again.
	g.Master.Restart()
	_, port, _ := net.SplitHostPort(g.Replica.Addr())
	if err := g.Master.Client(t).ReplicaOf(ctx, "127.0.0.1", port).Err(); err != nil {
		t.Fatal(err)
	}
	waitReplicating(t, g.Master.Client(t), g.Replica.Client(t))

	b := sentinelLocker(t, g, ack)
	if _, err := b.TryAcquire(ctx, failoverKey); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("TryAcquire after failover = %v: the acknowledged lock was lost (double grant)", err)
	}
	if l1.Err() != nil {
		t.Fatalf("first holder: %v", l1.Err())
	}
	if err := l1.Release(ctx); err != nil {
		t.Fatalf("release through the new master: %v", err)
	}
	fences = append(fences, cycle(t, b, failoverKey))
	for i := 1; i < len(fences); i++ {
		if fences[i] <= fences[i-1] {
			t.Fatalf("fences %v went backwards across the failover", fences)
		}
	}
	t.Logf("fences across the failover: %v", fences)
}

// requireLink checks that the replica still replicates through the proxy
// (a sentinel could have pointed it at the master directly).
func requireLink(t *testing.T, g *redistest.SentinelGroup) {
	t.Helper()
	info, err := g.Replica.Client(t).Info(context.Background(), "replication").Result()
	_, port, _ := net.SplitHostPort(g.Link.Addr())
	if err != nil || !strings.Contains(info, "master_port:"+port+"\r\n") {
		t.Fatalf("replica does not replicate through the link (port %s): %v\n%s", port, err, info)
	}
}

// waitReplicating waits until replica is in sync with master and
// acknowledges writes (a sentinel may still reconfigure it meanwhile).
func waitReplicating(t *testing.T, replica, master *redis.Client) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(15 * time.Second)
	for {
		info, err := replica.Info(ctx, "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up\r\n") {
			if n, err := master.Wait(ctx, 1, 100*time.Millisecond).Result(); err == nil && n == 1 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("old master not replicating from the new one: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
