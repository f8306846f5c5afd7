// Package guard is the request-scoped lock behaviour shared by the HTTP,
// gin and gRPC adapters: acquire one or more keys in a deadlock-free order
// with the route's wait policy, classify failures into outcomes the adapters
// map to status codes, carry the locks in a context that is cancelled when
// one is lost, and release with a detached context.
package guard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// DefaultReleaseTimeout bounds the detached release after a request.
const DefaultReleaseTimeout = 2 * time.Second

// Policy is an adapter's per-route configuration.
type Policy struct {
	TTL            time.Duration // 0: the Locker's default
	Wait           time.Duration // 0: fail fast
	AutoRefresh    bool
	RefreshEvery   time.Duration // 0: a tenth of the TTL
	MaxHold        time.Duration // 0: no cap
	FailOpen       bool          // run unlocked when the backend is unreachable
	Name           string        // telemetry name (route template, RPC method)
	ReleaseTimeout time.Duration // 0: DefaultReleaseTimeout
	Options        []core.Option // passed through to the Locker
	Mode           core.Mode     // SharedMode or PermitMode: added after Options, so it wins
	Permits        int           // n for PermitMode
}

// Outcome classifies an acquisition for the adapters.
type Outcome int

const (
	Acquired    Outcome = iota // locks held; run the handler
	FailedOpen                 // backend unreachable and the route fails open: run unlocked
	Contended                  // held elsewhere: 409 / Aborted
	InvalidKey                 // empty, invalid or oversized key: 400 / InvalidArgument
	Unavailable                // backend unreachable: 503 / Unavailable
	Timeout                    // the request deadline passed while waiting: 504 / DeadlineExceeded
	Canceled                   // the caller went away while waiting
)

