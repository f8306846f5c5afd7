package core

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewRedlock returns a Client on a Redlock set: N independent Redis
// servers (no replication between them), of which a majority must grant
// every lock. It takes call, Client, Redis and Redlock options (WithQuorum,
// WithNodeTimeout); call options set the defaults of every acquisition, as
// for New. The Client does not close the node clients.
//
// Give each node client a ReadTimeout (or ContextTimeoutEnabled) in
// proportion to the TTLs you use: the backend stops waiting for a node
// after its node timeout, and the client's own timeout ends the socket
// wait.
func NewRedlock(nodes []redis.UniversalClient, opts ...Option) *Client {
	cfg := defaultConfig()
	mustApply(&cfg, opts, scopesRedlock, "NewRedlock")
	return newClient(newRedlockBackend(nodes, cfg), cfg)
}

// NewRedlockBackend returns the Backend behind NewRedlock, for composing
// backends (NewShardedBackend over Redlock sets, LimitLocks). It takes Redis
// and Redlock options. It panics when nodes is empty or holds a nil client,
// or when the quorum is not a majority.
func NewRedlockBackend(nodes []redis.UniversalClient, opts ...Option) Backend {
	cfg := defaultConfig()
	mustApply(&cfg, opts, scopeRedis|scopeRedlock, "NewRedlockBackend")
	return newRedlockBackend(nodes, cfg)
}

// redlockConfig is what the Redlock options set (see Option).
type redlockConfig struct {
	quorum  int           // 0: a majority
	timeout time.Duration // per node; 0: from the TTL
	noRaise bool          // tests: the negative control without raising
}

func redlockOption(name string, f func(*redlockConfig)) Option {
	return &optionSpec{name: name, scope: scopeRedlock, apply: func(c *config) { f(&c.redlock) }}
}

// WithQuorum sets how many nodes must agree (default: a majority, 3 of 5).
// It must be a majority: more than half of the nodes, at most all of them.
// A Redlock option.
func WithQuorum(n int) Option {
	return redlockOption("WithQuorum", func(c *redlockConfig) { c.quorum = n })
}

// WithNodeTimeout bounds how long one node is waited for per call. The
// default is a tenth of the TTL but at least 200ms, and never more than
// the lease's validity. A grant does not wait for slow nodes once a quorum
// agreed, so the bound only decides how soon an attempt that cannot reach
// a quorum fails. A Redlock option.
func WithNodeTimeout(d time.Duration) Option {
	if d <= 0 {
		panic("core: WithNodeTimeout needs a positive duration")
	}
	return redlockOption("WithNodeTimeout", func(c *redlockConfig) { c.timeout = d })
}

// redlockBackend asks every node in parallel, one round trip each, and
// decides as soon as a quorum answered alike. Answers that arrive after
// the decision are not dropped: a grant that lands after its lock was
// released (or its attempt given up) is released there, once it landed; a
// lagging fence counter is raised.
//
// Fences. Every node keeps its own counter (the single-node acquire
// script: INCR; a missing counter starts from the acquiring client's clock
// in microseconds, see counterSeed). The fence of a grant is the maximum
// over the quorum that
// granted it, and before the grant is returned every granting node whose
// counter is lower is raised to it (a second round trip, needed only when
// the nodes disagree: after a node was unreachable or lost its data). So
// when a grant returns, a majority of nodes holds a counter >= its fence,
// and the next grant, whose majority shares a node with it, gets a higher
// one. See the README's topologies section for the assumptions.
type redlockBackend struct {
	nodes   []*redisBackend
	all     []int
	quorum  int
	timeout time.Duration // per node; 0: from the TTL
	noRaise bool          // tests: the negative control without raising

	mu     sync.Mutex
	closed bool
	live   map[string]*round[Grant] // grants with answers still out, by token
	subs   map[*redlockSub]struct{} // open subscriptions, ended by Close
	wg     sync.WaitGroup           // every goroutine of this backend
}

func newRedlockBackend(nodes []redis.UniversalClient, cfg config) *redlockBackend {
	if len(nodes) == 0 {
		panic("core: NewRedlock with no nodes")
	}
	rc := cfg.redlock
	b := &redlockBackend{
		quorum: len(nodes)/2 + 1, timeout: rc.timeout, noRaise: rc.noRaise,
		live: make(map[string]*round[Grant]), subs: make(map[*redlockSub]struct{}),
	}
	if rc.quorum != 0 {
		b.quorum = rc.quorum
	}
	for i, rdb := range nodes {
		if rdb == nil {
			panic("core: NewRedlock with a nil node client")
		}
		node := newRedisBackend(rdb, cfg.redis)
		node.noQueue = true
		b.nodes = append(b.nodes, node)
		b.all = append(b.all, i)
	}
	if b.quorum <= len(nodes)/2 || b.quorum > len(nodes) {
		panic("core: WithQuorum: the quorum must be a majority of the nodes")
	}
	return b
}

func (b *redlockBackend) Name() string { return "redlock" }

func (b *redlockBackend) nodeTimeout(ttl time.Duration) time.Duration {
	if b.timeout > 0 {
		return b.timeout
	}
	// A grant returns as soon as a quorum agreed, so a slow node only
	// delays a failure; the bound keeps that short without failing a
	// loaded but healthy node on short leases.
	return min(max(ttl/10, 200*time.Millisecond), max(validity(ttl), time.Millisecond))
}

// validity is what is left of a lease after the clock-drift allowance the
// Client uses by default (WithDrift): a quorum that answers later than
// this grants nothing usable.
func validity(ttl time.Duration) time.Duration {
	d := defaultConfig()
	return ttl - d.driftFor(ttl)
}

