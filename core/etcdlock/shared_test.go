package etcdlock_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/etcdlock"
	"github.com/fencedlock/fencedlock/internal/etcdtest"
)

// instances returns n Clients, each on its own etcd client and Backend:
// n processes as far as etcd can tell.
func instances(t *testing.T, c *etcdtest.Cluster, n int, opts ...core.Option) []*core.Client {
	t.Helper()
	cs := make([]*core.Client, n)
	for i := range cs {
		cs[i] = newClient(t, c.Client(t), opts...)
	}
	return cs
}

func mustAcquire(t *testing.T, c *core.Client, key string, opts ...core.Option) *core.Lock {
	t.Helper()
	l, err := c.Acquire(bg, key, opts...)
	if err != nil {
		t.Fatalf("acquire %q: %v", key, err)
	}
	return l
}

// acquireAsync starts a waiting Acquire and delivers its lock (nil on error).
func acquireAsync(t *testing.T, c *core.Client, key string, opts ...core.Option) <-chan *core.Lock {
	ch := make(chan *core.Lock, 1)
	go func() {
		l, err := c.Acquire(bg, key, append([]core.Option{core.WithWait(10 * time.Second)}, opts...)...)
		if err != nil {
			t.Error(err)
		}
		ch <- l
	}()
	return ch
}

func notYet(t *testing.T, ch <-chan *core.Lock, d time.Duration, what string) {
	t.Helper()
	select {
	case l := <-ch:
		t.Fatalf("%s was granted (fence %d) while it must wait", what, l.Fence())
	case <-time.After(d):
	}
}

func granted(t *testing.T, ch <-chan *core.Lock, what string) *core.Lock {
	t.Helper()
	select {
	case l := <-ch:
		if l == nil {
			t.Fatalf("%s failed", what)
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never granted", what)
	}
	return nil
}

// TestShared_readersCoexistWriterExcludes: readers of three instances hold
// one key at once; a writer waits for all of them; once it waits, a new
// reader waits behind it (writer preference), and while the writer holds
// no reader gets in. Control: the same writer asking for a shared hold is
// granted at once, so the "still waiting" checks can fail.
func TestShared_readersCoexistWriterExcludes(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := cluster.Client(t)
	cs := instances(t, cluster, 4)
	r1 := mustAcquire(t, cs[0], "doc", core.Shared())
	r2 := mustAcquire(t, cs[1], "doc", core.Shared())
	r3, err := cs[2].TryAcquire(bg, "doc", core.Shared())
	if err != nil {
		t.Fatalf("third reader: %v", err)
	}
	if !(r1.Fence() < r2.Fence() && r2.Fence() < r3.Fence()) {
		t.Fatalf("reader fences %d %d %d", r1.Fence(), r2.Fence(), r3.Fence())
	}
	if err := r2.Refresh(bg, time.Second); err != nil {
		t.Fatalf("refresh of a share: %v", err)
	}
	if _, err := cs[3].TryAcquire(bg, "doc"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("writer TryAcquire among readers = %v", err)
	}

	control := acquireAsync(t, cs[3], "doc", core.Shared())
	granted(t, control, "control: a fourth reader").Release(bg)

	w := acquireAsync(t, cs[3], "doc")
	waitEntries(t, cli, "doc", 4)
	notYet(t, w, 200*time.Millisecond, "the writer")
	if _, err := cs[0].TryAcquire(bg, "doc", core.Shared()); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("reader TryAcquire behind a waiting writer = %v", err)
	}
	late := acquireAsync(t, cs[0], "doc", core.Shared())
	for _, l := range []*core.Lock{r1, r2, r3} {
		notYet(t, w, 20*time.Millisecond, "the writer")
		if err := l.Release(bg); err != nil {
			t.Fatal(err)
		}
	}
	wl := granted(t, w, "the writer")
	notYet(t, late, 200*time.Millisecond, "a reader behind the writer")
	if err := wl.Release(bg); err != nil {
		t.Fatal(err)
	}
	ll := granted(t, late, "the reader behind the writer")
	if !(wl.Fence() > r3.Fence() && ll.Fence() > wl.Fence()) {
		t.Fatalf("fences: readers up to %d, writer %d, late reader %d", r3.Fence(), wl.Fence(), ll.Fence())
	}
	_ = ll.Release(bg)
}

