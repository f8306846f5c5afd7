package core

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

var (
	//go:embed scripts/acquire.lua
	acquireSrc string
	//go:embed scripts/handoff.lua
	handoffSrc string
	//go:embed scripts/release.lua
	releaseSrc string
	//go:embed scripts/refresh.lua
	refreshSrc string
	//go:embed scripts/raise.lua
	raiseSrc string
	//go:embed scripts/renew_node.lua
	renewNodeSrc string
	//go:embed scripts/acquire_shared.lua
	acquireSharedSrc string
	//go:embed scripts/handoff_shared.lua
	handoffSharedSrc string

	acquireScript   = redis.NewScript(acquireSrc)
	handoffScript   = redis.NewScript(handoffSrc)
	releaseScript   = redis.NewScript(releaseSrc)
	refreshScript   = redis.NewScript(refreshSrc)
	raiseScript     = redis.NewScript(raiseSrc)
	renewNodeScript = redis.NewScript(renewNodeSrc)
	sharedScript    = redis.NewScript(acquireSharedSrc)
	shareHandoff    = redis.NewScript(handoffSharedSrc)
)

// fenceCounterTTL is how long a fence counter outlives the last acquisition
// of its key. Counters of idle keys therefore disappear (no unbounded key
// growth); the next acquisition restarts from the server clock, which is
// above every fence issued before (fences advance by one per acquisition,
// far slower than the microsecond clock).
const fenceCounterTTL = 24 * time.Hour

// redisConfig is what the Redis options set (see Option).
type redisConfig struct {
	shardedPubSub *bool // nil: automatic (on for *redis.ClusterClient)
	ackReplicas   int   // WithReplicaAck
	ackTimeout    time.Duration
}

func redisOption(name string, f func(*redisConfig)) Option {
	return &optionSpec{name: name, scope: scopeRedis, apply: func(c *config) { f(&c.redis) }}
}

// WithShardedPubSub makes release notices use SPUBLISH/SSUBSCRIBE (Redis 7),
// so that on a Cluster they stay on the shard owning the key. It is chosen
// automatically for *redis.ClusterClient. A Redis option.
func WithShardedPubSub(on bool) Option {
	return redisOption("WithShardedPubSub", func(c *redisConfig) { c.shardedPubSub = &on })
}

type redisBackend struct {
	rdb     redis.UniversalClient
	sharded bool
	subs    *subscriber

	// WithReplicaAck (replica.go): WAIT for this many replicas after every
	// write that grants or extends a lease.
	ackReplicas int
	ackTimeout  time.Duration

	// noQueue: a Redlock node; Redlock does not queue waiters in the store.
	noQueue bool
}

// NewRedisBackend returns the Backend for one Redis deployment: a standalone
// server, a Sentinel-managed primary, a Cluster or a Ring, through any
// go-redis UniversalClient. It takes Redis options only. Most users call
// New instead; this is for composing backends (LimitLocks, NewShardedBackend).
func NewRedisBackend(rdb redis.UniversalClient, opts ...Option) Backend {
	if rdb == nil {
		panic("core: NewRedisBackend with a nil redis client")
	}
	cfg := defaultConfig()
	mustApply(&cfg, opts, scopeRedis, "NewRedisBackend")
	return newRedisBackend(rdb, cfg.redis)
}

func newRedisBackend(rdb redis.UniversalClient, rc redisConfig) *redisBackend {
	b := &redisBackend{rdb: rdb, ackReplicas: rc.ackReplicas, ackTimeout: rc.ackTimeout}
	if _, ok := rdb.(*redis.ClusterClient); ok {
		b.sharded = true
	}
	if rc.shardedPubSub != nil {
		b.sharded = *rc.shardedPubSub
	}
	b.subs = newSubscriber(rdb, b.sharded)
	return b
}

func (b *redisBackend) Name() string { return "redis" }

func ms(d time.Duration) int64 {
	m := d.Milliseconds()
	if m < 1 {
		m = 1
	}
	return m
}

func fenceTTL(ttl time.Duration) int64 {
	if t := 2 * ttl; t > fenceCounterTTL {
		return ms(t)
	}
	return ms(fenceCounterTTL)
}