// Release releases on every node and returns once a quorum released (the
// rest finish in the background) or a quorum says the token is gone
// (ErrNotHeld). RemoteWaiters is true when any node's notice reached a
// waiter in another process.
func (b *redlockBackend) Release(ctx context.Context, h Hold) (Released, error) {
	nodes := b.all
	if later := b.released(h.Token); later != nil {
		nodes = nil
		for i, l := range later {
			if !l {
				nodes = append(nodes, i)
			}
		}
	}
	n, q := len(b.nodes), b.quorum
	timeout := b.nodeTimeout(DefaultTTL)
	rd, err := startRound(b, ctx, timeout, nodes, func(ctx context.Context, nd *redisBackend) (bool, error) {
		r, err := nd.Release(ctx, h)
		return r.RemoteWaiters, err
	})
	if err != nil {
		return Released{}, err
	}
	var (
		ok, notHeld int
		others      bool
		firstErr    error
	)
	rd.collect(ctx, time.Now().Add(timeout), func(r reply[bool]) bool {
		switch {
		case r.err == nil:
			ok++
			others = others || r.val
		case errors.Is(r.err, ErrNotHeld):
			notHeld++
		default:
			if firstErr == nil {
				firstErr = r.err
			}
		}
		return ok >= q || notHeld > n-q
	})
	rd.finish(nil, nil)
	switch {
	case ok >= q:
		return Released{RemoteWaiters: others}, nil
	case notHeld > n-q:
		return Released{}, ErrNotHeld
	}
	if cerr := ctxErr(ctx); cerr != nil {
		return Released{}, cerr
	}
	return Released{}, &quorumError{op: "release", ok: ok, n: n, q: q, cause: firstErr}
}

// Refresh renews on every node (one pipelined batch per node) and counts
// per lease: a quorum renewed is success, a quorum that no longer has the
// token is ErrNotHeld, anything else is a quorum error and the watchdog
// tries again before the validity deadline. A node that lost the key (it
// restarted empty) gets it back, with its fence counter raised to the
// hold's fence, and counts towards the quorum: otherwise the renewing
// majority would erode node by node while the holder believes it is safe.
// At least one node must still have held the token; a hold gone from every
// node is not revived.
func (b *redlockBackend) Refresh(ctx context.Context, reqs []RefreshRequest) []error {
	errs := make([]error, len(reqs))
	if len(reqs) == 0 {
		return errs
	}
	n, q := len(b.nodes), b.quorum
	shortest := reqs[0].TTL
	for _, r := range reqs {
		shortest = min(shortest, r.TTL)
	}
	timeout := b.nodeTimeout(shortest)
	rd, err := startRound(b, ctx, timeout, b.all, func(ctx context.Context, nd *redisBackend) ([]error, error) {
		return nd.renewOrRecreate(ctx, reqs), nil
	})
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	t := newRenewTally(len(reqs), n, q)
	rd.collect(ctx, time.Now().Add(timeout), func(r reply[[]error]) bool {
		return t.add(r.val)
	})
	rd.finish(nil, nil)
	cerr := ctxErr(ctx)
	for i := range reqs {
		errs[i] = t.verdict(i, cerr)
	}
	return errs
}

// Close ends pending subscriptions, closes every node's subscriber and
// waits for the backend's goroutines (late answers are bounded by the node
// timeout, or by the node client's own timeouts).
func (b *redlockBackend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := make([]*redlockSub, 0, len(b.subs))
	for sub := range b.subs {
		subs = append(subs, sub)
	}
	b.mu.Unlock()
	for _, sub := range subs {
		sub.cancel() // pending node subscriptions return; the rest close below
	}
	for _, nd := range b.nodes {
		_ = nd.Close()
	}
	b.wg.Wait()
	return nil
}

// renewTally counts one Redlock renewal round's node answers per lease.
type renewTally struct {
	n, q     int
	ok       []int // extended or re-created
	extended []int // still held the token
	notHeld  []int
	causes   []error
	open     int // leases not yet decided
}

func newRenewTally(leases, n, q int) *renewTally {
	return &renewTally{
		n: n, q: q, open: leases,
		ok: make([]int, leases), extended: make([]int, leases),
		notHeld: make([]int, leases), causes: make([]error, leases),
	}
}

func (t *renewTally) decided(i int) bool {
	return t.ok[i] >= t.q && t.extended[i] > 0 || t.notHeld[i] > t.n-t.q
}

// add counts one node's answers and reports whether every lease is decided.
func (t *renewTally) add(errs []error) bool {
	for i, e := range errs {
		was := t.decided(i)
		switch {
		case e == nil:
			t.ok[i]++
			t.extended[i]++
		case errors.Is(e, errRecreated):
			t.ok[i]++
		case errors.Is(e, ErrNotHeld):
			t.notHeld[i]++
		case t.causes[i] == nil:
			t.causes[i] = e
		}
		if !was && t.decided(i) {
			t.open--
		}
	}
	return t.open == 0
}

// verdict is lease i's result: a quorum renewed (with at least one node
// that still held it), not held, or a quorum error.
func (t *renewTally) verdict(i int, cerr error) error {
	switch {
	case t.ok[i] >= t.q && t.extended[i] > 0:
		return nil
	case t.notHeld[i] > t.n-t.q || t.ok[i] >= t.q:
		return ErrNotHeld
	case cerr != nil:
		return cerr
	default:
		return &quorumError{op: "refresh", ok: t.ok[i], n: t.n, q: t.q, cause: t.causes[i]}
	}
}
