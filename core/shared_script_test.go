package core_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The shared-hold scripts run directly against a real redis-server, each
// property with a mutated script as its negative control.

func sharedToken(c byte) string { return strings.Repeat(string(c), 32) }

// shareCall runs acquire_shared.lua (src) on k with one mode tag.
type shareCall struct {
	rdb *redis.Client
	src string
	k   core.Keys
	tag string
	n   int // permits; 0 for shared
}

// acquire returns the reply's code and fence for tok.
func (s shareCall) acquire(t *testing.T, tok string, leaseMS int) (int64, int64) {
	t.Helper()
	res, err := s.rdb.Eval(context.Background(), s.src, []string{s.k.Lock, s.k.Fence, s.k.Leases, s.k.Claims},
		tok, leaseMS, 86400000, s.tag, s.n).Slice()
	if err != nil {
		t.Fatal(err)
	}
	fence, _ := res[1].(int64)
	return res[0].(int64), fence
}

// TestSharedScript_endedOwnLeaseIsNotRegranted: a re-sent acquire whose
// token's own lease already ended is a new hold with a new fence, entered
// in both the hash and the leases (so its release finds it), not the old
// entry the expiry just dropped.
func TestSharedScript_endedOwnLeaseIsNotRegranted(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	src := script(t, "acquire_shared")
	k := core.KeysFor(core.DefaultPrefix, "regrant")
	check := func(src string) (fresh bool) {
		rdb.Del(context.Background(), k.Lock, k.Leases, k.Claims)
		a, b := sharedToken('a'), sharedToken('b')
		sc := shareCall{rdb: rdb, src: src, k: k, tag: "s"}
		if code, _ := sc.acquire(t, b, 10000); code != 1 {
			t.Fatal("first share refused")
		}
		_, old := sc.acquire(t, a, 30)
		time.Sleep(60 * time.Millisecond) // a's own lease ends, b's does not
		code, fence := sc.acquire(t, a, 10000)
		if code != 1 {
			t.Fatal("re-sent share refused")
		}
		inHash := rdb.HExists(context.Background(), k.Lock, a).Val()
		return fence > old && inHash
	}
	if !check(src) {
		t.Fatal("acquire_shared.lua re-granted a share whose own lease had ended under its old fence")
	}
	broken := strings.Replace(src, "f[1] = false", "", 1)
	if broken == src {
		t.Fatal("acquire_shared.lua no longer has the check this control removes")
	}
	if check(broken) {
		t.Fatal("negative control: without the check the old entry still was not re-granted")
	}
}

