package core

import (
	"context"
	"fmt"
	"sync"

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
	// AcquireAll takes the locks on every key or none, in backend-key
	// order, under one wait budget (see Client.AcquireAll).
	AcquireAll(ctx context.Context, keys []string, opts ...Option) ([]*Lock, error)
}

// Client hands out locks from one Backend. It is safe for concurrent use;
// create one per process (per backend) and share it. Close it to stop its
// goroutines.
type Client struct {
	b   Backend
	cfg config
	clk Clock

	mu      sync.Mutex
	queues  map[string]*keyQueue  // by backend lock key
	gates   map[string]*shareGate // shared and permit requests, by gateKey
	held    map[*Lock]struct{}
	closed  bool
	closeCh chan struct{}
	bg      sync.WaitGroup // clean-up releases

	rn renewer
}

var _ Locker = (*Client)(nil)

// New returns a Client on one Redis deployment: *redis.Client, a Sentinel
// failover client, *redis.ClusterClient or *redis.Ring, through
// redis.UniversalClient. It takes call, Client and Redis options (see
// Option); call options set the defaults of every acquisition. The Client
// does not close rdb.
func New(rdb redis.UniversalClient, opts ...Option) *Client {
	if rdb == nil {
		panic("core: New with a nil redis client")
	}
	cfg := defaultConfig()
	mustApply(&cfg, opts, scopesNew, "New")
	return newClient(newRedisBackend(rdb, cfg.redis), cfg)
}

// NewWithBackend returns a Client driving b. It takes call and Client
// options. Close closes b.
func NewWithBackend(b Backend, opts ...Option) *Client {
	if b == nil {
		panic("core: NewWithBackend with a nil backend")
	}
	cfg := defaultConfig()
	mustApply(&cfg, opts, scopesClient, "NewWithBackend")
	return newClient(b, cfg)
}

func newClient(b Backend, cfg config) *Client {
	if !cfg.validPrefix() {
		panic("core: WithPrefix: a prefix must not contain '{' or '}'")
	}
	c := &Client{
		b:       b,
		cfg:     cfg,
		clk:     cfg.clock,
		queues:  make(map[string]*keyQueue),
		gates:   make(map[string]*shareGate),
		held:    make(map[*Lock]struct{}),
		closeCh: make(chan struct{}),
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

func (c *Client) acquire(ctx context.Context, key string, try bool, opts []Option) (*Lock, error) {
	cfg := c.cfg
	if err := applyOptions(&cfg, opts, scopeCall, "Acquire"); err != nil {
		return nil, err
	}
	if try {
		cfg.wait = 0
	}
	info := LockInfo{Key: key, Name: cfg.name, Prefix: cfg.prefix, Backend: c.b.Name(), Mode: cfg.mode}
	start := c.clk.Now()
	octx := cfg.observer.AcquireStart(ctx, AcquireStartEvent{LockInfo: info, TTL: cfg.ttl, Wait: cfg.wait})
	a := &acquisition{c: c, key: key, cfg: &cfg}
	l, err := a.run(octx)
	data := cfg.observer.AcquireEnd(octx, AcquireEndEvent{
		LockInfo: info, Acquired: l != nil, Err: err, Fence: l.fenceOrZero(),
		Attempts: a.stats.attempts, Contended: a.stats.contended, Handoff: a.stats.handoff,
		Wait: c.clk.Now().Sub(start),
	})
	if l == nil {
		return nil, err
	}
	l.data = data
	c.arm(l)
	return l, nil
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
	for _, g := range c.gates {
		for _, w := range g.waiters {
			w.ch <- grantMsg{closed: true}
		}
		g.waiters = nil
	}
	c.mu.Unlock()
	c.rn.stop()
	for _, l := range locks {
		if c.end(l, ending{lost: fmt.Errorf("%w: %w", ErrLost, ErrClosed)}) {
			ctx, cancel := context.WithTimeout(context.Background(), l.cfg.releaseTimeout)
			_, _ = c.b.Release(ctx, l.hold())
			cancel()
		}
	}
	c.bg.Wait()
	return c.b.Close()
}

// arm starts the lock's validity timer and, if asked, its watchdog.
func (c *Client) arm(l *Lock) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		if c.end(l, ending{lost: fmt.Errorf("%w: %w", ErrLost, ErrClosed)}) {
			c.undoAcquire(l.hold(), &l.cfg)
		}
		return
	}
	c.held[l] = struct{}{}
	c.mu.Unlock()
	l.mu.Lock()
	if l.state == stateHeld {
		l.timer = c.clk.AfterFunc(l.deadline.Sub(c.clk.Now()), func() { c.deadlinePassed(l) })
	}
	l.mu.Unlock()
	switch {
	case !l.confirmBy.IsZero():
		c.rn.addAt(l, l.confirmBy)
	case l.cfg.autoRefresh:
		c.rn.add(l)
	}
}

// undoAcquire releases a token whose acquire may have landed, with a
// detached context of its own, in the background (Close waits for it).
func (c *Client) undoAcquire(h Hold, cfg *config) {
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
		_, _ = c.b.Release(ctx, h)
	}()
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
