package core

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Locker is what adapters depend on: something that hands out Locks.
// *Client implements it for every backend; package locktest provides an
// in-memory one for tests.
type Locker interface {
	// Acquire waits until the lock on key is granted, the WithWait bound
	// passes, or ctx ends. A wait that ends without the lock returns an
	// error matching ErrNotAcquired (joined with ctx.Err() when the context
	// ended it).
	Acquire(ctx context.Context, key string, opts ...Option) (*Lock, error)
	// TryAcquire makes one attempt; a lock held elsewhere is ErrNotAcquired.
	TryAcquire(ctx context.Context, key string, opts ...Option) (*Lock, error)
}

// Client hands out locks from one Backend. It is safe for concurrent use;
// create one per process (per backend) and share it. Close it to stop its
// goroutines.
type Client struct {
	b   Backend
	cfg config

	mu      sync.Mutex
	queues  map[string]*keyQueue // by backend lock key
	held    map[*Lock]struct{}
	closed  bool
	closeCh chan struct{}
	bg      sync.WaitGroup // best-effort clean-ups

	rn renewer
}

var _ Locker = (*Client)(nil)

// New returns a Client on one Redis deployment: *redis.Client, a Sentinel
// failover client, *redis.ClusterClient or *redis.Ring through
// redis.UniversalClient. Options set the defaults for every acquisition.
// The Client does not close rdb.
func New(rdb redis.UniversalClient, opts ...Option) *Client {
	if rdb == nil {
		panic("core: New with a nil redis client")
	}
	return NewWithBackend(NewRedisBackend(rdb), opts...)
}

// NewWithBackend returns a Client driving b. Close closes b.
func NewWithBackend(b Backend, opts ...Option) *Client {
	if b == nil {
		panic("core: NewWithBackend with a nil backend")
	}
	c := &Client{
		b:       b,
		cfg:     defaultConfig(),
		queues:  make(map[string]*keyQueue),
		held:    make(map[*Lock]struct{}),
		closeCh: make(chan struct{}),
	}
	for _, o := range opts {
		o(&c.cfg)
	}
	if !c.cfg.validPrefix() {
		panic("core: WithPrefix: a prefix must not contain '{' or '}'")
	}
	c.rn.init(c)
	return c
}

// Backend returns the backend the Client drives.
func (c *Client) Backend() Backend { return c.b }

// Acquire implements Locker.
func (c *Client) Acquire(ctx context.Context, key string, opts ...Option) (*Lock, error) {
	return c.acquire(ctx, key, false, opts)
}

// TryAcquire implements Locker.
func (c *Client) TryAcquire(ctx context.Context, key string, opts ...Option) (*Lock, error) {
	return c.acquire(ctx, key, true, opts)
}

// Close stops the watchdog and the subscription, ends the locks still held
// (they are released best-effort and report ErrLost wrapping ErrClosed),
// fails pending waits with ErrClosed, and closes the backend.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closeCh)
	locks := make([]*Lock, 0, len(c.held))
	for l := range c.held {
		locks = append(locks, l)
	}
	for _, q := range c.queues {
		for _, w := range q.waiters {
			w.ch <- grantMsg{closed: true}
		}
		q.waiters = nil
	}
	c.mu.Unlock()
	c.rn.stop()
	for _, l := range locks {
		cause := fmt.Errorf("%w: %w", ErrLost, ErrClosed)
		if l.end(stateLost, cause) {
			ctx, cancel := context.WithTimeout(context.Background(), l.cfg.releaseTimeout)
			_ = c.b.Release(ctx, l.keys, l.token)
			cancel()
			c.observeLost(l, cause)
		}
	}
	c.bg.Wait()
	return c.b.Close()
}

type acqStats struct {
	attempts  int
	contended bool
	handoff   bool
}

