package etcdlock

import (
	"context"
	"errors"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fencedlock/fencedlock/core"
)

// The queue of a lock is every key under its prefix; the entry with the
// lowest create revision holds the lock. A new entry always gets a higher
// revision than every entry present, so holders follow each other in
// strictly increasing create revisions: that revision is the fence, and it
// is issued by Raft, so it keeps increasing across leader failovers.

func firstCreate() []clientv3.OpOption {
	return append([]clientv3.OpOption{clientv3.WithPrefix()}, clientv3.WithFirstCreate()...)
}

func lastCreate(opts ...clientv3.OpOption) []clientv3.OpOption {
	return append(append([]clientv3.OpOption{clientv3.WithPrefix()}, clientv3.WithLastCreate()...), opts...)
}

// Acquire implements core.Backend: one attempt that never queues (the
// Client's TryAcquire). One transaction creates the entry only if the queue
// is empty, and otherwise reads the holder's entry for its TTL.
func (b *Backend) Acquire(ctx context.Context, h core.Hold, ttl time.Duration) (core.Grant, error) {
	if h.Mode != core.Exclusive {
		return b.acquireShared(ctx, h, ttl)
	}
	return b.acquire(ctx, h, ttl)
}

func (b *Backend) acquire(ctx context.Context, h core.Hold, ttl time.Duration) (core.Grant, error) {
	if err := b.checkTTL(ttl); err != nil {
		return core.Grant{}, err
	}
	pfx := queuePrefix(h.Keys)
	spec := entrySpec{prefix: pfx, names: pfx, val: entryValue(ttl, h.Token)}
	e, resp, start, err := b.tryEntry(ctx, spec, ttl, func(tctx context.Context, e *entry) (*clientv3.TxnResponse, error) {
		return b.cli.Txn(tctx).
			If(clientv3.Compare(clientv3.CreateRevision(pfx), "=", 0).WithPrefix()).
			Then(clientv3.OpPut(e.key, spec.val, clientv3.WithLease(e.sess.id))).
			Else(clientv3.OpGet(pfx, firstCreate()...)).
			Commit()
	})
	if err != nil {
		return core.Grant{}, err
	}
	if resp.Succeeded {
		e.rev = resp.Header.Revision
		b.hold(h.Token, e, start, ttl)
		return core.Grant{Acquired: true, Fence: uint64(e.rev), Sent: start}, nil
	}
	owner := resp.Responses[0].GetResponseRange().GetKvs()
	if len(owner) == 1 && string(owner[0].Key) == e.key && string(owner[0].Value) == spec.val {
		// A transport-level retry whose first try had landed.
		e.rev = owner[0].CreateRevision
		b.hold(h.Token, e, start, ttl)
		return core.Grant{Acquired: true, Fence: uint64(e.rev), Sent: start}, nil
	}
	b.freeSlot(pfx, e.slot)
	var ra time.Duration
	if len(owner) == 1 {
		ra = holderTTL(owner[0].Value)
	}
	return core.Grant{HolderTTL: ra}, nil
}

// entrySpec names the entries of one attempt: the queue's prefix, the
// prefix their names start with (the queue's, or a mode tag's range of
// it) and the value they carry.
type entrySpec struct{ prefix, names, val string }

// tryEntry runs txn, the one transaction of a TryAcquire that may create
// the entry e, under the live session (covering ttl from the send, which
// it returns), retrying once when the session's lease was gone. On an
// error nothing is left behind: the slot is freed, or an entry that may
// have been created is deleted later by its value.
func (b *Backend) tryEntry(ctx context.Context, spec entrySpec, ttl time.Duration,
	txn func(context.Context, *entry) (*clientv3.TxnResponse, error)) (*entry, *clientv3.TxnResponse, time.Time, error) {
	for retried := false; ; retried = true {
		start := time.Now()
		s, err := b.session(ctx)
		if err == nil {
			err = b.cover(ctx, s, start, ttl)
		}
		if err != nil {
			if errors.Is(err, errLeaseGone) && !retried {
				continue
			}
			return nil, nil, start, err
		}
		slot := b.takeSlot(spec.prefix)
		e := &entry{prefix: spec.prefix, slot: slot, key: entryName(spec.names, s.id, slot), sess: s}
		tctx, cancel := bound(ctx)
		resp, err := txn(tctx, e)
		cancel()
		if err == nil {
			return e, resp, start, nil
		}
		if leaseGone(err) { // nothing was written
			b.markDead(s)
			b.freeSlot(spec.prefix, slot)
			if !retried {
				continue
			}
		} else { // the entry may have been created: remove it by its value
			b.deleteLater(doomed{prefix: spec.prefix, slot: slot, key: e.key, val: spec.val}, s)
		}
		return nil, nil, start, unavailable("acquire", err)
	}
}

