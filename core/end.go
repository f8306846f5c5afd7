package core

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// How a lock ends. A Lock ends exactly once, in one of three ways, and
// every way goes through Client.end:
//
//   - released: Release gave it back to the backend, which notified waiters;
//   - handed off: Release passed it to the next local waiter in one step
//     (a release too, as far as the holder and observers are concerned);
//   - lost: its validity deadline passed unrenewed (deadlinePassed), a
//     renewal or a release found the token gone, or the Client closed.
//
// Renewals (renew) extend a lock; they end it only by finding it lost.
type ending struct {
	ctx  context.Context // the release's, for the observer; nil: background
	lost error           // the cause, matching ErrLost; nil: released or handed off
	next *Lock           // handed off to this lock
	// yield: the release notified waiters of other processes, so the next
	// local waiter stands back before it contends.
	yield bool
	// remote: waiters of other Clients are known to wait (the release
	// granted the lock from the store queue or reached their subscriptions).
	remote bool
	err    error // a release error after which the lock still ended locally
}

// end moves l out of the held state, drops the Client's references to it,
// passes the key on to the next local waiter and tells the observer. It
// reports whether this call ended the lock.
func (c *Client) end(l *Lock, e ending) bool {
	if !l.settle(e.lost) {
		return false
	}
	c.rn.remove(l)
	c.mu.Lock()
	delete(c.held, l)
	if q := c.queues[l.keys.Lock]; q != nil && q.holderLock == l {
		if e.next != nil {
			q.holderLock = e.next
		} else {
			q.holder, q.holderLock, q.handoffs = false, nil, 0
			q.yield, q.remote = e.yield, e.remote
			c.passHeadLocked(q, l.keys.Lock)
			q.yield = false
		}
	}
	c.mu.Unlock()
	held := c.clk.Now().Sub(l.start)
	if e.lost != nil {
		l.cfg.observer.Lost(LostEvent{LockInfo: l.info(), Fence: l.fence, Held: held, Cause: e.lost, Data: l.data})
		return true
	}
	ctx := e.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	l.cfg.observer.Released(ctx, ReleaseEvent{
		LockInfo: l.info(), Fence: l.fence, Held: held, Handoff: e.next != nil, Err: e.err, Data: l.data,
	})
	return true
}

// settle records the end of l (lost != nil: a loss) exactly once, stops its
// timer, closes Done and runs the callbacks of Context.
func (l *Lock) settle(lost error) bool {
	l.mu.Lock()
	if l.state != stateHeld {
		l.mu.Unlock()
		return false
	}
	l.state, l.err = stateReleased, lost
	if lost != nil {
		l.state = stateLost
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	cbs := l.callbacks
	l.callbacks = nil
	close(l.done)
	l.mu.Unlock()
	for _, f := range cbs {
		f()
	}
	return true
}

func (l *Lock) heldErrLocked() error {
	switch l.state {
	case stateHeld:
		return nil
	case stateLost:
		return fmt.Errorf("%w: %w", ErrNotHeld, l.err)
	default:
		return ErrNotHeld
	}
}

// beginRelease marks l as being released and returns whether it was still
// valid (inside its validity deadline) at that moment.
func (l *Lock) beginRelease(now time.Time) (valid bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.heldErrLocked(); err != nil {
		return false, err
	}
	l.releasing = true
	return now.Before(l.deadline), nil
}

func lostAtRelease() error {
	return fmt.Errorf("%w: %w: found at release", ErrLost, ErrLeaseExpired)
}

func (c *Client) release(ctx context.Context, l *Lock) error {
	valid, err := l.beginRelease(c.clk.Now())
	if err != nil {
		return err
	}
	if q, w := c.nextLocal(l); w != nil {
		return c.handOff(ctx, l, q, w)
	}
	if w := c.nextParked(l); w != nil {
		if done, err := c.handOffShare(ctx, l, w); done {
			return err
		}
	}
	r, err := c.b.Release(ctx, l.hold())
	if errors.Is(err, ErrNotHeld) {
		// Our token is gone and someone may have held the key after us:
		// the lease ran out, or something removed it (a failover, an
		// operator's forced release). Report the loss even inside the
		// validity deadline. (A re-sent release of our own token is no
		// loss: the backend recognises it by the fence and answers nil.)
		cause := lostAtRelease()
		if valid {
			cause = fmt.Errorf("%w: token removed before its lease ended", ErrLost)
		}
		c.end(l, ending{lost: cause})
		return fmt.Errorf("%w: %w", ErrNotHeld, cause)
	}
	// On a transport error the lease may still run in the backend; it
	// expires there on its own. Locally the lock is over either way.
	c.end(l, ending{ctx: ctx, yield: r.RemoteWaiters && !r.Granted, remote: r.RemoteWaiters || r.Granted, err: err})
	return err
}

// handOff passes l to the local waiter w in one round trip: new token, new
// fence, fresh lease.
func (c *Client) handOff(ctx context.Context, l *Lock, q *keyQueue, w *waiter) error {
	tok := newToken()
	sent := c.clk.Now()
	g, err := c.b.Handoff(ctx, l.hold(), tok, w.cfg.ttl)
	if err != nil {
		// The waiter goes back to the front and contends in the backend.
		c.mu.Lock()
		q.pushFront(w)
		c.mu.Unlock()
		if errors.Is(err, ErrNotHeld) {
			cause := lostAtRelease()
			c.end(l, ending{lost: cause})
			return fmt.Errorf("%w: %w", ErrNotHeld, cause)
		}
		c.end(l, ending{ctx: ctx, err: err})
		return err
	}
	nl := c.newLock(l.key, w.cfg, Hold{Keys: l.keys, Token: tok}, g.Fence, sent)
	if nl.lateOnArrival(c.clk.Now()) {
		// The hand-off came back after the waiter's lease (a stalled
		// reply): that lock would be lost on arrival. Give the new token
		// back; the waiter goes back to the front and contends itself.
		c.undoAcquire(Hold{Keys: l.keys, Token: tok}, w.cfg)
		c.mu.Lock()
		q.pushFront(w)
		c.mu.Unlock()
		c.end(l, ending{ctx: ctx})
		return nil
	}
	nl.handoff = true
	c.end(l, ending{ctx: ctx, next: nl})
	w.ch <- grantMsg{lock: nl}
	return nil
}

// deadlinePassed runs at the lock's validity deadline.
func (c *Client) deadlinePassed(l *Lock) {
	l.mu.Lock()
	if l.state != stateHeld {
		l.mu.Unlock()
		return
	}
	if d := l.deadline.Sub(c.clk.Now()); d > 0 { // renewed meanwhile
		l.timer.Reset(d)
		l.mu.Unlock()
		return
	}
	capped := l.capped
	l.mu.Unlock()
	cause := fmt.Errorf("%w: %w: not renewed before its validity deadline", ErrLost, ErrLeaseExpired)
	if capped {
		cause = fmt.Errorf("%w: %w", ErrLost, ErrHoldCapReached)
	}
	c.end(l, ending{lost: cause})
}
