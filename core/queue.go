package core

import (
	"context"
	"time"
)

// keyQueue orders the goroutines of this Client that want the same key, so
// that only its head contends in the backend and a release can hand the
// lock straight to the next waiter. Guarded by Client.mu.
type keyQueue struct {
	holder       bool  // a lock on the key is held through this Client
	holderLock   *Lock // that lock
	contending   bool  // the head is asking the backend
	waiters      []*waiter
	handoffs     int  // consecutive local hand-offs
	handoffTotal int  // every local hand-off since the queue formed
	yield        bool // the next head stands back first (see grantMsg.yield)
	// turn is how many local waiters there were when this Client's hold
	// of the key began; remote is set while waiters of other Clients are
	// known to queue in the store (this Client's hold came from a grant,
	// or its last release granted or reached other waiters): one turn then
	// serves the local waiters once (queue_remote.go).
	turn   int
	remote bool

	// What the head last heard from the backend: the key held by another
	// owner (seenHeld) with holderTTL left, at seenAt.
	seenHeld  bool
	holderTTL time.Duration
	seenAt    time.Time
}

type waiter struct {
	ch  chan grantMsg // buffered(1): senders never block
	cfg *config
}

// grantMsg tells a waiter what happened to its turn.
type grantMsg struct {
	lock   *Lock // handed off: the waiter holds it
	closed bool  // the Client closed
	yield  bool  // become the head, but stand back yieldDelay first
}

// yieldDelay is how long a local waiter stands back after a release that
// notified remote waiters; it covers their notice and one round trip.
const yieldDelay = time.Millisecond

// noticeSpread is the window over which waiters woken by one release notice
// spread their next attempt (scaled down by how often each already lost).
const noticeSpread = time.Millisecond

// queueUp joins the key's local queue: the first caller becomes its head
// and asks the backend; the others wait for the head role or a hand-off.
func (a *acquisition) queueUp(ctx context.Context) (*Lock, error) {
	c := a.c
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	q := c.queues[a.keys.Lock]
	if q == nil {
		q = &keyQueue{}
		c.queues[a.keys.Lock] = q
	}
	a.q = q
	if !q.holder && !q.contending {
		q.contending = true
		q.seenHeld = false
		c.mu.Unlock()
		return a.lead(ctx)
	}
	if a.cfg.wait == 0 {
		ra, known := q.heldElsewhere(c.clk.Now())
		c.mu.Unlock()
		if known {
			a.stats.contended = true
			return nil, &ContentionError{RetryAfter: ra}
		}
		// The head has not heard back yet (or the backend failed it): only
		// the backend can tell whether someone holds the key.
		a.q = nil
		return a.contend(ctx)
	}
	a.stats.contended = true
	w := &waiter{ch: make(chan grantMsg, 1), cfg: a.cfg}
	q.waiters = append(q.waiters, w)
	c.mu.Unlock()
	return a.await(ctx, w)
}

// await waits in the local queue for the head role or a hand-off.
func (a *acquisition) await(ctx context.Context, w *waiter) (*Lock, error) {
	var timeout <-chan time.Time
	if !a.until.IsZero() {
		t := a.c.clk.NewTimer(a.until.Sub(a.c.clk.Now()))
		defer t.Stop()
		timeout = t.C()
	}
	var m grantMsg
	select {
	case m = <-w.ch:
	case <-ctx.Done():
		return a.giveUp(w, ctx.Err())
	case <-timeout:
		return a.giveUp(w, nil)
	}
	switch {
	case m.closed:
		return nil, ErrClosed
	case m.lock != nil:
		a.stats.handoff = true
		return m.lock, nil
	}
	if m.yield {
		// Remote waiters were notified of the release that ended a run of
		// local hand-offs: let one of them win before we try.
		_ = a.c.sleep(ctx, yieldDelay)
	}
	return a.lead(ctx)
}

