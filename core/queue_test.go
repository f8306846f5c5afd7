package core_test

import (
	"context"
	"crypto/sha1" //nolint:gosec // the queue id release.lua computes
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The store queue (core/queue_remote.go): waiters of every Client queue in
// Redis and a release grants the lock to the queue's head.

// queueScripts calls acquire.lua and release.lua directly.
type queueScripts struct {
	t                *testing.T
	rdb              *redis.Client
	k                core.Keys
	acquire, release string
}

func newQueueScripts(t *testing.T, rdb *redis.Client, key string) *queueScripts {
	return &queueScripts{t: t, rdb: rdb, k: core.KeysFor(core.DefaultPrefix, key),
		acquire: script(t, "acquire"), release: script(t, "release")}
}

// take runs acquire.lua for tok; life > 0 queues it when refused.
func (q *queueScripts) take(tok string, life time.Duration) []int64 {
	q.t.Helper()
	keys := []string{q.k.Lock, q.k.Fence, q.k.Leases, q.k.Claims}
	args := []any{tok, 10000, 86400000}
	if life > 0 {
		keys = append(keys, q.k.Queue)
		args = append(args, "", 20000, "", life.Milliseconds(), "1")
	}
	res, err := q.rdb.Eval(context.Background(), q.acquire, keys, args...).Int64Slice()
	if err != nil {
		q.t.Fatal(err)
	}
	return res
}

// drop runs release.lua (src: the script, or a mutation of it) for tok
// with a grant lease of 100 ms; leaving marks a waiter that gives up.
func (q *queueScripts) drop(src, tok string, leaving bool) int64 {
	q.t.Helper()
	keys := []string{q.k.Lock, q.k.Channel, q.k.Fence, q.k.Leases, q.k.Claims, q.k.Queue}
	leave := ""
	if leaving {
		leave = "1"
	}
	n, err := q.rdb.Eval(context.Background(), src, keys, tok, "PUBLISH", "", "", 100, 86400000, leave).Int64()
	if err != nil {
		q.t.Fatal(err)
	}
	return n
}

func (q *queueScripts) queue() []string {
	q.t.Helper()
	v, err := q.rdb.LRange(context.Background(), q.k.Queue, 0, -1).Result()
	if err != nil {
		q.t.Fatal(err)
	}
	return v
}

func sha1hex(s string) string {
	sum := sha1.Sum([]byte(s)) //nolint:gosec // an id
	return hex.EncodeToString(sum[:])
}

func TestQueueScripts_releaseGrantsHead(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	q := newQueueScripts(t, rdb, "acct")
	ps := rdb.Subscribe(ctx, q.k.Channel)
	t.Cleanup(func() { _ = ps.Close() })
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	first := q.take("A", 0)
	if first[0] != 1 {
		t.Fatalf("A: %v", first)
	}
	for _, tok := range []string{"B", "C", "B"} { // B again: renews, keeps its place
		if res := q.take(tok, 5*time.Second); res[0] != 0 || res[3] != 1 {
			t.Fatalf("%s: %v, want refused and queued", tok, res)
		}
	}
	if got := q.queue(); strings.Join(got, ",") != "B,C" {
		t.Fatalf("queue %v, want B,C", got)
	}
	if n := q.drop(q.release, "A", false); n > -2 {
		t.Fatalf("release of A: %d, want a grant (<= -2)", n)
	}
	v, pttl := heldState(t, rdb, q.k)
	if v != "B" || pttl > 100*time.Millisecond || pttl <= 0 {
		t.Fatalf("after the release: %q with %v left, want B with the 100 ms grant lease", v, pttl)
	}
	msg, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("g %s %d 100", sha1hex("B"), first[1]+1)
	if msg.Payload != want {
		t.Fatalf("notice %q, want %q", msg.Payload, want)
	}
	if got := q.queue(); strings.Join(got, ",") != "C" {
		t.Fatalf("queue %v, want C", got)
	}
	// The grantee's own acquire (a retry that missed the notice) confirms
	// with a full lease and the granted fence.
	if res := q.take("B", 5*time.Second); res[0] != 1 || res[1] != first[1]+1 {
		t.Fatalf("B's retry: %v, want the grant's fence %d", res, first[1]+1)
	}
	if _, pttl := heldState(t, rdb, q.k); pttl < 9*time.Second {
		t.Fatalf("B's lease after its retry: %v, want the full 10 s", pttl)
	}
}

// TestQueueScripts_deadWaitersFallOut: a waiter whose entry ended is
// skipped by the grant; a waiter that gives up leaves. The negative
// control runs a release that ignores the entries and grants the dead
// waiter.
func TestQueueScripts_deadWaitersFallOut(t *testing.T) {
	for _, c := range []struct {
		name   string
		mutate func(string) string
		want   string
	}{
		{"protected", func(s string) string { return s }, "E"},
		{"control: entries ignored", func(s string) string {
			return strings.Replace(s, "if redis.call('DEL', KEYS[6] .. ':' .. id) == 1 then", "if true then", 1)
		}, "D"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rdb := redistest.Start(t).Client(t)
			q := newQueueScripts(t, rdb, "acct")
			src := c.mutate(q.release)
			if src == q.release && c.want == "D" {
				t.Fatal("the mutation did not apply")
			}
			q.take("A", 0)
			q.take("F", 5*time.Second) // creates the queue, living 5 s
			q.take("D", time.Millisecond)
			time.Sleep(20 * time.Millisecond) // D's entry ends
			q.take("E", 5*time.Second)
			if n := q.drop(src, "F", true); n != 0 {
				t.Fatalf("F leaving: %d, want 0 (F holds nothing)", n)
			}
			if got := q.queue(); strings.Join(got, ",") != "D,E" {
				t.Fatalf("queue %v, want D,E (F left)", got)
			}
			q.drop(src, "A", false)
			if v, _ := heldState(t, rdb, q.k); v != c.want {
				t.Fatalf("granted to %q, want %q", v, c.want)
			}
		})
	}
}

