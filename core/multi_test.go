package core_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func held(t *testing.T, rdb *redis.Client, key string) bool {
	t.Helper()
	n, err := rdb.Exists(context.Background(), core.KeysFor(core.DefaultPrefix, key).Lock).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// TestAcquireAll_allOrNone: one key held elsewhere, and the keys already
// taken are given back; the error names the key and is ErrNotAcquired.
func TestAcquireAll_allOrNone(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	a, b := core.New(srv.Client(t)), core.New(srv.Client(t))
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	ctx := context.Background()
	other, err := a.Acquire(ctx, "acct:2")
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.AcquireAll(ctx, []string{"acct:1", "acct:2", "acct:3"}, core.WithWait(100*time.Millisecond))
	var ke *core.KeyError
	if !errors.Is(err, core.ErrNotAcquired) || !errors.As(err, &ke) || ke.Key != "acct:2" || strings.Contains(err.Error(), "acct") {
		t.Fatalf("AcquireAll = %v; want ErrNotAcquired, a KeyError for acct:2 and no key in the message", err)
	}
	if held(t, rdb, "acct:1") || held(t, rdb, "acct:3") {
		t.Fatal("a failed AcquireAll left a lock held")
	}
	_ = other.Release(ctx)

	locks, err := b.AcquireAll(ctx, []string{"acct:3", "acct:1", "acct:3", "acct:2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 3 || locks[0].Key() != "acct:3" || locks[1].Key() != "acct:1" || locks[2].Key() != "acct:2" {
		t.Fatalf("locks %v; want acct:3, acct:1, acct:2 (input order, repeats once)", keysOf(locks))
	}
	for _, l := range locks {
		if l.Fence() == 0 || !held(t, rdb, l.Key()) {
			t.Fatalf("%s: fence %d, held %v", l.Key(), l.Fence(), held(t, rdb, l.Key()))
		}
	}
	if err := core.ReleaseAll(ctx, locks); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AcquireAll(ctx, []string{"ok", ""}); !errors.Is(err, core.ErrInvalidKey) || held(t, rdb, "ok") {
		t.Fatalf("AcquireAll with an empty key = %v (ok held: %v); want ErrInvalidKey, nothing held", err, held(t, rdb, "ok"))
	}
	if _, err := b.AcquireAll(ctx, nil); !errors.Is(err, core.ErrInvalidKey) {
		t.Fatalf("AcquireAll(nil) = %v; want ErrInvalidKey", err)
	}
}

func keysOf(locks []*core.Lock) []string {
	var out []string
	for _, l := range locks {
		out = append(out, l.Key())
	}
	return out
}

// TestAcquireAll_oneWaitBudget: the bound covers the whole set. The first
// held key frees up after 300 ms, the second never does: with one budget of
// 500 ms the call ends near 500 ms; a budget per key would end near 800.
func TestAcquireAll_oneWaitBudget(t *testing.T) {
	srv := redistest.Start(t)
	a, b := core.New(srv.Client(t)), core.New(srv.Client(t))
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	ctx := context.Background()
	first, err := a.Acquire(ctx, "budget:1")
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.Acquire(ctx, "budget:2")
	if err != nil {
		t.Fatal(err)
	}
	defer second.Release(ctx)
	time.AfterFunc(300*time.Millisecond, func() { _ = first.Release(ctx) })
	start := time.Now()
	_, err = b.AcquireAll(ctx, []string{"budget:2", "budget:1"}, core.WithWait(500*time.Millisecond))
	d := time.Since(start)
	if !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("AcquireAll = %v; want ErrNotAcquired", err)
	}
	if d < 450*time.Millisecond || d > 700*time.Millisecond {
		t.Fatalf("AcquireAll gave up after %v; want about the one 500 ms budget", d)
	}
}

// TestAcquireAll_noDeadlock: two instances take overlapping sets named in
// opposite orders, again and again, with no wait bound; the backend-key
// order means neither waits for the other forever. The witness (read,
// pause, write) counts every transfer exactly once.
func TestAcquireAll_noDeadlock(t *testing.T) {
	srv := redistest.Start(t)
	clients := []*core.Client{core.New(srv.Client(t)), core.New(srv.Client(t))}
	t.Cleanup(func() {
		for _, c := range clients {
			_ = c.Close()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	balances := map[string]int{"x": 0, "y": 0}
	var wg sync.WaitGroup
	const rounds = 40
	errs := make(chan error, 4*rounds)
	for i, c := range clients {
		keys := []string{"x", "y"}
		if i == 1 {
			keys = []string{"y", "x"}
		}
		for range 2 {
			wg.Go(func() {
				for range rounds {
					locks, err := c.AcquireAll(ctx, keys)
					if err != nil {
						errs <- err
						return
					}
					x, y := balances["x"], balances["y"]
					time.Sleep(100 * time.Microsecond)
					balances["x"], balances["y"] = x+1, y-1
					errs <- core.ReleaseAll(ctx, locks)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if want := 4 * rounds; balances["x"] != want || balances["y"] != -want {
		t.Fatalf("balances %v; want x=%d y=%d", balances, want, -want)
	}
}
