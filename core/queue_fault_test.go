package core_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Faults of the store queue with a waiter in a real separate process: a
// queued waiter killed, a granted waiter SIGSTOPped past its grant lease, a
// queued waiter partitioned away, Redis restarted empty mid-queue. No key
// stays blocked longer than the grant lease (plus a margin for this 2-core
// machine), no two holders overlap (a non-atomic witness: read, pause,
// write, check), fences strictly increase.

const (
	faultKey    = "q"
	faultMargin = 400 * time.Millisecond
)

// TestQueueChild is the waiter process of the fault tests; it skips unless
// started by them.
func TestQueueChild(t *testing.T) {
	addr := os.Getenv("FENCEDLOCK_QUEUE_CHILD")
	if addr == "" {
		t.Skip("the waiter process of the store-queue fault tests")
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond})
	c := core.New(rdb)
	defer func() { _ = c.Close(); _ = rdb.Close() }()
	ctx := context.Background()
	opts := []core.Option{core.WithWait(10 * time.Second), core.WithTTL(2 * time.Second), core.WithAutoRefresh()}
	if os.Getenv("FENCEDLOCK_QUEUE_CHILD_ARRIVAL") != "" {
		opts = append(opts, core.GrantFromArrival())
	}
	fmt.Println("waiting")
	l, err := c.Acquire(ctx, faultKey, opts...)
	if err != nil {
		fmt.Println("error", err)
		return
	}
	fmt.Println("acquired", l.Fence())
	enterWitness(ctx, rdb, "child", 30*time.Millisecond)
	_ = l.Release(ctx)
	fmt.Println("released")
}

// enterWitness is the non-atomic witness: whoever finds another holder's
// mark, or loses its own during the pause, counts a violation.
func enterWitness(ctx context.Context, rdb *redis.Client, id string, hold time.Duration) {
	if v := rdb.Get(ctx, "witness").Val(); v != "" {
		rdb.Incr(ctx, "violations")
	}
	rdb.Set(ctx, "witness", id, 0)
	time.Sleep(hold)
	if rdb.Get(ctx, "witness").Val() != id {
		rdb.Incr(ctx, "violations")
	}
	rdb.Del(ctx, "witness")
}

// faultRun is one scenario: a holder in this process, the child queued
// first, a waiter of this process queued second.
type faultRun struct {
	t      *testing.T
	srv    *redistest.Server
	admin  *redis.Client
	child  *exec.Cmd
	lines  chan string
	holder *core.Lock
	got    chan waiterResult
}

type waiterResult struct {
	at    time.Time
	fence uint64
	err   error
}

func startFaultRun(t *testing.T, childAddr string, srv *redistest.Server, childEnv []string, opts ...core.Option) *faultRun {
	if testing.Short() {
		t.Skip("process fault test")
	}
	r := &faultRun{t: t, srv: srv, admin: srv.Client(t), lines: make(chan string, 16), got: make(chan waiterResult, 1)}
	ctx := context.Background()
	holder, waiter := core.New(srv.Client(t), opts...), core.New(srv.Client(t))
	t.Cleanup(func() { _ = holder.Close(); _ = waiter.Close() })
	var err error
	if r.holder, err = holder.Acquire(ctx, faultKey, core.WithTTL(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	r.startChild(childAddr, childEnv)
	k := core.KeysFor(core.DefaultPrefix, faultKey)
	waitFor(t, func() bool { return r.admin.LLen(ctx, k.Queue).Val() == 1 }, "the child queued")
	go func() {
		l, err := waiter.Acquire(ctx, faultKey, core.WithWait(10*time.Second))
		res := waiterResult{at: time.Now(), err: err}
		if err == nil {
			res.fence = l.Fence()
			enterWitness(ctx, r.admin, "waiter", 300*time.Millisecond) // the child resumes meanwhile
			_ = l.Release(ctx)
		}
		r.got <- res
	}()
	waitFor(t, func() bool { return r.admin.LLen(ctx, k.Queue).Val() == 2 }, "the waiter queued")
	// Both listen for grants before the scenario goes on: a grant sent
	// before the child's subscription reached Redis would be lost, and the
	// child would wait for the holder's lease instead. After subscribing,
	// a waiter makes one more attempt (a round trip) before it waits.
	waitFor(t, func() bool { return r.admin.PubSubNumSub(ctx, k.Channel).Val()[k.Channel] == 2 }, "both subscribed")
	time.Sleep(50 * time.Millisecond)
	return r
}

func (r *faultRun) startChild(addr string, env []string) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestQueueChild$", "-test.count=1", "-test.v")
	cmd.Env = append(append(os.Environ(), "FENCEDLOCK_QUEUE_CHILD="+addr), env...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.child = cmd
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case r.lines <- sc.Text():
			default:
			}
		}
	}()
	r.t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-done
		_ = cmd.Wait()
	})
}

// releaseAndWait releases the holder and returns how long the waiter took.
func (r *faultRun) releaseAndWait() (time.Duration, waiterResult) {
	r.t.Helper()
	released := time.Now()
	if err := r.holder.Release(context.Background()); err != nil {
		r.t.Fatal(err)
	}
	res := <-r.got
	if res.err != nil {
		r.t.Fatalf("the waiter: %v", res.err)
	}
	if res.fence <= r.holder.Fence() {
		r.t.Fatalf("waiter's fence %d not above the holder's %d", res.fence, r.holder.Fence())
	}
	return res.at.Sub(released), res
}