// TestQueue_fifoAcrossClients: waiters of four Clients get the lock in the
// order they queued, each by a grant (no acquire round trip of its own),
// with strictly increasing fences.
func TestQueue_fifoAcrossClients(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	k := core.KeysFor(core.DefaultPrefix, "fifo")
	holder := core.New(srv.Client(t))
	t.Cleanup(func() { _ = holder.Close() })
	l, err := holder.Acquire(ctx, "fifo")
	if err != nil {
		t.Fatal(err)
	}
	type got struct {
		i     int
		fence uint64
		err   error
	}
	order := make(chan got, 4)
	for i := range 4 {
		c := core.New(srv.Client(t))
		t.Cleanup(func() { _ = c.Close() })
		go func() {
			w, err := c.Acquire(ctx, "fifo", core.WithWait(10*time.Second))
			if err != nil {
				order <- got{i: i, err: err}
				return
			}
			order <- got{i: i, fence: w.Fence()}
			time.Sleep(10 * time.Millisecond)
			_ = w.Release(ctx)
		}()
		waitFor(t, func() bool { return admin.LLen(ctx, k.Queue).Val() == int64(i+1) }, "waiter %d queued", i)
	}
	if err := admin.ConfigResetStat(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	last := l.Fence()
	for want := range 4 {
		g := <-order
		if g.err != nil || g.i != want || g.fence <= last {
			t.Fatalf("grant %d: waiter %d fence %d (after %d), err %v", want, g.i, g.fence, last, g.err)
		}
		last = g.fence
	}
	// Every fence came from a grant in a release (LPOP of the queue, INCR);
	// a waiter that was queued for less than the grant lease used it at
	// once, one slowed down past that (a loaded machine) confirmed with an
	// attempt that issues no fence.
	if calls := commandCalls(t, admin); calls["lpop"] < 4 || calls["incr"] != 4 {
		t.Errorf("commands %v; want 4 grants (LPOP+INCR each)", calls)
	}
}

// TestQueue_unconfirmedGrantLapses: a queued waiter that never confirms its
// grant (it died) blocks the key for the grant lease only; the next waiter
// then takes it. The control releases with a grant lease as long as the
// TTL, and the next waiter waits that long.
func TestQueue_unconfirmedGrantLapses(t *testing.T) {
	for _, c := range []struct {
		name   string
		lease  time.Duration
		lo, hi time.Duration
	}{
		{"grant lease 100ms", 100 * time.Millisecond, 90 * time.Millisecond, 400 * time.Millisecond},
		{"control: grant lease 2s", 2 * time.Second, 1900 * time.Millisecond, 3 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := redistest.Start(t)
			admin := srv.Client(t)
			ctx := context.Background()
			holder, waiter := core.New(srv.Client(t)), core.New(srv.Client(t))
			t.Cleanup(func() { _ = holder.Close(); _ = waiter.Close() })
			l, err := holder.Acquire(ctx, "k", core.WithTTL(5*time.Second), core.WithGrantLease(c.lease))
			if err != nil {
				t.Fatal(err)
			}
			q := newQueueScripts(t, admin, "k")
			q.take("dead-waiter", 10*time.Second) // queued, never listens
			got := make(chan time.Time, 1)
			go func() {
				w, err := waiter.Acquire(ctx, "k", core.WithWait(10*time.Second))
				if err == nil {
					got <- time.Now()
					_ = w.Release(ctx)
				}
				close(got)
			}()
			waitFor(t, func() bool { return admin.LLen(ctx, q.k.Queue).Val() == 2 }, "waiter queued")
			released := time.Now()
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
			at, ok := <-got
			if !ok {
				t.Fatal("the waiter did not get the lock")
			}
			if d := at.Sub(released); d < c.lo || d > c.hi {
				t.Fatalf("the waiter got the lock %v after the release, want %v..%v", d, c.lo, c.hi)
			}
		})
	}
}

