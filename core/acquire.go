package core

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// acquisition is one call of Acquire or TryAcquire: what it asks for, its
// place in the local queue and what it has seen. Its methods wait in the
// local queue (queue.go), contend in the backend (here) and build the Lock.
type acquisition struct {
	c     *Client
	key   string
	keys  Keys
	cfg   *config
	until time.Time // end of the WithWait bound; zero: none
	q     *keyQueue // the key's local queue; nil when not queued
	stats acqStats

	// shared and permit requests (gate.go)
	gate     *shareGate
	gateKey  string
	gateHead bool // this request waits in the backend for the gate
	free     int  // Grant.Free of the grant
	viaGrant bool // the lock came from a grant of the store queue
}

type acqStats struct {
	attempts  int
	contended bool
	handoff   bool
}

// run validates the request and takes the lock, through the local queue
// unless it is turned off.
func (a *acquisition) run(ctx context.Context) (*Lock, error) {
	if err := ValidateKey(a.key); err != nil {
		return nil, err
	}
	if !a.cfg.validPrefix() {
		return nil, fmt.Errorf("%w: prefix contains '{' or '}'", ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotAcquired, err)
	}
	if a.cfg.maxHold > 0 && a.cfg.maxHold < a.cfg.ttl {
		a.cfg.ttl = max(a.cfg.maxHold, minTTL) // the first lease ends at the cap too
	}
	if err := a.cfg.checkMode(); err != nil {
		return nil, err
	}
	a.keys = backendKeys(a.cfg.prefix, a.key)
	if a.cfg.wait > 0 {
		a.until = a.c.clk.Now().Add(a.cfg.wait)
	}
	if a.cfg.mode != Exclusive && a.cfg.localQueue {
		return a.throughGate(ctx)
	}
	if !a.cfg.localQueue {
		if a.c.isClosed() {
			return nil, ErrClosed
		}
		return a.contend(ctx)
	}
	return a.queueUp(ctx)
}

// contend asks the backend until it grants the lock, the wait bound passes
// or ctx ends. Between attempts it sleeps until a release notice arrives or
// the holder's lease runs out; it never polls on a fixed timer.
func (a *acquisition) contend(ctx context.Context) (l *Lock, err error) {
	if nw, ok := a.c.b.(NativeWaiter); ok && a.cfg.wait != 0 {
		return a.contendNative(ctx, nw)
	}
	// One token for every attempt: a retry that finds it holds the lock is
	// our own earlier attempt that landed.
	h := a.hold(newToken())
	n := a.newNotices(ctx, h.Token)
	defer n.stop()
	defer func() {
		if l == nil && (h.Claimed || h.InQueue) {
			a.c.undoAcquire(h, a.cfg) // withdraw the writer's claim, leave the queue
		}
	}()
	for {
		if n.qb != nil {
			h.QueueFor = a.entryLife()
		}
		g, sent, err := a.attempt(ctx, h)
		if err != nil {
			return nil, err
		}
		if g.Acquired {
			a.free = g.Free
			a.viaGrant = n.granted != nil
			a.stats.handoff = a.stats.handoff || a.viaGrant
			l, err := a.lockFrom(h.Token, g.Fence, sent)
			if err != nil && !h.Claimed && !h.InQueue {
				a.c.undoAcquire(h, a.cfg) // else the deferred undo does it
			}
			return l, err
		}
		h.Claimed = h.Claimed || g.Claimed
		h.InQueue = h.InQueue || g.Queued
		// A grant that follows, with a fence above the one the refusal
		// saw, came after the refusal: its lease started after sent.
		n.granted, n.refusedAt, n.refusedFence = nil, sent, g.SeenFence
		if n.woken {
			n.lostRaces++
		}
		if a.cfg.wait == 0 || a.waitOver() {
			return nil, notAcquired(g.HolderTTL, a.stats.attempts, nil)
		}
		if inBackend, hl, err := a.refusedAtGate(ctx); err != nil {
			return nil, err
		} else if hl != nil {
			return hl, nil // handed a share while parked
		} else if !inBackend {
			continue // woken in the gate: try again now
		}
		if err := a.pause(ctx, n, g.HolderTTL); err != nil {
			return nil, err
		}
		if l := a.grantedLock(h.Token, n); l != nil {
			return l, nil
		}
	}
}

