package core

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// subscriber multiplexes every waiter of one Client over ONE pub/sub
// connection: a channel is subscribed while someone waits on it (plus a
// short linger to avoid subscribe churn) and each notice fans out to the
// local listeners.
type subscriber struct {
	rdb     redis.UniversalClient
	sharded bool
	linger  time.Duration

	mu      sync.Mutex
	ps      *redis.PubSub
	msgs    <-chan any
	loopWG  sync.WaitGroup
	chans   map[string]*subEntry
	pending map[string]int // SUBSCRIBE commands sent and not yet confirmed
	closed  bool
}

type subEntry struct {
	listeners map[*listener]struct{}
	ready     chan struct{} // closed once the server confirmed the subscription
	isReady   bool
	linger    *time.Timer
}

type listener struct{ fn func() }

func newSubscriber(rdb redis.UniversalClient, sharded bool) *subscriber {
	return &subscriber{
		rdb:     rdb,
		sharded: sharded,
		linger:  2 * time.Second,
		chans:   make(map[string]*subEntry),
		pending: make(map[string]int),
	}
}

func (s *subscriber) start() {
	if s.ps != nil {
		return
	}
	if s.sharded {
		s.ps = s.rdb.SSubscribe(context.Background())
	} else {
		s.ps = s.rdb.Subscribe(context.Background())
	}
	s.msgs = s.ps.ChannelWithSubscriptions(redis.WithChannelSize(256))
	s.loopWG.Add(1)
	go s.loop(s.msgs)
}

func (s *subscriber) send(ctx context.Context, ch string, sub bool) error {
	switch {
	case sub && s.sharded:
		return s.ps.SSubscribe(ctx, ch)
	case sub:
		return s.ps.Subscribe(ctx, ch)
	case s.sharded:
		return s.ps.SUnsubscribe(ctx, ch)
	default:
		return s.ps.Unsubscribe(ctx, ch)
	}
}

func (s *subscriber) subscribe(ctx context.Context, ch string, fn func()) (func(), error) {
	l := &listener{fn: fn}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	s.start()
	e := s.chans[ch]
	if e == nil {
		e = &subEntry{listeners: make(map[*listener]struct{}), ready: make(chan struct{})}
		s.chans[ch] = e
		s.pending[ch]++
		if err := s.send(ctx, ch, true); err != nil {
			s.pending[ch]--
			delete(s.chans, ch)
			s.mu.Unlock()
			return nil, redisErr(ctx, err)
		}
	}
	if e.linger != nil {
		e.linger.Stop()
		e.linger = nil
	}
	e.listeners[l] = struct{}{}
	ready := e.ready
	s.mu.Unlock()

	cancel := func() { s.remove(ch, e, l) }
	select {
	case <-ready:
		return cancel, nil
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	}
}

// has reports whether this connection is subscribed to ch.
func (s *subscriber) has(ch string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.chans[ch]
	return e != nil && e.isReady
}

func (s *subscriber) remove(ch string, e *subEntry, l *listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(e.listeners, l)
	if len(e.listeners) > 0 || s.closed || s.chans[ch] != e || e.linger != nil {
		return
	}
	e.linger = time.AfterFunc(s.linger, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.closed || s.chans[ch] != e || len(e.listeners) > 0 {
			return
		}
		delete(s.chans, ch)
		_ = s.send(context.Background(), ch, false)
	})
}

func (s *subscriber) loop(msgs <-chan any) {
	defer s.loopWG.Done()
	for m := range msgs {
		switch m := m.(type) {
		case *redis.Message:
			s.fire(m.Channel)
		case *redis.Subscription:
			if m.Kind != "subscribe" && m.Kind != "ssubscribe" {
				continue
			}
			s.confirmed(m.Channel)
		}
	}
}

func (s *subscriber) confirmed(ch string) {
	s.mu.Lock()
	if s.pending[ch] > 0 {
		s.pending[ch]--
		if s.pending[ch] == 0 {
			delete(s.pending, ch)
		}
	}
	e := s.chans[ch]
	if e == nil || s.pending[ch] > 0 {
		s.mu.Unlock()
		return
	}
	if !e.isReady {
		e.isReady = true
		close(e.ready)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	// A confirmation for a channel that was already live means go-redis
	// reconnected and subscribed again: notices may have been lost in the
	// gap, so wake the listeners to look for themselves.
	s.fire(ch)
}

func (s *subscriber) fire(ch string) {
	s.mu.Lock()
	e := s.chans[ch]
	var fns []func()
	if e != nil {
		for l := range e.listeners {
			fns = append(fns, l.fn)
		}
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

func (s *subscriber) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for _, e := range s.chans {
		if e.linger != nil {
			e.linger.Stop()
		}
	}
	ps := s.ps
	s.mu.Unlock()
	if ps != nil {
		_ = ps.Close()
		s.loopWG.Wait()
	}
}
