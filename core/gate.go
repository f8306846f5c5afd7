package core

import (
	"context"
	"time"
)

// shareGate orders this Client's shared or permit requests for one key
// and mode tag. Unlike the exclusive queue it lets requests contend side by
// side while the key admits them; once one is refused and waits in the
// backend (the head), later ones park here instead of each waiting in the
// backend, and a grant wakes only as many as the key still admits (its
// Grant.Free). Guarded by Client.mu.
type shareGate struct {
	head     bool // a request of this gate waits in the backend
	waiters  []*waiter
	handoffs int // consecutive hand-offs to parked requests (gate_handoff.go)
}

func gateKey(k Keys, tag string) string { return k.Lock + "\x00" + tag }

// throughGate takes a shared or permit hold through the key's gate.
func (a *acquisition) throughGate(ctx context.Context) (*Lock, error) {
	c := a.c
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	gk := gateKey(a.keys, modeTag(a.cfg.mode, a.cfg.permits))
	g := c.gates[gk]
	if g == nil {
		g = &shareGate{}
		c.gates[gk] = g
	}
	a.gate, a.gateKey = g, gk
	var w *waiter
	if g.head && a.cfg.wait != 0 {
		w = a.parkLocked()
	}
	c.mu.Unlock()
	if w != nil {
		l, err := a.park(ctx, w)
		if err != nil {
			return nil, err
		}
		if l != nil { // handed a share by a releasing holder
			a.leaveGate(l)
			return l, nil
		}
	}
	l, err := a.contend(ctx)
	a.leaveGate(l)
	return l, err
}

// refusedAtGate runs after a refused attempt of a waiting request: it
// reports whether the request waits in the backend (it became the gate's
// head) or parked here until woken, or the share a releasing holder
// handed it while parked.
func (a *acquisition) refusedAtGate(ctx context.Context) (backend bool, l *Lock, err error) {
	if a.gate == nil || a.gateHead {
		return true, nil, nil
	}
	a.c.mu.Lock()
	if !a.gate.head {
		a.gate.head, a.gateHead = true, true
		a.c.mu.Unlock()
		return true, nil, nil
	}
	// Parked in the same critical section that saw the head: the head's
	// exit, which wakes one waiter, cannot slip in between.
	w := a.parkLocked()
	a.c.mu.Unlock()
	l, err = a.park(ctx, w)
	return false, l, err
}

// parkLocked adds the request to the gate's waiters. c.mu held.
func (a *acquisition) parkLocked() *waiter {
	w := &waiter{ch: make(chan grantMsg, 1), cfg: a.cfg}
	a.gate.waiters = append(a.gate.waiters, w)
	return w
}

// park waits in the gate until a grant or the head's exit wakes this
// request (or a releasing holder hands it its share: the Lock), the wait
// bound passes, ctx ends or the Client closes.
func (a *acquisition) park(ctx context.Context, w *waiter) (*Lock, error) {
	c := a.c
	a.stats.contended = true
	var timeout <-chan time.Time
	if !a.until.IsZero() {
		t := c.clk.NewTimer(a.until.Sub(c.clk.Now()))
		defer t.Stop()
		timeout = t.C()
	}
	var cause error
	select {
	case m := <-w.ch:
		if m.closed {
			return nil, ErrClosed
		}
		a.stats.handoff = m.lock != nil
		return m.lock, nil
	case <-ctx.Done():
		cause = ctx.Err()
	case <-timeout:
	}
	c.mu.Lock()
	if !removeWaiter(&a.gate.waiters, w) {
		c.mu.Unlock()
		// Woken meanwhile: pass the turn on rather than drop it, and give
		// back a share handed to us.
		switch m := <-w.ch; {
		case m.lock != nil:
			c.giveBack(m.lock)
		case !m.closed:
			a.wakeFromGate(1)
		}
	} else {
		c.mu.Unlock()
	}
	return nil, notAcquired(0, a.stats.attempts, cause)
}

// leaveGate updates the gate when the request ends, granted (l) or not,
// and wakes the parked requests that can now proceed.
func (a *acquisition) leaveGate(l *Lock) {
	c := a.c
	c.mu.Lock()
	defer c.mu.Unlock()
	g := a.gate
	wake := 0
	if l != nil {
		wake = len(g.waiters)
		if a.free >= 0 {
			wake = min(wake, a.free)
		}
	}
	if a.gateHead {
		g.head, a.gateHead = false, false
	}
	if !g.head && wake == 0 && len(g.waiters) > 0 {
		wake = 1 // someone must wait in the backend for the next turn
	}
	c.wakeGateLocked(g, wake)
	if !g.head && len(g.waiters) == 0 && c.gates[a.gateKey] == g {
		delete(c.gates, a.gateKey)
	}
}

func (a *acquisition) wakeFromGate(n int) {
	a.c.mu.Lock()
	a.c.wakeGateLocked(a.gate, n)
	a.c.mu.Unlock()
}

// wakeGateLocked wakes the n longest-parked requests of g. c.mu held.
func (c *Client) wakeGateLocked(g *shareGate, n int) {
	for ; n > 0 && len(g.waiters) > 0; n-- {
		w := g.waiters[0]
		g.waiters[0] = nil
		g.waiters = g.waiters[1:]
		w.ch <- grantMsg{}
	}
}

func removeWaiter(ws *[]*waiter, w *waiter) bool {
	for i, x := range *ws {
		if x == w {
			*ws = append((*ws)[:i], (*ws)[i+1:]...)
			return true
		}
	}
	return false
}
