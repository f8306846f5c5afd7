package ginmw_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	gin.DefaultWriter, gin.DefaultErrorWriter = io.Discard, os.Stderr
	goleak.VerifyTestMain(m)
}

// fixture is one lock backend shared by several "service instances".
type fixture struct {
	t     *testing.T
	store *locktest.Store
	srv   *redistest.Server
	rdb   *redis.Client
}

// forEachBackend runs f on the in-memory locktest backend and on a real
// redis-server (skipped, per redistest, when it is not installed).
func forEachBackend(t *testing.T, f func(t *testing.T, fx *fixture)) {
	t.Run("memory", func(t *testing.T) { f(t, &fixture{t: t, store: locktest.NewStore()}) })
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		f(t, &fixture{t: t, srv: srv, rdb: srv.Client(t)})
	})
}

func (fx *fixture) client(opts ...core.Option) *core.Client {
	var c *core.Client
	if fx.store != nil {
		c = fx.store.Client(opts...)
	} else {
		c = core.New(fx.srv.Client(fx.t), opts...)
	}
	fx.t.Cleanup(func() { _ = c.Close() })
	return c
}

func (fx *fixture) held(key string) bool {
	fx.t.Helper()
	if fx.store != nil {
		return fx.store.Held(core.DefaultPrefix, key)
	}
	n, err := fx.rdb.Exists(context.Background(), core.KeysFor(core.DefaultPrefix, key).Lock).Result()
	if err != nil {
		fx.t.Fatalf("EXISTS: %v", err)
	}
	return n == 1
}

func (fx *fixture) expire(key string) {
	fx.t.Helper()
	if fx.store != nil {
		fx.store.Expire(core.DefaultPrefix, key)
		return
	}
	if err := fx.rdb.Del(context.Background(), core.KeysFor(core.DefaultPrefix, key).Lock).Err(); err != nil {
		fx.t.Fatalf("DEL: %v", err)
	}
}

func (fx *fixture) unreachable() core.Locker {
	fx.t.Helper()
	if fx.store != nil {
		s := locktest.NewStore()
		s.SetDown(true)
		c := s.Client()
		fx.t.Cleanup(func() { _ = c.Close() })
		return c
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fx.t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	c := core.New(rdb)
	fx.t.Cleanup(func() { _ = c.Close(); _ = rdb.Close() })
	return c
}

func newEngine() *gin.Engine {
	e := gin.New()
	e.Use(gin.Recovery())
	return e
}

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

func do(t testing.TB, c *http.Client, method, url string) reply {
	return doCtx(context.Background(), t, c, method, url)
}

func doCtx(ctx context.Context, t testing.TB, c *http.Client, method, url string) reply {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: string(body), retryAfter: resp.Header.Get("Retry-After"), err: err}
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

func waitFor(t testing.TB, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("timed out after 10s")
	}
}

// newMemoryClient returns a client on a fresh in-memory store, closed when
// the test ends.
func newMemoryClient(t testing.TB, opts ...core.Option) *core.Client {
	c := locktest.New(opts...)
	t.Cleanup(func() { _ = c.Close() })
	return c
}