// permitWitness runs 16 goroutines over 4 instances taking opt on one key,
// each holding for a pause; it returns the most holders seen at once.
// The count is taken on entry and given back on exit, with the pause in
// between, so any overlap beyond the limit is seen.
func permitWitness(t *testing.T, cs []*core.Client, key string, opt core.Option) int32 {
	var inUse, most atomic.Int32
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			c := cs[i%len(cs)]
			for range 12 {
				l, err := c.Acquire(bg, key, opt, core.WithWait(30*time.Second))
				if err != nil {
					t.Error(err)
					return
				}
				n := inUse.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				time.Sleep(2 * time.Millisecond)
				inUse.Add(-1)
				if err := l.Release(bg); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	return most.Load()
}

// TestPermits_witnessNeverExceedsN: Permits(3) over 4 instances and 16
// goroutines never has more than 3 holders, and does reach 3. Control: the
// same load with Permits(16) (the limit check taken as a much larger n)
// exceeds 3, so the witness can see a violation.
func TestPermits_witnessNeverExceedsN(t *testing.T) {
	cluster := etcdtest.Start(t)
	cs := instances(t, cluster, 4)
	if most := permitWitness(t, cs, "jobs", core.Permits(3)); most > 3 || most < 2 {
		t.Fatalf("Permits(3): %d holders at once", most)
	} else {
		t.Logf("Permits(3): at most %d holders at once", most)
	}
	waitEntries(t, cluster.Client(t), "jobs", 0)
	if most := permitWitness(t, cs, "jobs-control", core.Permits(16)); most <= 3 {
		t.Fatalf("control: Permits(16) never had more than %d holders: the witness cannot fail", most)
	} else {
		t.Logf("control: Permits(16): %d holders at once", most)
	}
}

// TestPermits_perHolderExpiry: of two permit holders, the one whose lease
// ends without renewal loses its permit (and is told), which a waiter then
// gets; the other, renewed by its watchdog, keeps its own. Control: before
// the lease ends the waiter is refused.
func TestPermits_perHolderExpiry(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := cluster.Client(t)
	cs := instances(t, cluster, 3)
	ttl := time.Second
	dying := mustAcquire(t, cs[0], "pool", core.Permits(2), core.WithTTL(ttl))
	kept := mustAcquire(t, cs[1], "pool", core.Permits(2), core.WithTTL(ttl), core.WithAutoRefresh())
	if _, err := cs[2].TryAcquire(bg, "pool", core.Permits(2)); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("control: a third permit while two are held = %v", err)
	}
	start := time.Now()
	w := acquireAsync(t, cs[2], "pool", core.Permits(2))
	third := granted(t, w, "the waiter")
	if d := time.Since(start); d < ttl/2 || d > 3*ttl {
		t.Fatalf("waiter granted after %v; the dead holder's lease was %v", d, ttl)
	}
	select {
	case <-dying.Done():
	case <-time.After(time.Second):
		t.Fatal("the holder whose lease ended was not told")
	}
	if !errors.Is(dying.Err(), core.ErrLost) {
		t.Fatalf("dying Err = %v", dying.Err())
	}
	if kept.Err() != nil {
		t.Fatalf("the renewed holder lost its permit: %v", kept.Err())
	}
	if third.Fence() <= kept.Fence() {
		t.Fatalf("fence %d after %d", third.Fence(), kept.Fence())
	}
	if n := entries(t, cli, "pool"); n != 2 {
		t.Fatalf("%d entries, want the two live permits", n)
	}
	_ = kept.Release(bg)
	_ = third.Release(bg)
	waitEntries(t, cli, "pool", 0)
}