// hold is the backend request of this acquisition for token.
func (a *acquisition) hold(token string) Hold {
	return Hold{Keys: a.keys, Token: token, Mode: a.cfg.mode, Permits: a.cfg.permits,
		Queue: a.cfg.mode == Exclusive && a.cfg.wait != 0}
}

// attempt makes one backend call.
func (a *acquisition) attempt(ctx context.Context, h Hold) (Grant, time.Time, error) {
	a.stats.attempts++
	sent := a.c.clk.Now()
	g, err := a.c.b.Acquire(ctx, h, a.cfg.ttl)
	if errors.Is(err, ErrModeMismatch) || errors.Is(err, ErrModeUnsupported) {
		return g, sent, err // a refusal: nothing to undo
	}
	if err != nil {
		// The command may have reached the backend before the failure:
		// undo it best-effort, off the caller's path.
		a.c.undoAcquire(h, a.cfg)
		a.sawHolder(false, 0)
		if cerr := ctxErr(ctx); cerr != nil {
			return g, sent, notAcquired(0, a.stats.attempts, cerr)
		}
		return g, sent, err
	}
	if !g.Acquired {
		a.stats.contended = true
		a.sawHolder(true, g.HolderTTL)
	}
	return g, sent, nil
}

func (a *acquisition) waitOver() bool {
	return !a.until.IsZero() && !a.c.clk.Now().Before(a.until)
}

// notices is one contender's subscription to the key's release notices.
type notices struct {
	ch        chan struct{} // buffered(1)
	unsub     func()
	woken     bool // the last pause ended with a notice
	lostRaces int  // attempts after a notice that found the lock taken again

	// a request queued in the store (queue_remote.go)
	qb           QueueBackend
	token        string
	mine         chan QueueNotice   // buffered(1): the grant to this request
	other        chan time.Duration // buffered(1): a grant to another waiter, its lease
	granted      *QueueNotice       // set by pause when the grant arrived
	refusedAt    time.Time          // when the last refused attempt was sent
	refusedFence uint64             // the fence counter that refusal saw (Grant.SeenFence)
}

// newNotices prepares the subscription of a contender for token. A request
// that queues in the store subscribes before its first attempt when the
// channel is subscribed already (no extra wait), so a grant right after
// its attempt is not missed and no second attempt is needed.
func (a *acquisition) newNotices(ctx context.Context, token string) *notices {
	n := &notices{token: token}
	if n.qb = a.queueBackend(); n.qb == nil {
		return n
	}
	if n.qb.Listening(a.keys) {
		if u, err := n.subscribe(ctx, a.c.b, a.keys); err == nil {
			n.unsub = u
		}
	}
	return n
}

// subscribe makes the channels (an uncontended acquire never needs them)
// and subscribes.
func (n *notices) subscribe(ctx context.Context, b Backend, keys Keys) (func(), error) {
	n.ch = make(chan struct{}, 1)
	if n.qb == nil {
		return b.Subscribe(ctx, keys, n.notify)
	}
	n.mine, n.other = make(chan QueueNotice, 1), make(chan time.Duration, 1)
	return n.qb.SubscribeQueued(ctx, keys, n.token, n.notify, n.grant)
}

func (n *notices) notify() {
	select {
	case n.ch <- struct{}{}:
	default:
	}
}

func (n *notices) grant(qn QueueNotice) {
	if qn.Mine { // keep the latest: an older one still unread has lapsed
		select {
		case <-n.mine:
		default:
		}
		n.mine <- qn
		return
	}
	select {
	case <-n.other: // keep the latest
	default:
	}
	n.other <- qn.Lease
}

func (n *notices) stop() {
	if n.unsub != nil {
		n.unsub()
	}
}

