package core

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Renewals: Lock.Refresh by hand and the watchdog (watchdog.go) both build
// their request with renewal and apply the answer with renewed, so the
// WithMaxHold cap and the loss rules are the same for both.

// errAtCap is returned by renewal when the lease already ends at the cap.
func errAtCap() error {
	return fmt.Errorf("core: no renewal past WithMaxHold: %w", ErrHoldCapReached)
}

// renewal returns the request that renews l for ttl from now, shortened so
// that the lease ends at the WithMaxHold cap.
func (l *Lock) renewal(ttl time.Duration, now time.Time) (RefreshRequest, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.heldErrLocked(); err != nil {
		return RefreshRequest{}, err
	}
	if l.cfg.maxHold > 0 {
		left := l.start.Add(l.cfg.maxHold).Sub(now)
		if left < minTTL {
			l.capped = true
			return RefreshRequest{}, errAtCap()
		}
		if ttl >= left {
			ttl, l.capped = left, true
		}
	}
	return RefreshRequest{Hold: l.hold(), TTL: ttl}, nil
}

func (c *Client) refresh(ctx context.Context, l *Lock, ttl time.Duration) error {
	if ttl <= 0 {
		ttl = l.TTL()
	}
	ttl = max(ttl, minTTL)
	sent := c.clk.Now()
	req, err := l.renewal(ttl, sent)
	if err != nil {
		return err
	}
	err = c.b.Refresh(ctx, []RefreshRequest{req})[0]
	if err == nil {
		l.mu.Lock()
		l.ttl = ttl
		l.mu.Unlock()
	}
	c.renewed(ctx, l, renewOutcome{sent: sent, lease: req.TTL, err: err})
	if errors.Is(err, ErrNotHeld) {
		return fmt.Errorf("%w: %w", ErrNotHeld, ErrLost)
	}
	return err
}

// renewal outcome: a lease of length lease, asked for at sent, by the
// watchdog (auto) or by Lock.Refresh.
type renewOutcome struct {
	sent  time.Time
	lease time.Duration
	err   error
	auto  bool
}

// renewed applies the outcome of a renewal.
func (c *Client) renewed(ctx context.Context, l *Lock, o renewOutcome) {
	sent, lease, err, auto := o.sent, o.lease, o.err, o.auto
	l.mu.Lock()
	if l.releasing && errors.Is(err, ErrNotHeld) {
		// The renewal lost the race with our own release (or hand-off):
		// the token is gone because we gave it up, which is no failure.
		l.mu.Unlock()
		return
	}
	if err == nil && l.state == stateHeld {
		l.renewals++
		l.deadline = sent.Add(lease - l.cfg.driftFor(lease))
		if l.timer != nil {
			l.timer.Reset(l.deadline.Sub(c.clk.Now()))
		}
	}
	l.mu.Unlock()
	// Report the renewal before a loss it reveals, so the loss is the last
	// event of the lock.
	l.cfg.observer.Refreshed(ctx, RefreshEvent{LockInfo: l.info(), Fence: l.fence, Auto: auto, Err: err, Data: l.data})
	if errors.Is(err, ErrNotHeld) {
		c.end(l, ending{lost: fmt.Errorf("%w: %w", ErrLost, ErrOwnerChanged)})
	}
}