// TestQueue_grantConfirmedWithoutWatchdog: a granted waiter that holds the
// lock past the grant lease keeps it: its confirmation gave it the full
// lease, with the watchdog off.
func TestQueue_grantConfirmedWithoutWatchdog(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	holder, waiter := core.New(srv.Client(t)), core.New(srv.Client(t))
	t.Cleanup(func() { _ = holder.Close(); _ = waiter.Close() })
	k := core.KeysFor(core.DefaultPrefix, "k")
	l, err := holder.Acquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *core.Lock, 1)
	go func() {
		w, _ := waiter.Acquire(ctx, "k", core.WithWait(5*time.Second), core.WithTTL(3*time.Second), core.WithoutAutoRefresh())
		got <- w
	}()
	waitFor(t, func() bool { return admin.LLen(ctx, k.Queue).Val() == 1 }, "waiter queued")
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	w := <-got
	if w == nil {
		t.Fatal("no lock")
	}
	time.Sleep(300 * time.Millisecond) // three grant leases
	if v, pttl := heldState(t, admin, k); v != w.Token() || pttl < 2*time.Second || w.Err() != nil {
		t.Fatalf("after 300 ms: %q with %v left (err %v), want ours with the 3 s lease", v, pttl, w.Err())
	}
	if time.Until(w.Deadline()) < 2*time.Second {
		t.Fatalf("deadline %v away, want the confirmed lease", time.Until(w.Deadline()))
	}
	if err := w.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestQueue_giveUpLeavesQueue: a waiter whose wait ends leaves the store
// queue, so no grant goes to it.
func TestQueue_giveUpLeavesQueue(t *testing.T) {
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	holder, waiter := core.New(srv.Client(t)), core.New(srv.Client(t))
	t.Cleanup(func() { _ = holder.Close(); _ = waiter.Close() })
	k := core.KeysFor(core.DefaultPrefix, "k")
	l, err := holder.Acquire(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := waiter.Acquire(ctx, "k", core.WithWait(150*time.Millisecond)); err == nil {
		t.Fatal("acquired a held key")
	}
	waitFor(t, func() bool {
		return admin.LLen(ctx, k.Queue).Val() == 0 && len(admin.Keys(ctx, k.Queue+":*").Val()) == 0
	}, "the waiter left the queue")
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := heldState(t, admin, k); v != "" {
		t.Fatalf("after the release the key holds %q, want free", v)
	}
}

func waitFor(t *testing.T, cond func() bool, what string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: "+what, args...)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
