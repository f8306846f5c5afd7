package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fencedlock/fencedlock/core"
)

// entry is a granted lock of this Backend. The session lease keeps its key
// alive on the server; the lock's own, shorter TTL is enforced here: when
// it passes without a renewal the key is deleted (guarded by its revision),
// just as Redis would let the key expire. The Client's validity deadline
// (sent + TTL - drift) always comes first, so the holder is told before.
type entry struct {
	prefix  string
	slot    int
	key     string
	rev     int64 // create revision: the fence
	sess    *session
	expires time.Time // local lease end, monotonic; only ever extended
	timer   *time.Timer
}

// checkTTL rejects lock TTLs the session lease cannot cover.
func (b *Backend) checkTTL(ttl time.Duration) error {
	if ttl > b.cfg.sessionTTL {
		return fmt.Errorf("%w: %v > %v (see etcdlock.WithSessionTTL)", ErrTTLTooLong, ttl, b.cfg.sessionTTL)
	}
	return nil
}

// hold registers a granted entry with its lease ending at from+ttl; it
// takes over the entry's slot.
func (b *Backend) hold(token string, e *entry, from time.Time, ttl time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	e.expires = from.Add(ttl)
	e.timer = time.AfterFunc(time.Until(e.expires), func() { b.expire(token, e) })
	b.held[token] = e
}

// drop forgets e once its key is known to be gone, and frees its slot,
// unless another path (expiry, a failed release) took it over first.
func (b *Backend) drop(token string, e *entry) {
	b.mu.Lock()
	mine := b.held[token] == e
	if mine {
		delete(b.held, token)
		e.timer.Stop()
	}
	b.mu.Unlock()
	if mine {
		b.freeSlot(e.prefix, e.slot)
	}
}

// expire runs when e's lock TTL may have passed.
func (b *Backend) expire(token string, e *entry) {
	b.mu.Lock()
	if b.held[token] != e {
		b.mu.Unlock()
		return
	}
	if d := time.Until(e.expires); d > 0 { // renewed meanwhile
		e.timer.Reset(d)
		b.mu.Unlock()
		return
	}
	delete(b.held, token)
	b.mu.Unlock()
	b.deleteLater(doomed{prefix: e.prefix, slot: e.slot, key: e.key, rev: e.rev}, e.sess)
}

