package grpcmw

import (
	"context"
	"errors"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

// UnaryServerInterceptor returns an interceptor that runs each unary call
// only while holding the lock on key(ctx, method, req), and releases it
// when the handler returns, also when it panics (the panic then goes on).
// It fails fast by default (Aborted when the key is held); see WithWait.
//
//	grpc.NewServer(grpc.ChainUnaryInterceptor(
//		grpcmw.UnaryServerInterceptor(locker, grpcmw.Template("order:{order_id}"),
//			grpcmw.WithMethods("/shop.Orders/Pay")),
//	))
func UnaryServerInterceptor(l core.Locker, key KeyFunc, opts ...Option) grpc.UnaryServerInterceptor {
	if key == nil {
		panic("grpcmw: UnaryServerInterceptor with a nil KeyFunc")
	}
	return newInterceptor("UnaryServerInterceptor", l, single(key), opts, false).unary
}

// UnaryServerInterceptorKeys is UnaryServerInterceptor over several keys,
// for methods that touch more than one resource, such as a transfer
// between two accounts:
//
//	grpcmw.UnaryServerInterceptorKeys(locker,
//		grpcmw.Keys(grpcmw.Template("account:{from}"), grpcmw.Template("account:{to}")),
//		grpcmw.WithMethods("/bank.Accounts/Transfer"), grpcmw.WithWait(2*time.Second))
//
// The call runs only once every key is held, and none stays held when one
// cannot be had (core.Locker.AcquireAll): the keys are taken in one order
// every caller shares, so calls locking the same pair in opposite
// directions cannot deadlock; WithWait bounds the wait for the whole set;
// a key repeated (from == to) is locked once. The handler's context
// carries every lock (core.LocksFromContext; core.FromContext returns one
// of them) and is cancelled when any is lost. The locks are released
// together after the handler returns or panics. A contended key ends the
// call Aborted, or ResourceExhausted under WithPermits; WithShared and
// WithPermits apply to each key.
func UnaryServerInterceptorKeys(l core.Locker, keys KeysFunc, opts ...Option) grpc.UnaryServerInterceptor {
	return newInterceptor("UnaryServerInterceptorKeys", l, keys, opts, false).unary
}

// StreamServerInterceptor returns an interceptor that holds a lock for the
// whole life of each stream, renewed by the watchdog (auto-refresh is on by
// default for streams; bound it with WithMaxHold), and released when the
// handler returns.
//
// A key that needs no message (Metadata, or a Template of {:method},
// {:service} and {md:...}) is locked before the handler runs. A key from
// the request message (Field, MessageKey, a Template with fields) is
// locked on the first RecvMsg, from the first message: the handler gets
// that message only once the lock is held. Messages the handler sends
// before its first RecvMsg are sent unlocked, and a stream that ends
// without a message runs unlocked. ServerStream.Context() carries the lock
// from the first RecvMsg on; a context taken from it earlier is still
// cancelled when the lock is lost.
//
// A refusal (the key is held, invalid, the backend is down) is returned by
// the first RecvMsg, or before the handler runs for a metadata key. After a
// refusal or a loss, RecvMsg and SendMsg return that status and the stream
// ends with it, whatever the handler returns. A handler blocked in RecvMsg
// notices a loss with the next message; one that must stop at once watches
// Context().Done().
func StreamServerInterceptor(l core.Locker, key KeyFunc, opts ...Option) grpc.StreamServerInterceptor {
	if key == nil {
		panic("grpcmw: StreamServerInterceptor with a nil KeyFunc")
	}
	return newInterceptor("StreamServerInterceptor", l, single(key), opts, true).stream
}

// StreamServerInterceptorKeys is StreamServerInterceptor over several
// keys, taken as UnaryServerInterceptorKeys takes them. The stream holds
// all of them for its life. When every key needs no message the stream is
// locked before the handler runs; when any needs one (Fields, Keys with a
// field), all are locked together on the first RecvMsg.
func StreamServerInterceptorKeys(l core.Locker, keys KeysFunc, opts ...Option) grpc.StreamServerInterceptor {
	return newInterceptor("StreamServerInterceptorKeys", l, keys, opts, true).stream
}

type interceptor struct {
	l    core.Locker
	keys KeysFunc
	cfg  config
	// outage logs the first backend failure, then a summary per interval,
	// then the recovery: not one line per refused call.
	outage *guard.OutageLog
	hints  *guard.Hints // RetryInfo from observed holds
	logs   guard.Logger
}

func newInterceptor(fn string, l core.Locker, keys KeysFunc, opts []Option, stream bool) *interceptor {
	if l == nil {
		panic("grpcmw: " + fn + " with a nil core.Locker")
	}
	if keys == nil {
		panic("grpcmw: " + fn + " with a nil KeysFunc")
	}
	cfg := newConfig(opts, stream)
	return &interceptor{l: l, keys: keys, cfg: cfg, outage: guard.NewOutageLog(0, nil), hints: &guard.Hints{Expected: cfg.expectedHold},
		logs: guard.Logger{L: cfg.logger, Pkg: "grpcmw"}}
}

func (it *interceptor) policy(method string) guard.Policy {
	p := it.cfg.policy
	if p.Name == "" {
		p.Name = method
	}
	if _, ok := it.cfg.shared[method]; ok {
		p.Mode = core.SharedMode
	}
	return p
}

func (it *interceptor) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	method := info.FullMethod
	if !it.cfg.selects(method) {
		return handler(ctx, req)
	}
	p := it.policy(method)
	keys, err := it.derive(ctx, method, req)
	if err != nil {
		return nil, it.fail(ctx, method, p.Name, guard.ClassifyKey(err))
	}
	h, res := guard.Acquire(ctx, it.l, keys, p)
	if err := it.check(ctx, method, p.Name, res); err != nil {
		return nil, err
	}
	// Deferred, so the lock is also released when the handler panics; the
	// panic then goes on to whoever recovers it.
	defer it.release(ctx, h, p.Name)
	resp, err := handler(h.Context(), req)
	if lost := h.Lost(); lost != nil {
		// The result was produced without the exclusion the method asked
		// for: the client must not take it as done under the lock.
		return nil, it.fail(ctx, method, p.Name, guard.Result{Outcome: guard.Lost, Err: lost})
	}
	return resp, err
}

