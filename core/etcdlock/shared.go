package etcdlock

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fencedlock/fencedlock/core"
)

// Shared and permit holds live in the same queue as exclusive ones, under
// their own part of the key space so that one comparison can tell the
// kinds apart:
//
//	<prefix><lease>-<slot>          an exclusive entry (a writer)
//	<prefix>~<tag>/<lease>-<slot>   a shared ("s") or permit ("p<n>") entry
//
// Lease ids are written in hex, so every writer sorts before '~' and every
// tagged entry after it. Order is still the create revision across the
// whole prefix: a writer holds when its entry is the oldest; a shared
// entry holds when no writer's entry is older; a permit entry holds when
// no writer's entry is older and fewer than n entries of its tag are.
// Entries ahead of one can only disappear, so an entry that holds keeps
// holding until it is deleted, and entries start to hold in the order of
// their create revisions: the fence.

// shareRanges are the key ranges of one queue as seen by one mode tag.
type shareRanges struct {
	prefix string
	tag    string
	mine   string // start of the tag's entries; they end at mineEnd
	// every other tag: [others, mine) and [mineEnd, othersEnd)
	mineEnd, others, othersEnd string
}

func rangesFor(prefix, tag string) shareRanges {
	return shareRanges{
		prefix:    prefix,
		tag:       tag,
		mine:      prefix + "~" + tag + "/",
		mineEnd:   prefix + "~" + tag + "0", // '/' + 1
		others:    prefix + "~",
		othersEnd: clientv3.GetPrefixRangeEnd(prefix + "~"),
	}
}

// writersEnd ends the writers' range, which starts at the prefix.
func (r shareRanges) writersEnd() string { return r.others }

func (r shareRanges) entryName(lease clientv3.LeaseID, slot int) string {
	return entryName(r.mine, lease, slot)
}

// modeCmps hold when no entry of another tag is queued.
func (r shareRanges) modeCmps() []clientv3.Cmp {
	return []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(r.others), "=", 0).WithRange(r.mine),
		clientv3.Compare(clientv3.CreateRevision(r.mineEnd), "=", 0).WithRange(r.othersEnd),
	}
}

// noWriter holds when no writer's entry is queued.
func (r shareRanges) noWriter() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(r.prefix), "=", 0).WithRange(r.writersEnd())
}

// otherTagGets read one entry of each other tag's range.
func (r shareRanges) otherTagGets() []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpGet(r.others, clientv3.WithRange(r.mine), clientv3.WithKeysOnly(), clientv3.WithLimit(1)),
		clientv3.OpGet(r.mineEnd, clientv3.WithRange(r.othersEnd), clientv3.WithKeysOnly(), clientv3.WithLimit(1)),
	}
}

// lastWriters reads the (at most) two youngest writers' entries, older
// than rev when rev > 0: the one to watch, and whether it is alone.
func (r shareRanges) lastWriters(rev int64, opts ...clientv3.OpOption) clientv3.Op {
	opts = append(opts, clientv3.WithRange(r.writersEnd()),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortDescend), clientv3.WithLimit(2))
	if rev > 0 {
		opts = append(opts, clientv3.WithMaxCreateRev(rev-1))
	}
	return clientv3.OpGet(r.prefix, opts...)
}

// mismatch builds the ModeError from the reads of otherTagGets, or returns
// nil when both are empty.
func (r shareRanges) mismatch(resps []*pb.ResponseOp) error {
	for _, rr := range resps {
		if kvs := rr.GetResponseRange().GetKvs(); len(kvs) > 0 {
			have, _, _ := strings.Cut(strings.TrimPrefix(string(kvs[0].Key), r.others), "/")
			return &core.ModeError{Want: r.tag, Have: have}
		}
	}
	return nil
}