// deleteGuarded deletes key only if it is still the entry created at rev
// (or, when rev is 0 because a create may or may not have landed, only if
// it still holds val, which names its owner). A late or retried delete can
// therefore never remove a newer entry: the trap of etcd issue 22082, an
// unguarded Unlock deleting the next holder's key. It reports whether it
// deleted; either way, on a nil error the entry is gone.
func (b *Backend) deleteGuarded(ctx context.Context, key string, rev int64, val string) (bool, error) {
	cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", rev)
	if rev == 0 {
		cmp = clientv3.Compare(clientv3.Value(key), "=", val)
	}
	ctx, cancel := bound(ctx)
	defer cancel()
	resp, err := b.cli.Txn(ctx).If(cmp).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

// doomed names a queue entry to delete: by create revision (rev) or, for
// an entry whose revision is unknown, by value (val).
type doomed struct {
	prefix string
	slot   int
	key    string
	rev    int64
	val    string
}

// deleteLater deletes an entry in the background, retrying until it is
// gone, its lease is gone, or the Backend closes (whose revoke then removes
// it), and then frees its slot.
func (b *Backend) deleteLater(d doomed, s *session) {
	var dead <-chan struct{}
	if s != nil {
		dead = s.dead
	}
	started := b.goBackground(func() {
		defer b.freeSlot(d.prefix, d.slot)
		for n := 0; ; n++ {
			ctx, cancel := context.WithTimeout(b.ctx, opTimeout)
			_, err := b.deleteGuarded(ctx, d.key, d.rev, d.val)
			cancel()
			if err == nil || b.ctx.Err() != nil {
				return
			}
			select {
			case <-b.ctx.Done():
				return
			case <-dead:
				return
			case <-time.After(backoff(n)):
			}
		}
	})
	if !started {
		b.freeSlot(d.prefix, d.slot)
	}
}

// Release implements core.Backend: one guarded delete. Only the waiter
// just behind hears of it, from its watch.
func (b *Backend) Release(ctx context.Context, h core.Hold) (core.Released, error) {
	return core.Released{}, b.release(ctx, h.Token)
}

func (b *Backend) release(ctx context.Context, token string) error {
	b.mu.Lock()
	e := b.held[token]
	b.mu.Unlock()
	if e == nil {
		// Not held here: released or expired already, or a Client
		// clean-up after an acquisition that failed in flight, whose entry
		// the Backend removes itself.
		return core.ErrNotHeld
	}
	ok, err := b.deleteGuarded(ctx, e.key, e.rev, "")
	if err != nil {
		// The entry may still be there. The Client treats the lock as
		// released all the same, so keep deleting it in the background
		// rather than let the queue wait for its TTL.
		b.mu.Lock()
		mine := b.held[token] == e
		if mine {
			delete(b.held, token)
			e.timer.Stop()
		}
		b.mu.Unlock()
		if mine {
			b.deleteLater(doomed{prefix: e.prefix, slot: e.slot, key: e.key, rev: e.rev}, e.sess)
		}
		return unavailable("release", err)
	}
	b.drop(token, e)
	if !ok {
		return core.ErrNotHeld
	}
	return nil
}

// Refresh implements core.Backend. One session lease renews every lock, so
// a batch costs one read transaction per WithMaxTxnOps locks, to check that
// each entry still exists with its revision, plus a lease renewal only when
// the keep-alive has not already covered the new TTL.
func (b *Backend) Refresh(ctx context.Context, reqs []core.RefreshRequest) []error {
	sent := time.Now()
	p := b.planRefresh(reqs, sent)
	for _, it := range p.gone {
		b.drop(it.token, it.e)
	}
	if len(p.items) == 0 {
		return p.errs
	}
	r := b.refreshRound(ctx, p, sent)
	for j, it := range p.items {
		switch lerr := r.leaseErr[it.e.sess]; {
		case r.readErr[j] != nil:
			p.errs[it.i] = unavailable("refresh", r.readErr[j])
		case r.found[j] != it.e.rev, errors.Is(lerr, errLeaseGone):
			b.drop(it.token, it.e)
			p.errs[it.i] = core.ErrNotHeld
		case lerr != nil:
			p.errs[it.i] = lerr
		}
	}
	return p.errs
}

// refreshItem is one lease of a Refresh batch that this backend holds.
type refreshItem struct {
	i     int
	token string
	e     *entry
}

// refreshPlan sorts a Refresh batch: leases to renew (items), entries of a
// lease the server no longer has (gone), the TTL each session must cover
// (need) and the answers already known (errs).
type refreshPlan struct {
	errs  []error
	items []refreshItem
	gone  []refreshItem
	need  map[*session]time.Duration
}

func (b *Backend) planRefresh(reqs []core.RefreshRequest, sent time.Time) refreshPlan {
	p := refreshPlan{errs: make([]error, len(reqs)), need: map[*session]time.Duration{}}
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, r := range reqs {
		if err := b.checkTTL(r.TTL); err != nil {
			p.errs[i] = err
			continue
		}
		e := b.held[r.Token]
		if e == nil || e.sess.isDead {
			p.errs[i] = core.ErrNotHeld
			if e != nil {
				p.gone = append(p.gone, refreshItem{i, r.Token, e})
			}
			continue
		}
		// Extend before the round trip: our own expiry must not delete a
		// key the Client is about to be told was renewed. If the renewal
		// fails the key just lives a little longer, as a Redis PEXPIRE
		// whose reply was lost would.
		if x := sent.Add(r.TTL); x.After(e.expires) {
			e.expires = x
		}
		p.items = append(p.items, refreshItem{i, r.Token, e})
		p.need[e.sess] = max(p.need[e.sess], r.TTL)
	}
	return p
}

// refreshAnswers is what one refresh round learnt: per session, whether
// its lease covers the TTL; per item, the key's create revision (0:
// missing) or the read error.
type refreshAnswers struct {
	leaseErr map[*session]error
	found    []int64
	readErr  []error
}

// refreshRound extends the sessions' leases and reads the keys, in
// parallel, batched to the server's transaction size.
func (b *Backend) refreshRound(ctx context.Context, p refreshPlan, sent time.Time) refreshAnswers {
	var wg sync.WaitGroup
	var lmu sync.Mutex
	r := refreshAnswers{
		leaseErr: make(map[*session]error, len(p.need)),
		found:    make([]int64, len(p.items)),
		readErr:  make([]error, len(p.items)),
	}
	for s, ttl := range p.need {
		wg.Go(func() {
			if err := b.cover(ctx, s, sent, ttl); err != nil {
				lmu.Lock()
				r.leaseErr[s] = err
				lmu.Unlock()
			}
		})
	}
	for lo := 0; lo < len(p.items); lo += b.cfg.maxTxnOps {
		hi := min(lo+b.cfg.maxTxnOps, len(p.items))
		wg.Go(func() { b.readKeys(ctx, p.items, lo, hi, r) })
	}
	wg.Wait()
	return r
}

// readKeys reads the keys of items[lo:hi] in one transaction.
func (b *Backend) readKeys(ctx context.Context, items []refreshItem, lo, hi int, r refreshAnswers) {
	ops := make([]clientv3.Op, 0, hi-lo)
	for _, it := range items[lo:hi] {
		ops = append(ops, clientv3.OpGet(it.e.key, clientv3.WithKeysOnly()))
	}
	tctx, cancel := bound(ctx)
	resp, err := b.cli.Txn(tctx).Then(ops...).Commit()
	cancel()
	for j := lo; j < hi; j++ {
		if err != nil {
			r.readErr[j] = err
			continue
		}
		if kvs := resp.Responses[j-lo].GetResponseRange().GetKvs(); len(kvs) == 1 {
			r.found[j] = kvs[0].CreateRevision
		}
	}
}

// Handoff implements core.Backend for clients that enable hand-offs
// (etcdlock.New turns them off). It moves the lock to a new entry in one
// transaction only when no other entry is queued behind it; otherwise it
// releases the lock, so the queued waiters keep their FIFO turn, and
// returns ErrHandoffDeclined. Shared and permit holds are never handed
// off: they are released, with an error matching ErrHandoffDeclined.
func (b *Backend) Handoff(ctx context.Context, h core.Hold, to string, ttl time.Duration) (core.Grant, error) {
	keys, from := h.Keys, h.Token
	if h.Mode != core.Exclusive {
		return core.Grant{}, b.declineHandoff(ctx, from)
	}
	if err := b.checkTTL(ttl); err != nil {
		return core.Grant{}, err
	}
	b.mu.Lock()
	e := b.held[from]
	b.mu.Unlock()
	if e == nil {
		return core.Grant{}, core.ErrNotHeld
	}
	start := time.Now()
	s, err := b.session(ctx)
	if err == nil {
		err = b.cover(ctx, s, start, ttl)
	}
	if err != nil {
		return core.Grant{}, err
	}
	pfx := queuePrefix(keys)
	slot := b.takeSlot(pfx)
	ne := &entry{prefix: pfx, slot: slot, key: entryName(pfx, s.id, slot), sess: s}
	val := entryValue(ttl, to)
	tctx, cancel := bound(ctx)
	defer cancel()
	resp, err := b.cli.Txn(tctx).
		If(clientv3.Compare(clientv3.CreateRevision(e.key), "=", e.rev),
			clientv3.Compare(clientv3.CreateRevision(pfx), "<", e.rev+1).WithPrefix()).
		Then(clientv3.OpDelete(e.key), clientv3.OpPut(ne.key, val, clientv3.WithLease(s.id))).
		Else(clientv3.OpGet(e.key, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		if leaseGone(err) {
			b.markDead(s)
		}
		// Either both happened or neither: the new entry, if any, goes
		// (by its value); the old one stays held until its TTL.
		b.deleteLater(doomed{prefix: pfx, slot: slot, key: ne.key, val: val}, s)
		return core.Grant{}, unavailable("hand-off", err)
	}
	if resp.Succeeded {
		b.drop(from, e)
		ne.rev = resp.Header.Revision
		b.hold(to, ne, start, ttl)
		return core.Grant{Acquired: true, Fence: uint64(ne.rev), Sent: start}, nil
	}
	b.freeSlot(pfx, slot)
	if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 0 || kvs[0].CreateRevision != e.rev {
		b.drop(from, e)
		return core.Grant{}, core.ErrNotHeld
	}
	if err := b.release(ctx, from); err != nil {
		return core.Grant{}, err
	}
	return core.Grant{}, ErrHandoffDeclined
}
