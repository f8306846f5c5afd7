package core_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Shared and permit holds on a real redis-server.

func clients(t *testing.T, srv *redistest.Server, n int, opts ...core.Option) []*core.Client {
	t.Helper()
	cs := make([]*core.Client, n)
	for i := range cs {
		cs[i] = core.New(srv.Client(t), opts...)
		c := cs[i]
		t.Cleanup(func() { _ = c.Close() })
	}
	return cs
}

func TestShared_readersCoexistWritersExclude(t *testing.T) {
	cs := clients(t, redistest.Start(t), 2)
	ctx := context.Background()
	r1, err := cs[0].Acquire(ctx, "doc", core.Shared())
	if err != nil {
		t.Fatal(err)
	}
	r2, err := cs[1].TryAcquire(ctx, "doc", core.Shared())
	if err != nil {
		t.Fatalf("second reader: %v", err)
	}
	if r1.Mode() != core.SharedMode || r1.Token() == r2.Token() || r2.Fence() <= r1.Fence() {
		t.Fatalf("readers: mode %v, tokens equal %v, fences %d then %d", r1.Mode(), r1.Token() == r2.Token(), r1.Fence(), r2.Fence())
	}
	if _, err := cs[1].TryAcquire(ctx, "doc"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("writer while reading = %v; want ErrNotAcquired", err)
	}
	if err := r1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cs[1].TryAcquire(ctx, "doc"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("writer with one reader left = %v; want ErrNotAcquired", err)
	}
	if err := r2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := cs[1].TryAcquire(ctx, "doc")
	if err != nil {
		t.Fatalf("writer after the readers: %v", err)
	}
	if w.Fence() <= r2.Fence() {
		t.Fatalf("writer fence %d not above the readers' %d", w.Fence(), r2.Fence())
	}
	if _, err := cs[0].TryAcquire(ctx, "doc", core.Shared()); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("reader while writing = %v; want ErrNotAcquired", err)
	}
	_ = w.Release(ctx)
}

func TestPermits_mismatchIsTyped(t *testing.T) {
	c := clients(t, redistest.Start(t), 1)[0]
	ctx := context.Background()
	if _, err := c.TryAcquire(ctx, "jobs", core.Permits(0)); !errors.Is(err, core.ErrInvalidOption) {
		t.Fatalf("Permits(0) = %v; want ErrInvalidOption", err)
	}
	l, err := c.Acquire(ctx, "jobs", core.Permits(2))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Acquire(ctx, "jobs", core.Permits(3), core.WithWait(time.Second))
	var me *core.ModeError
	if !errors.Is(err, core.ErrModeMismatch) || !errors.As(err, &me) || me.Have != "p2" {
		t.Fatalf("Permits(3) against Permits(2) = %v; want a ModeError (have p2)", err)
	}
	if _, err := c.TryAcquire(ctx, "jobs", core.Shared()); !errors.Is(err, core.ErrModeMismatch) {
		t.Fatalf("Shared against Permits(2) = %v; want ErrModeMismatch", err)
	}
	if l.Permits() != 2 || l.Mode() != core.PermitMode {
		t.Fatalf("Permits() = %d, Mode() = %v", l.Permits(), l.Mode())
	}
	_ = l.Release(ctx)
	// Once the holders are gone, another n is fine: nothing is left behind.
	l3, err := c.TryAcquire(ctx, "jobs", core.Permits(3))
	if err != nil {
		t.Fatalf("Permits(3) on a free key: %v", err)
	}
	_ = l3.Release(ctx)
}

