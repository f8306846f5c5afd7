package core_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestLock_lost_partitionedHolder cuts a holder off from Redis (its proxy
// stops forwarding) while its watchdog runs. Its renewals cannot land, the
// lease runs out in Redis and another client acquires. The holder must have
// been told (Done closed, ErrLost) no later than that moment.
func TestLock_lost_partitionedHolder(t *testing.T) {
	srv := redistest.Start(t)
	proxy := redistest.NewProxy(t, srv.Addr())
	cut := redis.NewClient(&redis.Options{Addr: proxy.Addr(), ReadTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { cut.Close() })
	holder := core.New(cut)
	defer holder.Close()
	other := core.New(srv.Client(t))
	defer other.Close()

	ctx := context.Background()
	ttl := 500 * time.Millisecond
	l, err := holder.Acquire(ctx, "partition", core.WithTTL(ttl), core.WithAutoRefresh())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * ttl) // renewals work while connected
	if l.Err() != nil {
		t.Fatalf("lost while connected: %v", l.Err())
	}
	proxy.Block()
	defer proxy.Unblock()
	l2, err := other.Acquire(ctx, "partition", core.WithWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Release(ctx)
	// Checked the moment the new holder has the lock: the partitioned
	// holder's Done must already be closed.
	select {
	case <-l.Done():
	default:
		t.Fatal("another client acquired while the partitioned holder still believed it held the lock")
	}
	if !errors.Is(l.Err(), core.ErrLost) {
		t.Fatalf("Err = %v", l.Err())
	}
	if l2.Fence() <= l.Fence() {
		t.Fatalf("fence went from %d to %d", l.Fence(), l2.Fence())
	}
}

// TestLock_lost_negativeControl shows why the loss notice matters: a holder
// that ignores Done (keeps "working" past its deadline) overlaps the next
// holder. The overlap is what fencing then refuses at the storage.
func TestLock_lost_negativeControl(t *testing.T) {
	srv := redistest.Start(t)
	c1 := core.New(srv.Client(t))
	defer c1.Close()
	c2 := core.New(srv.Client(t))
	defer c2.Close()
	ctx := context.Background()
	l, err := c1.Acquire(ctx, "overlap", core.WithTTL(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	l2, err := c2.Acquire(ctx, "overlap", core.WithWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Release(ctx)
	// The first holder, had it not watched Done, would still be running: two
	// holders at once, distinguishable only by their fences.
	if l.Err() == nil {
		t.Fatal("the lease expired but the holder was not told")
	}
	if l2.Fence() <= l.Fence() {
		t.Fatal("the newer holder does not have the higher fence")
	}
}

// TestAcquire_retrySafe re-sends an acquire with the same token, as a retry
// after an ambiguous network error does: it is success, with the fence of
// the acquisition that landed, not a phantom hold.
func TestAcquire_retrySafe(t *testing.T) {
	srv := redistest.Start(t)
	b := core.NewRedisBackend(srv.Client(t))
	defer b.Close()
	ctx := context.Background()
	keys := core.KeysFor("lock:", "retry")
	g1, err := b.Acquire(ctx, core.Hold{Keys: keys, Token: "tok-a"}, time.Second)
	if err != nil || !g1.Acquired {
		t.Fatal(g1, err)
	}
	g2, err := b.Acquire(ctx, core.Hold{Keys: keys, Token: "tok-a"}, time.Second)
	if err != nil || !g2.Acquired || g2.Fence != g1.Fence {
		t.Fatalf("retry = %+v, %v; first = %+v", g2, err, g1)
	}
	g3, err := b.Acquire(ctx, core.Hold{Keys: keys, Token: "tok-b"}, time.Second)
	if err != nil || g3.Acquired || g3.HolderTTL <= 0 {
		t.Fatalf("other token = %+v, %v", g3, err)
	}
}

// TestAcquire_cancelledAfterSend_cleansUp stalls Redis (DEBUG SLEEP) so
// the acquire is executed after the caller gave up; the Client releases it
// best-effort and the key does not stay locked for the whole TTL.
func TestAcquire_cancelledAfterSend_cleansUp(t *testing.T) {
	srv := redistest.Start(t, redistest.WithArgs("--enable-debug-command", "yes"))
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, ContextTimeoutEnabled: true})
	t.Cleanup(func() { rdb.Close() })
	c := core.New(rdb, core.WithTTL(30*time.Second))
	// Load the scripts and warm a connection, so the stalled command is the
	// acquire itself (EVALSHA), not the NOSCRIPT fallback.
	if l, err := c.Acquire(context.Background(), "warm"); err != nil {
		t.Fatal(err)
	} else {
		_ = l.Release(context.Background())
	}
	staller := srv.Client(t)
	go staller.Do(context.Background(), "DEBUG", "SLEEP", "0.3")
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Acquire(ctx, "cancelled")
	if !errors.Is(err, core.ErrNotAcquired) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	_ = c.Close() // waits for the best-effort clean-up
	direct := srv.Client(t)
	keys := core.KeysFor(core.DefaultPrefix, "cancelled")
	n, err := direct.Exists(context.Background(), keys.Lock).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("a cancelled acquire left the key locked")
	}
	// The fence counter proves the acquire did land in Redis: the clean-up,
	// not a lost command, is why the key is free.
	if f, err := direct.Exists(context.Background(), keys.Fence).Result(); err != nil || f != 1 {
		t.Fatalf("the stalled acquire never ran (fence key exists=%d, %v); the test proved nothing", f, err)
	}
}

// TestWatchdog_batches holds 300 auto-refreshed locks and checks that
// their renewals travel in a handful of round trips per interval.
func TestWatchdog_batches(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	h := &rttCounterT{}
	rdb.AddHook(h)
	c := core.New(rdb, core.WithTTL(500*time.Millisecond), core.WithAutoRefresh())
	defer c.Close()
	ctx := context.Background()
	const n = 300
	locks := make([]*core.Lock, n)
	for i := range locks {
		l, err := c.Acquire(ctx, "batch:"+strconv.Itoa(i))
		if err != nil {
			t.Fatal(err)
		}
		locks[i] = l
		time.Sleep(time.Millisecond) // spread the due times
	}
	h.n.Store(0)
	time.Sleep(time.Second) // 20 renewal intervals of 50ms
	rt := h.n.Load()
	for _, l := range locks {
		if l.Err() != nil {
			t.Fatalf("lost: %v", l.Err())
		}
		_ = l.Release(ctx)
	}
	// One-by-one renewal would be 300 x 20 = 6 000 round trips.
	if rt > 80 {
		t.Fatalf("%d round trips in 20 intervals for %d locks: renewals are not batched", rt, n)
	}
	t.Logf("%d round trips for %d locks over 20 intervals", rt, n)
}

type rttCounterT struct{ n atomic.Int64 }

func (h *rttCounterT) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *rttCounterT) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}
func (h *rttCounterT) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// TestTryAcquire_outage_isUnavailableNotContention: with Redis down, a
// fail-fast request for a key whose local head is still trying to reach
// Redis is refused as unavailable (503), never as "held by another owner"
// (409): nobody holds it (defect 8).
func TestTryAcquire_outage_isUnavailableNotContention(t *testing.T) {
	srv := redistest.Start(t)
	c := core.New(srv.Client(t))
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	warm, err := c.Acquire(ctx, "other") // a pooled connection, then the outage
	if err != nil {
		t.Fatal(err)
	}
	_ = warm.Release(ctx)
	srv.Kill()
	head := make(chan error, 1)
	go func() {
		_, err := c.Acquire(ctx, "down", core.WithWait(2*time.Second))
		head <- err
	}()
	time.Sleep(5 * time.Millisecond) // the head is dialling
	_, err = c.TryAcquire(ctx, "down")
	var ce *core.ContentionError
	if errors.As(err, &ce) || errors.Is(err, core.ErrNotAcquired) || !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("TryAcquire during the outage = %v; want ErrUnavailable, not contention", err)
	}
	if err := <-head; !errors.Is(err, core.ErrUnavailable) {
		t.Fatalf("head = %v; want ErrUnavailable", err)
	}
}