// AcquireWait implements core.NativeWaiter. The waiter appends an entry to
// the queue and watches only the entry just ahead of it for its deletion,
// so a release wakes exactly one waiter (no herd). The watch starts at the
// current revision: etcd serves such a watcher from its synced group at
// once, whereas a watch from an older revision (as concurrency.Mutex opens
// it) waits for the unsynced-watcher loop, up to 100ms per hand-over. (The
// server reads the current revision just before it registers the watch; a
// write landing in between still sends a few percent of watches down the
// slow path under heavy write load.) Transient errors are retried for
// WithRetryFor with the entry kept in place; a wait that gives up deletes
// its entry.
func (b *Backend) AcquireWait(ctx context.Context, h core.Hold, ttl time.Duration, until time.Time) (core.Grant, error) {
	keys, token := h.Keys, h.Token
	if err := b.checkTTL(ttl); err != nil {
		return core.Grant{}, err
	}
	ctx, stop := b.withClose(ctx)
	defer stop()
	pfx := queuePrefix(keys)
	w := &waiter{b: b, token: token, prefix: pfx, slot: b.takeSlot(pfx), val: entryValue(ttl, token), ttl: ttl, tag: h.ModeTag()}
	if h.Mode == core.PermitMode {
		w.permits = h.Permits
	}
	var untilC <-chan time.Time
	if !until.IsZero() {
		t := time.NewTimer(time.Until(until))
		defer t.Stop()
		untilC = t.C
	}
	return w.run(ctx, untilC)
}

type waiter struct {
	b      *Backend
	token  string
	prefix string // the queue
	slot   int
	val    string
	ttl    time.Duration

	sess      *session
	key       string // our entry, named after sess and slot
	rev       int64  // our entry's create revision; 0: not queued
	maybe     bool   // an enqueue failed in flight: the entry may exist
	pred      string // the entry just ahead of ours
	predRev   int64
	onlyAhead bool  // pred is the only entry ahead (so it holds the lock)
	seenAt    int64 // store revision at which pred was seen to exist
	goneAt    int64 // store revision at which pred was seen deleted
	holderTTL time.Duration

	// shared and permit waiters (shared.go)
	tag      string // "" for exclusive, else the mode tag ("s", "p<n>")
	permits  int    // n of a permit waiter, else 0
	counting bool   // a permit waiter with no writer ahead counts deletions
	tagAhead int    // entries of the tag ahead of ours, as of asOf
	asOf     int64
}

// step outcomes
type outcome int

const (
	waitAgain outcome = iota // look again (after a deletion or an error)
	granted                  // we hold the lock
	predGone                 // the predecessor was deleted
	timedOut                 // the wait bound passed
	requeue                  // our entry is gone: queue again
)

func (w *waiter) run(ctx context.Context, untilC <-chan time.Time) (core.Grant, error) {
	var f failures
	for {
		out, from, err := w.step(ctx, untilC)
		if out == granted {
			err = w.b.cover(ctx, w.sess, from, w.ttl)
			if err == nil {
				e := &entry{prefix: w.prefix, slot: w.slot, key: w.key, rev: w.rev, sess: w.sess}
				w.b.hold(w.token, e, from, w.ttl)
				return core.Grant{Acquired: true, Fence: uint64(w.rev), Sent: from, Free: w.free()}, nil
			}
			w.pred, w.counting = "", false // look again once the lease is sorted out
		}
		if out == requeue || leaseGone(err) {
			if err != nil && w.sess != nil {
				w.b.markDead(w.sess)
			}
			w.rev, w.pred, w.maybe, w.counting = 0, "", false, false
			err = nil
		}
		if ctx.Err() != nil {
			return w.giveUp(ctx, context.Cause(ctx))
		}
		if out == timedOut {
			return w.giveUp(ctx, nil)
		}
		if err == nil {
			f = failures{}
			continue
		}
		if stop, cause := w.pauseAfter(ctx, untilC, &f, err); stop {
			return w.giveUp(ctx, cause)
		}
	}
}

// step takes the next step of the wait: queue up, check the queue, or
// watch the entry ahead. It reports what it found and when it asked.
func (w *waiter) step(ctx context.Context, untilC <-chan time.Time) (outcome, time.Time, error) {
	var (
		out  outcome
		err  error
		from = time.Now()
	)
	switch {
	case w.rev == 0:
		out, err = w.enqueue(ctx)
	case w.counting:
		out, err = w.waitAhead(ctx, untilC)
	case w.pred == "":
		out, err = w.check(ctx)
	default:
		out, err = w.waitPred(ctx, untilC)
	}
	if out == predGone {
		w.pred = ""
		if w.onlyAhead && w.b.alive(w.sess) {
			// It held the lock, nobody else was ahead, and our entry
			// still lives: no need to ask.
			out, from = granted, time.Now()
		}
	}
	return out, from, err
}