// TestPermits_perHolderExpiry: a holder that dies gives its permit back when
// its own lease ends, while the others keep theirs.
func TestPermits_perHolderExpiry(t *testing.T) {
	cs := clients(t, redistest.Start(t), 3)
	ctx := context.Background()
	dying, err := cs[0].Acquire(ctx, "p", core.Permits(2), core.WithTTL(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	_ = dying // never released or renewed: its process "died"
	long, err := cs[1].Acquire(ctx, "p", core.Permits(2), core.WithTTL(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs[2].TryAcquire(ctx, "p", core.Permits(2)); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("third permit of 2 = %v; want ErrNotAcquired", err)
	}
	start := time.Now()
	l, err := cs[2].Acquire(ctx, "p", core.Permits(2), core.WithWait(5*time.Second))
	if err != nil {
		t.Fatalf("waiting for the dead holder's permit: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("permit came back after %v; want about the dead holder's 300ms lease", d)
	}
	if _, err := cs[0].TryAcquire(ctx, "p", core.Permits(2)); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("long holder's permit was given away too: %v", err)
	}
	if err := long.Release(ctx); err != nil {
		t.Fatalf("long holder's release: %v", err)
	}
	_ = l.Release(ctx)
}

// TestPermits_neverMoreThanN: holders from 4 Clients count themselves in a
// section and pause there. Without the permits the same
// witness sees more than n inside: the negative control.
func TestPermits_neverMoreThanN(t *testing.T) {
	const n = 3
	cs := clients(t, redistest.Start(t), 4)
	run := func(guarded bool) int64 {
		var inside, peak atomic.Int64
		var wg sync.WaitGroup
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := cs[g%len(cs)]
				for range 15 {
					var l *core.Lock
					if guarded {
						var err error
						if l, err = c.Acquire(context.Background(), "sem", core.Permits(n)); err != nil {
							t.Error(err)
							return
						}
					}
					// Holders overlap legitimately, so the count itself is
					// atomic; the pause inside is what a violation needs.
					if cur := inside.Add(1); cur > peak.Load() {
						peak.Store(cur)
					}
					time.Sleep(2 * time.Millisecond)
					inside.Add(-1)
					if l != nil {
						if err := l.Release(context.Background()); err != nil {
							t.Error(err)
						}
					}
				}
			}()
		}
		wg.Wait()
		return peak.Load()
	}
	if p := run(true); p > n {
		t.Fatalf("%d holders inside at once with Permits(%d)", p, n)
	}
	if p := run(false); p <= n {
		t.Fatalf("negative control: without permits the witness saw at most %d inside; the test cannot fail", p)
	}
}

// TestSharedScript_limitIsServerSide calls acquire_shared.lua directly: the
// n+1st permit is refused by the server, and a script without the limit
// check is caught by the same check.
func TestSharedScript_limitIsServerSide(t *testing.T) {
	rdb := redistest.Start(t).Client(t)
	ctx := context.Background()
	src := script(t, "acquire_shared")
	k := core.KeysFor(core.DefaultPrefix, "lim")
	keys := []string{k.Lock, k.Fence, k.Leases, k.Claims}
	grants := func(src string) int {
		rdb.Del(ctx, k.Lock, k.Leases, k.Claims)
		n := 0
		for i := range 4 {
			res, err := rdb.Eval(ctx, src, keys, strings.Repeat("a", 31)+string(rune('0'+i)), 10000, 86400000, "p2", 2).Slice()
			if err != nil {
				t.Fatal(err)
			}
			if res[0].(int64) == 1 {
				n++
			}
		}
		return n
	}
	if n := grants(src); n != 2 {
		t.Fatalf("acquire_shared.lua granted %d of Permits(2)", n)
	}
	broken := strings.Replace(src, "if limit > 0 and held >= limit then", "if false then", 1)
	if broken == src {
		t.Fatal("acquire_shared.lua no longer has the limit check this control removes")
	}
	if n := grants(broken); n <= 2 {
		t.Fatal("negative control: a script without the limit check still granted at most 2")
	}
}

// TestShared_writerPreference: once a writer waits, new readers queue
// behind it; a writer that does not wait (TryAcquire) holds nobody back.
func TestShared_writerPreference(t *testing.T) {
	cs := clients(t, redistest.Start(t), 3)
	ctx := context.Background()
	r1, err := cs[0].Acquire(ctx, "doc", core.Shared())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs[1].TryAcquire(ctx, "doc"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatal(err)
	}
	r, err := cs[2].TryAcquire(ctx, "doc", core.Shared())
	if err != nil {
		t.Fatalf("a TryAcquire writer held a reader back: %v", err)
	}
	_ = r.Release(ctx)

	got := make(chan *core.Lock, 1)
	go func() {
		w, err := cs[1].Acquire(ctx, "doc", core.WithWait(10*time.Second))
		if err != nil {
			t.Error(err)
		}
		got <- w
	}()
	time.Sleep(200 * time.Millisecond) // the writer is refused once and waits
	if _, err := cs[2].TryAcquire(ctx, "doc", core.Shared()); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("new reader while a writer waits = %v; want ErrNotAcquired", err)
	}
	_ = r1.Release(ctx)
	w := <-got
	if w == nil {
		t.Fatal("writer not granted")
	}
	if w.Fence() <= r1.Fence() {
		t.Fatalf("writer fence %d not above reader %d", w.Fence(), r1.Fence())
	}
	_ = w.Release(ctx)
	r2, err := cs[2].TryAcquire(ctx, "doc", core.Shared())
	if err != nil {
		t.Fatalf("reader after the writer: %v", err)
	}
	_ = r2.Release(ctx)
}