func (c *Client) acquire(ctx context.Context, key string, try bool, opts []Option) (*Lock, error) {
	cfg := c.cfg
	for _, o := range opts {
		o(&cfg)
	}
	if try {
		cfg.wait = 0
	}
	info := LockInfo{Key: key, Name: cfg.name, Prefix: cfg.prefix, Backend: c.b.Name()}
	start := time.Now()
	octx := cfg.observer.AcquireStart(ctx, AcquireStartEvent{LockInfo: info, TTL: cfg.ttl, Wait: cfg.wait})
	l, st, err := c.acquireInner(octx, key, &cfg)
	data := cfg.observer.AcquireEnd(octx, AcquireEndEvent{
		LockInfo: info, Acquired: l != nil, Err: err, Fence: fenceOf(l),
		Attempts: st.attempts, Contended: st.contended, Handoff: st.handoff,
		Wait: time.Since(start),
	})
	if l == nil {
		return nil, err
	}
	l.data = data
	c.arm(l)
	return l, nil
}

func fenceOf(l *Lock) uint64 {
	if l == nil {
		return 0
	}
	return l.fence
}

func (c *Client) acquireInner(ctx context.Context, key string, cfg *config) (*Lock, acqStats, error) {
	var st acqStats
	if err := ValidateKey(key); err != nil {
		return nil, st, err
	}
	if !cfg.validPrefix() {
		return nil, st, fmt.Errorf("%w: prefix contains '{' or '}'", ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return nil, st, fmt.Errorf("%w: %w", ErrNotAcquired, err)
	}
	keys := backendKeys(cfg.prefix, key)
	var waitUntil time.Time
	if cfg.wait > 0 {
		waitUntil = time.Now().Add(cfg.wait)
	}
	if !cfg.localQueue {
		if c.isClosed() {
			return nil, st, ErrClosed
		}
		return c.contend(ctx, key, keys, cfg, waitUntil, nil, &st)
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, st, ErrClosed
	}
	q := c.queues[keys.Lock]
	if q == nil {
		q = &keyQueue{}
		c.queues[keys.Lock] = q
	}
	if !q.holder && !q.contending {
		q.contending = true
		c.mu.Unlock()
		return c.contendHead(ctx, q, key, keys, cfg, waitUntil, &st)
	}
	st.contended = true
	if cfg.wait == 0 {
		ra := q.retryAfter()
		c.mu.Unlock()
		return nil, st, &ContentionError{RetryAfter: ra}
	}
	w := &waiter{ch: make(chan grantMsg, 1), cfg: cfg}
	q.waiters = append(q.waiters, w)
	c.mu.Unlock()

	var waitC <-chan time.Time
	if !waitUntil.IsZero() {
		t := time.NewTimer(time.Until(waitUntil))
		defer t.Stop()
		waitC = t.C
	}
	select {
	case m := <-w.ch:
		return c.granted(ctx, q, key, keys, cfg, waitUntil, m, &st)
	case <-ctx.Done():
		return c.abandon(q, keys, w, ctx.Err(), &st)
	case <-waitC:
		return c.abandon(q, keys, w, nil, &st)
	}
}

func (c *Client) granted(ctx context.Context, q *keyQueue, key string, keys Keys, cfg *config, waitUntil time.Time, m grantMsg, st *acqStats) (*Lock, acqStats, error) {
	switch {
	case m.closed:
		return nil, *st, ErrClosed
	case m.lock != nil:
		st.handoff = true
		return m.lock, *st, nil
	default: // our turn to contend in the backend
		if m.yield {
			// Remote waiters were notified of the release that ended a run
			// of local hand-offs: let one of them win before we try.
			_ = sleepCtx(ctx, yieldDelay)
		}
		return c.contendHead(ctx, q, key, keys, cfg, waitUntil, st)
	}
}

// abandon takes a waiter out of the local queue after its wait ended. If it
// was already picked, whatever it was given is passed on.
func (c *Client) abandon(q *keyQueue, keys Keys, w *waiter, cause error, st *acqStats) (*Lock, acqStats, error) {
	c.mu.Lock()
	if q.remove(w) {
		ra := q.retryAfter()
		c.mu.Unlock()
		return nil, *st, notAcquired(ra, st.attempts, cause)
	}
	c.mu.Unlock()
	m := <-w.ch // picked concurrently: the message is on its way
	switch {
	case m.lock != nil:
		c.arm(m.lock)
		ctx, cancel := context.WithTimeout(context.Background(), m.lock.cfg.releaseTimeout)
		_ = m.lock.Release(ctx)
		cancel()
	case !m.closed:
		c.mu.Lock()
		q.contending = false
		c.wakeNextLocked(q, keys.Lock)
		c.mu.Unlock()
	}
	return nil, *st, notAcquired(0, st.attempts, cause)
}

func notAcquired(retryAfter time.Duration, attempts int, cause error) error {
	ce := &ContentionError{RetryAfter: retryAfter, Attempts: attempts}
	if cause != nil {
		return fmt.Errorf("%w: %w", ce, cause)
	}
	return ce
}

// contendHead runs the backend wait as the head of the local queue and then
// hands the head role on if it did not get the lock.
func (c *Client) contendHead(ctx context.Context, q *keyQueue, key string, keys Keys, cfg *config, waitUntil time.Time, st *acqStats) (*Lock, acqStats, error) {
	l, _, err := c.contend(ctx, key, keys, cfg, waitUntil, q, st)
	c.mu.Lock()
	q.contending = false
	if l != nil {
		q.holder, q.holderLock, q.handoffs = true, l, 0
	} else {
		c.wakeNextLocked(q, keys.Lock)
	}
	c.mu.Unlock()
	return l, *st, err
}

// wakeNextLocked gives the head role to the next local waiter, or drops the
// queue when nobody needs it. c.mu must be held.
func (c *Client) wakeNextLocked(q *keyQueue, lockKey string) {
	if q.holder || q.contending {
		return
	}
	if len(q.waiters) > 0 {
		w := q.pop()
		q.contending = true
		w.ch <- grantMsg{yield: q.yield}
		return
	}
	if c.queues[lockKey] == q {
		delete(c.queues, lockKey)
	}
}

// contend asks the backend until it grants the lock, the wait bound passes
// or ctx ends. Between attempts it sleeps until a release notice arrives or
// the holder's lease runs out; it never polls on a fixed timer.
func (c *Client) contend(ctx context.Context, key string, keys Keys, cfg *config, waitUntil time.Time, q *keyQueue, st *acqStats) (*Lock, acqStats, error) {
	token := newToken() // one token for all attempts: a retry that finds it is ours
	notice := make(chan struct{}, 1)
	notify := func() {
		select {
		case notice <- struct{}{}:
		default:
		}
	}
	var unsub func()
	defer func() {
		if unsub != nil {
			unsub()
		}
	}()
	woken, lostRaces := false, 0
	if nw, ok := c.b.(NativeWaiter); ok && cfg.wait != 0 {
		return c.contendNative(ctx, nw, key, keys, cfg, token, waitUntil, st)
	}
	for {
		st.attempts++
		sent := time.Now()
		g, err := c.b.Acquire(ctx, keys, token, cfg.ttl)
		if err != nil {
			// The command may have reached Redis before the failure: undo
			// it best-effort, off the caller's path.
			c.cleanup(keys, token, cfg)
			if cerr := ctxErr(ctx); cerr != nil {
				return nil, *st, notAcquired(0, st.attempts, cerr)
			}
			return nil, *st, err
		}
		if g.Acquired {
			return c.newLock(key, keys, cfg, token, g.Fence, sent), *st, nil
		}
		st.contended = true
		if woken {
			lostRaces++
		}
		if q != nil {
			c.mu.Lock()
			q.lastTTL, q.lastSeen = g.HolderTTL, time.Now()
			c.mu.Unlock()
		}
		if cfg.wait == 0 || (!waitUntil.IsZero() && !time.Now().Before(waitUntil)) {
			return nil, *st, notAcquired(g.HolderTTL, st.attempts, nil)
		}
		wait := g.HolderTTL
		if wait <= 0 {
			wait = time.Millisecond
		}
		if !waitUntil.IsZero() {
			wait = min(wait, time.Until(waitUntil))
		}
		if unsub == nil {
			// Subscribe, then try again at once: a release between our
			// attempt and the subscription would otherwise be missed.
			sctx, cancel := context.WithTimeout(ctx, wait)
			u, serr := c.b.Subscribe(sctx, keys, notify)
			cancel()
			if serr == nil {
				unsub = u
				woken = false
				continue
			}
			if cerr := ctx.Err(); cerr != nil {
				return nil, *st, notAcquired(g.HolderTTL, st.attempts, cerr)
			}
			if errors.Is(serr, ErrClosed) {
				return nil, *st, ErrClosed
			}
			// No subscription (slow or failing pub/sub): the lease timer
			// below still bounds the wait.
		}
		t := time.NewTimer(wait)
		woken = false
		select {
		case <-notice:
			woken = true
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, *st, notAcquired(g.HolderTTL, st.attempts, ctx.Err())
		case <-c.closeCh:
			t.Stop()
			return nil, *st, ErrClosed
		}
		t.Stop()
		if woken {
			// Every process waiting on the key got the same notice, in the
			// order the server keeps its subscribers: without a random
			// spread the first subscriber would win every time. The spread
			// shrinks with the races this waiter already lost, so the
			// longest-waiting process tends to go first.
			j := time.Duration(rand.Int64N(int64(noticeSpread) / int64(1+lostRaces)))
			if err := sleepCtx(ctx, j); err != nil {
				return nil, *st, notAcquired(g.HolderTTL, st.attempts, err)
			}
		}
	}
}

// contendNative lets a backend that queues waiters itself do the waiting.
func (c *Client) contendNative(ctx context.Context, nw NativeWaiter, key string, keys Keys, cfg *config, token string, waitUntil time.Time, st *acqStats) (*Lock, acqStats, error) {
	st.attempts++
	sent := time.Now()
	g, err := nw.AcquireWait(ctx, keys, token, cfg.ttl, waitUntil)
	if err != nil {
		c.cleanup(keys, token, cfg)
		if cerr := ctx.Err(); cerr != nil {
			return nil, *st, notAcquired(0, st.attempts, cerr)
		}
		return nil, *st, err
	}
	if !g.Acquired {
		st.contended = true
		return nil, *st, notAcquired(g.HolderTTL, st.attempts, nil)
	}
	// The wait may have been long: the lease runs from the send time the
	// backend reports for the command that granted (or last renewed) it.
	if !g.Sent.IsZero() {
		sent = g.Sent
	}
	return c.newLock(key, keys, cfg, token, g.Fence, sent), *st, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// cleanup releases a token whose acquire may have landed, with a detached
// context of its own, in the background (Close waits for it).
func (c *Client) cleanup(keys Keys, token string, cfg *config) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.bg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.bg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), cfg.releaseTimeout)
		defer cancel()
		_ = c.b.Release(ctx, keys, token)
	}()
}