// pause waits for the next attempt: right away after subscribing (a
// release between the attempt and the subscription would otherwise be
// missed), else until a release notice or the holder's lease runs out.
func (a *acquisition) pause(ctx context.Context, n *notices, holderTTL time.Duration) error {
	c := a.c
	wait := max(holderTTL, time.Millisecond)
	if !a.until.IsZero() {
		wait = min(wait, a.until.Sub(c.clk.Now()))
	}
	n.woken = false
	if n.unsub == nil {
		sctx, cancel := context.WithTimeout(ctx, wait)
		u, err := n.subscribe(sctx, c.b, a.keys)
		cancel()
		switch {
		case err == nil:
			n.unsub = u
			return nil
		case ctx.Err() != nil:
			return notAcquired(holderTTL, a.stats.attempts, ctx.Err())
		case errors.Is(err, ErrClosed):
			return ErrClosed
		}
		// No subscription (slow or failing pub/sub): the lease timer below
		// still bounds the wait.
	}
	if err := a.waitNotice(ctx, n, wait); errors.Is(err, ErrClosed) {
		return err
	} else if err != nil {
		return notAcquired(holderTTL, a.stats.attempts, err)
	}
	// Every process waiting on the key got the same notice, in the order
	// the server keeps its subscribers: without a random spread the first
	// subscriber would win every time. The spread shrinks with the races
	// this waiter already lost, so the longest-waiting process tends to go
	// first. Shared and permit requests skip it: a release frees room for
	// one of them at least, and a pause would leave that room idle. So do
	// queued requests: they are woken by a plain notice only when the
	// store queue was empty.
	if !n.woken || a.cfg.mode != Exclusive || n.qb != nil {
		return nil
	}
	j := time.Duration(rand.Int64N(int64(noticeSpread) / int64(1+n.lostRaces)))
	if err := c.sleep(ctx, j); err != nil {
		return notAcquired(holderTTL, a.stats.attempts, err)
	}
	return nil
}

// waitNotice waits up to wait for a notice. A grant to this request ends the
// wait with n.granted set (see grantedLock in queue_remote.go); a grant to another queued waiter moves the
// timer to the end of that grant's short lease (plus a little), when this
// waiter checks whether the grantee confirmed or the key is free again.
func (a *acquisition) waitNotice(ctx context.Context, n *notices, wait time.Duration) error {
	c := a.c
	t := c.clk.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-n.ch:
			n.woken = true
			return nil
		case qn := <-n.mine:
			if qn.Fence <= n.refusedFence {
				continue // sent before our last refusal: it lapsed
			}
			n.granted = &qn
			return nil
		case lease := <-n.other:
			d := lease + grantSlack
			if !a.until.IsZero() {
				d = min(d, a.until.Sub(c.clk.Now()))
			}
			t.Stop()
			t.Reset(max(d, 0))
		case <-t.C():
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closeCh:
			return ErrClosed
		}
	}
}

// contendNative lets a backend that queues waiters itself do the waiting.
func (a *acquisition) contendNative(ctx context.Context, nw NativeWaiter) (*Lock, error) {
	h := a.hold(newToken())
	h.Queue = false
	a.stats.attempts++
	sent := a.c.clk.Now()
	g, err := nw.AcquireWait(ctx, h, a.cfg.ttl, a.until)
	if err != nil {
		a.c.undoAcquire(h, a.cfg)
		if cerr := ctx.Err(); cerr != nil {
			return nil, notAcquired(0, a.stats.attempts, cerr)
		}
		return nil, err
	}
	if !g.Acquired {
		a.stats.contended = true
		return nil, notAcquired(g.HolderTTL, a.stats.attempts, nil)
	}
	// The wait may have been long: the lease runs from the send time the
	// backend reports for the command that granted (or last renewed) it.
	if !g.Sent.IsZero() {
		sent = g.Sent
	}
	l, err := a.lockFrom(h.Token, g.Fence, sent)
	if err != nil {
		a.c.undoAcquire(h, a.cfg)
	}
	return l, err
}

func (a *acquisition) newLock(token string, fence uint64, sent time.Time) *Lock {
	return a.c.newLock(a.key, a.cfg, a.hold(token), fence, sent)
}

// lockFrom is the Lock for a grant of the command sent at sent, or
// ErrLateGrant when its validity deadline is already (all but) over: such
// a lock would be lost on arrival, and once the lease ran out in the
// backend another owner may have the key. The caller releases the grant.
func (a *acquisition) lockFrom(token string, fence uint64, sent time.Time) (*Lock, error) {
	l := a.newLock(token, fence, sent)
	if now := a.c.clk.Now(); l.lateOnArrival(now) {
		return nil, &lateGrantError{took: now.Sub(sent), ttl: a.cfg.ttl}
	}
	return l, nil
}

func notAcquired(retryAfter time.Duration, attempts int, cause error) error {
	ce := &ContentionError{RetryAfter: retryAfter, Attempts: attempts}
	if cause != nil {
		return fmt.Errorf("%w: %w", ce, cause)
	}
	return ce
}

// sleep waits d on the Client's clock, or until ctx ends.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := c.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ctxErr is ctx.Err(), except that a deadline already in the past counts
// as exceeded even if the context's own timer has not fired yet (go-redis
// turns the deadline into a socket timeout that can fire first).
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}
