package grpcmw_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

func TestMain(m *testing.M) {
	// Tests point clients at dead addresses on purpose; keep go-redis's
	// dial-failure lines out of the output.
	redis.SetLogger(quiet{})
	goleak.VerifyTestMain(m)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// Full method names of the test service.
const (
	mIncr     = "/fencedlock.grpcmw.test.Counter/Incr"
	mSum      = "/fencedlock.grpcmw.test.Counter/Sum"
	mWatch    = "/fencedlock.grpcmw.test.Counter/Watch"
	mTransfer = "/fencedlock.grpcmw.test.Counter/Transfer"
)

// backend is one lock backend shared by several "service instances".
type backend struct {
	t     *testing.T
	name  string
	store *locktest.Store   // memory
	srv   *redistest.Server // real redis-server
	rdb   *redis.Client     // for checks on srv
}

// forEachBackend runs f against a real redis-server (skipped, per
// redistest, when it is not installed) and the in-memory locktest backend.
func forEachBackend(t *testing.T, f func(t *testing.T, b *backend)) {
	t.Run("redis", func(t *testing.T) { f(t, redisBackend(t)) })
	t.Run("memory", func(t *testing.T) {
		f(t, &backend{t: t, name: "memory", store: locktest.NewStore()})
	})
}

func redisBackend(t *testing.T) *backend {
	srv := redistest.Start(t)
	return &backend{t: t, name: "redis", srv: srv, rdb: srv.Client(t)}
}

// client returns a new core.Client (one service instance), closed when the
// test ends.
func (b *backend) client(opts ...core.Option) *core.Client {
	var c *core.Client
	if b.store != nil {
		c = b.store.Client(opts...)
	} else {
		c = core.New(b.srv.Client(b.t), opts...)
	}
	b.t.Cleanup(func() { _ = c.Close() })
	return c
}

// held reports whether key is locked in the backend.
func (b *backend) held(key string) bool {
	b.t.Helper()
	if b.store != nil {
		return b.store.Held(core.DefaultPrefix, key)
	}
	n, err := b.rdb.Exists(context.Background(), core.KeysFor(core.DefaultPrefix, key).Lock).Result()
	if err != nil {
		b.t.Fatalf("EXISTS: %v", err)
	}
	return n == 1
}

// expire drops key's lease behind the holder's back.
func (b *backend) expire(key string) {
	b.t.Helper()
	if b.store != nil {
		b.store.Expire(core.DefaultPrefix, key)
		return
	}
	if err := b.rdb.Del(context.Background(), core.KeysFor(core.DefaultPrefix, key).Lock).Err(); err != nil {
		b.t.Fatalf("DEL: %v", err)
	}
}

// unreachable returns a Locker whose backend cannot be reached, and the
// address (if any) it tries, so tests can check it is not echoed.
func (b *backend) unreachable() (core.Locker, string) {
	b.t.Helper()
	if b.store != nil {
		s := locktest.NewStore()
		s.SetDown(true)
		c := s.Client()
		b.t.Cleanup(func() { _ = c.Close() })
		return c, ""
	}
	addr := deadAddr(b.t)
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	c := core.New(rdb)
	b.t.Cleanup(func() { _ = c.Close(); _ = rdb.Close() })
	return c, addr
}

// hold takes key with another client, as another process would, and
// returns the lock; it is released when the test ends.
func (b *backend) hold(key string, ttl time.Duration) *core.Lock {
	b.t.Helper()
	l, err := b.client().TryAcquire(context.Background(), key, core.WithTTL(ttl))
	if err != nil {
		b.t.Fatalf("hold %q: %v", key, err)
	}
	b.t.Cleanup(func() { _ = l.Release(context.Background()) })
	return l
}

// deadAddr is a loopback address nobody listens on.
func deadAddr(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// witness is a deliberately non-atomic read-sleep-write counter, the
// "database" behind the test service: without mutual exclusion,
// concurrent increments lose updates.
type witness struct {
	count, inflight, peak atomic.Int64
}

func (w *witness) incr(hold time.Duration) int64 {
	n := w.inflight.Add(1)
	for p := w.peak.Load(); n > p && !w.peak.CompareAndSwap(p, n); p = w.peak.Load() {
	}
	v := w.count.Load()
	time.Sleep(100*time.Microsecond + hold)
	w.count.Store(v + 1)
	w.inflight.Add(-1)
	return v + 1
}

// service implements the test Counter. hook, when set, runs in the
// critical section of every request message, before the increment, with
// the context the handler sees at that point.
type service struct {
	testpb.UnimplementedCounterServer
	w    *witness
	hook func(ctx context.Context, method string, req *testpb.IncrRequest) error
}

func newService() *service { return &service{w: &witness{}} }

func (s *service) step(ctx context.Context, method string, req *testpb.IncrRequest) (*testpb.IncrReply, error) {
	if s.hook != nil {
		if err := s.hook(ctx, method, req); err != nil {
			return nil, err
		}
	}
	return reply(ctx, s.w.incr(time.Duration(req.GetHoldMs())*time.Millisecond)), nil
}

// reply reports what the handler found in its context.
func reply(ctx context.Context, v int64) *testpb.IncrReply {
	r := &testpb.IncrReply{Value: v}
	if l, ok := core.FromContext(ctx); ok {
		r.Fence = l.Fence()
	}
	if t, ok := core.FenceFromContext(ctx); ok {
		r.SeenFence, r.SeenKey = t.Fence, t.Key
	}
	return r
}

func (s *service) Incr(ctx context.Context, req *testpb.IncrRequest) (*testpb.IncrReply, error) {
	return s.step(ctx, mIncr, req)
}

func (s *service) Transfer(ctx context.Context, req *testpb.TransferRequest) (*testpb.IncrReply, error) {
	return reply(ctx, s.w.incr(0)), nil
}

func (s *service) Sum(stream grpc.ClientStreamingServer[testpb.IncrRequest, testpb.IncrReply]) error {
	last := reply(stream.Context(), 0)
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return stream.SendAndClose(last)
		}
		if err != nil {
			return err
		}
		if last, err = s.step(stream.Context(), mSum, req); err != nil {
			return err
		}
	}
}