// failures is a run of failed steps.
type failures struct {
	since time.Time
	n     int
}

// pauseAfter backs off after a failed step. It reports whether to give up
// and with what cause (nil: the wait bound passed).
func (w *waiter) pauseAfter(ctx context.Context, untilC <-chan time.Time, f *failures, err error) (stop bool, cause error) {
	if !transient(err) {
		return true, err
	}
	if f.since.IsZero() {
		f.since = time.Now()
	} else if time.Since(f.since) > w.b.cfg.retryFor {
		return true, unavailable("wait", err)
	}
	f.n++
	select {
	case <-time.After(backoff(f.n - 1)):
		return false, nil
	case <-ctx.Done():
		return true, context.Cause(ctx)
	case <-untilC:
		return true, nil
	}
}

// enqueue appends our entry (or finds it, after a call that failed in
// flight) and learns, in the same transaction, the holder and the entry
// just ahead of ours.
func (w *waiter) enqueue(ctx context.Context) (outcome, error) {
	if w.tag != "" {
		return w.enqueueShared(ctx)
	}
	b := w.b
	s, err := w.useSession(ctx)
	if err != nil {
		return waitAgain, err
	}
	tctx, cancel := bound(ctx)
	defer cancel()
	resp, err := b.cli.Txn(tctx).
		If(clientv3.Compare(clientv3.CreateRevision(w.key), "=", 0)).
		Then(
			clientv3.OpGet(w.prefix, firstCreate()...),
			clientv3.OpGet(w.prefix, lastCreate(clientv3.WithKeysOnly())...), // its Count: entries ahead
			clientv3.OpPut(w.key, w.val, clientv3.WithLease(s.id)),
		).
		Else(clientv3.OpGet(w.key)).
		Commit()
	if err != nil {
		w.maybe = !leaseGone(err)
		return waitAgain, err
	}
	w.maybe = false
	if !resp.Succeeded {
		// Our entry is already queued by an attempt that failed in flight:
		// find our place. The slot is ours, so the entry can be no one
		// else's; the value check guards against a bug all the same.
		mine := resp.Responses[0].GetResponseRange().GetKvs()
		if len(mine) != 1 || string(mine[0].Value) != w.val {
			return waitAgain, errors.New("etcdlock: entry slot taken by another owner")
		}
		w.rev = mine[0].CreateRevision
		return w.check(ctx)
	}
	w.rev = resp.Header.Revision
	owner := resp.Responses[0].GetResponseRange().GetKvs()
	if len(owner) == 0 {
		return granted, nil
	}
	last := resp.Responses[1].GetResponseRange()
	w.holderTTL = holderTTL(owner[0].Value)
	w.setPred(last.GetKvs()[0], last.GetCount() == 1, resp.Header.Revision)
	return waitAgain, nil
}

// check reads our entry, the holder and the entry just ahead of ours. After
// the predecessor's deletion at revision goneAt it reads serializably (no
// Raft read-index round): entries ahead of ours can only disappear, so a
// state at any revision at or after goneAt is good enough; a member that
// has not applied goneAt yet is asked again linearizably.
func (w *waiter) check(ctx context.Context) (outcome, error) {
	if w.tag != "" {
		return w.checkShared(ctx)
	}
	atLeast := w.goneAt
	w.goneAt = 0
	var opts []clientv3.OpOption
	if atLeast > 0 {
		opts = []clientv3.OpOption{clientv3.WithSerializable()}
	}
	tctx, cancel := bound(ctx)
	defer cancel()
	resp, err := w.b.cli.Txn(tctx).Then(
		clientv3.OpGet(w.key, append(opts, clientv3.WithKeysOnly())...),
		clientv3.OpGet(w.prefix, append(firstCreate(), opts...)...),
		clientv3.OpGet(w.prefix, lastCreate(append(opts, clientv3.WithMaxCreateRev(w.rev-1), clientv3.WithKeysOnly())...)...),
	).Commit()
	if err != nil {
		return waitAgain, err
	}
	if resp.Header.Revision < atLeast {
		return w.check(ctx) // a lagging member: ask the leader
	}
	mine := resp.Responses[0].GetResponseRange().GetKvs()
	if len(mine) != 1 || mine[0].CreateRevision != w.rev {
		return requeue, nil // deleted behind our back, or the lease ended
	}
	first := resp.Responses[1].GetResponseRange().GetKvs()
	if len(first) == 1 && first[0].CreateRevision == w.rev {
		return granted, nil
	}
	ahead := resp.Responses[2].GetResponseRange().GetKvs()
	if len(first) != 1 || len(ahead) != 1 {
		// Cannot happen while our entry exists; back off and look again.
		return waitAgain, errors.New("etcdlock: inconsistent queue read")
	}
	w.holderTTL = holderTTL(first[0].Value)
	w.setPred(ahead[0], string(first[0].Key) == string(ahead[0].Key), resp.Header.Revision)
	return waitAgain, nil
}

