package core

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewRedlock returns a Client on a Redlock set: N independent Redis
// servers (no replication between them), of which a majority must grant
// every lock. Options set the defaults for every acquisition, as for New.
// The Client does not close the node clients.
//
// Give each node client a ReadTimeout (or ContextTimeoutEnabled) in
// proportion to the TTLs you use: the backend stops waiting for a node
// after its node timeout, and the client's own timeout ends the socket
// wait. For other settings use NewRedlockBackend and NewWithBackend.
func NewRedlock(nodes []redis.UniversalClient, opts ...Option) *Client {
	return NewWithBackend(NewRedlockBackend(nodes), opts...)
}

// RedlockOption configures the Redlock backend.
type RedlockOption func(*redlockBackend)

// WithQuorum sets how many nodes must agree (default: a majority, 3 of 5).
// It must be a majority: more than half of the nodes, at most all of them.
func WithQuorum(n int) RedlockOption { return func(b *redlockBackend) { b.quorum = n } }

// WithNodeTimeout bounds how long one node is waited for per call. The
// default is a tenth of the TTL but at least 200ms, and never more than
// the lease's validity. A grant does not wait for slow nodes once a quorum
// agreed, so the bound only decides how soon an attempt that cannot reach
// a quorum fails.
func WithNodeTimeout(d time.Duration) RedlockOption {
	if d <= 0 {
		panic("core: WithNodeTimeout needs a positive duration")
	}
	return func(b *redlockBackend) { b.timeout = d }
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

var _ remoteWaiters = (*redlockBackend)(nil)

// NewRedlockBackend returns the Backend behind NewRedlock. It panics when
// nodes is empty or holds a nil client, or when the quorum is not a
// majority.
func NewRedlockBackend(nodes []redis.UniversalClient, opts ...RedlockOption) Backend {
	if len(nodes) == 0 {
		panic("core: NewRedlockBackend with no nodes")
	}
	b := &redlockBackend{quorum: len(nodes)/2 + 1, live: make(map[string]*round[Grant]), subs: make(map[*redlockSub]struct{})}
	for i, rdb := range nodes {
		if rdb == nil {
			panic("core: NewRedlockBackend with a nil node client")
		}
		b.nodes = append(b.nodes, NewRedisBackend(rdb).(*redisBackend))
		b.all = append(b.all, i)
	}
	for _, o := range opts {
		o(b)
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

// quorumError reports that too few nodes agreed. It matches ErrQuorum and
// ErrUnavailable; the node errors are in the message only.
type quorumError struct {
	op       string
	ok, n, q int
	late     bool
	cause    error
}

func (e *quorumError) Error() string {
	msg := fmt.Sprintf("%s: %s: %d of %d nodes agreed, %d needed", ErrQuorum.Error(), e.op, e.ok, e.n, e.q)
	if e.late {
		msg += ", but only after the lease's validity"
	}
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

func (e *quorumError) Unwrap() []error { return []error{ErrQuorum, ErrUnavailable} }

// reply is one node's answer in a round.
type reply[T any] struct {
	node int
	val  T
	err  error
	// released: the answer came after the grant was released (see track)
	released bool
}

// round is one fan-out: each node is asked in its own goroutine and the
// caller reads answers until it has decided; answers that come after that
// go to the late handler given to finish.
type round[T any] struct {
	b    *redlockBackend
	ch   chan reply[T]
	left int // answers the caller has not read

	mu       sync.Mutex
	out      int  // answers neither read by the caller nor handled late
	done     bool // finish was called: answers go to late
	late     func(reply[T])
	idle     func() // called once every answer was handled
	released bool   // the grant was released or handed off (see track)
	waiting  []bool // by node: asked and not answered yet
}

// startRound asks nodes with fn. Each call gets a context of its own that
// the caller's cancellation does not end (an answer that lands must be
// seen, to be undone), bounded by timeout and the caller's deadline.
func startRound[T any](b *redlockBackend, ctx context.Context, timeout time.Duration, nodes []int, fn func(context.Context, *redisBackend) (T, error)) (*round[T], error) {
	rd := &round[T]{b: b, ch: make(chan reply[T], len(nodes)), left: len(nodes), out: len(nodes), waiting: make([]bool, len(b.nodes))}
	for _, i := range nodes {
		rd.waiting[i] = true
	}
	dl := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	base := context.WithoutCancel(ctx)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	b.wg.Add(len(nodes))
	b.mu.Unlock()
	for _, i := range nodes {
		go func() {
			defer b.wg.Done()
			nctx, cancel := context.WithDeadline(base, dl)
			v, err := fn(nctx, b.nodes[i])
			cancel()
			rd.deliver(reply[T]{node: i, val: v, err: err})
		}()
	}
	return rd, nil
}

func (rd *round[T]) deliver(r reply[T]) {
	rd.mu.Lock()
	rd.waiting[r.node] = false
	r.released = rd.released
	if !rd.done {
		rd.ch <- r // buffered for every node: never blocks
		rd.out--
		rd.mu.Unlock()
		return
	}
	late := rd.late
	rd.mu.Unlock()
	if late != nil {
		late(r)
	}
	rd.handled()
}

// handled counts one late answer as dealt with.
func (rd *round[T]) handled() {
	rd.mu.Lock()
	rd.out--
	idle := rd.idle
	last := rd.out == 0
	rd.mu.Unlock()
	if last && idle != nil {
		idle()
	}
}

// collect reads answers until stop reports a decision, every node
// answered, deadline passes or ctx ends.
func (rd *round[T]) collect(ctx context.Context, deadline time.Time, stop func(reply[T]) bool) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for rd.left > 0 {
		select {
		case r := <-rd.ch:
			rd.left--
			if stop(r) {
				return
			}
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// finish hands every answer not read yet, now or when it comes, to late
// (nil: drop them), and calls idle (if not nil) once all are handled.
func (rd *round[T]) finish(late func(reply[T]), idle func()) {
	rd.mu.Lock()
	rd.done, rd.late, rd.idle = true, late, idle
	var queued []reply[T]
	for len(rd.ch) > 0 {
		queued = append(queued, <-rd.ch)
	}
	rd.out += len(queued)
	last := rd.out == 0
	rd.mu.Unlock()
	if len(queued) > 0 {
		rd.b.spawn(func() {
			for _, r := range queued {
				if late != nil {
					late(r)
				}
				rd.handled()
			}
		})
	} else if last && idle != nil {
		idle()
	}
}

// markReleased records the release and returns the nodes whose answer is
// still out: the late handler releases there, once the grant landed.
func (rd *round[T]) markReleased() []bool {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	rd.released = true
	return slices.Clone(rd.waiting)
}

// track remembers the round that granted token while answers from slow
// nodes are still out. A release (or hand-off) of the token marks it, and
// a grant that lands on a slow node afterwards is released there by the
// round's late handler, after it landed: a release sent at once could
// overtake the acquire on another connection and leave it behind.
func (b *redlockBackend) track(token string, rd *round[Grant]) (untrack func()) {
	b.mu.Lock()
	b.live[token] = rd
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		if b.live[token] == rd {
			delete(b.live, token)
		}
		b.mu.Unlock()
	}
}

// released marks token's granting round, if it still waits for answers,
// and returns the nodes that the round's late handler will release (nil:
// none).
func (b *redlockBackend) released(token string) (later []bool) {
	b.mu.Lock()
	rd := b.live[token]
	delete(b.live, token)
	b.mu.Unlock()
	if rd == nil {
		return nil
	}
	return rd.markReleased()
}

// spawn runs f in a goroutine Close waits for (inline once closed).
func (b *redlockBackend) spawn(f func()) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		f()
		return
	}
	b.wg.Add(1)
	b.mu.Unlock()
	go func() {
		defer b.wg.Done()
		f()
	}()
}

type nodeFence struct {
	node  int
	fence uint64
}

func (b *redlockBackend) Acquire(ctx context.Context, keys Keys, token string, ttl time.Duration) (Grant, error) {
	seed := counterSeed()
	return b.grant(ctx, "acquire", keys, ttl, token, []string{token}, func(ctx context.Context, n *redisBackend) (Grant, error) {
		res, err := acquireScript.Run(ctx, n.rdb, []string{keys.Lock, keys.Fence}, token, ms(ttl), fenceTTL(ttl), seed).Int64Slice()
		if err != nil {
			return Grant{}, redisErr(ctx, err)
		}
		return grantFrom(res)
	})
}

func (b *redlockBackend) Handoff(ctx context.Context, keys Keys, from, to string, ttl time.Duration) (Grant, error) {
	seed := counterSeed()
	b.released(from)
	return b.grant(ctx, "hand-off", keys, ttl, to, []string{to, from}, func(ctx context.Context, n *redisBackend) (Grant, error) {
		res, err := handoffScript.Run(ctx, n.rdb, []string{keys.Lock, keys.Fence}, from, to, ms(ttl), fenceTTL(ttl), seed).Int64Slice()
		if err != nil {
			return Grant{}, redisErr(ctx, err)
		}
		g, err := grantFrom(res)
		if err == nil && !g.Acquired {
			return g, ErrNotHeld
		}
		return g, err
	})
}

// counterSeed is the value a node starts a missing fence counter from: the
// caller's clock in microseconds, the same for every node of one attempt,
// so that nodes creating a key's counter together agree on it and the
// grant needs no second round. Like the server clock the single-node
// script uses, it is above every fence issued before as long as clocks are
// not set back by more than the age of the counter that was lost.
func counterSeed() string { return strconv.FormatInt(time.Now().UnixMicro(), 10) }

// grant runs an acquire or a hand-off on every node. It succeeds when a
// quorum granted, the fence is on a quorum and the answers came within the
// lease's validity; otherwise the tokens in undo are released on every
// node that granted or may have.
func (b *redlockBackend) grant(ctx context.Context, op string, keys Keys, ttl time.Duration, token string, undo []string, run func(context.Context, *redisBackend) (Grant, error)) (Grant, error) {
	start := time.Now()
	timeout := b.nodeTimeout(ttl)
	n, q := len(b.nodes), b.quorum
	rd, err := startRound(b, ctx, timeout, b.all, run)
	if err != nil {
		return Grant{}, err
	}
	var (
		granted  []nodeFence
		held     []time.Duration // the holder's lease on nodes that refused
		failed   []int
		firstErr error
	)
	classify := func(r reply[Grant]) {
		switch {
		case r.err == nil && r.val.Acquired:
			granted = append(granted, nodeFence{r.node, r.val.Fence})
		case r.err == nil || errors.Is(r.err, ErrNotHeld):
			held = append(held, r.val.HolderTTL)
		default:
			failed = append(failed, r.node)
			if firstErr == nil {
				firstErr = r.err
			}
		}
	}
	rd.collect(ctx, start.Add(timeout), func(r reply[Grant]) bool {
		classify(r)
		return len(granted) >= q || len(held) > n-q
	})

	var fence uint64
	for _, g := range granted {
		fence = max(fence, g.fence)
	}
	ok := len(granted) >= q && ctxErr(ctx) == nil
	if ok {
		ok = b.raise(ctx, keys, ttl, timeout, granted, fence)
	}
	late := ok && time.Since(start) > validity(ttl)
	if ok && !late {
		untrack := b.track(token, rd)
		rd.finish(func(r reply[Grant]) {
			switch {
			case r.released && (r.err == nil && r.val.Acquired || r.err != nil && !errors.Is(r.err, ErrNotHeld)):
				// granted, or may have been, after the lock was given up
				b.releaseOn(r.node, keys, []string{token})
			case r.err != nil || !r.val.Acquired:
			case r.val.Fence < fence && !b.noRaise:
				_ = b.raiseOn(r.node, keys, ttl, fence) // best effort: keeps the nodes in step
			}
		}, untrack)
		return Grant{Acquired: true, Fence: fence}, nil
	}

	// Failed. The Client retries a refused acquire with the same token, so
	// nothing may be released after we return: hear from the nodes still
	// out (within the same deadline), then undo what was granted, or may
	// have been, before returning.
	rd.collect(ctx, start.Add(timeout), func(r reply[Grant]) bool {
		classify(r)
		return false
	})
	targets := slices.Clone(failed)
	for _, g := range granted {
		targets = append(targets, g.node)
	}
	b.releaseAll(ctx, keys, undo, targets)

	switch {
	case ctxErr(ctx) != nil:
		err = ctxErr(ctx)
	case len(held) > n-q && op == "hand-off":
		err = ErrNotHeld
	case len(held) > n-q:
		// Refused: answers later than the deadline are dropped; a grant
		// among them is ours to reuse on the next attempt, or expires.
		rd.finish(nil, nil)
		return Grant{HolderTTL: holderTTL(held, n, q)}, nil
	default:
		err = &quorumError{op: op, ok: len(granted), n: n, q: q, late: late, cause: firstErr}
	}
	// On an error the Client gives the token up, so a late grant is undone.
	rd.finish(func(r reply[Grant]) {
		if r.err == nil && r.val.Acquired || r.err != nil && !errors.Is(r.err, ErrNotHeld) {
			b.releaseOn(r.node, keys, undo)
		}
	}, nil)
	return Grant{}, err
}

// holderTTL estimates when the key can be had: once q nodes are free. The
// nodes that did not refuse count as free; the others free up as their
// leases run out.
func holderTTL(held []time.Duration, n, q int) time.Duration {
	slices.Sort(held)
	need := q - (n - len(held))
	if need < 1 {
		need = 1
	}
	return max(held[need-1], 0)
}

// raise makes sure the fence is on every node that granted it, at least a
// quorum: the nodes whose counter lagged are raised, and the grant fails
// unless a quorum holds the fence afterwards.
func (b *redlockBackend) raise(ctx context.Context, keys Keys, ttl, timeout time.Duration, granted []nodeFence, fence uint64) bool {
	at := 0
	var lag []int
	for _, g := range granted {
		if g.fence >= fence {
			at++
		} else {
			lag = append(lag, g.node)
		}
	}
	if len(lag) == 0 || b.noRaise {
		return true
	}
	rd, err := startRound(b, ctx, timeout, lag, func(ctx context.Context, n *redisBackend) (struct{}, error) {
		return struct{}{}, raiseFence(ctx, n, keys, ttl, fence)
	})
	if err != nil {
		return false
	}
	rd.collect(ctx, time.Now().Add(timeout), func(r reply[struct{}]) bool {
		if r.err == nil {
			at++
		}
		return false // wait for all of them: the more nodes hold it, the more can fail
	})
	rd.finish(nil, nil)
	return at >= b.quorum
}

func raiseFence(ctx context.Context, n *redisBackend, keys Keys, ttl time.Duration, fence uint64) error {
	err := raiseScript.Run(ctx, n.rdb, []string{keys.Fence}, strconv.FormatUint(fence, 10), fenceTTL(ttl)).Err()
	if err != nil {
		return redisErr(ctx, err)
	}
	return nil
}

// raiseOn raises one node's counter with a context of its own.
func (b *redlockBackend) raiseOn(node int, keys Keys, ttl time.Duration, fence uint64) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.nodeTimeout(ttl))
	defer cancel()
	return raiseFence(ctx, b.nodes[node], keys, ttl, fence)
}

// releaseOn releases tokens on one node with a context of its own.
func (b *redlockBackend) releaseOn(node int, keys Keys, tokens []string) {
	ctx, cancel := context.WithTimeout(context.Background(), b.nodeTimeout(DefaultTTL))
	defer cancel()
	for _, tok := range tokens {
		_ = b.nodes[node].Release(ctx, keys, tok)
	}
}

// releaseAll releases tokens on nodes and waits for them (bounded by the
// node timeout), so that an attempt that failed leaves no partial grant
// for the next one to trip over.
func (b *redlockBackend) releaseAll(ctx context.Context, keys Keys, tokens []string, nodes []int) {
	if len(nodes) == 0 {
		return
	}
	timeout := b.nodeTimeout(DefaultTTL)
	ctx = context.WithoutCancel(ctx)
	rd, err := startRound(b, ctx, timeout, nodes, func(ctx context.Context, n *redisBackend) (struct{}, error) {
		for _, tok := range tokens {
			_ = n.Release(ctx, keys, tok)
		}
		return struct{}{}, nil
	})
	if err != nil {
		return
	}
	rd.collect(ctx, time.Now().Add(timeout), func(reply[struct{}]) bool { return false })
	rd.finish(nil, nil)
}

func (b *redlockBackend) Release(ctx context.Context, keys Keys, token string) error {
	_, err := b.ReleaseWaiters(ctx, keys, token)
	return err
}

// ReleaseWaiters releases on every node and returns once a quorum
// released (the rest finish in the background) or a quorum says the
// token is gone (ErrNotHeld). othersWaiting is true when any node's
// notice reached a waiter in another process.
func (b *redlockBackend) ReleaseWaiters(ctx context.Context, keys Keys, token string) (bool, error) {
	nodes := b.all
	if later := b.released(token); later != nil {
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
		return nd.ReleaseWaiters(ctx, keys, token)
	})
	if err != nil {
		return false, err
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
		return others, nil
	case notHeld > n-q:
		return false, ErrNotHeld
	}
	if cerr := ctxErr(ctx); cerr != nil {
		return false, cerr
	}
	return false, &quorumError{op: "release", ok: ok, n: n, q: q, cause: firstErr}
}

