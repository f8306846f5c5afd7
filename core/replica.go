package core

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotReplicated means a lock write reached the Redis primary but too few
// replicas acknowledged it in time (WithReplicaAck). An acquisition that
// fails this way was undone. The error also matches ErrUnavailable, so
// adapters answer 503 / Unavailable without knowing about replication.
var ErrNotReplicated = errors.New("core: lock write not acknowledged by enough replicas")

type notReplicatedError struct {
	op          string
	acked, want int64
	timeout     time.Duration
}

func (e *notReplicatedError) Error() string {
	return fmt.Sprintf("%s: %s: %d of %d replicas within %v", ErrNotReplicated.Error(), e.op, e.acked, e.want, e.timeout)
}

func (e *notReplicatedError) Unwrap() []error { return []error{ErrNotReplicated, ErrUnavailable} }

// WithReplicaAck makes every write that grants or extends a lease (acquire,
// hand-off, refresh) wait until at least replicas replicas acknowledged it,
// for at most timeout: Redis WAIT, sent in the same pipeline and on the
// same connection as the script, so an acquisition stays one round trip.
// A grant that is not acknowledged in time is released and reported as an
// error matching ErrNotReplicated (and ErrUnavailable); a refresh that is
// not acknowledged fails the same way and the watchdog tries again before
// the validity deadline.
//
// Use it with a Sentinel-managed primary (redis.NewFailoverClient) or a
// Cluster with replicas, so that a failover promotes a replica that has
// the lock and the fence counter. WAIT does not make Redis strongly
// consistent: an acknowledged write is in the replicas' memory, not on
// their disks, and Sentinel may still promote a replica that did not
// acknowledge it (one that lagged, with replicas > 1 of several). It
// narrows the window in which a failover loses a lock; it does not close
// it. timeout must be below the client's ReadTimeout, and well below the
// TTL: a grant acknowledged after its lease ran out is released and
// reported as ErrLateGrant. On a Ring the WAIT
// goes to the shard that owns the key. A Redis option:
//
//	locker := core.New(rdb, core.WithReplicaAck(1, 50*time.Millisecond))
func WithReplicaAck(replicas int, timeout time.Duration) Option {
	if replicas < 1 || timeout <= 0 {
		panic("core: WithReplicaAck needs replicas >= 1 and a positive timeout")
	}
	// WAIT counts in milliseconds, and WAIT n 0 would block forever.
	timeout = max(timeout.Round(time.Millisecond), time.Millisecond)
	return redisOption("WithReplicaAck", func(c *redisConfig) { c.ackReplicas, c.ackTimeout = replicas, timeout })
}

// primaryFor returns a client for the connection on which key's writes and
// the WAIT after them must travel: the key's primary on a Cluster or its
// shard on a Ring (their pipelines would send the keyless WAIT to another
// node), the client itself otherwise (one pipeline is one connection).
func (b *redisBackend) primaryFor(ctx context.Context, key string) (redis.Cmdable, error) {
	switch rdb := b.rdb.(type) {
	case *redis.ClusterClient:
		return rdb.MasterForKey(ctx, key)
	case *redis.Ring:
		return rdb.GetShardClientForKey(key)
	}
	return b.rdb, nil
}

// evalAcked runs script s and then WAIT in one pipeline: one round trip
// (two the first time a server lacks the script).
func (b *redisBackend) evalAcked(ctx context.Context, s *redis.Script, keys []string, args ...any) (*redis.Cmd, int64, error) {
	node, err := b.primaryFor(ctx, keys[0])
	if err != nil {
		return nil, 0, err
	}
	for _, eval := range [...]bool{false, true} {
		pipe := node.Pipeline()
		var c *redis.Cmd
		if eval {
			c = s.Eval(ctx, pipe, keys, args...)
		} else {
			c = s.EvalSha(ctx, pipe, keys, args...)
		}
		w := b.wait(ctx, pipe)
		_, _ = pipe.Exec(ctx) // per-command errors are read below
		if err := c.Err(); err != nil {
			if !eval && redis.HasErrorPrefix(err, "NOSCRIPT") {
				continue
			}
			return c, 0, err
		}
		n, err := w.Int64()
		return c, n, err
	}
	panic("unreachable")
}

// wait queues WAIT (not part of go-redis's Pipeliner interface).
func (b *redisBackend) wait(ctx context.Context, pipe redis.Pipeliner) *redis.Cmd {
	return pipe.Do(ctx, "WAIT", b.ackReplicas, b.ackTimeout.Milliseconds())
}

func (b *redisBackend) notReplicated(op string, acked int64) error {
	return &notReplicatedError{op: op, acked: acked, want: int64(b.ackReplicas), timeout: b.ackTimeout}
}