// TestShared_writerGivesUpWithdrawsClaim: a writer whose wait ends takes its
// claim back, so readers are not held back by a writer that left.
func TestShared_writerGivesUpWithdrawsClaim(t *testing.T) {
	cs := clients(t, redistest.Start(t), 3)
	ctx := context.Background()
	r1, err := cs[0].Acquire(ctx, "doc", core.Shared(), core.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs[1].Acquire(ctx, "doc", core.WithWait(300*time.Millisecond)); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("writer = %v; want ErrNotAcquired after its wait", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		r, err := cs[2].TryAcquire(ctx, "doc", core.Shared())
		if err == nil {
			_ = r.Release(ctx)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader still refused after the writer gave up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = r1.Release(ctx)
}

// TestShared_writerNotStarved: readers from 4 Clients keep the key shared
// without a gap; a writer is still granted within 2 × (longest read + TTL/10).
func TestShared_writerNotStarved(t *testing.T) {
	const read, ttl = 20 * time.Millisecond, time.Second
	cs := clients(t, redistest.Start(t), 5, core.WithTTL(ttl))
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				l, err := cs[g%4].Acquire(ctx, "doc", core.Shared())
				if err != nil {
					return
				}
				time.Sleep(read)
				_ = l.Release(context.Background())
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	var worst time.Duration
	for range 5 {
		start := time.Now()
		w, err := cs[4].Acquire(context.Background(), "doc", core.WithWait(5*time.Second))
		if err != nil {
			t.Fatalf("writer starved: %v", err)
		}
		worst = max(worst, time.Since(start))
		_ = w.Release(context.Background())
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	if bound := 2 * (read + ttl/10); worst > bound {
		t.Fatalf("writer waited %v under a stream of readers; bound %v", worst, bound)
	}
}

// TestShared_watchdogKeepsOwnLease: a shared hold renewed by the watchdog
// outlives its TTL; a reader without renewal beside it does not.
func TestShared_watchdogKeepsOwnLease(t *testing.T) {
	cs := clients(t, redistest.Start(t), 2)
	ctx := context.Background()
	kept, err := cs[0].Acquire(ctx, "doc", core.Shared(), core.WithTTL(200*time.Millisecond), core.WithAutoRefresh())
	if err != nil {
		t.Fatal(err)
	}
	short, err := cs[1].Acquire(ctx, "doc", core.Shared(), core.WithTTL(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	if kept.Err() != nil {
		t.Fatalf("renewed reader lost: %v", kept.Err())
	}
	if !errors.Is(short.Err(), core.ErrLost) {
		t.Fatalf("unrenewed reader Err = %v; want ErrLost", short.Err())
	}
	if err := kept.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRedlock_refusesSharedAndPermits: Redlock takes exclusive holds only,
// and says so with a typed error at the call.
func TestRedlock_refusesSharedAndPermits(t *testing.T) {
	var nodes []redis.UniversalClient
	for _, s := range redistest.StartN(t, 3) {
		nodes = append(nodes, s.Client(t))
	}
	c := core.NewRedlock(nodes)
	t.Cleanup(func() { _ = c.Close() })
	for _, opt := range []core.Option{core.Shared(), core.Permits(2)} {
		if _, err := c.Acquire(context.Background(), "k", opt, core.WithWait(time.Second)); !errors.Is(err, core.ErrModeUnsupported) {
			t.Fatalf("Redlock shared/permit = %v; want ErrModeUnsupported", err)
		}
	}
	l, err := c.TryAcquire(context.Background(), "k")
	if err != nil {
		t.Fatalf("exclusive after the refusals: %v", err)
	}
	_ = l.Release(context.Background())
}

// TestShared_replicaAck: on a Sentinel group with WithReplicaAck, a shared
// hold is acknowledged like an exclusive one; with replication stalled it
// is refused with ErrNotReplicated and undone (nothing left on the key).
func TestShared_replicaAck(t *testing.T) {
	g := redistest.StartSentinel(t)
	g.WaitDiscovered(20 * time.Second)
	ctx := context.Background()
	a := sentinelLocker(t, g, core.WithReplicaAck(1, time.Second))
	l, err := a.TryAcquire(ctx, "doc", core.Shared())
	if err != nil {
		t.Fatalf("acknowledged shared hold: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	requireLink(t, g)
	g.Link.Block()
	if _, err := a.TryAcquire(ctx, "doc", core.Permits(2)); !errors.Is(err, core.ErrNotReplicated) {
		t.Fatalf("permit without acknowledgement = %v; want ErrNotReplicated", err)
	}
	if n, err := g.Master.Client(t).Exists(ctx, core.KeysFor(core.DefaultPrefix, "doc").Lock).Result(); err != nil || n != 0 {
		t.Fatalf("refused permit left the key behind (exists=%d, %v)", n, err)
	}
}

// TestShared_cluster: shared and permit holds on a 3-primary Cluster, keys
// on every primary; a waiting reader is woken by the sharded release notice.
func TestShared_cluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	cc := cl.Client(t)
	a, b := core.New(cc), core.New(cl.Client(t))
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	ctx := context.Background()
	for _, key := range keysOnEachPrimary(t, cl, cc, 3) {
		r1, err := a.Acquire(ctx, key, core.Shared())
		if err != nil {
			t.Fatal(err)
		}
		r2, err := b.TryAcquire(ctx, key, core.Shared())
		if err != nil {
			t.Fatalf("second reader on %s: %v", key, err)
		}
		if _, err := b.TryAcquire(ctx, key); !errors.Is(err, core.ErrNotAcquired) {
			t.Fatalf("writer among readers on %s = %v", key, err)
		}
		_ = r1.Release(ctx)
		_ = r2.Release(ctx)
		p, err := a.Acquire(ctx, key, core.Permits(1), core.WithTTL(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan error, 1)
		go func() {
			l, err := b.Acquire(ctx, key, core.Permits(1), core.WithWait(5*time.Second))
			if err == nil {
				err = l.Release(ctx)
			}
			got <- err
		}()
		time.Sleep(100 * time.Millisecond)
		_ = p.Release(ctx)
		select {
		case err := <-got:
			if err != nil {
				t.Fatalf("permit waiter on %s: %v", key, err)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("permit waiter on %s not woken by the release notice", key)
		}
	}
}

// TestShared_sharded: the lock family through NewSharded (each key on one
// shard, the holders with it).
func TestShared_sharded(t *testing.T) {
	var shards []redis.UniversalClient
	for _, s := range redistest.StartN(t, 2) {
		shards = append(shards, s.Client(t))
	}
	a, b := core.NewSharded(shards), core.NewSharded(shards)
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
	ctx := context.Background()
	for i := range 6 {
		key := "tenant:" + strconv.Itoa(i)
		p1, err := a.Acquire(ctx, key, core.Permits(2), core.WithAutoRefresh())
		if err != nil {
			t.Fatal(err)
		}
		p2, err := b.TryAcquire(ctx, key, core.Permits(2))
		if err != nil {
			t.Fatalf("second permit of %s: %v", key, err)
		}
		if _, err := b.TryAcquire(ctx, key, core.Permits(2)); !errors.Is(err, core.ErrNotAcquired) {
			t.Fatalf("third permit of %s = %v", key, err)
		}
		if _, err := b.TryAcquire(ctx, key, core.Shared()); !errors.Is(err, core.ErrModeMismatch) {
			t.Fatalf("shared on a permit key %s = %v", key, err)
		}
		if err := errors.Join(p1.Release(ctx), p2.Release(ctx)); err != nil {
			t.Fatal(err)
		}
	}
}