// Refresh renews on every node (one pipelined batch per node) and counts
// per lease: a quorum renewed is success, a quorum that no longer has the
// token is ErrNotHeld, anything else is a quorum error and the watchdog
// tries again before the validity deadline.
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
		return nd.Refresh(ctx, reqs), nil
	})
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		return errs
	}
	ok := make([]int, len(reqs))
	notHeld := make([]int, len(reqs))
	causes := make([]error, len(reqs))
	decided := func(i int) bool { return ok[i] >= q || notHeld[i] > n-q }
	open := len(reqs)
	rd.collect(ctx, time.Now().Add(timeout), func(r reply[[]error]) bool {
		for i, e := range r.val {
			was := decided(i)
			switch {
			case e == nil:
				ok[i]++
			case errors.Is(e, ErrNotHeld):
				notHeld[i]++
			case causes[i] == nil:
				causes[i] = e
			}
			if !was && decided(i) {
				open--
			}
		}
		return open == 0
	})
	rd.finish(nil, nil)
	cerr := ctxErr(ctx)
	for i := range reqs {
		switch {
		case ok[i] >= q:
		case notHeld[i] > n-q:
			errs[i] = ErrNotHeld
		case cerr != nil:
			errs[i] = cerr
		default:
			errs[i] = &quorumError{op: "refresh", ok: ok[i], n: n, q: q, cause: causes[i]}
		}
	}
	return errs
}

