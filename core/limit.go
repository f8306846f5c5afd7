package core

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"
)

// ErrLockLimit is matched by the error Acquire returns when a backend
// wrapped with LimitLocks already holds its maximum number of locks under
// the key's prefix. The error also matches ErrUnavailable, so adapters
// answer 503 / Unavailable without knowing about the limit.
var ErrLockLimit = errors.New("core: lock limit reached")

type lockLimitError struct{ max int }

func (e *lockLimitError) Error() string {
	return ErrLockLimit.Error() + ": " + strconv.Itoa(e.max) + " locks held under this prefix"
}

func (e *lockLimitError) Unwrap() []error { return []error{ErrLockLimit, ErrUnavailable} }

// LimitLocks wraps b so that at most max locks per key prefix are held
// through it at the same time. Use it when lock keys come from user input
// (a route parameter) and a flood of distinct keys must not turn into a
// flood of Redis keys: past the bound, Acquire fails at once with an error
// matching ErrLockLimit (and ErrUnavailable) without a round trip.
//
// The bound is local to the process (every Client on the returned Backend
// shares it); it counts a lock from its acquisition until its release or
// the end of its lease, whichever comes first. The Redis-wide total is the
// sum over processes. Fence counters outlive locks (24 h) and are not
// counted: they bound by distinct keys per day, not by concurrency.
//
//	locker := core.NewWithBackend(core.LimitLocks(core.NewRedisBackend(rdb), 10_000))
func LimitLocks(b Backend, max int) Backend {
	if b == nil {
		panic("core: LimitLocks with a nil backend")
	}
	if max < 1 {
		panic("core: LimitLocks needs max >= 1")
	}
	l := &limited{b: b, max: max, held: make(map[string]map[string]time.Time)}
	if nw, ok := b.(NativeWaiter); ok {
		return &limitedNative{limited: l, nw: nw}
	}
	return l
}

type limited struct {
	b   Backend
	max int

	mu   sync.Mutex
	held map[string]map[string]time.Time // prefix -> token -> end of lease (monotonic)
}

// reserve counts token under keys' prefix until end, unless the prefix is
// full. A token already counted (a retried acquire) always fits.
func (l *limited) reserve(keys Keys, token string, end time.Time) error {
	p := keys.Prefix
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.held[p]
	if m == nil {
		m = make(map[string]time.Time)
		l.held[p] = m
	}
	if _, ok := m[token]; !ok && len(m) >= l.max {
		now := time.Now()
		for t, e := range m {
			if !now.Before(e) {
				delete(m, t)
			}
		}
		if len(m) >= l.max {
			return &lockLimitError{max: l.max}
		}
	}
	m[token] = end
	return nil
}

func (l *limited) forget(keys Keys, token string) {
	p := keys.Prefix
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.held[p]; m != nil {
		delete(m, token)
		if len(m) == 0 {
			delete(l.held, p)
		}
	}
}

func (l *limited) extend(keys Keys, token string, end time.Time) {
	p := keys.Prefix
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := l.held[p]; m != nil {
		if _, ok := m[token]; ok {
			m[token] = end
		}
	}
}

func (l *limited) Name() string { return l.b.Name() }

func (l *limited) Acquire(ctx context.Context, h Hold, ttl time.Duration) (Grant, error) {
	sent := time.Now()
	if err := l.reserve(h.Keys, h.Token, sent.Add(ttl)); err != nil {
		return Grant{}, err
	}
	g, err := l.b.Acquire(ctx, h, ttl)
	if err != nil || !g.Acquired {
		// On an error the acquire may have landed; the Client releases it
		// best-effort, and a slot is not worth holding for a phantom.
		l.forget(h.Keys, h.Token)
	}
	return g, err
}

func (l *limited) Handoff(ctx context.Context, from Hold, to string, ttl time.Duration) (Grant, error) {
	sent := time.Now()
	g, err := l.b.Handoff(ctx, from, to, ttl)
	l.forget(from.Keys, from.Token)
	if err == nil && g.Acquired {
		// The lock changes owner, not count: never refused for the limit.
		p := from.Keys.Prefix
		l.mu.Lock()
		if l.held[p] == nil {
			l.held[p] = make(map[string]time.Time)
		}
		l.held[p][to] = sent.Add(ttl)
		l.mu.Unlock()
	}
	return g, err
}

func (l *limited) Release(ctx context.Context, h Hold) (Released, error) {
	r, err := l.b.Release(ctx, h)
	l.forget(h.Keys, h.Token)
	return r, err
}

func (l *limited) Refresh(ctx context.Context, reqs []RefreshRequest) []error {
	sent := time.Now()
	errs := l.b.Refresh(ctx, reqs)
	for i, r := range reqs {
		switch {
		case errs[i] == nil:
			l.extend(r.Keys, r.Token, sent.Add(r.TTL))
		case errors.Is(errs[i], ErrNotHeld):
			l.forget(r.Keys, r.Token)
		}
	}
	return errs
}

func (l *limited) Subscribe(ctx context.Context, keys Keys, notify func()) (func(), error) {
	return l.b.Subscribe(ctx, keys, notify)
}

func (l *limited) Close() error { return l.b.Close() }

// limitedNative is limited over a backend that queues waiters itself.
type limitedNative struct {
	*limited
	nw NativeWaiter
}

func (l *limitedNative) AcquireWait(ctx context.Context, h Hold, ttl time.Duration, until time.Time) (Grant, error) {
	if err := l.reserve(h.Keys, h.Token, time.Now().Add(ttl)); err != nil {
		return Grant{}, err
	}
	g, err := l.nw.AcquireWait(ctx, h, ttl, until)
	switch {
	case err != nil || !g.Acquired:
		l.forget(h.Keys, h.Token)
	case !g.Sent.IsZero():
		l.extend(h.Keys, h.Token, g.Sent.Add(ttl))
	}
	return g, err
}
