package core

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// subscriber multiplexes every waiter of one Client over one pub/sub
// connection per node: a channel is subscribed while someone waits on it
// (plus a short linger to avoid subscribe churn) and each notice fans out
// to the local listeners.
//
// On a Ring there is one connection per shard, for the same reason.
//
// On a Cluster, release notices are shard channels (SSUBSCRIBE/SPUBLISH),
// and a shard channel can only be subscribed on the primary that owns its
// slot, so there is one connection per primary and each channel goes to
// the connection of its slot's owner. When a slot moves, the server
// unsubscribes its channels; the subscriber then subscribes them again
// where they now live and wakes their listeners, since a notice may have
// been missed in between.
type subscriber struct {
	rdb     redis.UniversalClient
	cluster *redis.ClusterClient // set when sharded channels are routed per primary
	ring    *redis.Ring          // set on a Ring: channels are routed per shard
	sharded bool
	linger  time.Duration

	mu      sync.Mutex
	conns   map[string]*subConn // by primary address; "" off Cluster
	loopWG  sync.WaitGroup
	chans   map[string]*subEntry
	pending map[string]int // SUBSCRIBE commands sent and not yet confirmed
	leaving map[string]int // UNSUBSCRIBE commands sent and not yet confirmed
	closed  bool

	done chan struct{} // closed by close: ends background re-routing
}

// subConn is one pub/sub connection and the goroutine reading it.
type subConn struct {
	addr string
	ps   *redis.PubSub
}

type subEntry struct {
	conn      *subConn
	listeners map[*listener]struct{}
	ready     chan struct{} // closed once the server confirmed the subscription
	isReady   bool
	linger    *time.Timer
}

// listener is one waiter's interest in a channel: fn for plain notices;
// for a waiter queued in the store (queue_remote.go) also grant, for grant
// notices, and id, the hash of its token that names it in them.
type listener struct {
	fn    func()
	id    string
	grant func(QueueNotice)
}

func newSubscriber(rdb redis.UniversalClient, sharded bool) *subscriber {
	s := &subscriber{
		rdb:     rdb,
		sharded: sharded,
		linger:  2 * time.Second,
		conns:   make(map[string]*subConn),
		chans:   make(map[string]*subEntry),
		pending: make(map[string]int),
		leaving: make(map[string]int),
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok && sharded {
		s.cluster = cc
	}
	if r, ok := rdb.(*redis.Ring); ok {
		s.ring = r
	}
	s.done = make(chan struct{})
	return s
}

// connFor returns the connection that must carry ch, starting it if
// needed. s.mu must be held.
func (s *subscriber) connFor(ctx context.Context, ch string) (*subConn, error) {
	var src redis.UniversalClient = s.rdb
	addr := ""
	switch {
	case s.cluster != nil:
		// A shard channel lives on the primary that owns its slot: the
		// connection is made from that node's own client, so it goes
		// exactly where the routing decision says.
		node, err := s.cluster.MasterForKey(ctx, ch)
		if err != nil {
			return nil, err
		}
		src, addr = node, node.Options().Addr
	case s.ring != nil:
		// A Ring publishes from the shard that owns the lock key (the
		// release script runs there), and the channel shares its hash tag:
		// listen on that shard. (A Ring's PubSub cannot start without a
		// channel, so it is made from the shard's own client.)
		node, err := s.ring.GetShardClientForKey(ch)
		if err != nil {
			return nil, err
		}
		src, addr = node, node.Options().Addr
	}
	if c := s.conns[addr]; c != nil {
		return c, nil
	}
	c := &subConn{addr: addr}
	if s.sharded {
		c.ps = src.SSubscribe(context.Background())
	} else {
		c.ps = src.Subscribe(context.Background())
	}
	msgs := c.ps.ChannelWithSubscriptions(redis.WithChannelSize(256))
	s.conns[addr] = c
	s.loopWG.Add(1)
	go s.loop(c, msgs)
	return c, nil
}

func (s *subscriber) send(ctx context.Context, c *subConn, ch string, sub bool) error {
	switch {
	case sub && s.sharded:
		return c.ps.SSubscribe(ctx, ch)
	case sub:
		return c.ps.Subscribe(ctx, ch)
	case s.sharded:
		return c.ps.SUnsubscribe(ctx, ch)
	default:
		return c.ps.Unsubscribe(ctx, ch)
	}
}

func (s *subscriber) subscribe(ctx context.Context, ch string, fn func()) (func(), error) {
	return s.listen(ctx, ch, &listener{fn: fn})
}

func (s *subscriber) listen(ctx context.Context, ch string, l *listener) (func(), error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	e := s.chans[ch]
	if e == nil {
		c, err := s.connFor(ctx, ch)
		if err != nil {
			s.mu.Unlock()
			return nil, redisErr(ctx, err)
		}
		e = &subEntry{conn: c, listeners: make(map[*listener]struct{}), ready: make(chan struct{})}
		s.chans[ch] = e
		s.pending[ch]++
		if err := s.send(ctx, c, ch, true); err != nil {
			s.donePending(ch)
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
		s.leaving[ch]++
		if s.send(context.Background(), e.conn, ch, false) != nil {
			s.doneLeaving(ch)
		}
	})
}

func (s *subscriber) loop(c *subConn, msgs <-chan any) {
	defer s.loopWG.Done()
	for m := range msgs {
		switch m := m.(type) {
		case *redis.Message:
			s.fire(m.Channel, m.Payload)
		case *redis.Subscription:
			switch m.Kind {
			case "subscribe", "ssubscribe":
				s.confirmed(m.Channel)
			case "unsubscribe", "sunsubscribe":
				s.unsubscribed(c, m.Channel)
			}
		}
	}
}

func (s *subscriber) donePending(ch string) {
	if s.pending[ch] > 0 {
		s.pending[ch]--
	}
	if s.pending[ch] == 0 {
		delete(s.pending, ch)
	}
}

func (s *subscriber) doneLeaving(ch string) {
	if s.leaving[ch] > 0 {
		s.leaving[ch]--
	}
	if s.leaving[ch] == 0 {
		delete(s.leaving, ch)
	}
}

func (s *subscriber) confirmed(ch string) {
	s.mu.Lock()
	s.donePending(ch)
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
	// reconnected and subscribed again, or the channel moved to another
	// primary: notices may have been lost in the gap, so wake the
	// listeners to look for themselves.
	s.fire(ch, "")
}

// unsubscribed handles an unsubscribe confirmation. Ours (a channel whose
// linger ran out) is expected; one we did not ask for comes from the
// server: on a Cluster, the channel's slot moved to another primary.
func (s *subscriber) unsubscribed(c *subConn, ch string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leaving[ch] > 0 {
		s.doneLeaving(ch)
		return
	}
	e := s.chans[ch]
	if s.closed || e == nil || e.conn != c || s.cluster == nil {
		return
	}
	// Wake the listeners at once (a notice may be lost while the channel
	// moves) and re-route off the reading goroutine: it has to wait for
	// the cluster.
	s.loopWG.Add(2)
	go func() {
		defer s.loopWG.Done()
		s.fire(ch, "")
	}()
	go func() {
		defer s.loopWG.Done()
		s.reroute(ch, e, c.addr)
	}()
}

// reroute subscribes ch again on the primary that owns its slot now. The
// confirmation wakes the listeners (see confirmed); without a subscription
// they rely on the lease timer.
func (s *subscriber) reroute(ch string, e *subEntry, old string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for s.pause(ctx, 0) {
		// go-redis learns of a moved slot from a redirection or a reload
		// that runs in the background, from a node that may not have heard
		// of the move yet; so wait for a new owner, and try again until the
		// subscription there is confirmed.
		s.cluster.ReloadState(ctx)
		node, err := s.cluster.MasterForKey(ctx, ch)
		if err != nil || node.Options().Addr == old {
			s.pause(ctx, 20*time.Millisecond)
			continue
		}
		if !s.resubscribe(ctx, ch, e) {
			return // gone, or the subscriber closed
		}
		for range 25 {
			if !s.pause(ctx, 20*time.Millisecond) || s.isConfirmed(ch, e) {
				return
			}
		}
	}
}

// pause waits d and reports whether to go on: false once ctx ended or
// the subscriber closed.
func (s *subscriber) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
}