func (it *interceptor) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	method := info.FullMethod
	if !it.cfg.selects(method) {
		return handler(srv, ss)
	}
	p := it.policy(method)
	base, cancel := context.WithCancelCause(ss.Context())
	s := &lockedStream{ServerStream: ss, it: it, method: method, policy: p, base: base, cancel: cancel, ctx: base}
	defer s.finish()
	keys, err := it.derive(base, method, nil)
	switch {
	case errors.Is(err, ErrNeedMessage):
		// Locked by the first RecvMsg.
	case err != nil:
		return it.fail(base, method, p.Name, guard.ClassifyKey(err))
	default:
		h, res := guard.Acquire(base, it.l, keys, p)
		if err := it.check(base, method, p.Name, res); err != nil {
			return err
		}
		s.hold(h)
	}
	err = handler(srv, s)
	if ferr := s.end(); ferr != nil {
		return ferr
	}
	return err
}

// check turns an acquisition result into nil (run the handler) or the
// error the call ends with.
func (it *interceptor) check(ctx context.Context, method, name string, res guard.Result) error {
	it.outage.Observe(res).Log(ctx, it.cfg.logger, "grpcmw", name, res.Err)
	switch res.Outcome {
	case guard.Acquired, guard.FailedOpen:
		return nil
	}
	return it.fail(ctx, method, name, res)
}

func (it *interceptor) fail(ctx context.Context, method, name string, res guard.Result) error {
	it.logs.Refused(ctx, name, res)
	// The smaller of the holder's remaining lease and the method's observed
	// hold time.
	res.RetryAfter = it.hints.For(res, it.cfg.policy.TTL)
	e := newError(res)
	if err := it.cfg.errorHandler(ctx, method, e); err != nil {
		return err
	}
	return DefaultErrorHandler(ctx, method, e)
}