// useSession returns the live session, naming our entry after it.
func (w *waiter) useSession(ctx context.Context) (*session, error) {
	s, err := w.b.session(ctx)
	if err != nil {
		return nil, err
	}
	if s != w.sess {
		w.sess, w.key, w.maybe = s, entryName(w.prefix, s.id, w.slot), false
		if w.tag != "" {
			w.key = rangesFor(w.prefix, w.tag).entryName(s.id, w.slot)
		}
	}
	return s, nil
}

func (w *waiter) setPred(kv *mvccpb.KeyValue, only bool, seenAt int64) {
	w.pred, w.predRev, w.onlyAhead, w.seenAt = string(kv.Key), kv.CreateRevision, only, seenAt
}

// waitPred watches the predecessor until it is deleted. The watch starts at
// the current revision; if that is not the revision at which the
// predecessor was seen, a read confirms it still exists, so a deletion in
// between is not missed.
func (w *waiter) waitPred(ctx context.Context, untilC <-chan time.Time) (outcome, error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.b.cli.Watch(wctx, w.pred, clientv3.WithCreatedNotify(), clientv3.WithFilterPut())
	for {
		select {
		case wr, ok := <-wch:
			if !ok {
				w.pred = ""
				return waitAgain, errors.New("etcdlock: watch closed")
			}
			if err := wr.Err(); err != nil {
				w.pred = "" // look again before the next watch
				return waitAgain, err
			}
			if wr.Canceled {
				w.pred = ""
				return waitAgain, errors.New("etcdlock: watch cancelled")
			}
			if wr.Created && wr.Header.Revision != w.seenAt {
				// The watch covers revisions after wsrev = the created
				// header's; the predecessor must be seen at or after it.
				gone, at, err := w.predGone(ctx, wr.Header.Revision)
				if err != nil {
					w.pred = ""
					return waitAgain, err
				}
				if gone {
					w.goneAt = at
					return predGone, nil
				}
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					w.goneAt = ev.Kv.ModRevision
					return predGone, nil
				}
			}
		case <-w.sess.dead:
			return requeue, nil
		case <-untilC:
			return timedOut, nil
		case <-ctx.Done():
			return waitAgain, nil
		}
	}
}

// predGone reads whether the predecessor is gone, at a revision of at least
// atLeast: serializably first, linearizably from a lagging member.
func (w *waiter) predGone(ctx context.Context, atLeast int64) (gone bool, at int64, err error) {
	ctx, cancel := bound(ctx)
	defer cancel()
	resp, err := w.b.cli.Get(ctx, w.pred, clientv3.WithKeysOnly(), clientv3.WithSerializable())
	if err == nil && resp.Header.Revision < atLeast {
		resp, err = w.b.cli.Get(ctx, w.pred, clientv3.WithKeysOnly())
	}
	if err != nil {
		return false, 0, err
	}
	kvs := resp.Kvs
	return len(kvs) != 1 || kvs[0].CreateRevision != w.predRev, resp.Header.Revision, nil
}

// giveUp ends a wait without the lock: it deletes our entry (guarded by its
// revision, or by its value after an enqueue that failed in flight; in the
// background if that fails), frees the slot and reports why.
func (w *waiter) giveUp(ctx context.Context, cause error) (core.Grant, error) {
	closed := errors.Is(cause, core.ErrClosed)
	switch {
	case closed || (w.rev == 0 && !w.maybe): // Close revokes the lease
		w.b.freeSlot(w.prefix, w.slot)
	default:
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		_, err := w.b.deleteGuarded(dctx, w.key, w.rev, w.val)
		cancel()
		if err == nil {
			w.b.freeSlot(w.prefix, w.slot)
		} else {
			w.b.deleteLater(doomed{prefix: w.prefix, slot: w.slot, key: w.key, rev: w.rev, val: w.val}, w.sess)
		}
	}
	switch {
	case closed:
		return core.Grant{}, core.ErrClosed
	case cause != nil:
		return core.Grant{}, cause
	}
	return core.Grant{HolderTTL: w.holderTTL}, nil
}