// TestBackend_sharedFreeAndHandoff: on the Backend, a permit grant reports
// the permits left (Grant.Free), a shared one -1, a refusal the holder's
// TTL; Handoff of a share releases it with an error that is not
// ErrNotHeld.
func TestBackend_sharedFreeAndHandoff(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	b := newBackend(t, cli)
	keys := core.KeysFor(core.DefaultPrefix, "free")
	hold := func(tok string) core.Hold {
		return core.Hold{Keys: keys, Token: tok, Mode: core.PermitMode, Permits: 3}
	}
	for i, want := range []int{2, 1, 0} {
		g, err := b.Acquire(bg, hold(string(rune('a'+i))), time.Second)
		if err != nil || !g.Acquired || g.Free != want {
			t.Fatalf("permit %d: %+v %v, want Free %d", i, g, err, want)
		}
	}
	g, err := b.Acquire(bg, hold("d"), time.Second)
	if err != nil || g.Acquired || g.HolderTTL != time.Second {
		t.Fatalf("fourth permit: %+v %v, want a refusal with the holder's TTL", g, err)
	}
	if n := entries(t, cli, "free"); n != 3 {
		t.Fatalf("%d entries after a refused permit, want 3", n)
	}
	_, err = b.Handoff(bg, hold("a"), "e", time.Second)
	if !errors.Is(err, etcdlock.ErrHandoffDeclined) || errors.Is(err, core.ErrNotHeld) {
		t.Fatalf("Handoff of a permit = %v", err)
	}
	for _, tok := range []string{"b", "c"} {
		if _, err := b.Release(bg, hold(tok)); err != nil {
			t.Fatal(err)
		}
	}
	waitEntries(t, cli, "free", 0)
	sh := core.Hold{Keys: keys, Token: "s", Mode: core.SharedMode}
	if g, err := b.Acquire(bg, sh, time.Second); err != nil || !g.Acquired || g.Free != -1 {
		t.Fatalf("shared: %+v %v", g, err)
	}
	if _, err := b.Release(bg, sh); err != nil {
		t.Fatal(err)
	}
}

// TestMode_mismatch: against permit holders and a queued permit waiter, a
// shared request and one with another n fail at once, typed, and leave no
// entry behind, whether they wait or not; an exclusive request queues.
// Control: a request with the same n joins the queue (the entry count
// check sees a request that stays).
func TestMode_mismatch(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := cluster.Client(t)
	cs := instances(t, cluster, 2)
	p := mustAcquire(t, cs[0], "mode", core.Permits(2))
	for _, tc := range []struct {
		opt        core.Option
		want, have string
	}{{core.Shared(), "s", "p2"}, {core.Permits(3), "p3", "p2"}} {
		for _, wait := range []time.Duration{0, time.Second} {
			_, err := cs[1].Acquire(bg, "mode", tc.opt, core.WithWait(wait))
			var me *core.ModeError
			if !errors.Is(err, core.ErrModeMismatch) || !errors.As(err, &me) || me.Want != tc.want || me.Have != tc.have {
				t.Fatalf("%s against Permits(2) (wait %v) = %v", tc.want, wait, err)
			}
			if n := entries(t, cli, "mode"); n != 1 {
				t.Fatalf("%d entries after a refused %s request, want the holder's only", n, tc.want)
			}
		}
	}
	// A writer may queue behind permits, and a queued permit waiter
	// still fixes the key's mode.
	w := acquireAsync(t, cs[1], "mode")
	waitEntries(t, cli, "mode", 2)
	q := acquireAsync(t, cs[1], "mode", core.Permits(2))
	waitEntries(t, cli, "mode", 3) // control: the same n stays in the queue
	if _, err := cs[1].Acquire(bg, "mode", core.Shared(), core.WithWait(time.Second)); !errors.Is(err, core.ErrModeMismatch) {
		t.Fatalf("shared against a queued Permits(2) waiter = %v", err)
	}
	waitEntries(t, cli, "mode", 3)
	_ = p.Release(bg)
	granted(t, w, "the writer").Release(bg)
	granted(t, q, "the permit waiter").Release(bg)
	waitEntries(t, cli, "mode", 0)
	// The key keeps nothing: the next holder chooses its mode again.
	mustAcquire(t, cs[0], "mode", core.Shared()).Release(bg)
}

