// Package locktest provides an in-memory core.Locker for testing code that
// uses locks (handlers behind httpmw, ginmw or grpcmw, jobs using sqlguard)
// without Redis, in the spirit of net/http/httptest.
//
// The fake runs the real core.Client over an in-process Backend, so leases,
// fences, waiting, the watchdog and loss notices behave as in production;
// only the storage is a map. Locks are shared by every Client made from the
// same Store, which stands in for one Redis.
package locktest

import (
	"context"
	"sync"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// Store is the shared in-memory state, like one Redis server.
type Store struct {
	clock  core.Clock
	mu     sync.Mutex
	locks  map[string]entry
	fences map[string]uint64
	subs   map[string]map[*subscriber]struct{}
	down   bool
	shares map[string]*shareSet            // shared and permit holders, by lock key
	claims map[string]map[string]time.Time // waiting writers' claims, by lock key
}

// subscriber is one Subscribe registration, remembered with the backend
// (the Client) that made it so a release can tell local from remote
// waiters.
type subscriber struct {
	owner  *backend
	notify func()
}

type entry struct {
	token   string
	expires time.Time // monotonic
}

// NewStore returns an empty store on the system clock.
func NewStore() *Store { return NewStoreWithClock(nil) }

// NewStoreWithClock returns an empty store whose leases run on clk (a
// *Clock, typically), and whose Clients read the same clock. A nil clk
// means the system clock.
func NewStoreWithClock(clk core.Clock) *Store {
	return &Store{
		clock:  clk,
		locks:  make(map[string]entry),
		fences: make(map[string]uint64),
		subs:   make(map[string]map[*subscriber]struct{}),
		shares: make(map[string]*shareSet),
		claims: make(map[string]map[string]time.Time),
	}
}

func (s *Store) now() time.Time {
	if s.clock == nil {
		return time.Now()
	}
	return s.clock.Now()
}

// New returns a Client on a fresh Store. Close it when done.
func New(opts ...core.Option) *core.Client { return NewStore().Client(opts...) }

// Client returns a new core.Client sharing s. When the Store has a clock,
// the Client uses it too (options given later may override it).
func (s *Store) Client(opts ...core.Option) *core.Client {
	if s.clock != nil {
		opts = append([]core.Option{core.WithClock(s.clock)}, opts...)
	}
	return core.NewWithBackend(&backend{s: s}, opts...)
}

// SetDown makes every backend call fail as if the store were unreachable
// (core.ErrUnavailable), to test fail-closed and fail-open paths.
func (s *Store) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// Expire drops the lease of key (under prefix) at once, as if it timed out,
// without telling the holder; its watchdog or deadline notices.
func (s *Store) Expire(prefix, key string) {
	s.mu.Lock()
	delete(s.locks, core.KeysFor(prefix, key).Lock)
	delete(s.shares, core.KeysFor(prefix, key).Lock)
	s.mu.Unlock()
}

// DeleteRaw removes a backend key (as core.KeysFor names it).
func (s *Store) DeleteRaw(key string) {
	s.mu.Lock()
	delete(s.locks, key)
	s.mu.Unlock()
}

// Held reports whether key (under prefix) is currently held.
func (s *Store) Held(prefix, key string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := core.KeysFor(prefix, key).Lock
	_, ok := s.live(k)
	return ok || s.liveShares(k) != nil
}

func (s *Store) live(k string) (entry, bool) {
	e, ok := s.locks[k]
	if ok && !s.now().Before(e.expires) {
		delete(s.locks, k)
		return entry{}, false
	}
	return e, ok
}

type backend struct{ s *Store }

var errDown = core.Unavailable(errStoreDown{})

type errStoreDown struct{}

func (errStoreDown) Error() string { return "locktest: store is down" }

func (b *backend) Name() string { return "memory" }

func (b *backend) Acquire(_ context.Context, h core.Hold, ttl time.Duration) (core.Grant, error) {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return core.Grant{}, errDown
	}
	if h.Mode != core.Exclusive {
		return s.acquireShared(h, ttl)
	}
	keys := h.Keys
	if set := s.liveShares(keys.Lock); set != nil {
		return s.refuseWriter(h, set, ttl), nil
	}
	if h.Claimed {
		delete(s.claims[keys.Lock], h.Token)
	}
	if e, ok := s.live(keys.Lock); ok {
		if e.token == h.Token {
			s.locks[keys.Lock] = entry{token: h.Token, expires: s.now().Add(ttl)}
			return core.Grant{Acquired: true, Fence: s.fences[keys.Fence]}, nil
		}
		return core.Grant{HolderTTL: e.expires.Sub(s.now())}, nil
	}
	s.locks[keys.Lock] = entry{token: h.Token, expires: s.now().Add(ttl)}
	s.fences[keys.Fence]++
	return core.Grant{Acquired: true, Fence: s.fences[keys.Fence]}, nil
}