func (b *redisBackend) Acquire(ctx context.Context, h Hold, ttl time.Duration) (Grant, error) {
	if h.Mode != Exclusive {
		return b.acquireShared(ctx, h, ttl)
	}
	keys, args := acquireArgs(h, ttl)
	if b.ackReplicas > 0 {
		return b.acquireAcked(ctx, h, keys, args)
	}
	res, err := acquireScript.Run(ctx, b.rdb, keys, args...).Int64Slice()
	if err != nil {
		return Grant{}, redisErr(ctx, err)
	}
	return grantFrom(res)
}

// acquireArgs are acquire.lua's keys and arguments for an exclusive hold:
// the claim arguments only for a waiting request, so the uncontended path
// runs no extra command.
func acquireArgs(h Hold, ttl time.Duration) ([]string, []any) {
	keys := []string{h.Keys.Lock, h.Keys.Fence, h.Keys.Leases, h.Keys.Claims}
	args := []any{h.Token, ms(ttl), fenceTTL(ttl)}
	if h.Queue || h.Claimed || h.QueueFor > 0 {
		claimed := ""
		if h.Claimed {
			claimed = "1"
		}
		args = append(args, "", ms(claimTTL(ttl)), claimed)
	}
	if h.QueueFor > 0 {
		inQueue := ""
		if h.InQueue {
			inQueue = "1"
		}
		keys = append(keys, h.Keys.Queue)
		args = append(args, ms(h.QueueFor), inQueue)
	}
	return keys, args
}

// claimTTL is how long a waiting writer's claim holds new shared requests
// back without a renewal (each of the writer's attempts renews it; the
// script lengthens it to twice the holders' remaining lease).
func claimTTL(ttl time.Duration) time.Duration { return 2 * ttl }

func (b *redisBackend) Handoff(ctx context.Context, from Hold, to string, ttl time.Duration) (Grant, error) {
	if b.ackReplicas > 0 {
		return b.handoffAcked(ctx, from, to, ttl)
	}
	return b.runHandoff(ctx, from, to, ttl)
}

// runHandoff runs handoff.lua on this server; extra goes after the
// script's standard arguments (a Redlock node's fence seed).
func (b *redisBackend) runHandoff(ctx context.Context, from Hold, to string, ttl time.Duration, extra ...any) (Grant, error) {
	args := append([]any{from.Token, to, ms(ttl), fenceTTL(ttl)}, extra...)
	res, err := handoffScript.Run(ctx, b.rdb, []string{from.Keys.Lock, from.Keys.Fence}, args...).Int64Slice()
	if err != nil {
		return Grant{}, redisErr(ctx, err)
	}
	g, err := grantFrom(res)
	if err == nil && !g.Acquired {
		return g, ErrNotHeld
	}
	return g, err
}

func grantFrom(res []int64) (Grant, error) {
	if len(res) < 2 || len(res) > 5 {
		return Grant{}, Unavailable(fmt.Errorf("unexpected script reply %v", res))
	}
	if res[0] == 1 {
		return Grant{Acquired: true, Fence: uint64(res[1])}, nil
	}
	g := Grant{Claimed: len(res) >= 3 && res[2] == 1, Queued: len(res) >= 4 && res[3] == 1}
	if len(res) == 5 && res[4] > 0 {
		g.SeenFence = uint64(res[4])
	}
	if res[1] > 0 {
		g.HolderTTL = time.Duration(res[1]) * time.Millisecond
	}
	return g, nil
}

func (b *redisBackend) publishCmd() string {
	if b.sharded {
		return "SPUBLISH"
	}
	return "PUBLISH"
}

// Release runs the release script: compare, delete, publish. Its answer
// counts the notice's receivers; the backend's own subscription (a waiter
// of this Client) is not a remote one. A key that is gone while the fence
// counter still stands at the hold's fence had no holder after us: that is
// our own earlier send of this release (go-redis re-sends after an
// ambiguous network error), so it is a release, not a loss.
func (b *redisBackend) Release(ctx context.Context, h Hold) (Released, error) {
	keys, args := b.releaseArgs(h)
	n, err := releaseScript.Run(ctx, b.rdb, keys, args...).Int64()
	if err != nil {
		return Released{}, redisErr(ctx, err)
	}
	var granted bool
	switch {
	case n == -1:
		return Released{}, nil
	case n <= -2:
		granted, n = true, -n-1 // the notice named the queue's head
	case n < 1:
		return Released{}, ErrNotHeld
	}
	receivers := n - 1
	if b.subs.has(h.Keys.Channel) {
		receivers--
	}
	return Released{RemoteWaiters: receivers > 0, Granted: granted}, nil
}

