package idempotency_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/idempotency"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	redis.SetLogger(quiet{})
	goleak.VerifyTestMain(m)
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// fixture is one real redis-server shared by several service instances.
type fixture struct {
	t     *testing.T
	srv   *redistest.Server
	rdb   *redis.Client
	store *idempotency.RedisStore
}

func newFixture(t *testing.T) *fixture {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	return &fixture{t: t, srv: srv, rdb: rdb, store: idempotency.NewRedisStore(rdb, "")}
}

// client is one service instance's lock client, closed when the test ends.
func (fx *fixture) client(opts ...core.Option) *core.Client {
	c := core.New(fx.srv.Client(fx.t), opts...)
	fx.t.Cleanup(func() { _ = c.Close() })
	return c
}

// serve mounts h as POST /charges behind the middleware on its own server.
func serve(t *testing.T, l core.Locker, s idempotency.Store, h http.Handler, opts ...idempotency.Option) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle("POST /charges", idempotency.Middleware(l, s, opts...)(h))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	return ts
}

type reply struct {
	status   int
	body     string
	replayed bool
	err      error
}

func post(ctx context.Context, c *http.Client, url, key, body string) reply {
	req, err := http.NewRequestWithContext(ctx, "POST", url, strings.NewReader(body))
	if err != nil {
		return reply{err: err}
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: string(b), replayed: resp.Header.Get(idempotency.ReplayedHeader) == "true", err: err}
}

// gate holds a handler inside its critical section until opened.
type gate struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func newGate() *gate { return &gate{entered: make(chan struct{}, 64), release: make(chan struct{})} }

func (g *gate) open() { g.once.Do(func() { close(g.release) }) }

func (g *gate) wait(t testing.TB) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("handler not entered within 10s")
	}
}
