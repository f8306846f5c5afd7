package core_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The Lua scripts called directly, on a real server, so that a script that
// forgets to compare the token fails here and not only through the
// client's local deadline.

func script(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("scripts/" + name + ".lua")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// heldState is the lock key's value and remaining lease.
func heldState(t *testing.T, rdb *redis.Client, k core.Keys) (string, time.Duration) {
	t.Helper()
	v, err := rdb.Get(context.Background(), k.Lock).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		t.Fatal(err)
	}
	pttl, err := rdb.PTTL(context.Background(), k.Lock).Result()
	if err != nil {
		t.Fatal(err)
	}
	return v, pttl
}

func TestScripts_foreignTokenChangesNothing(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	c := core.New(rdb)
	t.Cleanup(func() { _ = c.Close() })
	l, err := c.Acquire(ctx, "acct", core.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	k := core.KeysFor(core.DefaultPrefix, "acct")
	fence := l.Fence()
	foreign := strings.Repeat("0", 32)
	release, refresh, handoff := script(t, "release"), script(t, "refresh"), script(t, "handoff")

	check := func(what string) {
		t.Helper()
		v, pttl := heldState(t, rdb, k)
		if v != l.Token() || pttl > 10*time.Second || pttl < 9*time.Second {
			t.Fatalf("%s with a foreign token changed the lock: value %q, pttl %v", what, v, pttl)
		}
	}
	if n, err := rdb.Eval(ctx, release, []string{k.Lock, k.Channel, k.Fence}, foreign, "PUBLISH", fence).Int64(); err != nil || n != 0 {
		t.Fatalf("release.lua = %d, %v; want 0", n, err)
	}
	check("release.lua")
	if n, err := rdb.Eval(ctx, refresh, []string{k.Lock}, foreign, 3600000).Int64(); err != nil || n != 0 {
		t.Fatalf("refresh.lua = %d, %v; want 0", n, err)
	}
	check("refresh.lua")
	if r, err := rdb.Eval(ctx, handoff, []string{k.Lock, k.Fence}, foreign, "thief", 3600000, 86400000).Int64Slice(); err != nil || r[0] != 0 {
		t.Fatalf("handoff.lua = %v, %v; want {0, ...}", r, err)
	}
	check("handoff.lua")

	// The release script without its compare (a plain delete) must be
	// caught by the same check: the negative control.
	broken := strings.Replace(release, "if v == ARGV[1] then", "if v then", 1)
	if broken == release {
		t.Fatal("release.lua no longer has the compare this control removes")
	}
	if err := rdb.Eval(ctx, broken, []string{k.Lock, k.Channel, k.Fence}, foreign, "PUBLISH", fence).Err(); err != nil {
		t.Fatal(err)
	}
	if v, _ := heldState(t, rdb, k); v == l.Token() {
		t.Fatal("negative control: a release without the compare left the lock; this test cannot fail")
	}
}

// TestRelease_resentIsNotALoss: go-redis re-sends a release after an
// ambiguous network error; the first send already deleted the key. That is
// a release, not a loss (defect 5). Someone else acquiring in between is.
func TestRelease_resentIsNotALoss(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	b := core.NewRedisBackend(rdb)
	t.Cleanup(func() { _ = b.Close() })
	c := core.NewWithBackend(b)
	t.Cleanup(func() { _ = c.Close() })
	k := core.KeysFor(core.DefaultPrefix, "pay")

	l, err := c.Acquire(ctx, "pay")
	if err != nil {
		t.Fatal(err)
	}
	h := core.Hold{Keys: k, Token: l.Token(), Fence: l.Fence()}
	if _, err := b.Release(ctx, h); err != nil { // the first send, landed
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil { // the re-send
		t.Fatalf("re-sent release = %v; want nil", err)
	}
	if !errors.Is(l.Err(), nil) && l.Err() != nil {
		t.Fatalf("Err after a re-sent release = %v", l.Err())
	}

	// Control: the key gone and another holder came and went (the fence
	// counter moved on) is a loss.
	l2, err := c.Acquire(ctx, "pay")
	if err != nil {
		t.Fatal(err)
	}
	rdb.Del(ctx, k.Lock)
	other, err := c.Acquire(ctx, "pay")
	if err != nil {
		t.Fatal(err)
	}
	_ = other.Release(ctx)
	if err := l2.Release(ctx); !errors.Is(err, core.ErrNotHeld) || !errors.Is(err, core.ErrLost) {
		t.Fatalf("release after another holder = %v; want ErrNotHeld and ErrLost", err)
	}
	// And a hold whose fence is unknown is never taken for a re-send.
	if _, err := b.Release(ctx, core.Hold{Keys: k, Token: l2.Token()}); !errors.Is(err, core.ErrNotHeld) {
		t.Fatalf("release without fence = %v; want ErrNotHeld", err)
	}
}

// commandCalls reads INFO commandstats: calls per command.
func commandCalls(t *testing.T, rdb *redis.Client) map[string]int {
	t.Helper()
	s, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, line := range strings.Split(s, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n := 0
		for _, ch := range rest {
			if ch < '0' || ch > '9' {
				break
			}
			n = n*10 + int(ch-'0')
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return out
}

// TestWaiter_doesNotPoll: a waiter on a held key subscribes, retries once
// after subscribing, and sends nothing more until the release (defect 6:
// a 100 ms poller would pass every other test).
func TestWaiter_doesNotPoll(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	holder, waiter := core.New(srv.Client(t)), core.New(srv.Client(t))
	t.Cleanup(func() { _ = holder.Close(); _ = waiter.Close() })
	l, err := holder.Acquire(ctx, "hot", core.WithTTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	got := make(chan error, 1)
	go func() {
		w, err := waiter.Acquire(ctx, "hot", core.WithWait(10*time.Second))
		if err == nil {
			err = w.Release(ctx)
		}
		got <- err
	}()
	time.Sleep(time.Second)
	calls := commandCalls(t, admin)
	scripts := calls["evalsha"] + calls["eval"]
	if calls["subscribe"] != 1 || scripts != 2 {
		t.Errorf("while waiting 1 s: %v; want one SUBSCRIBE and two acquire scripts (before and after subscribing)", calls)
	}
	// Commands the scripts run count too (SET NX, GET, PTTL per attempt;
	// joining the store queue: SET NX of the entry, RPUSH, PEXPIRE; renewing
	// the entry: SET NX, two PEXPIRE; a queued refusal GETs the fence
	// counter), and HELLO once per new connection
	// (the pool's and the subscription's).
	limit := map[string]int{"subscribe": 1, "evalsha": 2, "eval": 2, "set": 4, "get": 4, "pttl": 2, "hello": 2,
		"config|resetstat": 1, "info": 1, "rpush": 1, "pexpire": 3}
	for cmd, n := range calls {
		if n > limit[cmd] {
			t.Errorf("while waiting 1 s: %d × %s (at most %d)", n, cmd, limit[cmd])
		}
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter did not get the lock after the release")
	}
	// The release granted the lock to the queued waiter (SET of its token,
	// INCR of the fence). The waiter had queued longer than the grant
	// lease, so it confirmed with one attempt before using the grant.
	calls = commandCalls(t, admin)
	if calls["incr"] != 1 || calls["set"] != 6 {
		t.Errorf("after the hand-off: %v; want one grant (1 INCR) and one confirming attempt (6 SET in all)", calls)
	}
}
