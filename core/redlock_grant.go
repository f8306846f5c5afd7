package core

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"
)

type nodeFence struct {
	node  int
	fence uint64
}

// grantCall is one acquire or hand-off fanned out to every node.
type grantCall struct {
	op    string // "acquire" or "hand-off", for errors
	keys  Keys
	ttl   time.Duration
	token string   // the token the grant is for
	undo  []string // the tokens to release where the call failed
	run   func(context.Context, *redisBackend) (Grant, error)
}

func (b *redlockBackend) Acquire(ctx context.Context, h Hold, ttl time.Duration) (Grant, error) {
	if h.Mode != Exclusive {
		return Grant{}, fmt.Errorf("%w: Redlock takes exclusive holds only (asked for %s)", ErrModeUnsupported, h.Mode)
	}
	seed := counterSeed()
	return b.grant(ctx, &grantCall{op: "acquire", keys: h.Keys, ttl: ttl, token: h.Token, undo: []string{h.Token},
		run: func(ctx context.Context, n *redisBackend) (Grant, error) {
			res, err := acquireScript.Run(ctx, n.rdb, []string{h.Keys.Lock, h.Keys.Fence}, h.Token, ms(ttl), fenceTTL(ttl), seed).Int64Slice()
			if err != nil {
				return Grant{}, redisErr(ctx, err)
			}
			return grantFrom(res)
		}})
}

func (b *redlockBackend) Handoff(ctx context.Context, from Hold, to string, ttl time.Duration) (Grant, error) {
	seed := counterSeed()
	b.released(from.Token)
	keys := from.Keys
	return b.grant(ctx, &grantCall{op: "hand-off", keys: keys, ttl: ttl, token: to, undo: []string{to, from.Token},
		run: func(ctx context.Context, n *redisBackend) (Grant, error) {
			return n.runHandoff(ctx, from, to, ttl, seed)
		}})
}

// counterSeed is the value a node starts a missing fence counter from: the
// caller's clock in microseconds, the same for every node of one attempt,
// so that nodes creating a key's counter together agree on it and the
// grant needs no second round. Like the server clock the single-node
// script uses, it is above every fence issued before as long as clocks are
// not set back by more than the age of the counter that was lost.
func counterSeed() string { return strconv.FormatInt(time.Now().UnixMicro(), 10) }

// tally sorts the nodes' answers to one grantCall.
type tally struct {
	granted  []nodeFence
	held     []time.Duration // the holder's lease on nodes that refused
	failed   []int
	firstErr error
	late     bool // a quorum granted, but after the validity ran out
}

func (t *tally) add(r reply[Grant]) {
	switch {
	case r.err == nil && r.val.Acquired:
		t.granted = append(t.granted, nodeFence{r.node, r.val.Fence})
	case r.err == nil || errors.Is(r.err, ErrNotHeld):
		t.held = append(t.held, r.val.HolderTTL)
	default:
		t.failed = append(t.failed, r.node)
		if t.firstErr == nil {
			t.firstErr = r.err
		}
	}
}

func (t *tally) fence() uint64 {
	var f uint64
	for _, g := range t.granted {
		f = max(f, g.fence)
	}
	return f
}

// grant runs an acquire or a hand-off on every node. It succeeds when a
// quorum granted, the fence is on a quorum and the answers came within the
// lease's validity; otherwise the tokens in gc.undo are released on every
// node that granted or may have.
func (b *redlockBackend) grant(ctx context.Context, gc *grantCall) (Grant, error) {
	start := time.Now()
	timeout := b.nodeTimeout(gc.ttl)
	n, q := len(b.nodes), b.quorum
	rd, err := startRound(b, ctx, timeout, b.all, gc.run)
	if err != nil {
		return Grant{}, err
	}
	t := &tally{}
	rd.collect(ctx, start.Add(timeout), func(r reply[Grant]) bool {
		t.add(r)
		return len(t.granted) >= q || len(t.held) > n-q
	})
	fence := t.fence()
	ok := len(t.granted) >= q && ctxErr(ctx) == nil && b.raise(ctx, gc, timeout, t.granted, fence)
	late := ok && time.Since(start) > validity(gc.ttl)
	if ok && !late {
		b.granted(gc, rd, fence)
		return Grant{Acquired: true, Fence: fence}, nil
	}
	t.late = late
	return b.notGranted(ctx, gc, rd, t, start.Add(timeout))
}

// granted lets the answers still out land: a grant that lands after the
// lock was given up is released there, a lagging fence counter is raised.
func (b *redlockBackend) granted(gc *grantCall, rd *round[Grant], fence uint64) {
	untrack := b.track(gc.token, rd)
	rd.finish(func(r reply[Grant]) {
		switch {
		case r.released && (r.err == nil && r.val.Acquired || r.err != nil && !errors.Is(r.err, ErrNotHeld)):
			// granted, or may have been, after the lock was given up
			b.releaseOn(r.node, gc.keys, []string{gc.token})
		case r.err != nil || !r.val.Acquired:
		case r.val.Fence < fence && !b.noRaise:
			_ = b.raiseOn(r.node, gc.keys, gc.ttl, fence) // best effort: keeps the nodes in step
		}
	}, untrack)
}

// notGranted ends a grantCall that failed. The Client retries a refused
// acquire with the same token, so nothing may be released after it
// returns: it hears from the nodes still out (until deadline), then undoes
// what was granted, or may have been, before it returns.
func (b *redlockBackend) notGranted(ctx context.Context, gc *grantCall, rd *round[Grant], t *tally, deadline time.Time) (Grant, error) {
	n, q := len(b.nodes), b.quorum
	rd.collect(ctx, deadline, func(r reply[Grant]) bool {
		t.add(r)
		return false
	})
	targets := slices.Clone(t.failed)
	for _, g := range t.granted {
		targets = append(targets, g.node)
	}
	b.releaseAll(ctx, gc.keys, gc.undo, targets)

	var err error
	switch {
	case ctxErr(ctx) != nil:
		err = ctxErr(ctx)
	case len(t.held) > n-q && gc.op == "hand-off":
		err = ErrNotHeld
	case len(t.held) > n-q:
		// Refused: answers later than the deadline are dropped; a grant
		// among them is ours to reuse on the next attempt, or expires.
		rd.finish(nil, nil)
		return Grant{HolderTTL: holderTTL(t.held, n, q)}, nil
	default:
		err = &quorumError{op: gc.op, ok: len(t.granted), n: n, q: q, late: t.late, cause: t.firstErr}
	}
	// On an error the Client gives the token up, so a late grant is undone.
	rd.finish(func(r reply[Grant]) {
		if r.err == nil && r.val.Acquired || r.err != nil && !errors.Is(r.err, ErrNotHeld) {
			b.releaseOn(r.node, gc.keys, gc.undo)
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
func (b *redlockBackend) raise(ctx context.Context, gc *grantCall, timeout time.Duration, granted []nodeFence, fence uint64) bool {
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
		return struct{}{}, raiseFence(ctx, n, gc.keys, gc.ttl, fence)
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
		_, _ = b.nodes[node].Release(ctx, Hold{Keys: keys, Token: tok})
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
			_, _ = n.Release(ctx, Hold{Keys: keys, Token: tok})
		}
		return struct{}{}, nil
	})
	if err != nil {
		return
	}
	rd.collect(ctx, time.Now().Add(timeout), func(reply[struct{}]) bool { return false })
	rd.finish(nil, nil)
}