// TestFences_increaseAcrossKinds: on one key, an exclusive holder, then
// queued readers, a writer, a reader behind it, and permits: every grant's
// fence is above every earlier grant's, a writer's above every hold before
// it. Control: increasing() flags a sequence with one swap.
func TestFences_increaseAcrossKinds(t *testing.T) {
	if increasing([]uint64{1, 3, 2}) {
		t.Fatal("control: increasing accepts a swapped sequence")
	}
	cluster := etcdtest.Start(t)
	cli := cluster.Client(t)
	cs := instances(t, cluster, 4)
	x := mustAcquire(t, cs[0], "fences")
	s1 := acquireAsync(t, cs[1], "fences", core.Shared())
	waitEntries(t, cli, "fences", 2)
	s2 := acquireAsync(t, cs[2], "fences", core.Shared())
	waitEntries(t, cli, "fences", 3)
	w := acquireAsync(t, cs[3], "fences")
	waitEntries(t, cli, "fences", 4)
	s3 := acquireAsync(t, cs[1], "fences", core.Shared())
	waitEntries(t, cli, "fences", 5)
	_ = x.Release(bg)
	l1, l2 := granted(t, s1, "reader 1"), granted(t, s2, "reader 2")
	_, _ = l1.Release(bg), l2.Release(bg)
	lw := granted(t, w, "the writer")
	_ = lw.Release(bg)
	l3 := granted(t, s3, "reader 3")
	_ = l3.Release(bg)
	p1 := mustAcquire(t, cs[2], "fences", core.Permits(2))
	p2 := mustAcquire(t, cs[0], "fences", core.Permits(2))
	_, _ = p1.Release(bg), p2.Release(bg)
	x2 := mustAcquire(t, cs[1], "fences")
	_ = x2.Release(bg)
	// readers 1 and 2 were granted together: either order is a grant order
	fences := []uint64{x.Fence(), min(l1.Fence(), l2.Fence()), max(l1.Fence(), l2.Fence()), lw.Fence(), l3.Fence(), p1.Fence(), p2.Fence(), x2.Fence()}
	if !increasing(fences) {
		t.Fatalf("fences in grant order: %v", fences)
	}
	if l1.Fence() > l2.Fence() {
		t.Fatalf("readers' fences %d, %d: not in queue order", l1.Fence(), l2.Fence())
	}
}

func increasing(fs []uint64) bool {
	for i := 1; i < len(fs); i++ {
		if fs[i] <= fs[i-1] {
			return false
		}
	}
	return true
}

// readHold is one reader's hold in TestShared_writerNotStarved.
type readHold struct {
	fence             uint64
	granted, released time.Time // released: just before Release was sent
}

// readers keeps 12 goroutines over cs reading key, each holding for hold,
// until ctx ends; it returns their holds once they stopped.
func readers(ctx context.Context, t *testing.T, cs []*core.Client, key string, hold time.Duration) func() []readHold {
	var mu sync.Mutex
	var holds []readHold
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Go(func() {
			for ctx.Err() == nil {
				l, err := cs[i%len(cs)].Acquire(ctx, key, core.Shared(), core.WithWait(10*time.Second))
				if err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				h := readHold{fence: l.Fence(), granted: time.Now()}
				time.Sleep(hold)
				h.released = time.Now()
				_ = l.Release(bg)
				mu.Lock()
				holds = append(holds, h)
				mu.Unlock()
			}
		})
	}
	return func() []readHold { wg.Wait(); return holds }
}

