package core

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

// renewer is the Client's watchdog: ONE goroutine renews every auto-refresh
// lock, batching the renewals that fall due together into one backend call
// (a pipeline), so 1 000 held locks cost a handful of round trips per
// interval rather than 1 000.
type renewer struct {
	c       *Client
	mu      sync.Mutex
	h       lockHeap
	wake    chan struct{}
	done    chan struct{}
	wg      sync.WaitGroup
	started bool
	stopped bool
}

func (r *renewer) init(c *Client) {
	r.c = c
	r.wake = make(chan struct{}, 1)
	r.done = make(chan struct{})
}

func (r *renewer) add(l *Lock) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || l.heapIdx >= 0 {
		return
	}
	l.due = time.Now().Add(l.cfg.renewEvery())
	heap.Push(&r.h, l)
	if !r.started {
		r.started = true
		r.wg.Add(1)
		go r.run()
	}
	if r.h[0] == l {
		r.signal()
	}
}

func (r *renewer) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *renewer) remove(l *Lock) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if l.heapIdx >= 0 {
		heap.Remove(&r.h, l.heapIdx)
	}
}

func (r *renewer) stop() {
	r.mu.Lock()
	r.stopped = true
	started := r.started
	r.mu.Unlock()
	if started {
		close(r.done)
		r.wg.Wait()
	}
}

func (r *renewer) run() {
	defer r.wg.Done()
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		r.mu.Lock()
		next := time.Hour
		if len(r.h) > 0 {
			next = time.Until(r.h[0].due)
		}
		r.mu.Unlock()
		t.Reset(max(next, 0))
		select {
		case <-r.done:
			return
		case <-r.wake:
			continue
		case <-t.C:
		}
		r.renewDue()
	}
}

// renewDue sends one batch with every lock that is due, or within half of
// its interval of being due.
func (r *renewer) renewDue() {
	now := time.Now()
	var batch []*Lock
	timeout := time.Duration(0)
	r.mu.Lock()
	for len(r.h) > 0 {
		l := r.h[0]
		every := l.cfg.renewEvery()
		if l.due.Sub(now) > every/2 {
			break
		}
		heap.Pop(&r.h)
		if l.cfg.maxHold > 0 && now.Sub(l.start)+l.TTL() > l.cfg.maxHold {
			// The cap is reached: stop renewing; the lease runs out and the
			// validity timer tells the holder.
			continue
		}
		batch = append(batch, l)
		if timeout == 0 || every < timeout {
			timeout = every
		}
	}
	r.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	reqs := make([]RefreshRequest, len(batch))
	for i, l := range batch {
		reqs[i] = RefreshRequest{Keys: l.keys, Token: l.token, TTL: l.TTL()}
	}
	// A renewal is useful until the earliest validity deadline in the batch:
	// a slow one that still lands before it keeps the locks (and counts from
	// when it was sent), so bound the call by that, not by the interval.
	earliest := time.Duration(-1)
	for _, l := range batch {
		if d := time.Until(l.Deadline()); earliest < 0 || d < earliest {
			earliest = d
		}
	}
	timeout = max(timeout, earliest)
	ctx, cancel := context.WithTimeout(context.Background(), max(timeout, 20*time.Millisecond))
	sent := time.Now()
	errs := r.c.b.Refresh(ctx, reqs)
	cancel()
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, l := range batch {
		r.mu.Unlock()
		r.c.afterRefresh(context.Background(), l, sent, reqs[i].TTL, errs[i], true)
		held := !l.ended()
		r.mu.Lock()
		if !held || r.stopped || l.heapIdx >= 0 {
			continue
		}
		every := l.cfg.renewEvery()
		if errs[i] == nil {
			l.due = sent.Add(every)
		} else {
			l.due = time.Now().Add(every / 2) // retry sooner; the deadline timer bounds it
		}
		heap.Push(&r.h, l)
	}
}

// lockHeap orders locks by their next renewal.
type lockHeap []*Lock

func (h lockHeap) Len() int           { return len(h) }
func (h lockHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h lockHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx, h[j].heapIdx = i, j
}
func (h *lockHeap) Push(x any) {
	l := x.(*Lock)
	l.heapIdx = len(*h)
	*h = append(*h, l)
}
func (h *lockHeap) Pop() any {
	old := *h
	n := len(old)
	l := old[n-1]
	old[n-1] = nil
	l.heapIdx = -1
	*h = old[:n-1]
	return l
}
