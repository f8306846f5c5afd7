package idempotency

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

// Engine runs the Idempotency-Key protocol for one route or RPC, whatever
// the transport: look up a stored answer (one round trip), else take the
// fenced lock for the key, claim the key in the store with the lock's
// fence, run the handler, and store its answer fenced before it is sent.
// The HTTP middleware, ginmw and grpcmw are built on it.
type Engine struct {
	l     core.Locker
	store Store
	cfg   config
}

// Request is what Engine.Run needs to know about one request.
type Request struct {
	Scope       Scope
	Fingerprint Fingerprint
	Name        string // low-cardinality name for the lock's telemetry
}

// Result is what a handler run produced.
type Result struct {
	// Record is the answer; nil when it cannot be stored (it was already
	// sent, above WithMaxBody).
	Record *Record
	// ServerError marks a server fault (HTTP 5xx, gRPC Internal, ...):
	// stored only with WithStoreServerErrors.
	ServerError bool
	// Succeeded marks a success (HTTP below 400 written by the handler,
	// gRPC OK): the effect happened, so it is stored even when the client
	// has gone away and a retry must find it.
	Succeeded bool
}

// Func runs the handler with ctx (it carries the lock, and the SQL store's
// transaction) and returns its answer.
type Func func(ctx context.Context) Result

// Answer is what to send.
type Answer struct {
	Record   *Record // nil when the handler's answer was already sent
	Replayed bool    // a stored answer: the handler did not run
	Stored   bool    // the handler ran and its answer was stored
}

// NewEngine returns an Engine over locker and store. It panics on nil
// arguments or invalid options.
func NewEngine(locker core.Locker, store Store, opts ...Option) *Engine {
	if locker == nil {
		panic("idempotency: nil core.Locker")
	}
	if store == nil {
		panic("idempotency: nil Store")
	}
	return &Engine{l: locker, store: store, cfg: newConfig(opts)}
}

// Handles reports whether the gRPC method is guarded (WithMethods).
func (e *Engine) Handles(method string) bool { return e.cfg.methods == nil || e.cfg.methods[method] }

// KeyOptional reports whether requests without a key run unguarded
// (WithOptionalKey) instead of being refused.
func (e *Engine) KeyOptional() bool { return e.cfg.optional }

// KeyHeader is the header (or, lower-cased, the gRPC metadata entry) that
// carries the key.
func (e *Engine) KeyHeader() string { return e.cfg.header }

// Tenant is the tenant scope WithContextTenant finds in ctx ("" without it).
func (e *Engine) Tenant(ctx context.Context) string {
	if e.cfg.ctxTenant == nil {
		return ""
	}
	return e.cfg.ctxTenant(ctx)
}

// Run answers req: the stored answer when there is one (422 when it was for
// another request), else fn's, stored unless fn panicked (the panic goes
// on), it was a server error, or the client went away and it was no
// success. Errors match
// ErrMismatch, ErrInProgress, ErrStaleFence, ErrUnavailable or a context
// error; StatusCode maps them.
func (e *Engine) Run(ctx context.Context, req Request, fn Func) (Answer, error) {
	key := req.Scope.LockKey()
	rec, err := e.store.Lookup(ctx, key)
	switch {
	case err == nil:
		return replay(rec, req)
	case !errors.Is(err, ErrNotFound):
		return Answer{}, storeError(err)
	}

	p := e.cfg.policy
	p.Name = req.Name
	h, res := guard.Acquire(ctx, e.l, []string{key}, p)
	if res.Outcome != guard.Acquired {
		return Answer{}, lockError(res)
	}
	defer e.release(ctx, h, req.Name)
	lock := heldLock(h)
	att, err := e.store.Begin(ctx, key, lock)
	if err != nil {
		return Answer{}, storeError(err)
	}
	committed := false
	defer func() {
		if !committed {
			e.abort(ctx, att, req.Name)
		}
	}()
	if rec := att.Existing(); rec != nil {
		return replay(rec, req)
	}

	out := fn(att.Context(h.Context()))
	if !e.storable(ctx, out) {
		return Answer{Record: out.Record}, nil
	}
	out.Record.Fingerprint, out.Record.Fence = req.Fingerprint, lock.Fence()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.storeTimeout)
	defer cancel()
	committed = true
	if err := att.Commit(sctx, out.Record, e.cfg.retention); err != nil {
		if errors.Is(err, ErrStaleFence) {
			e.log(ctx, slog.LevelWarn, "lock lost while the handler ran; a newer attempt owns the key, answer not stored", req.Name, err)
		}
		return Answer{}, storeError(err)
	}
	return Answer{Record: out.Record, Stored: true}, nil
}

// storable says whether fn's answer is kept: not a failure after the
// client went away (the request context, not the handler's, which also
// ends on a lost lock: a handler that gave up answers an error), not a
// server error unless configured.
func (e *Engine) storable(ctx context.Context, out Result) bool {
	switch {
	case out.Record == nil:
		return false
	case ctx.Err() != nil && !out.Succeeded:
		return false
	case out.ServerError && !e.cfg.store5xx:
		return false
	}
	return true
}

func replay(rec *Record, req Request) (Answer, error) {
	if rec.Fingerprint != req.Fingerprint {
		return Answer{}, ErrMismatch
	}
	return Answer{Record: rec, Replayed: true}, nil
}

// heldLock is the lock on the key: acquired by this request, or (reentrant)
// already held in its context.
func heldLock(h *guard.Held) *core.Lock {
	if ls := h.Locks(); len(ls) > 0 {
		return ls[0]
	}
	l, _ := core.FromContext(h.Context())
	return l
}

func (e *Engine) release(ctx context.Context, h *guard.Held, name string) {
	if err := h.Release(); err != nil {
		e.log(ctx, slog.LevelWarn, "release failed; the lease expires on its own", name, err)
	}
}

func (e *Engine) abort(ctx context.Context, att Attempt, name string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.cfg.storeTimeout)
	defer cancel()
	if err := att.Abort(actx); err != nil {
		e.log(ctx, slog.LevelWarn, "abort failed", name, err)
	}
}

func (e *Engine) log(ctx context.Context, level slog.Level, msg, name string, err error) {
	lg := e.cfg.logger
	if lg == nil {
		lg = slog.Default()
	}
	if lg.Enabled(ctx, level) {
		lg.LogAttrs(context.WithoutCancel(ctx), level, "idempotency: "+msg, slog.String("route", name), slog.Any("error", err))
	}
}

func lockError(res guard.Result) error {
	switch res.Outcome {
	case guard.Contended:
		return &InProgressError{RetryAfter: res.RetryAfter, Err: res.Err}
	case guard.Timeout:
		return fmt.Errorf("idempotency: waiting for the running attempt: %w", context.DeadlineExceeded)
	case guard.Canceled:
		return fmt.Errorf("idempotency: waiting for the running attempt: %w", context.Canceled)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, res.Err)
}

func storeError(err error) error {
	switch {
	case errors.Is(err, ErrStaleFence), errors.Is(err, ErrCorruptRecord),
		errors.Is(err, ErrUnavailable), errors.Is(err, context.Canceled),
		errors.Is(err, context.DeadlineExceeded):
		return err
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}
