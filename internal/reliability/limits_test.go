//go:build linux

package reliability_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// TestCheckServer_evictionPolicies switches one server through every
// maxmemory-policy and checks that core.CheckServer warns exactly when
// Redis may evict a lock key: a limit is set and the policy evicts (the
// volatile-* policies included: lock keys always have a TTL).
func TestCheckServer_evictionPolicies(t *testing.T) {
	gate(t)
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	cases := []struct {
		maxmemory, policy string
		unsafe            bool
	}{
		{"0", "allkeys-lru", false}, // no limit: nothing is evicted
		{"64mb", "noeviction", false},
		{"64mb", "allkeys-lru", true},
		{"64mb", "allkeys-lfu", true},
		{"64mb", "allkeys-random", true},
		{"64mb", "volatile-lru", true},
		{"64mb", "volatile-lfu", true},
		{"64mb", "volatile-random", true},
		{"64mb", "volatile-ttl", true},
	}
	for _, c := range cases {
		if err := rdb.ConfigSet(ctx, "maxmemory", c.maxmemory).Err(); err != nil {
			t.Fatal(err)
		}
		if err := rdb.ConfigSet(ctx, "maxmemory-policy", c.policy).Err(); err != nil {
			t.Fatal(err)
		}
		err := core.CheckServer(ctx, rdb)
		if got := errors.Is(err, core.ErrUnsafeServer); got != c.unsafe {
			t.Errorf("maxmemory %s, %s: CheckServer = %v, want unsafe=%v", c.maxmemory, c.policy, err, c.unsafe)
		}
		var ce *core.ServerCheckError
		if c.unsafe && (!errors.As(err, &ce) || ce.Warnings[0].Value != c.policy || ce.Warnings[0].Addr != srv.Addr()) {
			t.Errorf("%s: warning does not name the setting and server: %v", c.policy, err)
		}
	}
	unsafe := 0
	for _, c := range cases {
		if c.unsafe {
			unsafe++
		}
	}
	addRow(reportRow{
		Security:   true,
		Scenario:   "start-up check: core.CheckServer over every maxmemory-policy",
		Faults:     fmt.Sprintf("%d server settings", len(cases)),
		Ops:        fmt.Sprintf("%d checks", len(cases)),
		Violations: "0 wrong verdicts",
		Control:    fmt.Sprintf("%d evicting settings flagged; the memory-pressure scenario shows one of them granting locks twice", unsafe),
		Checks:     "warns when maxmemory > 0 and the policy evicts (allkeys-* and volatile-*: lock keys always have a TTL); silent for noeviction or no limit; names server and setting",
	})
}

// TestLimitLocks_boundsConcurrentLocks floods a Client with locks on
// distinct keys, as a route parameter under an attacker's control would,
// with and without core.LimitLocks, and counts the lock keys that reach
// Redis. It also documents what the limit does not bound: fence counters
// stay for a day after the last acquisition of their key.
func TestLimitLocks_boundsConcurrentLocks(t *testing.T) {
	gate(t)
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	const limit, flood = 50, 500

	flooded := func(c *core.Client, prefix string) (held, refused int, locks []*core.Lock) {
		for i := range flood {
			l, err := c.TryAcquire(ctx, "order:"+strconv.Itoa(i), core.WithTTL(10*time.Second), core.WithPrefix(prefix))
			switch {
			case err == nil:
				held++
				locks = append(locks, l)
			case errors.Is(err, core.ErrLockLimit) && errors.Is(err, core.ErrUnavailable):
				refused++
			default:
				t.Fatalf("acquire %d: %v", i, err)
			}
		}
		return held, refused, locks
	}
	lockKeys := func(prefix string) int {
		n := 0
		it := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for it.Next(ctx) {
			if !strings.HasSuffix(it.Val(), ":f") {
				n++
			}
		}
		return n
	}

	limited := core.NewWithBackend(core.LimitLocks(core.NewRedisBackend(rdb), limit))
	t.Cleanup(func() { _ = limited.Close() })
	held, refused, locks := flooded(limited, "lim:")
	if held != limit || refused != flood-limit || lockKeys("lim:") != limit {
		t.Fatalf("with LimitLocks(%d): held %d, refused %d, %d lock keys in Redis", limit, held, refused, lockKeys("lim:"))
	}
	// Another prefix has its own budget; a release frees a slot.
	if l, err := limited.TryAcquire(ctx, "x", core.WithPrefix("other:")); err != nil {
		t.Fatalf("another prefix: %v", err)
	} else {
		_ = l.Release(ctx)
	}
	_ = locks[0].Release(ctx)
	if l, err := limited.TryAcquire(ctx, "after-release", core.WithPrefix("lim:")); err != nil {
		t.Fatalf("after a release: %v", err)
	} else {
		_ = l.Release(ctx)
	}
	for _, l := range locks[1:] {
		_ = l.Release(ctx)
	}
	// A lease that runs out frees its slot too.
	short, err := limited.TryAcquire(ctx, "short", core.WithTTL(50*time.Millisecond), core.WithPrefix("exp:"))
	if err != nil {
		t.Fatal(err)
	}
	<-short.Done()
	tiny := core.NewWithBackend(core.LimitLocks(core.NewRedisBackend(rdb), 1))
	t.Cleanup(func() { _ = tiny.Close() })
	a, err := tiny.TryAcquire(ctx, "a", core.WithTTL(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tiny.TryAcquire(ctx, "b"); !errors.Is(err, core.ErrLockLimit) {
		t.Fatalf("second lock under a limit of 1: %v", err)
	}
	<-a.Done()
	// The loss notice comes a drift allowance before the lease can end in
	// Redis; the slot is counted until then.
	time.Sleep(10 * time.Millisecond)
	if b, err := tiny.TryAcquire(ctx, "b"); err != nil {
		t.Fatalf("after the first lease ran out: %v", err)
	} else {
		_ = b.Release(ctx)
	}

	// Control: without the limit every key of the flood is a lock in Redis.
	open := core.New(rdb)
	t.Cleanup(func() { _ = open.Close() })
	heldOpen, _, openLocks := flooded(open, "open:")
	keysOpen := lockKeys("open:")
	for _, l := range openLocks {
		_ = l.Release(ctx)
	}
	counters := 0
	it := rdb.Scan(ctx, 0, "open:*", 1000).Iterator()
	for it.Next(ctx) {
		counters++
	}
	if keysOpen != flood || heldOpen != flood {
		t.Fatalf("control: %d held, %d lock keys; want %d", heldOpen, keysOpen, flood)
	}
	addRow(reportRow{
		Security:   true,
		Scenario:   "lock-key exhaustion: core.LimitLocks(backend, 50) under a flood of 500 distinct keys",
		Faults:     fmt.Sprintf("%d distinct keys", flood),
		Ops:        fmt.Sprintf("%d acquisitions", flood+heldOpen),
		Violations: "0",
		Control:    fmt.Sprintf("%d lock keys held at once without the limit (vs %d with it)", keysOpen, limit),
		Checks: fmt.Sprintf("over the limit Acquire fails at once with ErrLockLimit (matches ErrUnavailable: 503); release and lease end free slots; "+
			"per prefix, per process; %d fence counters stay 24 h after release either way", counters),
	})
}