func (c *Client) newLock(key string, keys Keys, cfg *config, token string, fence uint64, sent time.Time) *Lock {
	return &Lock{
		c: c, key: key, prefix: cfg.prefix, keys: keys, token: token, fence: fence,
		cfg: *cfg, start: sent, done: make(chan struct{}), ttl: cfg.ttl,
		deadline: sent.Add(cfg.ttl - cfg.driftFor(cfg.ttl)), heapIdx: -1,
	}
}

// arm starts the lock's validity timer and, if asked, its watchdog.
func (c *Client) arm(l *Lock) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cause := fmt.Errorf("%w: %w", ErrLost, ErrClosed)
		if l.end(stateLost, cause) {
			c.cleanup(l.keys, l.token, &l.cfg)
			c.observeLost(l, cause)
		}
		return
	}
	c.held[l] = struct{}{}
	c.mu.Unlock()
	l.mu.Lock()
	if l.state == stateHeld {
		l.expiry = time.AfterFunc(time.Until(l.deadline), func() { c.expire(l) })
	}
	l.mu.Unlock()
	if l.cfg.autoRefresh {
		c.rn.add(l)
	}
}

// expire runs at the lock's validity deadline.
func (c *Client) expire(l *Lock) {
	l.mu.Lock()
	if l.state != stateHeld {
		l.mu.Unlock()
		return
	}
	if d := time.Until(l.deadline); d > 0 { // renewed meanwhile
		l.expiry.Reset(d)
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	var cause error
	if l.cfg.maxHold > 0 && time.Since(l.start) >= l.cfg.maxHold-l.TTL() {
		cause = fmt.Errorf("%w: %w", ErrLost, ErrHoldCapReached)
	} else {
		cause = fmt.Errorf("%w: %w: not renewed before its validity deadline", ErrLost, ErrLeaseExpired)
	}
	c.lose(l, cause)
}

func (c *Client) lose(l *Lock, cause error) {
	if !l.end(stateLost, cause) {
		return
	}
	c.forget(l)
	c.observeLost(l, cause)
}

func (c *Client) observeLost(l *Lock, cause error) {
	l.cfg.observer.Lost(LostEvent{LockInfo: l.info(), Fence: l.fence, Held: time.Since(l.start), Cause: cause, Data: l.data})
}

// forget drops every reference the Client keeps to an ended lock and lets
// the next local waiter contend.
func (c *Client) forget(l *Lock) { c.forgetYield(l, false) }

// forgetYield is forget; with yield the next local waiter first gives
// waiters in other processes, who were just notified, a head start.
func (c *Client) forgetYield(l *Lock, yield bool) {
	c.rn.remove(l)
	c.mu.Lock()
	delete(c.held, l)
	if q := c.queues[l.keys.Lock]; q != nil && q.holderLock == l {
		q.holder, q.holderLock, q.handoffs = false, nil, 0
		q.yield = yield
		c.wakeNextLocked(q, l.keys.Lock)
		q.yield = false
	}
	c.mu.Unlock()
}

func (c *Client) release(ctx context.Context, l *Lock) error {
	if err := l.heldErr(); err != nil {
		return err
	}
	c.mu.Lock()
	q := c.queues[l.keys.Lock]
	var w *waiter
	if q != nil && q.holderLock == l && len(q.waiters) > 0 && q.handoffs < l.cfg.handoffLimit && !c.closed {
		w = q.pop()
		q.handoffs++
		q.handoffTotal++
	}
	c.mu.Unlock()
	if w != nil {
		return c.handoff(ctx, q, l, w)
	}
	var err error
	yield := false
	if rw, ok := c.b.(remoteWaiters); ok {
		yield, err = rw.ReleaseWaiters(ctx, l.keys, l.token)
	} else {
		err = c.b.Release(ctx, l.keys, l.token)
	}
	held := time.Since(l.start)
	if errors.Is(err, ErrNotHeld) {
		// The lease ran out before the release: a loss, reported as one.
		cause := fmt.Errorf("%w: %w: found at release", ErrLost, ErrLeaseExpired)
		if l.end(stateLost, cause) {
			c.forget(l)
			c.observeLost(l, cause)
		}
		return fmt.Errorf("%w: %w", ErrNotHeld, cause)
	}
	// On a transport error the lease may still run in the backend; it
	// expires there on its own. Locally the lock is over either way.
	if l.end(stateReleased, nil) {
		c.forgetYield(l, yield)
		l.cfg.observer.Released(ctx, ReleaseEvent{LockInfo: l.info(), Fence: l.fence, Held: held, Err: err, Data: l.data})
	}
	return err
}

// handoff passes a held lock to the next local waiter in one round trip.
func (c *Client) handoff(ctx context.Context, q *keyQueue, l *Lock, w *waiter) error {
	tok := newToken()
	sent := time.Now()
	g, err := c.b.Handoff(ctx, l.keys, l.token, tok, w.cfg.ttl)
	held := time.Since(l.start)
	if err != nil {
		var cause error
		var ended bool
		if errors.Is(err, ErrNotHeld) {
			cause = fmt.Errorf("%w: %w: found at release", ErrLost, ErrLeaseExpired)
			ended = l.end(stateLost, cause)
			err = fmt.Errorf("%w: %w", ErrNotHeld, cause)
		} else {
			ended = l.end(stateReleased, nil)
		}
		c.rn.remove(l)
		c.mu.Lock()
		delete(c.held, l)
		if q.holderLock == l {
			q.holder, q.holderLock, q.handoffs = false, nil, 0
		}
		q.contending = true
		c.mu.Unlock()
		w.ch <- grantMsg{} // the waiter contends in the backend instead
		switch {
		case ended && cause != nil:
			c.observeLost(l, cause)
		case ended:
			l.cfg.observer.Released(ctx, ReleaseEvent{LockInfo: l.info(), Fence: l.fence, Held: held, Err: err, Data: l.data})
		}
		return err
	}
	nl := c.newLock(l.key, l.keys, w.cfg, tok, g.Fence, sent)
	nl.handoff = true
	c.mu.Lock()
	q.holder, q.holderLock = true, nl
	delete(c.held, l)
	c.mu.Unlock()
	ended := l.end(stateReleased, nil)
	c.rn.remove(l)
	w.ch <- grantMsg{lock: nl}
	if ended {
		l.cfg.observer.Released(ctx, ReleaseEvent{LockInfo: l.info(), Fence: l.fence, Held: held, Handoff: true, Data: l.data})
	}
	return nil
}

// afterRefresh applies the outcome of a renewal sent at sent.
func (c *Client) afterRefresh(ctx context.Context, l *Lock, sent time.Time, ttl time.Duration, err error, auto bool) {
	switch {
	case err == nil:
		l.mu.Lock()
		if l.state == stateHeld {
			l.ttl = ttl
			l.renewals++
			l.deadline = sent.Add(ttl - l.cfg.driftFor(ttl))
			if l.expiry != nil {
				l.expiry.Reset(time.Until(l.deadline))
			}
		}
		l.mu.Unlock()
	}
	// Report the renewal before a loss it reveals, so the loss is the last
	// event of the lock.
	l.cfg.observer.Refreshed(ctx, RefreshEvent{LockInfo: l.info(), Fence: l.fence, Auto: auto, Err: err, Data: l.data})
	if errors.Is(err, ErrNotHeld) {
		c.lose(l, fmt.Errorf("%w: %w", ErrLost, ErrOwnerChanged))
	}
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// keyQueue orders the goroutines of this Client that want the same key, so
// that only the head contends in the backend.
type keyQueue struct {
	holder       bool  // a lock on the key is held through this Client
	holderLock   *Lock // that lock
	contending   bool  // a goroutine is asking the backend
	waiters      []*waiter
	handoffs     int // consecutive local hand-offs
	handoffTotal int // every local hand-off since the queue formed
	yield        bool
	lastTTL      time.Duration
	lastSeen     time.Time
}

type waiter struct {
	ch  chan grantMsg // buffered(1): senders never block
	cfg *config
}

type grantMsg struct {
	lock   *Lock // handed off
	closed bool  // the Client closed
	yield  bool  // contend, but after yieldDelay
}

// yieldDelay is how long a local waiter stands back after a release that
// notified remote waiters; it covers their notice and one round trip.
const yieldDelay = time.Millisecond

// noticeSpread is the window over which waiters woken by one release notice
// spread their next attempt (scaled down by how often each already lost).
const noticeSpread = time.Millisecond

func (q *keyQueue) pop() *waiter {
	w := q.waiters[0]
	q.waiters[0] = nil
	q.waiters = q.waiters[1:]
	return w
}

func (q *keyQueue) remove(w *waiter) bool {
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			return true
		}
	}
	return false
}

func (q *keyQueue) retryAfter() time.Duration {
	if q.holderLock != nil {
		if d := time.Until(q.holderLock.Deadline()); d > 0 {
			return d
		}
	}
	if !q.lastSeen.IsZero() {
		if d := q.lastTTL - time.Since(q.lastSeen); d > 0 {
			return d
		}
	}
	return 0
}
