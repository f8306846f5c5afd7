package core

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// A shared or permit hold that ends while requests of the same Client wait
// parked in its gate passes straight to the longest-parked one, in the
// release's one round trip (handoff_shared.lua: the old entry goes, a new
// token with a new fence and its own lease comes), so the share or permit
// is not idle for a notice and an acquire round trip. As for exclusive
// hand-offs, at most WithHandoffLimit in a row, then one release goes
// through the store so that other Clients get their turn; and never while
// a writer waits (its claim is live), so that readers handing shares to
// each other cannot starve it.

// shareHandoffer is implemented by the backends that can pass one shared or
// permit hold to a new token in one step: Redis without replica
// acknowledgement, and NewSharded over it.
type shareHandoffer interface {
	handoffShare(ctx context.Context, from Hold, to string, ttl time.Duration) (Grant, error)
}

// errNoShareHandoff: the hold was not passed on, and is still ours to
// release (a writer waits, or the backend cannot at the moment).
var errNoShareHandoff = errors.New("core: no hand-off of this share")

func (b *redisBackend) handoffShare(ctx context.Context, from Hold, to string, ttl time.Duration) (Grant, error) {
	if b.ackReplicas > 0 {
		return Grant{}, errNoShareHandoff
	}
	keys := []string{from.Keys.Lock, from.Keys.Fence, from.Keys.Leases, from.Keys.Claims}
	res, err := shareHandoff.Run(ctx, b.rdb, keys, from.Token, to, ms(ttl), fenceTTL(ttl)).Int64Slice()
	switch {
	case err != nil:
		return Grant{}, redisErr(ctx, err)
	case len(res) != 2:
		return Grant{}, Unavailable(fmt.Errorf("unexpected script reply %v", res))
	case res[0] == 1:
		return Grant{Acquired: true, Fence: uint64(res[1])}, nil
	case res[0] == -1:
		return Grant{}, errNoShareHandoff
	}
	return Grant{}, ErrNotHeld
}

func (b *shardedBackend) handoffShare(ctx context.Context, from Hold, to string, ttl time.Duration) (Grant, error) {
	if s, ok := b.shard(from.Keys).(shareHandoffer); ok {
		return s.handoffShare(ctx, from, to, ttl)
	}
	return Grant{}, errNoShareHandoff
}

// nextParked takes the longest-parked request of l's gate, when l may pass
// its share to it.
func (c *Client) nextParked(l *Lock) *waiter {
	if _, ok := c.b.(shareHandoffer); !ok || l.cfg.mode == Exclusive || l.cfg.handoffLimit == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.gates[gateKey(l.keys, modeTag(l.cfg.mode, l.cfg.permits))]
	if g == nil || len(g.waiters) == 0 || c.closed {
		return nil
	}
	if g.handoffs >= l.cfg.handoffLimit {
		g.handoffs = 0 // this release goes through the store
		return nil
	}
	g.handoffs++
	w := g.waiters[0]
	g.waiters[0] = nil
	g.waiters = g.waiters[1:]
	return w
}

// handOffShare passes l's share to the parked request w. done is false when
// l is still ours to release. A hand-off that fails wakes w to contend
// itself: it is out of the gate's list, and putting it back could leave it
// parked for good (the head may have left meanwhile, seeing nobody to
// wake, or w's own wait may have ended while it was out).
func (c *Client) handOffShare(ctx context.Context, l *Lock, w *waiter) (done bool, err error) {
	tok := newToken()
	sent := c.clk.Now()
	gr, err := c.b.(shareHandoffer).handoffShare(ctx, l.hold(), tok, w.cfg.ttl)
	if err != nil {
		w.ch <- grantMsg{}
		switch {
		case errors.Is(err, ErrNotHeld):
			cause := lostAtRelease()
			c.end(l, ending{lost: cause})
			return true, fmt.Errorf("%w: %w", ErrNotHeld, cause)
		case !errors.Is(err, errNoShareHandoff):
			// It may have landed: the new token's share is released
			// best-effort, and ours by the plain release that follows.
			c.undoAcquire(Hold{Keys: l.keys, Token: tok, Mode: l.cfg.mode, Permits: l.cfg.permits}, w.cfg)
		}
		return false, nil
	}
	nl := c.newLock(l.key, w.cfg, Hold{Keys: l.keys, Token: tok}, gr.Fence, sent)
	if nl.lateOnArrival(c.clk.Now()) {
		// Back after w's lease (a stalled reply): l's share is gone, the
		// new one would be lost on arrival. Give it back; w contends.
		c.undoAcquire(Hold{Keys: l.keys, Token: tok, Mode: l.cfg.mode, Permits: l.cfg.permits}, w.cfg)
		w.ch <- grantMsg{}
		c.end(l, ending{ctx: ctx})
		return true, nil
	}
	nl.handoff = true
	c.end(l, ending{ctx: ctx, next: nl})
	w.ch <- grantMsg{lock: nl}
	return true, nil
}
