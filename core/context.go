package core

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

type lockCtxKey struct{}
type fenceCtxKey struct{}

// lockChain is the set of locks in a context, innermost first.
type lockChain struct {
	l    *Lock
	next *lockChain
}

// ContextWithLock returns a copy of ctx that carries l. Locks accumulate:
// FromContext returns the innermost, LocksFromContext all of them.
func ContextWithLock(ctx context.Context, l *Lock) context.Context {
	next, _ := ctx.Value(lockCtxKey{}).(*lockChain)
	return context.WithValue(ctx, lockCtxKey{}, &lockChain{l: l, next: next})
}

// FromContext returns the innermost lock carried by ctx.
func FromContext(ctx context.Context) (*Lock, bool) {
	c, _ := ctx.Value(lockCtxKey{}).(*lockChain)
	if c == nil {
		return nil, false
	}
	return c.l, true
}

// LocksFromContext returns every lock carried by ctx, innermost first.
func LocksFromContext(ctx context.Context) []*Lock {
	var out []*Lock
	for c, _ := ctx.Value(lockCtxKey{}).(*lockChain); c != nil; c = c.next {
		out = append(out, c.l)
	}
	return out
}

// HeldInContext returns the lock carried by ctx that locker holds on key
// (under the prefix that opts, over locker's defaults, give it), if it is
// still held. Adapters use it for reentrancy: a nested guard on the same
// lock proceeds without acquiring again. A lock of another Locker, or on the
// same key under another prefix, does not count. Only a *Client can match:
// for other Lockers it reports false.
func HeldInContext(ctx context.Context, locker Locker, key string, opts ...Option) (*Lock, bool) {
	c, ok := locker.(*Client)
	if !ok || c == nil {
		return nil, false
	}
	cfg := c.cfg
	if applyOptions(&cfg, opts, scopeCall, "HeldInContext") != nil || ValidateKey(key) != nil {
		return nil, false
	}
	lockKey := backendKeys(cfg.prefix, key).Lock
	for ch, _ := ctx.Value(lockCtxKey{}).(*lockChain); ch != nil; ch = ch.next {
		if ch.l.c == c && ch.l.keys.Lock == lockKey && ch.l.isHeld() {
			return ch.l, true
		}
	}
	return nil, false
}

// FenceToken is what travels to other services so they can guard their own
// writes: the lock key, the fence, and an owner id derived from (never equal
// to) the secret owner token.
type FenceToken struct {
	Key   string
	Fence uint64
	Owner string
}

// String encodes t for a header or metadata value:
// "<fence>;owner=<id>;key=<url-escaped key>".
func (t FenceToken) String() string {
	var b strings.Builder
	b.WriteString(strconv.FormatUint(t.Fence, 10))
	if t.Owner != "" {
		b.WriteString(";owner=")
		b.WriteString(url.QueryEscape(t.Owner))
	}
	b.WriteString(";key=")
	b.WriteString(url.QueryEscape(t.Key))
	return b.String()
}

// ParseFenceToken decodes the form written by FenceToken.String. Errors
// wrap ErrInvalidFence.
func ParseFenceToken(s string) (FenceToken, error) {
	parts := strings.Split(strings.TrimSpace(s), ";")
	f, err := strconv.ParseUint(strings.TrimSpace(parts[0]), 10, 64)
	if err != nil || f == 0 {
		return FenceToken{}, fmt.Errorf("%w: bad fence number", ErrInvalidFence)
	}
	t := FenceToken{Fence: f}
	for _, p := range parts[1:] {
		name, val, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok {
			return FenceToken{}, fmt.Errorf("%w: bad parameter", ErrInvalidFence)
		}
		v, err := url.QueryUnescape(val)
		if err != nil {
			return FenceToken{}, fmt.Errorf("%w: bad escaping", ErrInvalidFence)
		}
		switch name {
		case "key":
			t.Key = v
		case "owner":
			t.Owner = v
		}
	}
	if err := ValidateKey(t.Key); err != nil {
		return FenceToken{}, fmt.Errorf("%w: %w", ErrInvalidFence, err)
	}
	return t, nil
}

// ContextWithFence returns a copy of ctx carrying a fence received from an
// upstream service (see httpmw and grpcmw). FenceFromContext finds it.
func ContextWithFence(ctx context.Context, t FenceToken) context.Context {
	return context.WithValue(ctx, fenceCtxKey{}, t)
}

// FenceFromContext returns the fence that guards work done under ctx: the
// innermost lock's, or else one forwarded by an upstream service.
func FenceFromContext(ctx context.Context) (FenceToken, bool) {
	if l, ok := FromContext(ctx); ok {
		return l.FenceToken(), true
	}
	t, ok := ctx.Value(fenceCtxKey{}).(FenceToken)
	return t, ok
}
