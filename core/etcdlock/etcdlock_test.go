package etcdlock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/etcdlock"
	"github.com/fencedlock/fencedlock/internal/etcdtest"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

var bg = context.Background()

func newClient(t *testing.T, cli *clientv3.Client, opts ...core.Option) *core.Client {
	t.Helper()
	c, err := etcdlock.New(cli, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func newBackend(t *testing.T, cli *clientv3.Client, opts ...etcdlock.Option) *etcdlock.Backend {
	t.Helper()
	b, err := etcdlock.NewBackend(cli, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func entries(t *testing.T, cli *clientv3.Client, key string) int {
	t.Helper()
	resp, err := cli.Get(bg, etcdlock.QueuePrefix(core.DefaultPrefix, key), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.Count)
}

// waitEntries waits until key's queue has n entries.
func waitEntries(t *testing.T, cli *clientv3.Client, key string, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for entries(t, cli, key) != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue %q has %d entries, want %d", key, entries(t, cli, key), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNew_ttlLongerThanSession(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	c := newClient(t, cli)
	for _, try := range []bool{false, true} {
		var err error
		if try {
			_, err = c.TryAcquire(bg, "long", core.WithTTL(etcdlock.DefaultSessionTTL+time.Second))
		} else {
			_, err = c.Acquire(bg, "long", core.WithTTL(etcdlock.DefaultSessionTTL+time.Second))
		}
		if !errors.Is(err, etcdlock.ErrTTLTooLong) {
			t.Fatalf("try=%v: %v, want ErrTTLTooLong", try, err)
		}
	}
	l, err := c.Acquire(bg, "long", core.WithTTL(etcdlock.DefaultSessionTTL))
	if err != nil {
		t.Fatalf("TTL equal to the session TTL: %v", err)
	}
	if err := l.Refresh(bg, etcdlock.DefaultSessionTTL+time.Second); !errors.Is(err, etcdlock.ErrTTLTooLong) {
		t.Fatalf("Refresh beyond the session TTL = %v", err)
	}
	if err := l.Release(bg); err != nil {
		t.Fatal(err)
	}
}

// TestWait_fifoAcrossClients queues waiters of five clients one after the
// other: they are granted in that order, each with a higher fence, and each
// release wakes only the next waiter.
func TestWait_fifoAcrossClients(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	holder := newClient(t, cli)
	l, err := holder.Acquire(bg, "fifo")
	if err != nil {
		t.Fatal(err)
	}
	const n = 5
	var mu sync.Mutex
	var order []int
	var fences []uint64
	var wg sync.WaitGroup
	for i := range n {
		c := newClient(t, cli)
		wg.Add(1)
		go func() {
			defer wg.Done()
			l, err := c.Acquire(bg, "fifo", core.WithWait(10*time.Second))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			fences = append(fences, l.Fence())
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
			_ = l.Release(bg)
		}()
		waitEntries(t, cli, "fifo", i+2) // queued before the next one starts
	}
	if err := l.Release(bg); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i := range order {
		if order[i] != i {
			t.Fatalf("grant order %v, want FIFO", order)
		}
		if i > 0 && fences[i] <= fences[i-1] {
			t.Fatalf("fences %v not increasing", fences)
		}
	}
	if fences[0] <= l.Fence() {
		t.Fatalf("first waiter's fence %d not above the holder's %d", fences[0], l.Fence())
	}
	waitEntries(t, cli, "fifo", 0)
}

// TestWait_giveUpRemovesEntry: a waiter whose context ends, or whose wait
// bound passes, leaves nothing in the queue, even when it was not last.
func TestWait_giveUpRemovesEntry(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	holder := newClient(t, cli)
	l, err := holder.Acquire(bg, "giveup")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(bg)

	// A waiter behind the one that gives up must still get its turn.
	last := newClient(t, cli)
	ctx, cancel := context.WithCancel(bg)
	got := make(chan error, 1)
	quitter := newClient(t, cli)
	go func() {
		_, err := quitter.Acquire(ctx, "giveup")
		got <- err
	}()
	waitEntries(t, cli, "giveup", 2)
	lastGot := make(chan *core.Lock, 1)
	go func() {
		l, err := last.Acquire(bg, "giveup", core.WithWait(10*time.Second))
		if err != nil {
			t.Error(err)
		}
		lastGot <- l
	}()
	waitEntries(t, cli, "giveup", 3)
	cancel()
	if err := <-got; !errors.Is(err, core.ErrNotAcquired) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled wait = %v", err)
	}
	waitEntries(t, cli, "giveup", 2)

	bounded := newClient(t, cli)
	if _, err := bounded.Acquire(bg, "giveup", core.WithWait(50*time.Millisecond)); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("bounded wait = %v", err)
	} else if ra, ok := core.RetryAfter(err); !ok || ra != core.DefaultTTL {
		t.Fatalf("RetryAfter = %v %v, want the holder's TTL", ra, ok)
	}
	waitEntries(t, cli, "giveup", 2)

	if err := l.Release(bg); err != nil {
		t.Fatal(err)
	}
	select {
	case l2 := <-lastGot:
		if l2 != nil {
			_ = l2.Release(bg)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter behind a cancelled one never got the lock")
	}
	waitEntries(t, cli, "giveup", 0)
}

// leaseOf returns the lease of the single entry in key's queue.
func leaseOf(t *testing.T, cli *clientv3.Client, key string) clientv3.LeaseID {
	t.Helper()
	resp, err := cli.Get(bg, etcdlock.QueuePrefix(core.DefaultPrefix, key), clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("queue %q: %v %v", key, resp, err)
	}
	return clientv3.LeaseID(resp.Kvs[0].Lease)
}

// TestSession_revoked: when the session lease disappears (an operator
// revokes it, or it expired during a long partition) every lock of the
// Backend is lost and reported, and the Backend carries on with a new
// lease.
func TestSession_revoked(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	c := newClient(t, cli)
	l, err := c.Acquire(bg, "revoked", core.WithTTL(2*time.Second), core.WithAutoRefresh(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(bg, leaseOf(t, cli, "revoked")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	case <-time.After(3 * time.Second):
		t.Fatal("no loss notice after the session lease was revoked")
	}
	if !errors.Is(l.Err(), core.ErrLost) {
		t.Fatalf("Err = %v", l.Err())
	}
	l2, err := c.Acquire(bg, "revoked", core.WithWait(5*time.Second))
	if err != nil {
		t.Fatalf("acquire on a new session: %v", err)
	}
	if l2.Fence() <= l.Fence() {
		t.Fatalf("fence %d after %d", l2.Fence(), l.Fence())
	}
	_ = l2.Release(bg)
}

// TestSession_revoked_waiterQueuesAgain: a waiter whose entry vanished with
// its lease queues again on a new lease and still gets the lock.
func TestSession_revoked_waiterQueuesAgain(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	holder := newClient(t, cli)
	l, err := holder.Acquire(bg, "requeue")
	if err != nil {
		t.Fatal(err)
	}
	session := 5 * time.Second // keep-alive every second
	wb := newBackend(t, cli, etcdlock.WithSessionTTL(session))
	waiter := etcdlock.NewClient(wb)
	got := make(chan error, 1)
	go func() {
		l, err := waiter.Acquire(bg, "requeue", core.WithTTL(2*time.Second), core.WithWait(10*time.Second))
		if err == nil {
			err = l.Release(bg)
		}
		got <- err
	}()
	waitEntries(t, cli, "requeue", 2)
	resp, err := cli.Get(bg, etcdlock.QueuePrefix(core.DefaultPrefix, "requeue"), append(clientv3.WithLastCreate(), clientv3.WithPrefix())...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(bg, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil {
		t.Fatal(err)
	}
	// The keep-alive finds the lease gone within a fifth of the session
	// TTL; then the waiter queues again.
	waitEntries(t, cli, "requeue", 1)
	deadline := time.Now().Add(session)
	for entries(t, cli, "requeue") != 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if err := l.Release(bg); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("waiter after its lease was revoked: %v", err)
		}
	case <-time.After(session):
		t.Fatal("the waiter never got the lock")
	}
}

// TestLock_lost_partitionedHolder cuts a holder off from etcd (its proxy
// stops forwarding) while its watchdog runs. Its renewals cannot land, the
// session lease runs out on the server and another client acquires. The
// holder must have been told (Done closed, ErrLost) no later than that.
func TestLock_lost_partitionedHolder(t *testing.T) {
	cluster := etcdtest.Start(t)
	proxy := redistest.NewProxy(t, cluster.Members()[0].Addr())
	cfg := cluster.ClientConfig()
	cfg.Endpoints = []string{proxy.Addr()}
	cut, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cut.Close()
	// A short session, so the lease ends on the server soon after the cut.
	hb := newBackend(t, cut, etcdlock.WithSessionTTL(2*time.Second))
	holder := etcdlock.NewClient(hb)
	other := newClient(t, cluster.Client(t))

	ttl := time.Second
	l, err := holder.Acquire(bg, "partition", core.WithTTL(ttl), core.WithAutoRefresh())
	if err != nil {
		t.Fatal(err)
	}
	lostAt := make(chan time.Time, 1)
	go func() { <-l.Done(); lostAt <- time.Now() }()
	time.Sleep(ttl) // renewals work while connected
	if l.Err() != nil {
		t.Fatalf("lost while connected: %v", l.Err())
	}
	proxy.Block()
	l2, err := other.Acquire(bg, "partition", core.WithWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	acquiredAt := time.Now()
	defer l2.Release(bg)
	var lost time.Time
	select {
	case lost = <-lostAt:
	default:
		t.Fatal("another client acquired while the partitioned holder still believed it held the lock")
	}
	if !errors.Is(l.Err(), core.ErrLost) {
		t.Fatalf("Err = %v", l.Err())
	}
	if l2.Fence() <= l.Fence() {
		t.Fatalf("fence went from %d to %d", l.Fence(), l2.Fence())
	}
	t.Logf("holder told %v before the new holder acquired", acquiredAt.Sub(lost))
	// Unblock before the deferred closes so the holder's clean-up and
	// revoke do not wait for their timeouts.
	proxy.Unblock()
	_ = holder.Close()
}

// TestHandoff_enabled: with hand-offs turned on, a local waiter gets the
// lock in one transaction (new entry, higher fence); when a waiter of
// another process is queued the lock goes to it instead, FIFO.
func TestHandoff_enabled(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	c := etcdlock.NewClient(newBackend(t, cli), core.WithHandoffLimit(16))
	l, err := c.Acquire(bg, "handoff")
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan *core.Lock, 1)
	go func() {
		l, err := c.Acquire(bg, "handoff", core.WithWait(5*time.Second))
		if err != nil {
			t.Error(err)
		}
		got <- l
	}()
	time.Sleep(50 * time.Millisecond) // queued locally
	if err := l.Release(bg); err != nil {
		t.Fatal(err)
	}
	l2 := <-got
	if l2 == nil {
		t.FailNow()
	}
	if l2.Fence() <= l.Fence() || entries(t, cli, "handoff") != 1 {
		t.Fatalf("hand-off: fence %d after %d, %d entries", l2.Fence(), l.Fence(), entries(t, cli, "handoff"))
	}

	remote := newClient(t, cli)
	remoteGot := make(chan *core.Lock, 1)
	go func() {
		l, err := remote.Acquire(bg, "handoff", core.WithWait(5*time.Second))
		if err != nil {
			t.Error(err)
		}
		remoteGot <- l
	}()
	waitEntries(t, cli, "handoff", 2)
	localGot := make(chan *core.Lock, 1)
	go func() {
		l, err := c.Acquire(bg, "handoff", core.WithWait(5*time.Second))
		if err != nil {
			t.Error(err)
		}
		localGot <- l
	}()
	time.Sleep(50 * time.Millisecond)
	if err := l2.Release(bg); !errors.Is(err, etcdlock.ErrHandoffDeclined) {
		t.Fatalf("Release with a remote waiter queued = %v, want ErrHandoffDeclined", err)
	}
	l3 := <-remoteGot
	if l3 == nil {
		t.FailNow()
	}
	if l3.Fence() <= l2.Fence() {
		t.Fatalf("remote fence %d after %d", l3.Fence(), l2.Fence())
	}
	_ = l3.Release(bg)
	if l4 := <-localGot; l4 != nil {
		_ = l4.Release(bg)
	}
}

func TestSubscribe_notifiesOnRelease(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	b := newBackend(t, cli)
	keys := core.KeysFor(core.DefaultPrefix, "sub")
	g, err := b.Acquire(bg, core.Hold{Keys: keys, Token: "tok"}, time.Second)
	if err != nil || !g.Acquired {
		t.Fatal(g, err)
	}
	note := make(chan struct{}, 1)
	cancel, err := b.Subscribe(bg, keys, func() {
		select {
		case note <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if _, err := b.Release(bg, core.Hold{Keys: keys, Token: "tok"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-note:
	case <-time.After(5 * time.Second):
		t.Fatal("no notice after release")
	}
}

// TestUnavailable_failsClosed: with the only member frozen, a TryAcquire
// without a deadline, and a new Backend, report core.ErrUnavailable after
// one bounded round trip instead of waiting for the cluster to return.
func TestUnavailable_failsClosed(t *testing.T) {
	cluster := etcdtest.Start(t)
	cli := cluster.Client(t)
	c := newClient(t, cli)
	m := cluster.Members()[0]
	m.Stop()
	defer m.Cont()
	time.Sleep(50 * time.Millisecond) // let every thread take the signal
	start := time.Now()
	if _, err := c.TryAcquire(bg, "down"); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("TryAcquire with etcd frozen = %v, want ErrUnavailable", err)
	}
	if _, err := etcdlock.NewBackend(cli); !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("NewBackend with etcd frozen = %v, want ErrUnavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
	m.Cont()
	l, err := c.Acquire(bg, "down", core.WithWait(10*time.Second))
	if err != nil {
		t.Fatalf("after the member resumed: %v", err)
	}
	_ = l.Release(bg)
}