func (it *interceptor) release(ctx context.Context, h *guard.Held, name string) {
	it.hints.ObserveHold(h.HeldFor())
	if err := h.Release(); err != nil {
		it.logs.ReleaseFailed(ctx, name, err)
	}
}

// ctxStream is a ServerStream with another context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }

// lockedStream is the stream a locked handler sees. It holds the lock from
// the start, or takes it on the first message received. gRPC never calls
// RecvMsg concurrently with itself, but SendMsg and Context may run on
// other goroutines meanwhile, hence the mutex.
type lockedStream struct {
	grpc.ServerStream
	it     *interceptor
	method string
	policy guard.Policy
	base   context.Context // the stream's context, also cancelled on loss
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	ctx      context.Context // base, then the context carrying the lock
	received bool            // the lock was taken (or refused) already
	held     *guard.Held
	failed   error // the status the stream ends with after a refusal or loss
	ended    bool
	stopLoss func() bool
	lostOnce sync.Once
}

func (s *lockedStream) Context() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ctx
}

func (s *lockedStream) SendMsg(m any) error {
	if err := s.refused(); err != nil {
		return err
	}
	return s.ServerStream.SendMsg(m)
}

func (s *lockedStream) RecvMsg(m any) error {
	if err := s.refused(); err != nil {
		return err
	}
	s.mu.Lock()
	first := !s.received
	s.mu.Unlock()
	if err := s.ServerStream.RecvMsg(m); err != nil || !first {
		if err == nil {
			// A loss while we waited for the message: the handler must
			// not work on it unlocked.
			err = s.refused()
		}
		return err
	}
	return s.lock(m)
}

// refused returns the status the stream must end with once the lock was
// refused or lost, and nil while it is held (or not needed yet).
func (s *lockedStream) refused() error {
	s.mu.Lock()
	failed, h := s.failed, s.held
	s.mu.Unlock()
	if failed != nil {
		return failed
	}
	lost := h.Lost()
	if lost == nil {
		return nil
	}
	// Report the loss once, however many goroutines notice it.
	s.lostOnce.Do(func() {
		err := s.it.fail(s.base, s.method, s.policy.Name, guard.Result{Outcome: guard.Lost, Err: lost})
		s.mu.Lock()
		s.failed = err
		s.mu.Unlock()
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// lock derives the key from the first message and acquires it; the handler
// sees the message only if this returns nil.
func (s *lockedStream) lock(m any) error {
	it := s.it
	var h *guard.Held
	keys, err := it.derive(s.base, s.method, m)
	res := guard.ClassifyKey(err)
	if err == nil {
		h, res = guard.Acquire(s.base, it.l, keys, s.policy)
	}
	if err := it.check(s.base, s.method, s.policy.Name, res); err != nil {
		s.mu.Lock()
		s.received, s.failed = true, err
		s.mu.Unlock()
		return err
	}
	if !s.hold(h) { // the handler returned while we waited: not ours to hold
		it.release(s.base, h, s.policy.Name)
		return status.Error(codes.Canceled, "stream handler already returned")
	}
	return nil
}

// hold records h as the stream's lock. It reports false when the handler
// has already returned.
func (s *lockedStream) hold(h *guard.Held) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.received = true
	if s.ended {
		return false
	}
	s.held, s.ctx = h, h.Context()
	if len(h.Locks()) > 0 {
		// Contexts taken from Context() before the lock was held must learn
		// of a loss too.
		hctx := h.Context()
		s.stopLoss = context.AfterFunc(hctx, func() {
			if h.Lost() != nil {
				s.cancel(context.Cause(hctx))
			}
		})
	}
	return true
}

// end runs when the handler returned: it reports the status the stream
// must end with instead of the handler's (refusal or loss), or nil.
func (s *lockedStream) end() error {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	return s.refused()
}

// finish releases the lock when the handler returned or panicked.
func (s *lockedStream) finish() {
	s.mu.Lock()
	s.ended = true
	h, stop := s.held, s.stopLoss
	s.held, s.stopLoss = nil, nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	if h != nil {
		s.it.release(s.base, h, s.policy.Name)
	}
	s.cancel(context.Canceled)
}
