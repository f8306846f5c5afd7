package redistest_test

import (
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/fencedlock/fencedlock/internal/redistest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// quickClient fails fast instead of retrying, so a frozen or partitioned
// server shows up as one command timing out after 200ms.
func quickClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	return timeoutClient(t, addr, 200*time.Millisecond)
}

func timeoutClient(t *testing.T, addr string, timeout time.Duration) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{
		Addr:                  addr,
		ReadTimeout:           timeout,
		WriteTimeout:          timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            -1,
	})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestStart_ping(t *testing.T) {
	s := redistest.Start(t)
	if got := s.Addr(); got != fmt.Sprintf("127.0.0.1:%d", s.Port()) {
		t.Fatalf("Addr() = %q, Port() = %d", got, s.Port())
	}
	if err := s.Client(t).Ping(t.Context()).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
}

func TestStartN_independent(t *testing.T) {
	servers := redistest.StartN(t, 3)
	ports := map[int]bool{}
	for _, s := range servers {
		ports[s.Port()] = true
	}
	if len(ports) != 3 {
		t.Fatalf("want 3 distinct ports, got %v", ports)
	}
	ctx := t.Context()
	if err := servers[0].Client(t).Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, s := range servers[1:] {
		if err := s.Client(t).Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("server %d: GET k = %v, want redis.Nil", s.Port(), err)
		}
	}
}

func TestServer_Restart_empty(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client(t)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	port := s.Port()

	s.Kill()
	if conn, err := net.Dial("tcp", s.Addr()); err == nil {
		conn.Close()
		t.Fatal("dial after Kill succeeded")
	}
	s.Restart()

	if s.Port() != port {
		t.Fatalf("port changed across Restart: %d -> %d", port, s.Port())
	}
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET k after restart = %v, want redis.Nil", err)
	}
}

func TestServer_Restart_aofKeepsData(t *testing.T) {
	s := redistest.Start(t, redistest.WithArgs("--appendonly", "yes", "--appendfsync", "always"))
	c := s.Client(t)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	s.Kill()
	s.Restart()

	got, err := c.Get(ctx, "k").Result()
	if err != nil || got != "v" {
		t.Fatalf("GET k after AOF restart = %q, %v; want \"v\"", got, err)
	}
}

func TestServer_StopCont(t *testing.T) {
	s := redistest.Start(t)
	c := quickClient(t, s.Addr())
	ctx := t.Context()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	s.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("PING on a stopped server succeeded")
	}
	s.Cont()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Cont: %v", err)
	}
}

func TestServer_Kill_whileStopped(t *testing.T) {
	s := redistest.Start(t)
	s.Stop()
	s.Kill() // must not hang on a frozen process
	s.Restart()
	if err := s.Client(t).Ping(t.Context()).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestServer_FlushAll(t *testing.T) {
	s := redistest.Start(t)
	c := s.Client(t)
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.FlushAll()
	if n, err := c.DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("DBSIZE after FlushAll = %d, %v", n, err)
	}
}

func TestStart_badArgs_reportsOutput(t *testing.T) {
	if !redistest.Available() {
		t.Skip("redis-server not available")
	}
	f := run(t, func(tb testing.TB) { redistest.Start(tb, redistest.WithArgs("--no-such-directive", "1")) })
	if f.fatal == "" {
		t.Fatal("Start with a bad directive did not fail")
	}
	if !strings.Contains(f.fatal, "Bad directive") {
		t.Fatalf("failure lacks the server's own explanation:\n%s", f.fatal)
	}
}

func TestStart_missingBinary(t *testing.T) {
	t.Setenv("PATH", t.TempDir())

	t.Run("skips", func(t *testing.T) {
		t.Setenv("FENCEDLOCK_REQUIRE_REDIS", "")
		f := run(t, func(tb testing.TB) { redistest.Start(tb) })
		if !strings.Contains(f.skip, "redis-server not found on PATH") || f.fatal != "" {
			t.Fatalf("skip = %q, fatal = %q", f.skip, f.fatal)
		}
	})
	t.Run("required", func(t *testing.T) {
		t.Setenv("FENCEDLOCK_REQUIRE_REDIS", "1")
		f := run(t, func(tb testing.TB) { redistest.Start(tb) })
		if !strings.Contains(f.fatal, "redis-server not found on PATH") || f.skip != "" {
			t.Fatalf("skip = %q, fatal = %q", f.skip, f.fatal)
		}
	})
	if redistest.Available() {
		t.Fatal("Available() with an empty PATH")
	}
}

// fakeTB records Skip and Fatal instead of ending the real test, so the
// ways Start gives up can themselves be tested.
type fakeTB struct {
	testing.TB
	mu          sync.Mutex
	skip, fatal string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Skip(args ...any) { f.stop(&f.skip, fmt.Sprint(args...)) }

func (f *fakeTB) Fatal(args ...any) { f.stop(&f.fatal, fmt.Sprint(args...)) }

func (f *fakeTB) Fatalf(format string, args ...any) { f.stop(&f.fatal, fmt.Sprintf(format, args...)) }

func (f *fakeTB) stop(dst *string, msg string) {
	f.mu.Lock()
	*dst = msg
	f.mu.Unlock()
	runtime.Goexit()
}

// run calls fn on its own goroutine, as Skip and Fatal end it with Goexit.
func run(t *testing.T, fn func(testing.TB)) *fakeTB {
	f := &fakeTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	f.mu.Lock()
	defer f.mu.Unlock()
	return f
}
