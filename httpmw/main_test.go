package httpmw_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/etcdlock"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/internal/etcdtest"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixture is one lock backend shared by several "service instances".
type fixture struct {
	t      *testing.T
	name   string
	store  *locktest.Store // memory backend
	srv    *redistest.Server
	rdb    *redis.Client    // redis backend: a plain client for checks
	etcd   *clientv3.Client // etcd backend: proves the adapter is backend-agnostic
	prefix string
}

// forEachBackend runs f against the in-memory locktest backend and against
// a real redis-server (skipped, per redistest, when it is not installed).
func forEachBackend(t *testing.T, f func(t *testing.T, fx *fixture)) {
	t.Run("memory", func(t *testing.T) {
		f(t, &fixture{t: t, name: "memory", store: locktest.NewStore(), prefix: core.DefaultPrefix})
	})
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		f(t, &fixture{t: t, name: "redis", srv: srv, rdb: srv.Client(t), prefix: core.DefaultPrefix})
	})
	t.Run("etcd", func(t *testing.T) {
		cl := etcdtest.Start(t)
		f(t, &fixture{t: t, name: "etcd", etcd: cl.Client(t), prefix: core.DefaultPrefix})
	})
}

// redisFixture is a real redis-server only.
func redisFixture(t testing.TB) *fixture {
	srv := redistest.Start(t)
	tt, _ := t.(*testing.T)
	return &fixture{t: tt, name: "redis", srv: srv, rdb: srv.Client(t), prefix: core.DefaultPrefix}
}

// client returns a new core.Client (one service instance) on the backend,
// closed when the test ends.
func (fx *fixture) client(opts ...core.Option) *core.Client {
	var c *core.Client
	switch {
	case fx.store != nil:
		c = fx.store.Client(opts...)
	case fx.etcd != nil:
		var err error
		if c, err = etcdlock.New(fx.etcd, opts...); err != nil {
			fx.t.Fatalf("etcdlock.New: %v", err)
		}
	default:
		c = core.New(fx.srv.Client(fx.t), opts...)
	}
	fx.t.Cleanup(func() { _ = c.Close() })
	return c
}

// held reports whether key is locked in the backend.
func (fx *fixture) held(key string) bool {
	fx.t.Helper()
	if fx.store != nil {
		return fx.store.Held(fx.prefix, key)
	}
	if fx.etcd != nil {
		// The holder is the first entry of the key's queue; expired
		// entries are deleted one round trip after their TTL.
		deadline := time.Now().Add(500 * time.Millisecond)
		for {
			resp, err := fx.etcd.Get(context.Background(), etcdlock.QueuePrefix(fx.prefix, key), clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				fx.t.Fatalf("etcd get: %v", err)
			}
			if resp.Count == 0 || time.Now().After(deadline) {
				return resp.Count > 0
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	n, err := fx.rdb.Exists(context.Background(), core.KeysFor(fx.prefix, key).Lock).Result()
	if err != nil {
		fx.t.Fatalf("EXISTS: %v", err)
	}
	return n == 1
}

// expire drops key's lease behind the holder's back.
func (fx *fixture) expire(key string) {
	fx.t.Helper()
	if fx.store != nil {
		fx.store.Expire(fx.prefix, key)
		return
	}
	if fx.etcd != nil {
		if _, err := fx.etcd.Delete(context.Background(), etcdlock.QueuePrefix(fx.prefix, key), clientv3.WithPrefix()); err != nil {
			fx.t.Fatalf("etcd delete: %v", err)
		}
		return
	}
	if err := fx.rdb.Del(context.Background(), core.KeysFor(fx.prefix, key).Lock).Err(); err != nil {
		fx.t.Fatalf("DEL: %v", err)
	}
}

// unreachable returns a Locker whose backend cannot be reached.
func (fx *fixture) unreachable() core.Locker {
	fx.t.Helper()
	if fx.store != nil {
		s := locktest.NewStore()
		s.SetDown(true)
		c := s.Client()
		fx.t.Cleanup(func() { _ = c.Close() })
		return c
	}
	rdb := redis.NewClient(&redis.Options{Addr: deadAddr(fx.t), MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	c := core.New(rdb)
	fx.t.Cleanup(func() { _ = c.Close(); _ = rdb.Close() })
	return c
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

func newMemoryClient(opts ...core.Option) *core.Client { return locktest.New(opts...) }

// serve starts an httptest server for h, closed when the test ends.
func serve(t testing.TB, h http.Handler) *httptest.Server {
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

type reply struct {
	status     int
	body       string
	retryAfter string
	err        error
}

func do(t testing.TB, c *http.Client, method, url string, hdr ...string) reply {
	return doCtx(context.Background(), t, c, method, url, hdr...)
}

func doCtx(ctx context.Context, t testing.TB, c *http.Client, method, url string, hdr ...string) reply {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: string(body), retryAfter: resp.Header.Get("Retry-After"), err: err}
}

// gate lets a test hold a handler inside its critical section.
type gate struct {
	entered chan struct{}
	release chan struct{}
}

func newGate() *gate { return &gate{entered: make(chan struct{}, 64), release: make(chan struct{})} }

func (g *gate) wait(t testing.TB) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("handler not entered within 5s")
	}
}

// after wraps h and signals done once h (and the middleware) returned,
// including by panic.
func after(h http.Handler, done chan<- any) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			done <- v
			if v != nil {
				panic(v)
			}
		}()
		h.ServeHTTP(w, r)
	})
}

func waitDone(t testing.TB, done <-chan any) any {
	t.Helper()
	select {
	case v := <-done:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("request not finished within 10s")
		return nil
	}
}

// box is a value written by a server goroutine and read by the test.
type box[T any] struct {
	mu sync.Mutex
	v  T
}

func (b *box[T]) set(v T) {
	b.mu.Lock()
	b.v = v
	b.mu.Unlock()
}

func (b *box[T]) get() T {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.v
}
