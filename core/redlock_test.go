package core_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// redlockSet is five independent servers, each behind a fault proxy, with
// a client per node through its proxy and one straight to the server (to
// look behind the lock's back).
type redlockSet struct {
	t       *testing.T
	servers []*redistest.Server
	proxies []*redistest.Proxy
	nodes   []redis.UniversalClient // through the proxies
	direct  []redis.UniversalClient
	isCut   []int
}

func startRedlockSet(t *testing.T, n int) *redlockSet {
	s := &redlockSet{t: t, servers: redistest.StartN(t, n)}
	for _, srv := range s.servers {
		p := redistest.NewProxy(t, srv.Addr())
		s.proxies = append(s.proxies, p)
		s.nodes = append(s.nodes, nodeClient(t, p.Addr()))
		s.direct = append(s.direct, nodeClient(t, srv.Addr()))
	}
	return s
}

// cut partitions nodes: nothing they are sent arrives.
func (s *redlockSet) cut(nodes ...int) {
	for _, i := range nodes {
		s.proxies[i].Block()
		s.isCut = append(s.isCut, i)
	}
}

// heal ends the partitions; what was held back is dropped, as a real
// partition that outlasts the senders' timeouts would.
func (s *redlockSet) heal() {
	for _, i := range s.isCut {
		s.proxies[i].ResetAll()
		s.proxies[i].Unblock()
	}
	s.isCut = nil
}

