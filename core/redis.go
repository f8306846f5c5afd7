package core

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
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

	acquireScript = redis.NewScript(acquireSrc)
	handoffScript = redis.NewScript(handoffSrc)
	releaseScript = redis.NewScript(releaseSrc)
	refreshScript = redis.NewScript(refreshSrc)
	raiseScript   = redis.NewScript(raiseSrc)
)

// fenceCounterTTL is how long a fence counter outlives the last acquisition
// of its key. Counters of idle keys therefore disappear (no unbounded key
// growth); the next acquisition restarts from the server clock, which is
// above every fence issued before (fences advance by one per acquisition,
// far slower than the microsecond clock).
const fenceCounterTTL = 24 * time.Hour

// RedisOption configures the Redis backend.
type RedisOption func(*redisBackend)

// WithShardedPubSub makes release notices use SPUBLISH/SSUBSCRIBE (Redis 7),
// so that on a Cluster they stay on the shard owning the key. It is chosen
// automatically for *redis.ClusterClient.
func WithShardedPubSub(on bool) RedisOption {
	return func(b *redisBackend) { b.sharded = on }
}

type redisBackend struct {
	rdb     redis.UniversalClient
	sharded bool
	subs    *subscriber

	// WithReplicaAck (replica.go): WAIT for this many replicas after every
	// write that grants or extends a lease.
	ackReplicas int
	ackTimeout  time.Duration
}

// NewRedisBackend returns the Backend for one Redis deployment: a standalone
// server, a Sentinel-managed primary or a Cluster, through any go-redis
// UniversalClient. Most users call New instead.
func NewRedisBackend(rdb redis.UniversalClient, opts ...RedisOption) Backend {
	b := &redisBackend{rdb: rdb}
	if _, ok := rdb.(*redis.ClusterClient); ok {
		b.sharded = true
	}
	for _, o := range opts {
		o(b)
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

func (b *redisBackend) Acquire(ctx context.Context, keys Keys, token string, ttl time.Duration) (Grant, error) {
	if b.ackReplicas > 0 {
		return b.acquireAcked(ctx, keys, token, ttl)
	}
	res, err := acquireScript.Run(ctx, b.rdb, []string{keys.Lock, keys.Fence}, token, ms(ttl), fenceTTL(ttl)).Int64Slice()
	if err != nil {
		return Grant{}, redisErr(ctx, err)
	}
	return grantFrom(res)
}

func (b *redisBackend) Handoff(ctx context.Context, keys Keys, from, to string, ttl time.Duration) (Grant, error) {
	if b.ackReplicas > 0 {
		return b.handoffAcked(ctx, keys, from, to, ttl)
	}
	res, err := handoffScript.Run(ctx, b.rdb, []string{keys.Lock, keys.Fence}, from, to, ms(ttl), fenceTTL(ttl)).Int64Slice()
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
	if len(res) != 2 {
		return Grant{}, unavailable(fmt.Errorf("unexpected script reply %v", res))
	}
	if res[0] == 1 {
		return Grant{Acquired: true, Fence: uint64(res[1])}, nil
	}
	g := Grant{}
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

func (b *redisBackend) Release(ctx context.Context, keys Keys, token string) error {
	_, err := b.ReleaseWaiters(ctx, keys, token)
	return err
}

// ReleaseWaiters releases like Release and also reports whether the notice
// reached a subscriber other than this backend's own connection: a waiter
// in another process (see remoteWaiters).
func (b *redisBackend) ReleaseWaiters(ctx context.Context, keys Keys, token string) (bool, error) {
	n, err := releaseScript.Run(ctx, b.rdb, []string{keys.Lock, keys.Channel}, token, b.publishCmd()).Int64()
	if err != nil {
		return false, redisErr(ctx, err)
	}
	if n < 1 {
		return false, ErrNotHeld
	}
	receivers := n - 1
	if b.subs.has(keys.Channel) {
		receivers--
	}
	return receivers > 0, nil
}

func (b *redisBackend) Refresh(ctx context.Context, reqs []RefreshRequest) []error {
	if b.ackReplicas > 0 {
		return b.refreshAcked(ctx, reqs)
	}
	errs := make([]error, len(reqs))
	if len(reqs) == 1 {
		r := reqs[0]
		n, err := refreshScript.Run(ctx, b.rdb, []string{r.Keys.Lock}, r.Token, ms(r.TTL)).Int64()
		errs[0] = refreshResult(ctx, n, err)
		return errs
	}
	// Many renewals: one pipeline, which go-redis splits per node on a
	// Cluster. EVALSHA first; scripts missing after a server restart are
	// sent again with EVAL.
	cmds := b.refreshPipeline(ctx, reqs, false)
	var retry []int
	for i, c := range cmds {
		if c.Err() != nil && redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			retry = append(retry, i)
			continue
		}
		n, err := c.Int64()
		errs[i] = refreshResult(ctx, n, err)
	}
	if len(retry) > 0 {
		sub := make([]RefreshRequest, len(retry))
		for j, i := range retry {
			sub[j] = reqs[i]
		}
		for j, c := range b.refreshPipeline(ctx, sub, true) {
			n, err := c.Int64()
			errs[retry[j]] = refreshResult(ctx, n, err)
		}
	}
	return errs
}

func (b *redisBackend) refreshPipeline(ctx context.Context, reqs []RefreshRequest, eval bool) []*redis.Cmd {
	pipe := b.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(reqs))
	for i, r := range reqs {
		keys := []string{r.Keys.Lock}
		if eval {
			cmds[i] = refreshScript.Eval(ctx, pipe, keys, r.Token, ms(r.TTL))
		} else {
			cmds[i] = refreshScript.EvalSha(ctx, pipe, keys, r.Token, ms(r.TTL))
		}
	}
	_, _ = pipe.Exec(ctx) // per-command errors are read below
	return cmds
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
	return unavailable(err)
}

// ctxErr is ctx.Err(), except that a deadline already in the past counts
// as exceeded even if the context's own timer has not fired yet (go-redis
// turns the deadline into a socket timeout that can fire first).
func ctxErr(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
		return context.DeadlineExceeded
	}
	return nil
}
