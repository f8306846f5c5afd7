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

func (r *renewer) add(l *Lock) { r.addAt(l, r.c.clk.Now().Add(l.cfg.renewEvery())) }

// addAt schedules l's next renewal at due.
func (r *renewer) addAt(l *Lock, due time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || l.heapIdx >= 0 {
		return
	}
	l.due = due
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
	clk := r.c.clk
	t := clk.NewTimer(time.Hour)
	defer t.Stop()
	for {
		r.mu.Lock()
		next := time.Hour
		if len(r.h) > 0 {
			next = r.h[0].due.Sub(clk.Now())
		}
		r.mu.Unlock()
		t.Stop()
		t.Reset(max(next, 0))
		select {
		case <-r.done:
			return
		case <-r.wake:
			continue
		case <-t.C():
		}
		r.renewDue()
	}
}

// renewDue sends one batch with every lock that is due, or within half of
// its interval of being due.
func (r *renewer) renewDue() {
	clk := r.c.clk
	batch, reqs, timeout := r.collectDue(clk.Now())
	if len(batch) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), max(timeout, 20*time.Millisecond))
	sent := clk.Now()
	errs := r.c.b.Refresh(ctx, reqs)
	cancel()
	for i, l := range batch {
		r.c.renewed(context.Background(), l, renewOutcome{sent: sent, lease: reqs[i].TTL, err: errs[i], auto: true})
		r.reschedule(l, sent, errs[i])
	}
}

// collectDue takes the due locks off the heap and builds their renewals.
// Locks whose lease already ends at the WithMaxHold cap are dropped: their
// lease runs out and the validity timer tells the holder. The timeout is
// how long the batch is worth waiting for.
func (r *renewer) collectDue(now time.Time) ([]*Lock, []RefreshRequest, time.Duration) {
	var (
		batch           []*Lock
		reqs            []RefreshRequest
		every, earliest time.Duration = -1, -1
	)
	r.mu.Lock()
	for len(r.h) > 0 {
		l := r.h[0]
		e := l.cfg.renewEvery()
		if l.due.Sub(now) > e/2 {
			break
		}
		heap.Pop(&r.h)
		req, err := l.renewal(l.TTL(), now)
		if err != nil {
			continue
		}
		batch, reqs = append(batch, l), append(reqs, req)
		if every < 0 || e < every {
			every = e
		}
		if d := l.Deadline().Sub(now); earliest < 0 || d < earliest {
			earliest = d
		}
	}
	r.mu.Unlock()
	// A renewal is useful until the earliest validity deadline in the
	// batch: a slow one that still lands before it keeps the locks (and
	// counts from when it was sent), so bound the call by that, not only
	// by the interval.
	return batch, reqs, max(every, earliest)
}

// reschedule puts l back on the heap after a renewal sent at sent.
func (r *renewer) reschedule(l *Lock, sent time.Time, err error) {
	held := l.isHeld()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !held || r.stopped || l.heapIdx >= 0 {
		return
	}
	if !l.cfg.autoRefresh && err == nil {
		return // the confirmation of a store-queue grant, without a watchdog
	}
	every := l.cfg.renewEvery()
	if err == nil {
		l.due = sent.Add(every)
	} else {
		l.due = r.c.clk.Now().Add(every / 2) // retry sooner; the deadline timer bounds it
	}
	heap.Push(&r.h, l)
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