func (s *subscriber) isConfirmed(ch string, e *subEntry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed || s.chans[ch] != e || s.pending[ch] == 0
}

// resubscribe moves ch from its connection to the one of its slot's
// current owner. It reports false when there is nothing to do.
func (s *subscriber) resubscribe(ctx context.Context, ch string, e *subEntry) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.chans[ch] != e {
		return false
	}
	// Forget the channel on the old connection, so that go-redis does not
	// subscribe it there again after a reconnect.
	s.leaving[ch]++
	if s.send(ctx, e.conn, ch, false) != nil {
		s.doneLeaving(ch)
	}
	c, err := s.connFor(ctx, ch)
	if err != nil {
		return true
	}
	e.conn = c
	delete(s.pending, ch) // an earlier try that never got its answer
	s.pending[ch]++
	if s.send(ctx, c, ch, true) != nil {
		s.donePending(ch)
	}
	return true
}

// fire passes a notice to ch's listeners. A grant notice (see
// parseGrant) wakes no one for a retry: the lock went to the waiter it
// names, and the other queued waiters only learn how long that grant's
// lease is. Any other notice (payload "" after a possible loss of notices)
// wakes every listener.
func (s *subscriber) fire(ch, payload string) {
	id, qn, isGrant := parseGrant(payload)
	s.mu.Lock()
	e := s.chans[ch]
	var fns []func()
	type grantCall struct {
		fn func(QueueNotice)
		n  QueueNotice
	}
	var grants []grantCall
	if e != nil {
		for l := range e.listeners {
			switch {
			case !isGrant:
				fns = append(fns, l.fn)
			case l.grant != nil:
				n := qn
				n.Mine = l.id == id
				grants = append(grants, grantCall{l.grant, n})
			}
		}
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
	for _, g := range grants {
		g.fn(g.n)
	}
}

func (s *subscriber) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	close(s.done)
	for _, e := range s.chans {
		if e.linger != nil {
			e.linger.Stop()
		}
	}
	conns := make([]*subConn, 0, len(s.conns))
	for _, c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.ps.Close()
	}
	s.loopWG.Wait()
}