// settle waits until no node has key's lock: a release returns once a
// quorum released, the slower nodes follow.
func (s *redlockSet) settle(key string) {
	lock := core.KeysFor(core.DefaultPrefix, key).Lock
	for deadline := time.Now().Add(2 * time.Second); countKey(s.t, s.direct, lock) > 0; {
		if time.Now().After(deadline) {
			for i, d := range s.direct {
				v, _ := d.Get(context.Background(), lock).Result()
				pttl, _ := d.PTTL(context.Background(), lock).Result()
				s.t.Logf("node %d: %q %v", i, v, pttl)
			}
			s.t.Fatalf("lock %q still on %d nodes after its release", key, countKey(s.t, s.direct, lock))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (s *redlockSet) client(opts ...core.Option) *core.Client {
	c := core.NewWithBackend(core.NewRedlockBackend(s.nodes, opts...))
	s.t.Cleanup(func() { _ = c.Close() })
	return c
}

// cycle acquires and releases key once and returns the fence.
func cycle(t *testing.T, c *core.Client, key string) uint64 {
	t.Helper()
	l, err := c.TryAcquire(context.Background(), key, core.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	return l.Fence()
}

// TestRedlock_fence_nodesRestartedEmpty kills a node and brings it back
// empty between acquisitions, one node after the other, with other nodes
// partitioned now and then: fences must keep increasing.
func TestRedlock_fence_nodesRestartedEmpty(t *testing.T) {
	s := startRedlockSet(t, 5)
	c := s.client(core.WithNodeTimeout(300 * time.Millisecond))
	rng := rand.New(rand.NewPCG(1, 2))
	var last uint64
	for round := range 20 {
		s.servers[round%5].Restart()
		if round%3 == 0 {
			// and one other node unreachable for this acquisition
			s.cut((round%5 + 1 + rng.IntN(4)) % 5)
		}
		f := cycle(t, c, "restarts")
		s.heal()
		s.settle("restarts")
		if f <= last {
			t.Fatalf("round %d: fence %d after %d", round, f, last)
		}
		last = f
	}
}

// fenceScenario runs acquisitions on a Redlock set whose counters all
// start at 4e15, far above the servers' microsecond clocks, so that a
// counter restarted from the clock is below the fences issued and only the
// quorum design keeps fences increasing. Between acquisitions it
// partitions different minorities and restarts a node empty, never more
// than a minority missing or lost between two acquisitions. It returns the
// fences in order.
func fenceScenario(t *testing.T, opts ...core.Option) []uint64 {
	s := startRedlockSet(t, 5)
	c := s.client(append(opts, core.WithNodeTimeout(300*time.Millisecond))...)
	const key = "scenario"
	fk := core.KeysFor(core.DefaultPrefix, key).Fence
	for _, d := range s.direct {
		if err := d.Set(context.Background(), fk, "4000000000000000", 24*time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	var fences []uint64
	step := func(cut ...int) {
		s.cut(cut...)
		fences = append(fences, cycle(t, c, key))
		s.heal()
		s.settle(key)
	}
	step(3, 4) // nodes 0,1,2 move on; 3,4 lag
	step(0, 1) // 2 is ahead of 3,4: the grant raises them
	step(2)    // 0,1,3,4 answer: without the raise all four say the same
	s.servers[3].Restart()
	step() // node 3 lost everything; 0,1,4 still know
	step(0, 4)
	return fences
}

func TestRedlock_fence_minorityLagOrLoss(t *testing.T) {
	fences := fenceScenario(t)
	for i := 1; i < len(fences); i++ {
		if fences[i] <= fences[i-1] {
			t.Fatalf("fences %v: %d after %d", fences, fences[i], fences[i-1])
		}
	}
	t.Logf("fences %v", fences)
}

// Negative control: the same schedule with lagging counters left alone
// hands out a fence that is not above the previous one.
func TestRedlock_fence_minorityLagOrLoss_negativeControl(t *testing.T) {
	fences := fenceScenario(t, core.RedlockWithoutRaise())
	for i := 1; i < len(fences); i++ {
		if fences[i] <= fences[i-1] {
			t.Logf("without raising: fence %d after %d (%v)", fences[i], fences[i-1], fences)
			return
		}
	}
	t.Fatalf("negative control: fences %v kept increasing without raising lagging counters; the scenario proves nothing", fences)
}

func TestRedlock_quorum_unreachable(t *testing.T) {
	s := startRedlockSet(t, 5)
	c := s.client(core.WithNodeTimeout(200 * time.Millisecond))
	for _, srv := range s.servers[:3] {
		srv.Kill()
	}
	_, err := c.TryAcquire(context.Background(), "q")
	if !errors.Is(err, core.ErrQuorum) || !errors.Is(err, core.ErrUnavailable) || errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("TryAcquire with 3 of 5 nodes down = %v, want ErrQuorum and ErrUnavailable", err)
	}
	// The two nodes that did answer were cleaned up.
	time.Sleep(50 * time.Millisecond)
	if n := countKey(t, s.direct[3:], core.KeysFor(core.DefaultPrefix, "q").Lock); n != 0 {
		t.Fatalf("lock key left on %d reachable nodes after a failed quorum", n)
	}
	s.servers[0].Restart()
	cycle(t, c, "q") // 3 of 5 again
}

func TestRedlock_heldElsewhere_partialGrantReleased(t *testing.T) {
	s := startRedlockSet(t, 5)
	c := s.client()
	lock := core.KeysFor(core.DefaultPrefix, "held").Lock
	for _, d := range s.direct[:3] {
		if err := d.Set(context.Background(), lock, "someone-else", 10*time.Second).Err(); err != nil {
			t.Fatal(err)
		}
	}
	_, err := c.TryAcquire(context.Background(), "held")
	if !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("TryAcquire on a key held on 3 of 5 = %v, want ErrNotAcquired", err)
	}
	if ra, ok := core.RetryAfter(err); !ok || ra < 9*time.Second || ra > 10*time.Second {
		t.Fatalf("RetryAfter = %v %v, want about 10s", ra, ok)
	}
	if n := countKey(t, s.direct[3:], lock); n != 0 {
		t.Fatalf("our partial grant left on %d nodes", n)
	}
}

// TestRedlock_lateQuorum_notGranted slows every node so that the quorum
// answers after the lease's validity: the grant must be refused and undone.
func TestRedlock_lateQuorum_notGranted(t *testing.T) {
	s := startRedlockSet(t, 5)
	c := s.client(core.WithNodeTimeout(time.Second))
	for _, p := range s.proxies {
		p.Delay(40 * time.Millisecond) // each way: 80ms per round trip
	}
	_, err := c.TryAcquire(context.Background(), "late", core.WithTTL(60*time.Millisecond))
	if !errors.Is(err, core.ErrQuorum) {
		t.Fatalf("TryAcquire answered after the validity = %v, want ErrQuorum", err)
	}
	for _, p := range s.proxies {
		p.Delay(0)
	}
	if n := countKey(t, s.direct, core.KeysFor(core.DefaultPrefix, "late").Lock); n != 0 {
		t.Fatalf("late grant left on %d nodes", n)
	}
}

// TestRedlock_watchdog_needsMajority: renewals keep the lock while a
// majority answers and lose it, before the lease can run out, when not.
func TestRedlock_watchdog_needsMajority(t *testing.T) {
	s := startRedlockSet(t, 5)
	c := s.client(core.WithNodeTimeout(100 * time.Millisecond))
	ttl := 600 * time.Millisecond
	l, err := c.Acquire(context.Background(), "wd", core.WithTTL(ttl), core.WithAutoRefresh())
	if err != nil {
		t.Fatal(err)
	}
	s.cut(0, 1)
	time.Sleep(3 * ttl)
	if l.Err() != nil {
		t.Fatalf("lost with 3 of 5 nodes renewing: %v", l.Err())
	}
	s.cut(2)
	cutAt := time.Now()
	select {
	case <-l.Done():
	case <-time.After(3 * ttl):
		t.Fatal("lock not lost with 2 of 5 nodes renewing")
	}
	lostAt := time.Now()
	if !errors.Is(l.Err(), core.ErrLost) {
		t.Fatalf("Err = %v", l.Err())
	}
	// No renewal counted once a majority could not be reached: the
	// validity deadline, at which the holder is told, comes before the
	// lease on the two nodes that kept renewing runs out.
	if over := l.Deadline().Sub(cutAt); over > ttl {
		t.Fatalf("validity deadline %v after the majority was lost; lease is %v", over, ttl)
	}
	t.Logf("told %v after the cut, %v after the validity deadline", lostAt.Sub(cutAt), lostAt.Sub(l.Deadline()))
	s.heal()
}

// TestRedlock_wake_withNodesDown: a waiter subscribed on the reachable
// majority is woken by the release, long before the lease would end.
func TestRedlock_wake_withNodesDown(t *testing.T) {
	s := startRedlockSet(t, 5)
	s.servers[0].Kill()
	s.servers[1].Kill()
	a, b := s.client(), s.client()
	l, err := a.Acquire(context.Background(), "wake", core.WithTTL(20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		_ = l.Release(context.Background())
	}()
	start := time.Now()
	l2, err := b.Acquire(context.Background(), "wake", core.WithWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("waiter woke after %v", d)
	}
	_ = l2.Release(context.Background())
}

// scriptCounter counts the script calls a client sends, by their number
// of keys and arguments: acquire has 2 keys and 4 arguments (EVALSHA sha 2
// lock fence token ms ms seed), release 3 keys (lock, channel, fence
// counter); any other script (the fence raise) is "other".
type scriptCounter struct{ acquire, release, other atomic.Int64 }

func (h *scriptCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *scriptCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if name := cmd.Name(); name == "evalsha" || name == "eval" {
			args := cmd.Args()
			switch nk := fmt.Sprint(args[2]); {
			case nk == "2" && len(args) == 9:
				h.acquire.Add(1)
			case nk == "3":
				h.release.Add(1)
			default:
				h.other.Add(1)
			}
		}
		return next(ctx, cmd)
	}
}
func (h *scriptCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestRedlock_oneRoundTripPerNode: an uncontended acquire costs one round
// trip per node (nodes in step: no raise round), also for keys the nodes
// see for the first time; its release one more, also on a node that
// answered the acquire after the quorum (it is released once its acquire
// has landed, not before).
func TestRedlock_oneRoundTripPerNode(t *testing.T) {
	servers := redistest.StartN(t, 5)
	counters := make([]*scriptCounter, 5)
	nodes := make([]redis.UniversalClient, 5)
	for i, srv := range servers {
		c := nodeClient(t, srv.Addr())
		counters[i] = &scriptCounter{}
		c.AddHook(counters[i])
		nodes[i] = c
	}
	c := core.NewRedlock(nodes)
	defer c.Close()
	cycle(t, c, "rt") // loads the scripts
	time.Sleep(50 * time.Millisecond)
	for _, h := range counters {
		h.acquire.Store(0)
		h.release.Store(0)
		h.other.Store(0)
	}
	const n = 30
	for i := range n {
		cycle(t, c, "rt:"+strconv.Itoa(i%10))
	}
	time.Sleep(50 * time.Millisecond) // stragglers answered after the quorum
	for i, h := range counters {
		a, r, o := h.acquire.Load(), h.release.Load(), h.other.Load()
		if a != n || r != n || o != 0 {
			t.Errorf("node %d: %d acquire, %d release, %d other calls for %d cycles", i, a, r, o, n)
		}
	}
}

// TestRedlock_watchdog_nodesRestartedEmpty: two of three nodes lose every
// key (restarted empty) while a lock is held; the watchdog re-creates it
// there and keeps a quorum, so another Client still cannot take it
// (defect 4: the renewing quorum used to erode).
func TestRedlock_watchdog_nodesRestartedEmpty(t *testing.T) {
	s := startRedlockSet(t, 3)
	c, other := s.client(), s.client()
	ctx := context.Background()
	const key = "restarted"
	l, err := c.Acquire(ctx, key, core.WithTTL(600*time.Millisecond), core.WithAutoRefresh(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	// The two nodes keep restarting empty for well past the lease: every
	// renewal finds the key missing there.
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		for _, d := range s.direct[:2] {
			if err := d.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(250 * time.Millisecond) // one more renewal round
	select {
	case <-l.Done():
		t.Fatalf("lost after two nodes restarted empty: %v", l.Err())
	default:
	}
	lock := core.KeysFor(core.DefaultPrefix, key).Lock
	if n := countKey(t, s.direct, lock); n != 3 {
		t.Fatalf("lock on %d of 3 nodes; want it re-created on all", n)
	}
	if _, err := other.TryAcquire(ctx, key); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("another Client's TryAcquire = %v; want ErrNotAcquired", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