// childFence waits for the child's outcome: its fence when it acquired.
func (r *faultRun) childFence(within time.Duration) (uint64, bool) {
	timeout := time.After(within)
	for {
		select {
		case line := <-r.lines:
			if f, ok := strings.CutPrefix(line, "acquired "); ok {
				n, _ := strconv.ParseUint(f, 10, 64)
				return n, true
			}
			if strings.HasPrefix(line, "error") {
				return 0, false
			}
		case <-timeout:
			return 0, false
		}
	}
}

func (r *faultRun) noViolations() {
	r.t.Helper()
	if v := r.admin.Get(context.Background(), "violations").Val(); v != "" {
		r.t.Fatalf("witness: %s violations", v)
	}
}

// TestQueueFault_grantedWaiterStopped: the child is granted the lock while
// SIGSTOPped; the waiter behind it gets the lock when the grant lease
// lapses. Resumed, the child does not hold the lock beside the waiter: it
// confirms (and fails), queues again and gets a later fence. The control
// releases with a grant lease of 3 s, and the key stays blocked that long.
func TestQueueFault_grantedWaiterStopped(t *testing.T) {
	for _, c := range []struct {
		name   string
		lease  time.Duration
		lo, hi time.Duration
	}{
		{"grant lease 100ms", 100 * time.Millisecond, 90 * time.Millisecond, 100*time.Millisecond + faultMargin},
		{"control: grant lease 3s", 3 * time.Second, 2900 * time.Millisecond, 3*time.Second + faultMargin},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := redistest.Start(t)
			r := startFaultRun(t, srv.Addr(), srv, nil, core.WithGrantLease(c.lease))
			if err := r.child.Process.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			d, w := r.releaseAndWait()
			if d < c.lo || d > c.hi {
				t.Fatalf("the waiter got the lock %v after the release, want %v..%v", d, c.lo, c.hi)
			}
			if err := r.child.Process.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
			t.Logf("blocked %v after the release", d)
			f, ok := r.childFence(4 * time.Second)
			if !ok || f <= w.fence {
				t.Fatalf("the resumed child: acquired %v with fence %d, want a fence above the waiter's %d", ok, f, w.fence)
			}
			r.noViolations()
		})
	}
}

// TestQueueFault_queuedWaiterKilled: the child dies while queued; its entry
// is granted once and lapses after the grant lease.
func TestQueueFault_queuedWaiterKilled(t *testing.T) {
	srv := redistest.Start(t)
	r := startFaultRun(t, srv.Addr(), srv, nil)
	if err := r.child.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_, _ = r.child.Process.Wait()
	d, _ := r.releaseAndWait()
	if d < 90*time.Millisecond || d > 100*time.Millisecond+faultMargin {
		t.Fatalf("the waiter got the lock %v after the release, want about the 100 ms grant lease", d)
	}
	r.noViolations()
}

// TestQueueFault_queuedWaiterPartitioned: the child talks to Redis through
// a proxy that partitions it away while queued.
func TestQueueFault_queuedWaiterPartitioned(t *testing.T) {
	srv := redistest.Start(t)
	p := redistest.NewProxy(t, srv.Addr())
	r := startFaultRun(t, p.Addr(), srv, nil)
	p.Block()
	d, w := r.releaseAndWait()
	if d < 90*time.Millisecond || d > 100*time.Millisecond+faultMargin {
		t.Fatalf("the waiter got the lock %v after the release, want about the 100 ms grant lease", d)
	}
	p.Unblock()
	if f, ok := r.childFence(3 * time.Second); ok && f <= w.fence {
		t.Fatalf("the healed child holds fence %d, not above the waiter's %d", f, w.fence)
	}
	r.noViolations()
}

// TestQueueFault_redisRestartedEmpty: Redis loses the queue (and the hold)
// mid-queue; both waiters still get the lock, one after the other, with
// different fences. They notice when their notice subscriptions reconnect,
// which go-redis does with a backoff: the bound is generous.
func TestQueueFault_redisRestartedEmpty(t *testing.T) {
	srv := redistest.Start(t)
	r := startFaultRun(t, srv.Addr(), srv, nil)
	srv.Restart()
	var res waiterResult
	select {
	case res = <-r.got:
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not get the lock after the restart")
	}
	if res.err != nil {
		t.Fatalf("the waiter: %v", res.err)
	}
	f, ok := r.childFence(10 * time.Second)
	if !ok {
		t.Fatal("the child did not get the lock after the restart")
	}
	if f == res.fence {
		t.Fatalf("child and waiter both got fence %d", f)
	}
	r.noViolations()
}

// TestQueueFault_pausedGranteeControl is the negative control of the rule
// that a grant's validity counts from the waiter's last refused attempt:
// counted from the notice's arrival instead, the child SIGSTOPped past its
// grant lease resumes believing it holds the lock while the waiter does,
// and the witness sees both inside.
func TestQueueFault_pausedGranteeControl(t *testing.T) {
	srv := redistest.Start(t)
	r := startFaultRun(t, srv.Addr(), srv, []string{"FENCEDLOCK_QUEUE_CHILD_ARRIVAL=1"})
	if err := r.child.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	released := time.Now()
	if err := r.holder.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The waiter takes the lock after the grant lease and holds the
	// witness for 300 ms: resume the child once the waiter is inside (an
	// order, not a guess at how long the waiter takes on a loaded machine).
	waitFor(t, func() bool { return r.admin.Get(context.Background(), "witness").Val() == "waiter" }, "the waiter inside the witness")
	if err := r.child.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	f, ok := r.childFence(3 * time.Second)
	if !ok {
		t.Fatal("the child did not take the stale grant")
	}
	w := <-r.got
	if v := r.admin.Get(context.Background(), "violations").Val(); v == "" {
		t.Fatalf("no overlap seen %v after the release: the control shows nothing: the child's fence %d, the waiter's %d", time.Since(released), f, w.fence)
	}
}