func (b *backend) Handoff(_ context.Context, from core.Hold, to string, ttl time.Duration) (core.Grant, error) {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return core.Grant{}, errDown
	}
	keys := from.Keys
	e, ok := s.live(keys.Lock)
	if !ok || (e.token != from.Token && e.token != to) {
		return core.Grant{}, core.ErrNotHeld
	}
	if e.token == from.Token {
		s.fences[keys.Fence]++
	}
	s.locks[keys.Lock] = entry{token: to, expires: s.now().Add(ttl)}
	return core.Grant{Acquired: true, Fence: s.fences[keys.Fence]}, nil
}

func (b *backend) Release(_ context.Context, h core.Hold) (core.Released, error) {
	s := b.s
	s.mu.Lock()
	if s.down {
		s.mu.Unlock()
		return core.Released{}, errDown
	}
	withdrew := h.Claimed && s.withdrawClaim(h)
	var ok bool
	if h.Mode != core.Exclusive {
		ok = s.releaseShared(h)
	} else {
		var e entry
		e, ok = s.live(h.Keys.Lock)
		ok = ok && e.token == h.Token
		if ok {
			delete(s.locks, h.Keys.Lock)
		}
	}
	if !ok && !withdrew {
		s.mu.Unlock()
		return core.Released{}, core.ErrNotHeld
	}
	var fns []func()
	var rel core.Released
	for sub := range s.subs[h.Keys.Channel] {
		fns = append(fns, sub.notify)
		if sub.owner != b {
			rel.RemoteWaiters = true
		}
	}
	s.mu.Unlock()
	defer func() {
		for _, f := range fns {
			f()
		}
	}()
	if !ok {
		return core.Released{}, core.ErrNotHeld
	}
	return rel, nil
}

func (b *backend) Refresh(_ context.Context, reqs []core.RefreshRequest) []error {
	s := b.s
	s.mu.Lock()
	defer s.mu.Unlock()
	errs := make([]error, len(reqs))
	for i, r := range reqs {
		if s.down {
			errs[i] = errDown
			continue
		}
		if r.Mode != core.Exclusive {
			errs[i] = s.refreshShared(r)
			continue
		}
		e, ok := s.live(r.Keys.Lock)
		if !ok || e.token != r.Token {
			errs[i] = core.ErrNotHeld
			continue
		}
		s.locks[r.Keys.Lock] = entry{token: r.Token, expires: s.now().Add(r.TTL)}
	}
	return errs
}

func (b *backend) Subscribe(_ context.Context, keys core.Keys, notify func()) (func(), error) {
	s := b.s
	sub := &subscriber{owner: b, notify: notify}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.subs[keys.Channel] == nil {
		s.subs[keys.Channel] = make(map[*subscriber]struct{})
	}
	s.subs[keys.Channel][sub] = struct{}{}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs[keys.Channel], sub)
		if len(s.subs[keys.Channel]) == 0 {
			delete(s.subs, keys.Channel)
		}
	}, nil
}

func (b *backend) Close() error { return nil }
