package core

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

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
