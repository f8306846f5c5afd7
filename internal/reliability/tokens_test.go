//go:build linux

package reliability_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// TestSecurity_forgedAndReplayedTokens tries to release, refresh and hand
// off a held lock with tokens that are not the holder's: random guesses,
// near misses of the real token, the public owner id and fence, and the
// real token of an earlier holder (a replay). It goes through the backend
// and through the raw Lua scripts. None may touch the holder's lock; the
// control shows that a release which does not compare tokens would.
func TestSecurity_forgedAndReplayedTokens(t *testing.T) {
	gate(t)
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	b := core.NewRedisBackend(rdb)
	t.Cleanup(func() { _ = b.Close() })
	c := core.New(rdb)
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	const key = "account:7"
	keys := core.KeysFor(core.DefaultPrefix, key)

	// An earlier holder, whose token will be replayed.
	old, err := c.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	oldToken := old.Token()
	if err := old.Release(ctx); err != nil {
		t.Fatal(err)
	}
	l, err := c.Acquire(ctx, key, core.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)

	forged := []string{
		oldToken, "", l.Owner(), strconv.FormatUint(l.Fence(), 10), l.Token()[:31], l.Token() + "0",
		strings.ToUpper(l.Token()), " " + l.Token(), "*", "nil", "false", "0", "\x00",
	}
	for range 500 {
		var g [16]byte
		_, _ = rand.Read(g[:])
		forged = append(forged, hex.EncodeToString(g[:]))
	}
	scripts := loadScripts(t)
	attempts, violations := 0, 0
	intact := func(what string) {
		t.Helper()
		got, err := rdb.Get(ctx, keys.Lock).Result()
		ttl, terr := rdb.PTTL(ctx, keys.Lock).Result()
		if err != nil || terr != nil || got != l.Token() || ttl > 10*time.Second {
			violations++
			t.Errorf("%s changed the holder's lock: value %q (%v), pttl %v (%v)", what, got, err, ttl, terr)
		}
	}
	for _, tok := range forged {
		attempts += 3
		if _, err := b.Release(ctx, core.Hold{Keys: keys, Token: tok}); !errors.Is(err, core.ErrNotHeld) {
			t.Errorf("Release with %q = %v, want ErrNotHeld", tok, err)
		}
		if errs := b.Refresh(ctx, []core.RefreshRequest{{Hold: core.Hold{Keys: keys, Token: tok}, TTL: time.Hour}}); !errors.Is(errs[0], core.ErrNotHeld) {
			t.Errorf("Refresh with %q = %v, want ErrNotHeld", tok, errs[0])
		}
		if _, err := b.Handoff(ctx, core.Hold{Keys: keys, Token: tok}, "thief", time.Hour); !errors.Is(err, core.ErrNotHeld) {
			t.Errorf("Handoff from %q = %v, want ErrNotHeld", tok, err)
		}
		intact("a forged token through the backend")
	}
	// The same through the scripts themselves, as a client with the
	// kit's Redis credentials could call them.
	for _, tok := range forged[:20] {
		attempts += 3
		if n, err := rdb.Eval(ctx, scripts["release"], []string{keys.Lock, keys.Channel}, tok, "PUBLISH").Int64(); err != nil || n != 0 {
			t.Errorf("release.lua with %q = %d, %v", tok, n, err)
		}
		if n, err := rdb.Eval(ctx, scripts["refresh"], []string{keys.Lock}, tok, 3600000).Int64(); err != nil || n != 0 {
			t.Errorf("refresh.lua with %q = %d, %v", tok, n, err)
		}
		if res, err := rdb.Eval(ctx, scripts["handoff"], []string{keys.Lock, keys.Fence}, tok, "thief", 3600000, 86400000).Int64Slice(); err != nil || res[0] != 0 {
			t.Errorf("handoff.lua from %q = %v, %v", tok, res, err)
		}
		intact("a forged token through the raw script")
	}
	// A replayed acquire with the old token is not "our own retry".
	attempts++
	if g, err := b.Acquire(ctx, core.Hold{Keys: keys, Token: oldToken}, time.Hour); err != nil || g.Acquired {
		t.Errorf("Acquire with a replayed token = %+v, %v", g, err)
	}
	intact("a replayed acquire")

	// Tokens: 128 bits from crypto/rand, hex; never repeated.
	seen := map[string]bool{}
	hexRe := regexp.MustCompile(`^[0-9a-f]{32}$`)
	for i := range 300 {
		x, err := c.Acquire(ctx, "entropy:"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		if !hexRe.MatchString(x.Token()) || seen[x.Token()] {
			t.Errorf("token %q: not 32 hex digits or repeated", x.Token())
		}
		seen[x.Token()] = true
		_ = x.Release(ctx)
	}

	// Negative control: a release that does not compare the token (the
	// classic DEL) takes the lock from its holder with any guess.
	ctrl := 0
	if err := naiveRelease(ctx, rdb, keys); err != nil {
		t.Fatal(err)
	}
	if n, _ := rdb.Exists(ctx, keys.Lock).Result(); n == 0 {
		ctrl++
	}
	if ctrl == 0 {
		t.Error("negative control: an unchecked DEL left the lock in place; the test cannot fail")
	}
	addRow(reportRow{
		Security:   true,
		Scenario:   "forged and replayed tokens (release, refresh, hand-off, acquire; backend and raw scripts)",
		Faults:     fmt.Sprintf("%d forged or replayed calls", attempts),
		Ops:        fmt.Sprintf("%d forged tokens, 300 fresh tokens checked", len(forged)),
		Violations: fmt.Sprint(violations),
		Control:    fmt.Sprintf("%d (a release without the token compare (plain DEL) removed the holder's lock)", ctrl),
		Checks:     "holder's value and TTL unchanged after every call; tokens are 32 hex digits (128 bits, crypto/rand), all distinct",
	})
}

// loadScripts reads core's Lua scripts, to call them without the backend.
func loadScripts(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range []string{"release", "refresh", "handoff", "acquire"} {
		b, err := os.ReadFile(filepath.Join("..", "..", "core", "scripts", n+".lua"))
		if err != nil {
			t.Fatal(err)
		}
		out[n] = string(b)
	}
	return out
}

// quietClient fails fast, for commands that are expected to be refused.
func quietClient(t *testing.T, opt *redis.Options) *redis.Client {
	t.Helper()
	opt.MaxRetries = -1
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = time.Second, time.Second, time.Second
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}
