package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// The Cluster forms: the comma-separated list of nodes, and a single node
// address (reopened as a Cluster client). ls sees keys on every master,
// and release --force on a Cluster publishes on the shard channel the
// holder's client listens to, raises the fence counter and the holder is
// told at its next renewal.
func TestCluster_lsAndForceRelease(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	cc := cl.Client(t)
	locker := core.New(cc)
	t.Cleanup(func() { locker.Close() })
	keys := []string{"coupon:1", "coupon:2", "order:7", "user:9"}
	masters := map[string]bool{}
	locks := map[string]*core.Lock{}
	for _, k := range keys {
		locks[k] = acquire(t, locker, k, core.WithTTL(2*time.Second), core.WithAutoRefresh(100*time.Millisecond))
		masters[cl.Owner(clusterSlot(t, cc, core.KeysFor(core.DefaultPrefix, k).Lock)).Addr()] = true
	}
	if len(masters) < 2 {
		t.Fatalf("keys all on one master (%v): the test would not show a cross-node listing", masters)
	}
	for _, addr := range []string{strings.Join(cl.Addrs(), ","), cl.Addrs()[0]} {
		code, out, errOut := runCLI(t, "", "-redis", addr, "ls", "-json")
		if code != exitOK {
			t.Fatalf("-redis %s ls: exit %d, %s", addr, code, errOut)
		}
		var rows []lockRow
		if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != len(keys) {
			t.Fatalf("-redis %s ls: %v, want %d rows:\n%s", addr, err, len(keys), out)
		}
		for _, r := range rows {
			checkRow2(t, r, locks[r.Key])
		}
	}
	victim := locks["order:7"]
	code, out, errOut := runCLI(t, "", "-redis", cl.Addrs()[0], "release", "--force", "-yes", "order:7")
	if code != exitOK || !strings.Contains(out, "evicted owner "+victim.Owner()) {
		t.Fatalf("release on the Cluster: exit %d, %s %s", code, out, errOut)
	}
	expectLost(t, victim)
	next := acquire(t, locker, "order:7")
	if next.Fence() <= victim.Fence()+1 {
		t.Fatalf("next fence %d not above the raised counter (evicted %d)", next.Fence(), victim.Fence())
	}
}

// The Sentinel form: -redis lists the sentinels, -master names the group.
func TestSentinel_lsShowAndForceRelease(t *testing.T) {
	g := redistest.StartSentinel(t)
	locker := core.New(g.Client(t))
	t.Cleanup(func() { locker.Close() })
	l := acquire(t, locker, "coupon:42", core.WithTTL(2*time.Second), core.WithAutoRefresh(100*time.Millisecond))
	args := []string{"-redis", strings.Join(g.SentinelAddrs(), ","), "-master", redistest.MasterName}
	code, out, errOut := runCLI(t, "", append(args, "ls", "-json")...)
	var rows []lockRow
	if code != exitOK || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 {
		t.Fatalf("ls via Sentinel: exit %d, %s %s", code, out, errOut)
	}
	checkRow2(t, rows[0], l)
	code, out, errOut = runCLI(t, "", append(args, "release", "--force", "-yes", "coupon:42")...)
	if code != exitOK || !strings.Contains(out, "evicted owner "+l.Owner()) {
		t.Fatalf("release via Sentinel: exit %d, %s %s", code, out, errOut)
	}
	expectLost(t, l)
	code, _, errOut = runCLI(t, "", append([]string{"-redis", "127.0.0.1:1", "-master", "nobody"}, "ls")...)
	if code != exitUnreachable || !strings.Contains(errOut, "cannot reach Redis Sentinel 127.0.0.1:1") {
		t.Fatalf("unreachable sentinel: exit %d, %q", code, errOut)
	}
}

func clusterSlot(t *testing.T, cc *redis.ClusterClient, key string) int {
	t.Helper()
	n, err := cc.ClusterKeySlot(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// checkRow2 is checkRow for locks with a short TTL.
func checkRow2(t *testing.T, r lockRow, l *core.Lock) {
	t.Helper()
	if l == nil {
		t.Fatalf("row for a key nobody holds: %+v", r)
	}
	if r.Owner != l.Owner() || r.Fence != l.Fence() || r.TTLms <= 0 || r.TTLms > 2000 {
		t.Errorf("%q: owner %s fence %d ttl %d, want %s %d (0, 2000]", r.Key, r.Owner, r.Fence, r.TTLms, l.Owner(), l.Fence())
	}
}

func expectLost(t *testing.T, l *core.Lock) {
	t.Helper()
	select {
	case <-l.Done():
	case <-time.After(time.Second):
		t.Fatal("evicted holder not told within its renewals")
	}
	if !errors.Is(l.Err(), core.ErrLost) {
		t.Fatalf("Err = %v, want ErrLost", l.Err())
	}
}