// acquireShared is Acquire for a shared or permit hold, one transaction:
// it creates the entry only if no writer's entry is queued (a waiting
// writer included: writer preference) and no entry of another mode tag
// exists, and counts the entries of its tag ahead in the same step. A
// permit over the limit is deleted again at once (a second round trip,
// refusals only).
func (b *Backend) acquireShared(ctx context.Context, h core.Hold, ttl time.Duration) (core.Grant, error) {
	if err := b.checkTTL(ttl); err != nil {
		return core.Grant{}, err
	}
	pfx := queuePrefix(h.Keys)
	r := rangesFor(pfx, h.ModeTag())
	spec := entrySpec{prefix: pfx, names: r.mine, val: entryValue(ttl, h.Token)}
	e, resp, start, err := b.tryEntry(ctx, spec, ttl, func(tctx context.Context, e *entry) (*clientv3.TxnResponse, error) {
		return b.cli.Txn(tctx).
			If(append(r.modeCmps(), r.noWriter())...).
			Then(clientv3.OpGet(r.mine, append(clientv3.WithFirstCreate(), clientv3.WithRange(r.mineEnd))...),
				clientv3.OpPut(e.key, spec.val, clientv3.WithLease(e.sess.id))).
			Else(append([]clientv3.Op{clientv3.OpGet(pfx, firstCreate()...)}, r.otherTagGets()...)...).
			Commit()
	})
	if err != nil {
		return core.Grant{}, err
	}
	if !resp.Succeeded {
		b.freeSlot(pfx, e.slot)
		if err := r.mismatch(resp.Responses[1:]); err != nil {
			return core.Grant{}, err
		}
		var ra time.Duration
		if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
			ra = holderTTL(kvs[0].Value)
		}
		return core.Grant{HolderTTL: ra}, nil
	}
	e.rev = resp.Header.Revision
	return b.sharedGranted(ctx, h, e, resp.Responses[0].GetResponseRange(), leaseFrom{start, ttl})
}

// sharedGranted finishes acquireShared once the entry is in: a shared
// entry holds; a permit entry holds when fewer than n entries of its tag
// were ahead, and is deleted otherwise.
func (b *Backend) sharedGranted(ctx context.Context, h core.Hold, e *entry, ahead *pb.RangeResponse, l leaseFrom) (core.Grant, error) {
	n := int(ahead.GetCount())
	if h.Mode == core.PermitMode && n >= h.Permits {
		if _, err := b.deleteGuarded(context.WithoutCancel(ctx), e.key, e.rev, ""); err != nil {
			b.deleteLater(doomed{prefix: e.prefix, slot: e.slot, key: e.key, rev: e.rev}, e.sess)
		} else {
			b.freeSlot(e.prefix, e.slot)
		}
		var ra time.Duration
		if kvs := ahead.GetKvs(); len(kvs) == 1 {
			ra = holderTTL(kvs[0].Value)
		}
		return core.Grant{HolderTTL: ra}, nil
	}
	b.hold(h.Token, e, l.start, l.ttl)
	return core.Grant{Acquired: true, Fence: uint64(e.rev), Sent: l.start, Free: freeAfter(h.Permits, n)}, nil
}

// leaseFrom is a hold's lease: ttl counted from start, the send time of
// the command that granted it.
type leaseFrom struct {
	start time.Time
	ttl   time.Duration
}

// freeAfter is Grant.Free of a hold with ahead entries of its tag in front
// of it: -1 for shared holds (permits 0), else the permits left.
func freeAfter(permits, ahead int) int {
	if permits == 0 {
		return -1
	}
	return max(permits-1-ahead, 0)
}