// lead contends as the head of the local queue and then either records
// the lock as the queue's holder or passes the head role on.
func (a *acquisition) lead(ctx context.Context) (*Lock, error) {
	l, err := a.contend(ctx)
	c, q := a.c, a.q
	c.mu.Lock()
	q.contending = false
	if l != nil {
		q.holder, q.holderLock, q.handoffs = true, l, 0
		q.turn, q.remote = len(q.waiters), q.remote || a.viaGrant
	} else {
		c.passHeadLocked(q, a.keys.Lock)
	}
	c.mu.Unlock()
	return l, err
}

// giveUp takes a waiter out of the queue after its wait ended. If it was
// picked meanwhile, what it was given is passed on.
func (a *acquisition) giveUp(w *waiter, cause error) (*Lock, error) {
	c, q := a.c, a.q
	c.mu.Lock()
	if q.remove(w) {
		ra, _ := q.heldElsewhere(c.clk.Now())
		c.mu.Unlock()
		return nil, notAcquired(ra, a.stats.attempts, cause)
	}
	c.mu.Unlock()
	m := <-w.ch // picked concurrently: the message is on its way
	switch {
	case m.lock != nil:
		c.giveBack(m.lock)
	case !m.closed:
		c.mu.Lock()
		q.contending = false
		c.passHeadLocked(q, a.keys.Lock)
		c.mu.Unlock()
	}
	return nil, notAcquired(0, a.stats.attempts, cause)
}

// giveBack releases a lock handed to a waiter that gave up meanwhile.
func (c *Client) giveBack(l *Lock) {
	c.arm(l)
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.releaseTimeout)
	_ = l.Release(ctx)
	cancel()
}

// sawHolder records what the head's attempt found (held elsewhere, or not
// known after an error), for fail-fast callers behind it.
func (a *acquisition) sawHolder(held bool, ttl time.Duration) {
	if a.q == nil {
		return
	}
	a.c.mu.Lock()
	a.q.seenHeld, a.q.holderTTL, a.q.seenAt = held, ttl, a.c.clk.Now()
	a.c.mu.Unlock()
}

// passHeadLocked gives the head role to the next local waiter, or drops
// the queue when nobody needs it. c.mu must be held.
func (c *Client) passHeadLocked(q *keyQueue, lockKey string) {
	if q.holder || q.contending {
		return
	}
	if len(q.waiters) > 0 {
		w := q.pop()
		q.contending = true
		q.seenHeld = false
		w.ch <- grantMsg{yield: q.yield}
		return
	}
	if c.queues[lockKey] == q {
		delete(c.queues, lockKey)
	}
}

// nextLocal picks the waiter a release of l hands the lock to, if any.
func (c *Client) nextLocal(l *Lock) (*keyQueue, *waiter) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queues[l.keys.Lock]
	if q == nil || q.holderLock != l || len(q.waiters) == 0 || q.handoffs >= q.handoffCap(l.cfg.handoffLimit) || c.closed {
		return nil, nil
	}
	q.handoffs++
	q.handoffTotal++
	return q, q.pop()
}

// handoffCap is how many local hand-offs in a row this turn may make: the
// configured limit, and while waiters of other Clients queue in the store
// no more than the local waiters present when the turn began (at least
// one), so that every instance's waiters wait about one round of turns.
func (q *keyQueue) handoffCap(limit int) int {
	if q.remote {
		return min(limit, max(q.turn, 1))
	}
	return limit
}

func (q *keyQueue) pop() *waiter {
	w := q.waiters[0]
	q.waiters[0] = nil
	q.waiters = q.waiters[1:]
	return w
}

func (q *keyQueue) pushFront(w *waiter) {
	q.waiters = append([]*waiter{w}, q.waiters...)
}

func (q *keyQueue) remove(w *waiter) bool {
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			return true
		}
	}
	return false
}

// heldElsewhere reports whether the key is known to be held (through this
// Client, or by another owner as the head last saw), and for how long.
func (q *keyQueue) heldElsewhere(now time.Time) (time.Duration, bool) {
	if q.holderLock != nil {
		return max(q.holderLock.Deadline().Sub(now), 0), true
	}
	if q.holder {
		return 0, true
	}
	if q.seenHeld {
		if d := q.holderTTL - now.Sub(q.seenAt); d > 0 {
			return d, true
		}
	}
	return 0, false
}