func (o Outcome) String() string {
	switch o {
	case Acquired:
		return "acquired"
	case FailedOpen:
		return "failed_open"
	case Contended:
		return "contended"
	case InvalidKey:
		return "invalid_key"
	case Unavailable:
		return "unavailable"
	case Timeout:
		return "timeout"
	case Canceled:
		return "canceled"
	case Lost:
		return "lost"
	case Misconfigured:
		return "misconfigured"
	case Limited:
		return "limited"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Result is what Acquire reports besides the held locks.
type Result struct {
	Outcome    Outcome
	RetryAfter time.Duration // Contended: the holder's remaining lease (0 if unknown)
	Err        error         // the underlying error (never shown to clients)
}

// Held is the set of locks one request holds.
type Held struct {
	mu      sync.Mutex   // guards locks and cancels: Lost runs on loss callbacks
	locks   []*core.Lock // acquired here, in acquisition order
	ctx     context.Context
	cancels []context.CancelFunc
	timeout time.Duration
	start   time.Time // when the locks were all held
}

// Classify maps an error from Locker.Acquire to an outcome. A request
// deadline wins over contention so that waiting clients get 504.
func Classify(err error) Result {
	switch {
	case err == nil:
		return Result{Outcome: Acquired}
	case errors.Is(err, core.ErrInvalidKey):
		return Result{Outcome: InvalidKey, Err: err}
	case IsModeError(err):
		// A configuration error (two routes disagree on a key's mode, or
		// the backend takes exclusive holds only): waiting cannot help,
		// and failing open would run the handler unguarded.
		return Result{Outcome: Misconfigured, Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return Result{Outcome: Timeout, Err: err}
	case errors.Is(err, context.Canceled):
		return Result{Outcome: Canceled, Err: err}
	case errors.Is(err, core.ErrNotAcquired):
		ra, _ := core.RetryAfter(err)
		return Result{Outcome: Contended, RetryAfter: ra, Err: err}
	default: // ErrUnavailable, ErrQuorum, ErrClosed and anything unknown: fail closed
		return Result{Outcome: Unavailable, Err: err}
	}
}

// Acquire takes every key with Locker.AcquireAll (backend-key order, so
// two requests locking the same pair can never deadlock, and one wait
// budget for the set), skipping keys already held in ctx (reentrancy). On
// failure nothing stays held and it returns a nil Held. With FailOpen, an
// unreachable backend yields FailedOpen and a Held with no locks. Keys are
// validated before anything is sent.
func Acquire(ctx context.Context, l core.Locker, keys []string, p Policy) (*Held, Result) {
	for _, k := range keys {
		if err := core.ValidateKey(k); err != nil {
			return nil, Result{Outcome: InvalidKey, Err: err}
		}
	}
	opts := p.options()
	h := &Held{ctx: ctx, timeout: p.ReleaseTimeout}
	if h.timeout <= 0 {
		h.timeout = DefaultReleaseTimeout
	}
	var todo []string
	for _, k := range keys {
		lk, held := core.HeldInContext(ctx, l, k, opts...)
		if !held {
			todo = append(todo, k)
			continue
		}
		if m := lk.Mode(); m != core.Exclusive && m != p.Mode {
			// A shared hold cannot stand in for an exclusive one (nor a
			// permit for a share), and waiting for the upgrade would wait
			// on ourselves.
			return nil, Result{Outcome: Misconfigured, Err: fmt.Errorf(
				"%w: the request already holds the key as %s, wants %s", core.ErrModeMismatch, m, p.Mode)}
		}
	}
	if len(todo) == 0 {
		return h, Result{Outcome: Acquired}
	}
	if p.Wait <= 0 {
		opts = append(opts, core.WithWait(0)) // fail fast
	}
	locks, err := l.AcquireAll(ctx, todo, opts...)
	if err != nil {
		res := Classify(err)
		if res.Outcome == Contended && p.Mode == core.PermitMode {
			res.Outcome = Limited // every permit in use until the wait ended
		}
		if res.Outcome == Unavailable && p.FailOpen {
			return &Held{ctx: ctx, timeout: h.timeout}, Result{Outcome: FailedOpen, Err: err}
		}
		return nil, res
	}
	for _, lk := range locks {
		h.locks = append(h.locks, lk)
		var cancel context.CancelFunc
		h.ctx, cancel = lk.Context(h.ctx)
		h.cancels = append(h.cancels, cancel)
	}
	h.start = time.Now()
	return h, Result{Outcome: Acquired}
}

// HeldFor is how long the locks have been held (0 when none was taken
// here), for Retry-After hints from observed holds.
func (h *Held) HeldFor() time.Duration {
	if h == nil || len(h.locks) == 0 {
		return 0
	}
	return time.Since(h.start)
}

func (p Policy) options() []core.Option {
	var o []core.Option
	if p.TTL > 0 {
		o = append(o, core.WithTTL(p.TTL))
	}
	if p.Wait > 0 {
		o = append(o, core.WithWait(p.Wait))
	}
	if p.AutoRefresh {
		o = append(o, core.WithAutoRefresh(p.RefreshEvery))
	}
	if p.MaxHold > 0 {
		o = append(o, core.WithMaxHold(p.MaxHold))
	}
	if p.Name != "" {
		o = append(o, core.WithName(p.Name))
	}
	o = append(o, p.Options...)
	switch p.Mode {
	case core.SharedMode:
		o = append(o, core.Shared())
	case core.PermitMode:
		o = append(o, core.Permits(p.Permits))
	}
	return o
}

// IsModeError reports whether err is a lock-mode configuration error
// (core.ErrModeMismatch or core.ErrModeUnsupported).
func IsModeError(err error) bool {
	return errors.Is(err, core.ErrModeMismatch) || errors.Is(err, core.ErrModeUnsupported)
}

// SafeMethod reports whether an HTTP method only reads (GET, HEAD,
// OPTIONS): the read-write guards take shared holds for these.
func SafeMethod(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS":
		return true
	}
	return false
}

// Context returns the request context carrying the locks; it is cancelled
// with the loss as its cause (context.Cause) when any of them is lost.
func (h *Held) Context() context.Context { return h.ctx }

// Locks returns the locks acquired by this guard (not the reentrant ones).
func (h *Held) Locks() []*core.Lock {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.locks
}

// Lost returns the first loss among the held locks, or nil.
func (h *Held) Lost() error {
	if h == nil {
		return nil
	}
	for _, l := range h.Locks() {
		if err := l.Err(); err != nil {
			return err
		}
	}
	return nil
}

// Release gives every lock back, in reverse order, with a context detached
// from the request (a client that went away cannot leak the lock) and a
// short timeout of its own. It is safe to call more than once.
func (h *Held) Release() error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	locks, cancels := h.locks, h.cancels
	h.locks, h.cancels = nil, nil
	h.mu.Unlock()
	var errs []error
	for i := len(locks) - 1; i >= 0; i-- {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(h.ctx), h.timeout)
		err := locks[i].Release(ctx)
		cancel()
		if err != nil && !errors.Is(err, core.ErrNotHeld) {
			errs = append(errs, err)
		}
	}
	for _, c := range cancels {
		c()
	}
	return errors.Join(errs...)
}

// RetryAfterSeconds rounds a remaining lease up to whole seconds (at least
// 1) for a Retry-After header.
func RetryAfterSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	if s < 1 {
		s = 1
	}
	return s
}