func (b *redisBackend) Refresh(ctx context.Context, reqs []RefreshRequest) []error {
	if b.ackReplicas > 0 {
		return b.refreshAcked(ctx, reqs)
	}
	replies, errs := b.runBatch(ctx, refreshScript, reqs, refreshArgs)
	for i := range reqs {
		errs[i] = refreshResult(ctx, replies[i], errs[i])
	}
	return errs
}

// renewOrRecreate is a Redlock node's renewal (renew_node.lua): extend
// where held, re-create where missing; only another owner is ErrNotHeld.
func (b *redisBackend) renewOrRecreate(ctx context.Context, reqs []RefreshRequest) []error {
	replies, errs := b.runBatch(ctx, renewNodeScript, reqs, func(r RefreshRequest) ([]string, []any) {
		return []string{r.Keys.Lock, r.Keys.Fence}, []any{r.Token, ms(r.TTL), strconv.FormatUint(r.Fence, 10), fenceTTL(r.TTL)}
	})
	for i := range reqs {
		if errs[i] == nil && replies[i] == 2 {
			errs[i] = errRecreated
			continue
		}
		errs[i] = refreshResult(ctx, replies[i], errs[i])
	}
	return errs
}

// errRecreated reports a Redlock node on which renewOrRecreate found the key
// missing and re-created it (the node restarted empty). The Redlock
// renewal counts it towards the quorum, as long as at least one node still
// held the token: a hold that vanished from every node is lost, not
// revived. It is not ErrNotHeld.
var errRecreated = errors.New("core: re-created on a node that had lost it")

func refreshArgs(r RefreshRequest) ([]string, []any) {
	if r.Mode == Exclusive {
		return []string{r.Keys.Lock}, []any{r.Token, ms(r.TTL)}
	}
	return []string{r.Keys.Lock, r.Keys.Leases}, []any{r.Token, ms(r.TTL)}
}

// runBatch runs script s once per request (args gives its keys and
// arguments): one call for one request, else one pipeline, which go-redis
// splits per node on a Cluster. EVALSHA first; scripts missing after a
// server restart are sent again with EVAL. It returns each call's integer
// reply or error.
func (b *redisBackend) runBatch(ctx context.Context, s *redis.Script, reqs []RefreshRequest, args func(RefreshRequest) ([]string, []any)) ([]int64, []error) {
	replies, errs := make([]int64, len(reqs)), make([]error, len(reqs))
	if len(reqs) == 1 {
		keys, argv := args(reqs[0])
		replies[0], errs[0] = s.Run(ctx, b.rdb, keys, argv...).Int64()
		return replies, errs
	}
	todo := make([]int, len(reqs))
	for i := range todo {
		todo[i] = i
	}
	for _, eval := range [...]bool{false, true} {
		pipe := b.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(todo))
		for j, i := range todo {
			keys, argv := args(reqs[i])
			if eval {
				cmds[j] = s.Eval(ctx, pipe, keys, argv...)
			} else {
				cmds[j] = s.EvalSha(ctx, pipe, keys, argv...)
			}
		}
		_, _ = pipe.Exec(ctx) // per-command errors are read below
		var retry []int
		for j, c := range cmds {
			i := todo[j]
			if !eval && c.Err() != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
				retry = append(retry, i)
				continue
			}
			replies[i], errs[i] = c.Int64()
		}
		if todo = retry; len(todo) == 0 {
			break
		}
	}
	return replies, errs
}

func refreshResult(ctx context.Context, n int64, err error) error {
	if err != nil {
		return redisErr(ctx, err)
	}
	if n != 1 {
		return ErrNotHeld
	}
	return nil
}

func (b *redisBackend) Subscribe(ctx context.Context, keys Keys, notify func()) (func(), error) {
	return b.subs.subscribe(ctx, keys.Channel, notify)
}

func (b *redisBackend) Close() error {
	b.subs.close()
	return nil
}

// redisErr classifies a go-redis error: the caller's context ending is
// reported as such, everything else is the backend being unavailable.
func redisErr(ctx context.Context, err error) error {
	if cerr := ctxErr(ctx); cerr != nil {
		// go-redis reports a context deadline as an i/o timeout at times;
		// either way the caller's context ended the call.
		return cerr
	}
	if errors.Is(err, redis.ErrClosed) {
		return fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return Unavailable(err)
}