// undo releases a grant that did not count, with a detached context: the
// caller's may be what ended the attempt.
func (b *redisBackend) undo(ctx context.Context, h Hold) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultReleaseTimeout)
	defer cancel()
	_, _ = b.Release(ctx, h)
}

func (b *redisBackend) acquireAcked(ctx context.Context, h Hold, keys []string, args []any) (Grant, error) {
	return b.grantAcked(ctx, h, scriptCall{s: acquireScript, keys: keys, args: args}, func(c *redis.Cmd) (Grant, error) {
		res, err := c.Int64Slice()
		if err != nil {
			return Grant{}, redisErr(ctx, err)
		}
		return grantFrom(res)
	})
}

// grantAcked runs an acquire script and WAIT; parse reads the script's
// reply. A grant that too few replicas acknowledged is undone.
func (b *redisBackend) grantAcked(ctx context.Context, h Hold, call scriptCall, parse func(*redis.Cmd) (Grant, error)) (Grant, error) {
	c, acked, err := b.evalAcked(ctx, call.s, call.keys, call.args...)
	if c == nil || c.Err() != nil {
		return Grant{}, redisErr(ctx, err)
	}
	g, gerr := parse(c)
	if gerr != nil || !g.Acquired {
		return g, gerr
	}
	if err != nil || acked < int64(b.ackReplicas) {
		b.undo(ctx, h)
		if err != nil {
			return Grant{}, redisErr(ctx, err)
		}
		return Grant{}, b.notReplicated("acquire", acked)
	}
	return g, nil
}

func (b *redisBackend) handoffAcked(ctx context.Context, from Hold, to string, ttl time.Duration) (Grant, error) {
	c, acked, err := b.evalAcked(ctx, handoffScript, []string{from.Keys.Lock, from.Keys.Fence}, from.Token, to, ms(ttl), fenceTTL(ttl))
	if c == nil || c.Err() != nil {
		return Grant{}, redisErr(ctx, err)
	}
	res, rerr := c.Int64Slice()
	if rerr != nil {
		return Grant{}, redisErr(ctx, rerr)
	}
	g, gerr := grantFrom(res)
	if gerr != nil {
		return g, gerr
	}
	if !g.Acquired {
		return g, ErrNotHeld
	}
	if err != nil || acked < int64(b.ackReplicas) {
		b.undo(ctx, Hold{Keys: from.Keys, Token: to})
		if err != nil {
			return Grant{}, redisErr(ctx, err)
		}
		return Grant{}, b.notReplicated("hand-off", acked)
	}
	return g, nil
}

// refreshAcked renews a batch with one pipeline and one WAIT per primary.
func (b *redisBackend) refreshAcked(ctx context.Context, reqs []RefreshRequest) []error {
	errs := make([]error, len(reqs))
	groups := make(map[redis.Cmdable][]int)
	var order []redis.Cmdable
	for i, r := range reqs {
		node, err := b.primaryFor(ctx, r.Keys.Lock)
		if err != nil {
			errs[i] = redisErr(ctx, err)
			continue
		}
		if _, ok := groups[node]; !ok {
			order = append(order, node)
		}
		groups[node] = append(groups[node], i)
	}
	for _, node := range order {
		b.refreshAckedOn(ctx, node, reqs, groups[node], errs)
	}
	return errs
}

func (b *redisBackend) refreshAckedOn(ctx context.Context, node redis.Cmdable, reqs []RefreshRequest, idx []int, errs []error) {
	for _, eval := range [...]bool{false, true} {
		pipe := node.Pipeline()
		cmds := make([]*redis.Cmd, len(idx))
		for j, i := range idx {
			rkeys, rargs := refreshArgs(reqs[i])
			if eval {
				cmds[j] = refreshScript.Eval(ctx, pipe, rkeys, rargs...)
			} else {
				cmds[j] = refreshScript.EvalSha(ctx, pipe, rkeys, rargs...)
			}
		}
		w := b.wait(ctx, pipe)
		_, _ = pipe.Exec(ctx)
		var retry []int
		acked, werr := w.Int64()
		for j, c := range cmds {
			i := idx[j]
			if err := c.Err(); err != nil && !eval && redis.HasErrorPrefix(err, "NOSCRIPT") {
				retry = append(retry, i)
				continue
			}
			n, err := c.Int64()
			errs[i] = refreshResult(ctx, n, err)
			if errs[i] == nil && werr != nil {
				errs[i] = redisErr(ctx, werr)
			} else if errs[i] == nil && acked < int64(b.ackReplicas) {
				errs[i] = b.notReplicated("refresh", acked)
			}
		}
		if len(retry) == 0 {
			return
		}
		idx = retry
	}
}