// TestShared_writerNotStarved: 12 readers over 4 instances keep one key
// read without a gap; a writer of a fifth instance still gets it within
// 2 × (longest read hold + TTL/10), no reader holds with it, and every
// reader whose entry came after the writer's starts after the writer's
// release. Control: a writer that gets in only when no reader holds (what
// a reader-preferring order gives it: TryAcquire in a loop) does not get
// in within the same bound.
func TestShared_writerNotStarved(t *testing.T) {
	cluster := etcdtest.Start(t)
	ttl, hold := time.Second, 20*time.Millisecond
	bound := 2 * (hold + ttl/10)
	cs := instances(t, cluster, 5, core.WithTTL(ttl))
	ctx, stop := context.WithCancel(bg)
	defer stop()
	done := readers(ctx, t, cs[:4], "hot", hold)
	time.Sleep(100 * time.Millisecond) // readers overlap by now

	tries := 0
	for end := time.Now().Add(bound); time.Now().Before(end); tries++ {
		if l, err := cs[4].TryAcquire(bg, "hot"); err == nil {
			_ = l.Release(bg)
			t.Fatalf("control: a writer polling for a gap got in after %d tries: the readers leave gaps", tries)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("control: %d TryAcquire calls in %v, none got in", tries, bound)

	start := time.Now()
	w, err := cs[4].Acquire(bg, "hot", core.WithWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := time.Now()
	time.Sleep(hold)
	releasing := time.Now()
	_ = w.Release(bg)
	time.Sleep(100 * time.Millisecond) // readers carry on after the writer
	stop()
	holds := done()
	if d := got.Sub(start); d > bound {
		t.Fatalf("writer waited %v, bound %v", d, bound)
	} else {
		t.Logf("writer waited %v (bound %v) among %d reads", d, bound, len(holds))
	}
	after := 0
	for _, h := range holds {
		switch {
		case h.fence < w.Fence() && !h.released.Before(got):
			t.Fatalf("reader (fence %d) still held when the writer (fence %d) was granted", h.fence, w.Fence())
		case h.fence > w.Fence() && !h.granted.After(releasing):
			t.Fatalf("reader arriving after the writer (fence %d > %d) started before the writer's release", h.fence, w.Fence())
		case h.fence > w.Fence():
			after++
		}
	}
	if after == 0 {
		t.Fatal("no reader came after the writer: the check above proved nothing")
	}
}

// TestPermits_releaseGrantsOneInOrder: with Permits(2) held and three
// permit waiters queued (one per instance), a release grants exactly the
// oldest waiter, and a waiter that gives up leaves no entry, without
// costing the one behind it its turn. Control: the second release grants
// the next waiter, so the "not yet" check can see a grant.
func TestPermits_releaseGrantsOneInOrder(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := cluster.Client(t)
	cs := instances(t, cluster, 5)
	h1 := mustAcquire(t, cs[0], "pq", core.Permits(2))
	h2 := mustAcquire(t, cs[0], "pq", core.Permits(2))
	w1 := acquireAsync(t, cs[1], "pq", core.Permits(2))
	waitEntries(t, cli, "pq", 3)
	ctx, cancel := context.WithCancel(bg)
	quit := make(chan error, 1)
	go func() {
		_, err := cs[2].Acquire(ctx, "pq", core.Permits(2))
		quit <- err
	}()
	waitEntries(t, cli, "pq", 4)
	w3 := acquireAsync(t, cs[3], "pq", core.Permits(2))
	waitEntries(t, cli, "pq", 5)
	cancel()
	if err := <-quit; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled permit wait = %v", err)
	}
	waitEntries(t, cli, "pq", 4)

	_ = h1.Release(bg)
	l1 := granted(t, w1, "the oldest waiter")
	notYet(t, w3, 200*time.Millisecond, "the second waiter after one release")
	_ = h2.Release(bg)
	l3 := granted(t, w3, "control: the second waiter after the second release")
	if l3.Fence() <= l1.Fence() {
		t.Fatalf("fences %d then %d", l1.Fence(), l3.Fence())
	}
	_, _ = l1.Release(bg), l3.Release(bg)
	waitEntries(t, cli, "pq", 0)
}
