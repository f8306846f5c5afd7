package core

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// AcquireAll takes the locks on every key or on none, for work that must
// hold several resources at once (a transfer between two accounts).
//
//   - Order: the locks are taken in the order of their backend keys, so two
//     callers asking for overlapping sets in any order cannot deadlock.
//   - Budget: WithWait bounds the wait for the whole set, not per key; once
//     it is spent, the remaining keys get one attempt each. Without WithWait
//     it waits until ctx ends.
//   - All or none: when a key cannot be had, the locks already taken are
//     released before AcquireAll returns its error: a *KeyError naming
//     the key, matching what Acquire returned for it (ErrNotAcquired,
//     ErrUnavailable, ErrInvalidKey, ...).
//
// Each lock is its own *Lock (own token, lease, watchdog renewal, loss
// notice and fence). The result follows the order of keys, with repeated
// keys taken once. Release each lock, or use ReleaseAll.
func (c *Client) AcquireAll(ctx context.Context, keys []string, opts ...Option) ([]*Lock, error) {
	cfg := c.cfg
	if err := applyOptions(&cfg, opts, scopeCall, "AcquireAll"); err != nil {
		return nil, err
	}
	order, err := lockOrder(cfg.prefix, keys)
	if err != nil {
		return nil, err
	}
	var until time.Time
	if cfg.wait > 0 {
		until = c.clk.Now().Add(cfg.wait)
	}
	byKey := make(map[string]*Lock, len(order))
	for _, key := range order {
		call := opts
		if !until.IsZero() {
			call = append(slices.Clip(opts), WithWait(max(until.Sub(c.clk.Now()), 0)))
		}
		l, err := c.Acquire(ctx, key, call...)
		if err != nil {
			rerr := releaseAll(ctx, cfg.releaseTimeout, byKey)
			return nil, errors.Join(&KeyError{Key: key, Err: err}, rerr)
		}
		byKey[key] = l
	}
	locks := make([]*Lock, 0, len(order))
	for _, key := range dedupe(keys) {
		locks = append(locks, byKey[key])
	}
	return locks, nil
}

// lockOrder validates keys and returns them without repeats, sorted by
// backend key: the one order every caller takes them in.
func lockOrder(prefix string, keys []string) ([]string, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: AcquireAll needs at least one key", ErrInvalidKey)
	}
	for _, k := range keys {
		if err := ValidateKey(k); err != nil {
			return nil, err
		}
	}
	order := dedupe(keys)
	slices.SortFunc(order, func(a, b string) int {
		ka, kb := backendKeys(prefix, a).Lock, backendKeys(prefix, b).Lock
		switch {
		case ka < kb:
			return -1
		case ka > kb:
			return 1
		}
		return 0
	})
	return order, nil
}

func dedupe(keys []string) []string {
	seen := make(map[string]bool, len(keys))
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out
}

// releaseAll gives back the locks of a failed AcquireAll, on a context that
// outlives the caller's (which may be what ended the acquisition).
func releaseAll(ctx context.Context, timeout time.Duration, locks map[string]*Lock) error {
	if len(locks) == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	var errs []error
	for _, l := range locks {
		if err := l.Release(rctx); err != nil && !errors.Is(err, ErrLost) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ReleaseAll releases every lock (from AcquireAll or otherwise) and joins
// the errors. A nil entry is skipped.
func ReleaseAll(ctx context.Context, locks []*Lock) error {
	var errs []error
	for _, l := range locks {
		if l != nil {
			if err := l.Release(ctx); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// KeyError is AcquireAll's error for the key it could not take. Its message
// leaves the key out (keys may carry user data and errors end up in logs);
// errors.As gives it to the caller.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return "core: AcquireAll: " + e.Err.Error() }

func (e *KeyError) Unwrap() error { return e.Err }