// enqueueShared appends a shared or permit waiter's entry, in one
// transaction that refuses a mode mismatch and reads the writers ahead
// and the count of the tag's entries ahead.
func (w *waiter) enqueueShared(ctx context.Context) (outcome, error) {
	s, err := w.useSession(ctx)
	if err != nil {
		return waitAgain, err
	}
	r := rangesFor(w.prefix, w.tag)
	tctx, cancel := bound(ctx)
	defer cancel()
	resp, err := w.b.cli.Txn(tctx).
		If(append(r.modeCmps(), clientv3.Compare(clientv3.CreateRevision(w.key), "=", 0))...).
		Then(
			r.lastWriters(0),
			clientv3.OpGet(r.mine, append(clientv3.WithFirstCreate(), clientv3.WithRange(r.mineEnd))...), // its Count: entries ahead
			clientv3.OpPut(w.key, w.val, clientv3.WithLease(s.id)),
		).
		Else(append([]clientv3.Op{clientv3.OpGet(w.key)}, r.otherTagGets()...)...).
		Commit()
	if err != nil {
		w.maybe = !leaseGone(err)
		return waitAgain, err
	}
	w.maybe = false
	if !resp.Succeeded {
		mine := resp.Responses[0].GetResponseRange().GetKvs()
		if len(mine) == 0 {
			return waitAgain, r.mismatch(resp.Responses[1:])
		}
		if string(mine[0].Value) != w.val {
			return waitAgain, errors.New("etcdlock: entry slot taken by another owner")
		}
		w.rev = mine[0].CreateRevision // queued by an attempt that failed in flight
		return w.checkShared(ctx)
	}
	w.rev = resp.Header.Revision
	tagAhead := resp.Responses[1].GetResponseRange()
	if kvs := tagAhead.GetKvs(); len(kvs) == 1 {
		w.holderTTL = holderTTL(kvs[0].Value)
	}
	return w.place(resp.Responses[0].GetResponseRange().GetKvs(), int(tagAhead.GetCount()), resp.Header.Revision), nil
}

// checkShared reads our entry, the youngest writers ahead of it and (for
// permits) the keys of the tag's entries ahead; serializably after a
// deletion, as check does.
func (w *waiter) checkShared(ctx context.Context) (outcome, error) {
	atLeast := w.goneAt
	w.goneAt = 0
	var opts []clientv3.OpOption
	if atLeast > 0 {
		opts = []clientv3.OpOption{clientv3.WithSerializable()}
	}
	r := rangesFor(w.prefix, w.tag)
	ops := []clientv3.Op{clientv3.OpGet(w.key, append(opts, clientv3.WithKeysOnly())...), r.lastWriters(w.rev, opts...)}
	if w.permits > 0 {
		ops = append(ops, w.tagAheadGet(r, opts...))
	}
	tctx, cancel := bound(ctx)
	defer cancel()
	resp, err := w.b.cli.Txn(tctx).Then(ops...).Commit()
	if err != nil {
		return waitAgain, err
	}
	if resp.Header.Revision < atLeast {
		return w.checkShared(ctx) // a lagging member: ask the leader
	}
	mine := resp.Responses[0].GetResponseRange().GetKvs()
	if len(mine) != 1 || mine[0].CreateRevision != w.rev {
		return requeue, nil
	}
	n := 0
	if w.permits > 0 {
		n = len(resp.Responses[2].GetResponseRange().GetKvs())
	}
	return w.place(resp.Responses[1].GetResponseRange().GetKvs(), n, resp.Header.Revision), nil
}

// tagAheadGet reads the keys of the tag's entries older than ours. (etcd's
// Count ignores the revision filter, so they are counted here.)
func (w *waiter) tagAheadGet(r shareRanges, opts ...clientv3.OpOption) clientv3.Op {
	return clientv3.OpGet(r.mine, append(opts, clientv3.WithRange(r.mineEnd), clientv3.WithKeysOnly(),
		clientv3.WithMaxCreateRev(w.rev-1))...)
}

// place decides from what is ahead of our entry, as of revision seenAt:
// granted, or what to wait for: the youngest writer ahead (pred), or, for a
// permit with no writer ahead, tagAhead-n+1 deletions among the tag's
// entries ahead (counting).
func (w *waiter) place(writers []*mvccpb.KeyValue, tagAhead int, seenAt int64) outcome {
	w.tagAhead = tagAhead
	fits := w.permits == 0 || tagAhead < w.permits
	if len(writers) == 0 {
		if fits {
			return granted
		}
		w.counting, w.asOf = true, seenAt
		return waitAgain
	}
	w.holderTTL = holderTTL(writers[0].Value)
	w.setPred(writers[0], len(writers) == 1 && fits, seenAt)
	return waitAgain
}