// Subscribe subscribes on every node (a notice from any of them wakes the
// waiter) and returns once a quorum confirmed, or every node answered and
// at least one confirmed. Nodes that confirm later join the subscription.
func (b *redlockBackend) Subscribe(ctx context.Context, keys Keys, notify func()) (func(), error) {
	n := len(b.nodes)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	// The node subscriptions outlive this call (the slow ones join later)
	// and end with the subscription or with Close.
	sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
	sub := &redlockSub{cancel: scancel}
	sub.forget = func() {
		b.mu.Lock()
		delete(b.subs, sub)
		b.mu.Unlock()
	}
	b.subs[sub] = struct{}{}
	answers := make(chan error, n)
	b.wg.Add(n)
	b.mu.Unlock()
	for _, nd := range b.nodes {
		go func() {
			defer b.wg.Done()
			c, err := nd.Subscribe(sctx, keys, notify)
			if err == nil && !sub.add(c) {
				c()
			}
			answers <- err
		}()
	}
	confirmed, answered := 0, 0
	var firstErr error
	for answered < n && confirmed < b.quorum {
		select {
		case err := <-answers:
			answered++
			if err == nil {
				confirmed++
			} else if firstErr == nil {
				firstErr = err
			}
		case <-ctx.Done():
			sub.stop()
			return nil, ctx.Err()
		}
	}
	if confirmed == 0 {
		sub.stop()
		return nil, firstErr
	}
	return sub.stop, nil
}

// redlockSub is one waiter's subscription on every node.
type redlockSub struct {
	cancel context.CancelFunc // ends subscriptions still pending
	forget func()             // drops it from the backend's list

	mu      sync.Mutex
	stopped bool
	cancels []func()
}

func (s *redlockSub) add(c func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return false
	}
	s.cancels = append(s.cancels, c)
	return true
}

func (s *redlockSub) stop() {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	cs := s.cancels
	s.cancels = nil
	s.mu.Unlock()
	s.cancel()
	s.forget()
	for _, c := range cs {
		c()
	}
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
