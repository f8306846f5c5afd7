package core

import (
	"context"
	"sync"
)

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