// Watch first sends a greeting (Value -1) reporting the lock in the
// stream's context before anything was received, then one reply per
// message.
func (s *service) Watch(stream grpc.BidiStreamingServer[testpb.IncrRequest, testpb.IncrReply]) error {
	if err := stream.Send(reply(stream.Context(), -1)); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		r, err := s.step(stream.Context(), mWatch, req)
		if err != nil {
			return err
		}
		if err := stream.Send(r); err != nil {
			return err
		}
	}
}

// transports are the two ways tests reach a server.
var transports = []string{"bufconn", "tcp"}

// endpoint is a running gRPC server.
type endpoint struct {
	t    testing.TB
	dial func(context.Context, string) (net.Conn, error)
	addr string
}

// serve starts a grpc.Server for svc on tr ("bufconn" or "tcp" on
// 127.0.0.1:0), stopped when the test ends.
func serve(t testing.TB, tr string, svc testpb.CounterServer, opts ...grpc.ServerOption) *endpoint {
	t.Helper()
	srv := grpc.NewServer(opts...)
	testpb.RegisterCounterServer(srv, svc)
	e := &endpoint{t: t}
	var lis net.Listener
	switch tr {
	case "bufconn":
		bl := bufconn.Listen(1 << 20)
		lis, e.addr = bl, "bufnet"
		e.dial = func(ctx context.Context, _ string) (net.Conn, error) { return bl.DialContext(ctx) }
	case "tcp":
		var err error
		if lis, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		e.addr = lis.Addr().String()
	default:
		t.Fatalf("unknown transport %q", tr)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return e
}

// conn dials the endpoint; the connection is closed when the test ends
// (before the server stops).
func (e *endpoint) conn(opts ...grpc.DialOption) *grpc.ClientConn {
	e.t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	if e.dial != nil {
		opts = append(opts, grpc.WithContextDialer(e.dial))
	}
	cc, err := grpc.NewClient("passthrough:///"+e.addr, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cc.Close() })
	return cc
}

func (e *endpoint) client(opts ...grpc.DialOption) testpb.CounterClient {
	return testpb.NewCounterClient(e.conn(opts...))
}

// recorder keeps what the interceptors inside it returned, server side:
// a client that gives up sees its own status, not the server's.
type recorder struct{ errs chan error }

func newRecorder() *recorder { return &recorder{errs: make(chan error, 1024)} }

func (r *recorder) unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		r.errs <- err
		return resp, err
	}
}

// next returns the result of the next finished call.
func (r *recorder) next(t testing.TB) error {
	t.Helper()
	select {
	case err := <-r.errs:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("no call finished within 10s")
		return nil
	}
}

// recoverer turns handler panics into Internal, as a recovery interceptor
// in production would, so a test can watch the lock being released.
func recoverer(panics chan<- any) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if v := recover(); v != nil {
				panics <- v
				err = status.Error(codes.Internal, "panic")
			}
		}()
		return h(ctx, req)
	}
}

// wantCode fails unless err is a status with code c.
func wantCode(t testing.TB, err error, c codes.Code) *status.Status {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("error %v is not a gRPC status; want %v", err, c)
	}
	if st.Code() != c {
		t.Fatalf("code = %v (%q), want %v", st.Code(), st.Message(), c)
	}
	return st
}

// waitFor polls cond (a test-side condition, not the code under test)
// until it holds or 10s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recv receives from a channel or fails after 10s.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func isLost(err error) bool { return errors.Is(err, core.ErrLost) }