// TestReleaseScript_shareWakesOnlyWhenFree: the end of one share while
// others remain frees nothing, so it publishes nothing; the last share's
// end and a permit's end (one more may enter) publish.
func TestReleaseScript_shareWakesOnlyWhenFree(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	acq, rel := script(t, "acquire_shared"), script(t, "release")
	sub := rdb.Subscribe(ctx)
	defer sub.Close()
	release := func(k core.Keys, tok, kind string) int64 {
		n, err := rdb.Eval(ctx, rel, []string{k.Lock, k.Channel, k.Fence, k.Leases, k.Claims},
			tok, "PUBLISH", "", "", "", "", "", kind).Int64()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// published reports how many notices reach a subscriber of k's channel
	// while run runs.
	published := func(k core.Keys, tag string, n int, kind string) []int64 {
		if err := sub.Subscribe(ctx, k.Channel); err != nil {
			t.Fatal(err)
		}
		if _, err := sub.ReceiveTimeout(ctx, time.Second); err != nil { // the confirmation
			t.Fatal(err)
		}
		defer func() { _ = sub.Unsubscribe(ctx, k.Channel) }()
		sc := shareCall{rdb: rdb, src: acq, k: k, tag: tag, n: n}
		for _, c := range []byte("ab") {
			if code, _ := sc.acquire(t, sharedToken(c), 10000); code != 1 {
				t.Fatal("share refused")
			}
		}
		return []int64{release(k, sharedToken('a'), kind), release(k, sharedToken('b'), kind)}
	}
	if got := published(core.KeysFor(core.DefaultPrefix, "rd"), "s", 0, "s"); got[0] != 1 || got[1] != 2 {
		t.Fatalf("shared: releases answered %v; want [1 2] (only the last one reaches the subscriber)", got)
	}
	if got := published(core.KeysFor(core.DefaultPrefix, "pm"), "p2", 2, "p"); got[0] != 2 || got[1] != 2 {
		t.Fatalf("permits: releases answered %v; want [2 2] (each frees a permit)", got)
	}
	// negative control: the same shared release taken for a permit's
	// publishes although nothing is freed
	if got := published(core.KeysFor(core.DefaultPrefix, "rd2"), "s", 0, "p"); got[0] != 2 {
		t.Fatalf("negative control: a share released as a permit answered %v", got)
	}
}

// TestReleaseScript_foreignTokenKeepsShares: releasing a share with a
// token that holds none answers 0 and leaves every holder in place, with
// one holder left (the last holder's path) and with two. Each compare has
// its control.
func TestReleaseScript_foreignTokenKeepsShares(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	rel := script(t, "release")
	k := core.KeysFor(core.DefaultPrefix, "foreign")
	sc := shareCall{rdb: rdb, src: script(t, "acquire_shared"), k: k, tag: "s"}
	check := func(src, holders string) bool {
		rdb.Del(ctx, k.Lock, k.Leases)
		for _, c := range []byte(holders) {
			if code, _ := sc.acquire(t, sharedToken(c), 10000); code != 1 {
				t.Fatal("share refused")
			}
		}
		n, err := rdb.Eval(ctx, src, []string{k.Lock, k.Channel, k.Fence, k.Leases, k.Claims},
			sharedToken('z'), "PUBLISH", "", "", "", "", "", "s").Int64()
		if err != nil {
			t.Fatal(err)
		}
		held := rdb.ZCard(ctx, k.Leases).Val() == int64(len(holders))
		for _, c := range []byte(holders) {
			held = held && rdb.HExists(ctx, k.Lock, sharedToken(c)).Val()
		}
		return n == 0 && held
	}
	for _, c := range []struct{ holders, compare, without string }{
		{"a", "first[1] == ARGV[1]", "true"},
		{"ab", "redis.call('ZREM', KEYS[4], ARGV[1]) == 0", "false"},
	} {
		if !check(rel, c.holders) {
			t.Fatalf("release.lua with a foreign token changed the shares %q or claimed a release", c.holders)
		}
		broken := strings.Replace(rel, c.compare, c.without, 1)
		if broken == rel {
			t.Fatalf("release.lua no longer has the compare %q this control removes", c.compare)
		}
		if check(broken, c.holders) {
			t.Fatalf("negative control: a share release without %q still answered 0", c.compare)
		}
	}
}

// TestSharedScript_shorterLeaseStillExpires: the common acquire skips the
// scan for ended leases while field '<' says none can have ended; a holder
// joining with a shorter lease than those before it must lower '<', or its
// permit would outlive its death until the longer leases end.
func TestSharedScript_shorterLeaseStillExpires(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	src := script(t, "acquire_shared")
	k := core.KeysFor(core.DefaultPrefix, "short")
	freed := func(src string) bool {
		rdb.Del(context.Background(), k.Lock, k.Leases, k.Claims)
		sc := shareCall{rdb: rdb, src: src, k: k, tag: "p2", n: 2}
		if code, _ := sc.acquire(t, sharedToken('a'), 10000); code != 1 {
			t.Fatal("first permit refused")
		}
		if code, _ := sc.acquire(t, sharedToken('b'), 30); code != 1 {
			t.Fatal("second permit refused")
		}
		time.Sleep(60 * time.Millisecond) // b dies: its own lease ends
		code, _ := sc.acquire(t, sharedToken('c'), 10000)
		return code == 1
	}
	if !freed(src) {
		t.Fatal("acquire_shared.lua did not give back the permit of a holder whose shorter lease ended")
	}
	broken := strings.Replace(src, "if fresh or num(4) > ends then", "if fresh then", 1)
	if broken == src {
		t.Fatal("acquire_shared.lua no longer lowers '<' as this control assumes")
	}
	if freed(broken) {
		t.Fatal("negative control: without lowering '<' the permit was still given back")
	}
}

// TestHandoffScript_shorterLeaseStillExpires: the same for a permit passed
// on (handoff_shared.lua) with a shorter lease than the one it replaces.
func TestHandoffScript_shorterLeaseStillExpires(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	k := core.KeysFor(core.DefaultPrefix, "passed")
	sc := shareCall{rdb: rdb, src: script(t, "acquire_shared"), k: k, tag: "p2", n: 2}
	handoff := script(t, "handoff_shared")
	freed := func(handoff string) bool {
		rdb.Del(ctx, k.Lock, k.Leases, k.Claims)
		for _, c := range []byte("ab") {
			if code, _ := sc.acquire(t, sharedToken(c), 10000); code != 1 {
				t.Fatal("permit refused")
			}
		}
		r, err := rdb.Eval(ctx, handoff, []string{k.Lock, k.Fence, k.Leases, k.Claims},
			sharedToken('b'), sharedToken('c'), 30, 86400000).Int64Slice()
		if err != nil || r[0] != 1 {
			t.Fatalf("hand-off = %v, %v", r, err)
		}
		time.Sleep(60 * time.Millisecond) // c dies: its own lease ends
		code, _ := sc.acquire(t, sharedToken('d'), 10000)
		return code == 1
	}
	if !freed(handoff) {
		t.Fatal("handoff_shared.lua: the permit of a holder whose shorter lease ended was not given back")
	}
	broken := strings.Replace(handoff, "if tonumber(f[2] or '0') > now + lease then", "if false then", 1)
	if broken == handoff {
		t.Fatal("handoff_shared.lua no longer lowers '<' as this control assumes")
	}
	if freed(broken) {
		t.Fatal("negative control: without lowering '<' the passed permit was still given back")
	}
}
