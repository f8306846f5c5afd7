package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"

	"github.com/fencedlock/fencedlock/core"
)

// session is the one lease a Backend attaches all its entries to. The
// server ends it at the earliest ttl after it processed the latest renewal,
// which came after we sent it: renewed+ttl on our monotonic clock is
// therefore a lower bound of the lease's end, and every validity deadline
// the Client computes stays below it (see cover).
type session struct {
	id   clientv3.LeaseID
	dead chan struct{} // closed once the server said the lease is gone

	// guarded by Backend.mu
	ttl     time.Duration
	renewed time.Time // send time of the latest successful grant or renewal
	isDead  bool
}

func (s *session) gone() bool {
	select {
	case <-s.dead:
		return true
	default:
		return false
	}
}

// session returns the live session lease, granting a new one when there is
// none or the last one is gone. Concurrent callers share one grant.
func (b *Backend) session(ctx context.Context) (*session, error) {
	b.mu.Lock()
	for {
		if b.closed {
			b.mu.Unlock()
			return nil, core.ErrClosed
		}
		if s := b.sess; s != nil && !s.isDead {
			b.mu.Unlock()
			return s, nil
		}
		if ch := b.granting; ch != nil {
			b.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			b.mu.Lock()
			continue
		}
		ch := make(chan struct{})
		b.granting = ch
		b.mu.Unlock()

		sent := time.Now()
		gctx, cancel := bound(ctx)
		resp, err := b.cli.Grant(gctx, b.cfg.sessionSeconds())
		cancel()

		b.mu.Lock()
		b.granting = nil
		close(ch)
		if err != nil {
			b.mu.Unlock()
			return nil, unavailable("grant session lease", err)
		}
		s := &session{id: resp.ID, dead: make(chan struct{}), ttl: time.Duration(resp.TTL) * time.Second, renewed: sent}
		if b.closed {
			b.mu.Unlock()
			rctx, cancel := context.WithTimeout(context.Background(), opTimeout)
			_, _ = b.cli.Revoke(rctx, s.id)
			cancel()
			return nil, core.ErrClosed
		}
		b.sess = s
		b.mu.Unlock()
		return s, nil
	}
}

// renew sends one keep-alive for s. On success the lease is known to live
// until at least the send time plus its TTL.
func (b *Backend) renew(ctx context.Context, s *session) error {
	sent := time.Now()
	kctx, cancel := bound(ctx)
	resp, err := b.cli.KeepAliveOnce(kctx, s.id)
	cancel()
	if err != nil {
		if leaseGone(err) {
			b.markDead(s)
			return errLeaseGone
		}
		return unavailable("renew session lease", err)
	}
	b.mu.Lock()
	if sent.After(s.renewed) {
		s.renewed = sent
	}
	if resp.TTL > 0 {
		s.ttl = time.Duration(resp.TTL) * time.Second
	}
	b.mu.Unlock()
	return nil
}

// markDead records that the server no longer has s: every entry attached to
// it is gone. Waiters watching s.dead queue again on a new lease.
func (b *Backend) markDead(s *session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !s.isDead {
		s.isDead = true
		close(s.dead)
	}
}

// alive reports whether s certainly still exists on the server now.
func (b *Backend) alive(s *session) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !s.isDead && time.Now().Before(s.renewed.Add(s.ttl))
}

// cover makes sure the lease of s outlives from+ttl, renewing it first when
// the last renewal is too old (normally the keep-alive loop has done so).
func (b *Backend) cover(ctx context.Context, s *session, from time.Time, ttl time.Duration) error {
	b.mu.Lock()
	ok := !s.isDead && !s.renewed.Add(s.ttl).Before(from.Add(ttl))
	dead := s.isDead
	b.mu.Unlock()
	switch {
	case ok:
		return nil
	case dead:
		return errLeaseGone
	}
	if err := b.renew(ctx, s); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.renewed.Add(s.ttl).Before(from.Add(ttl)) {
		return fmt.Errorf("%w: %v > %v", ErrTTLTooLong, ttl, s.ttl)
	}
	return nil
}

// keepAlive renews the current session every TTL/5 (counted from its last
// renewal, which acquisitions may have done), until Close. A dead session
// is not replaced here: the next acquisition or waiter grants a new one.
func (b *Backend) keepAlive() {
	defer b.wg.Done()
	every := b.cfg.keepAliveEvery()
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-t.C:
		}
		next := every
		b.mu.Lock()
		s := b.sess
		var due time.Duration
		if s != nil && !s.isDead {
			due = time.Until(s.renewed.Add(every))
		}
		b.mu.Unlock()
		switch {
		case s == nil || s.gone():
		case due > retryMin:
			next = due
		default:
			ctx, cancel := context.WithTimeout(b.ctx, min(opTimeout, every))
			err := b.renew(ctx, s)
			cancel()
			if err != nil && !errors.Is(err, errLeaseGone) {
				next = backoff(0) * 4 // a few tries before the lease is at risk
			}
		}
		t.Reset(next)
	}
}

// errLeaseGone means the session lease no longer exists on the server.
var errLeaseGone = errors.New("etcdlock: session lease expired or revoked")

func leaseGone(err error) bool {
	return errors.Is(err, errLeaseGone) || errors.Is(err, rpctypes.ErrLeaseNotFound) ||
		rpctypes.ErrorDesc(err) == rpctypes.ErrorDesc(rpctypes.ErrGRPCLeaseNotFound)
}

// transient reports whether err may go away by itself: elections,
// restarts, timeouts, lost connections. Configuration and permission
// errors are not.
func transient(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, core.ErrClosed) || errors.Is(err, ErrTTLTooLong) ||
		errors.Is(err, core.ErrModeMismatch) {
		return false
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		switch ee.Code() {
		case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated,
			codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented:
			return false
		}
	}
	return true
}

func unavailable(what string, err error) error {
	if errors.Is(err, core.ErrClosed) {
		return err
	}
	return core.Unavailable(fmt.Errorf("etcdlock: %s: %w", what, err))
}

// backoff returns the pause before retry n (0-based), with jitter so that
// processes that failed together do not retry together.
func backoff(n int) time.Duration {
	d := retryMin << min(n, 5)
	d = min(d, retryMax)
	return d/2 + rand.N(d/2+1)
}
