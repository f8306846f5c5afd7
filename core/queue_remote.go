package core

import (
	"context"
	"crypto/sha1" //nolint:gosec // an id derived from the token, matching Lua's redis.sha1hex
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// The store queue: waiters of every Client queue in the store for an
// exclusive hold, and a release grants the lock to the head of that queue
// in the same script (new token, new fence, a short lease), so the next
// instance holds the lock without an acquire round trip of its own. The
// local queue (queue.go) still sends only one waiter per Client and key to
// the store, and the local hand-off cap makes a Client release to the store
// queue after that many hand-offs, so instances take turns.

// DefaultGrantLease is the lease of a hold granted to a queued waiter until
// the waiter confirms it (see WithGrantLease).
const DefaultGrantLease = 100 * time.Millisecond

// grantSlack is how long after a grant's lease a queued waiter that was not
// granted checks whether the grantee confirmed.
const grantSlack = 2 * time.Millisecond

// QueueBackend is a Backend that queues waiting exclusive requests of every
// Client in the store and grants the lock to the head of that queue within
// a release: the single Redis backend (not with WithReplicaAck) and
// NewSharded over it. A request with Hold.QueueFor joins the queue when
// refused; the grant reaches it as a QueueNotice.
type QueueBackend interface {
	Backend
	// Queues reports whether requests for keys may queue in the store.
	Queues(keys Keys) bool
	// Listening reports whether notices for keys are already subscribed,
	// so that SubscribeQueued returns at once.
	Listening(keys Keys) bool
	// SubscribeQueued is Subscribe for a request queued under token: a
	// grant notice calls grant (Mine when it names token) instead of
	// notify, which the other notices call.
	SubscribeQueued(ctx context.Context, keys Keys, token string, notify func(), grant func(QueueNotice)) (cancel func(), err error)
}

// QueueNotice is a grant from the store queue, as a queued waiter hears it.
type QueueNotice struct {
	Mine  bool          // granted to this waiter: it holds the lock with Fence
	Fence uint64        // the granted fence
	Lease time.Duration // the granted hold's lease until its holder confirms it
}

// queueID names a queued token in grant notices: the hex SHA-1 of the
// token, as release.lua computes it. It reveals nothing of the token.
func queueID(token string) string {
	sum := sha1.Sum([]byte(token)) //nolint:gosec // an id, not a signature
	return hex.EncodeToString(sum[:])
}

// parseGrant reads a grant notice: "g <queue id> <fence> <lease ms>".
func parseGrant(payload string) (string, QueueNotice, bool) {
	if !strings.HasPrefix(payload, "g ") {
		return "", QueueNotice{}, false
	}
	f := strings.Fields(payload)
	if len(f) != 4 {
		return "", QueueNotice{}, false
	}
	fence, err1 := strconv.ParseUint(f[2], 10, 64)
	lease, err2 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil {
		return "", QueueNotice{}, false
	}
	return f[1], QueueNotice{Fence: fence, Lease: time.Duration(lease) * time.Millisecond}, true
}

func (b *redisBackend) queues() bool { return !b.noQueue && b.ackReplicas == 0 }

func (b *redisBackend) Queues(Keys) bool { return b.queues() }

func (b *redisBackend) Listening(keys Keys) bool { return b.subs.has(keys.Channel) }

func (b *redisBackend) SubscribeQueued(ctx context.Context, keys Keys, token string, notify func(), grant func(QueueNotice)) (func(), error) {
	return b.subs.listen(ctx, keys.Channel, &listener{fn: notify, id: queueID(token), grant: grant})
}

// queueBackend returns the backend's store queue when this acquisition
// uses it: an exclusive request that waits, on a backend that queues.
func (a *acquisition) queueBackend() QueueBackend {
	if a.cfg.mode != Exclusive || a.cfg.wait == 0 || !a.cfg.storeQueue {
		return nil
	}
	qb, ok := a.c.b.(QueueBackend)
	if !ok || !qb.Queues(a.keys) {
		return nil
	}
	return qb
}

// entryLife is how long the store keeps this request's queue entry without
// a renewal: to the end of the wait, at most twice the lease (every attempt
// renews it, and a waiter attempts again at least once per holder lease).
func (a *acquisition) entryLife() time.Duration {
	life := max(2*a.cfg.ttl, time.Second)
	if !a.until.IsZero() {
		life = min(life, a.until.Sub(a.c.clk.Now()))
	}
	return max(life, time.Millisecond)
}

// grantedLock is the Lock a grant notice gave this request, or nil when the
// next attempt must confirm the grant first (the attempt finds the key
// holding our token: a full lease, the granted fence).
//
// The grant happened after our last refused attempt reached the store
// (its fence is above the counter that refusal saw; an older notice read
// late is dropped in waitNotice), so its lease ends no earlier than that
// attempt's send time plus the grant lease: that is the validity deadline, less the drift allowance. While a
// useful part of it is left (a quarter of the grant lease) the Lock is
// returned at once, with no round trip of its own, and a confirmation (a
// renewal to the full TTL) is due halfway through the grant lease unless
// the lock has ended by then. A waiter paused between the grant and the
// notice (or queued longer than the grant lease) finds too little left and
// confirms first; if the grant lapsed meanwhile its attempt joins the
// queue again.
func (a *acquisition) grantedLock(token string, n *notices) *Lock {
	qn := n.granted
	if qn == nil || n.refusedAt.IsZero() {
		return nil
	}
	from := n.refusedAt
	if a.cfg.grantFromArrival {
		from = a.c.clk.Now() // the unsafe rule, for the negative control
	}
	deadline := from.Add(qn.Lease - a.cfg.driftFor(qn.Lease))
	if deadline.Sub(a.c.clk.Now()) < qn.Lease/4 {
		return nil
	}
	l := a.newLock(token, qn.Fence, from)
	l.deadline = deadline
	l.confirmBy = from.Add(qn.Lease / 2)
	a.viaGrant, a.stats.handoff = true, true
	return l
}

// NewSharded over Redis backends: each key queues on its own shard.

func (b *shardedBackend) Queues(keys Keys) bool {
	qb, ok := b.shard(keys).(QueueBackend)
	return ok && qb.Queues(keys)
}

func (b *shardedBackend) Listening(keys Keys) bool {
	qb, ok := b.shard(keys).(QueueBackend)
	return ok && qb.Listening(keys)
}

func (b *shardedBackend) SubscribeQueued(ctx context.Context, keys Keys, token string, notify func(), grant func(QueueNotice)) (func(), error) {
	if qb, ok := b.shard(keys).(QueueBackend); ok {
		return qb.SubscribeQueued(ctx, keys, token, notify, grant)
	}
	return b.shard(keys).Subscribe(ctx, keys, notify)
}