// waitAhead is a permit waiter's wait when no writer is ahead: one watch
// on its tag's entries, counting the deletions of entries older than ours
// until fewer than n are left. Every waiter of the tag receives every
// deletion, but only the one whose count reaches the limit goes on, and it
// needs no read to do so (the count is exact).
func (w *waiter) waitAhead(ctx context.Context, untilC <-chan time.Time) (outcome, error) {
	r := rangesFor(w.prefix, w.tag)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := w.b.cli.Watch(wctx, r.mine, clientv3.WithRange(r.mineEnd), clientv3.WithFilterPut(),
		clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	for {
		select {
		case wr, ok := <-wch:
			if out, done, err := w.countDeletes(ctx, r, wr, ok); done {
				return out, err
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

// countDeletes applies one watch response to the count of entries ahead.
// Deletions at or before asOf are in the count already.
func (w *waiter) countDeletes(ctx context.Context, r shareRanges, wr clientv3.WatchResponse, ok bool) (outcome, bool, error) {
	var err error
	switch {
	case !ok:
		err = errors.New("etcdlock: watch closed")
	case wr.Err() != nil:
		err = wr.Err()
	case wr.Canceled:
		err = errors.New("etcdlock: watch cancelled")
	case wr.Created && wr.Header.Revision != w.asOf:
		// The watch covers revisions after the created header's: count
		// again at one at least as recent.
		err = w.recount(ctx, r, wr.Header.Revision)
	}
	if err != nil {
		w.counting = false // look again before the next watch
		return waitAgain, true, err
	}
	for _, ev := range wr.Events {
		switch {
		case ev.Type != mvccpb.DELETE || ev.Kv.ModRevision <= w.asOf:
		case string(ev.Kv.Key) == w.key:
			return requeue, true, nil
		case ev.PrevKv == nil: // compacted: cannot tell; read instead
			w.counting = false
			return waitAgain, true, nil
		case ev.PrevKv.CreateRevision < w.rev:
			w.tagAhead--
			w.goneAt = ev.Kv.ModRevision
		}
	}
	if w.tagAhead < w.permits {
		w.counting, w.onlyAhead = false, true
		return predGone, true, nil
	}
	return waitAgain, false, nil
}

// recount reads the tag's entries ahead at a revision of at least atLeast:
// serializably first, linearizably from a lagging member.
func (w *waiter) recount(ctx context.Context, r shareRanges, atLeast int64) error {
	ctx, cancel := bound(ctx)
	defer cancel()
	resp, err := w.b.cli.Do(ctx, w.tagAheadGet(r, clientv3.WithSerializable()))
	if err == nil && resp.Get().Header.Revision < atLeast {
		resp, err = w.b.cli.Do(ctx, w.tagAheadGet(r))
	}
	if err != nil {
		return err
	}
	w.tagAhead, w.asOf = len(resp.Get().Kvs), resp.Get().Header.Revision
	return nil
}

// free is Grant.Free for a waiter's grant: -1 for shared holds, the
// permits the entries ahead leave (an upper bound: entries behind ours may
// take them first), 0 for exclusive holds.
func (w *waiter) free() int {
	switch {
	case w.tag == "":
		return 0
	case w.permits == 0:
		return -1
	}
	return freeAfter(w.permits, w.tagAhead)
}

// declineHandoff is Handoff for a shared or permit hold: it releases the
// hold and says so with an error matching ErrHandoffDeclined (or the
// release's error, such as core.ErrNotHeld).
func (b *Backend) declineHandoff(ctx context.Context, token string) error {
	if err := b.release(ctx, token); err != nil {
		return err
	}
	return errShareHandoff
}

// errShareHandoff: Handoff of a shared or permit hold released it.
var errShareHandoff = fmt.Errorf("etcdlock: shared and permit holds are not handed off; the hold was released: %w", ErrHandoffDeclined)
