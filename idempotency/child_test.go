package idempotency_test

import (
	"bufio"
	"context"
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/idempotency"
	"github.com/fencedlock/fencedlock/sqlguard"
)

// The subprocess tests (SIGKILL, SIGSTOP) re-run this test binary as a service instance (childEnv
// set to a mode) and SIGKILL it at a chosen point of a request.
const (
	childEnv      = "IDEMPOTENCY_TEST_CHILD"
	modeServe     = "serve"
	modeDieWrote  = "die-after-write"  // killed after the business write, before the commit
	modeDieCommit = "die-after-commit" // killed after the commit, before the response
	modeRedisSlow = "redis-slow"       // Redis store, a handler that says ENTERED and takes 300ms
)

func runChild() int {
	mode := os.Getenv(childEnv)
	env := func(k string) string { return os.Getenv("IDEM_" + k) }
	rdb := redis.NewClient(&redis.Options{Addr: env("REDIS")})
	if mode == modeRedisSlow {
		return serveChild(redisSlowHandler(rdb))
	}
	locker := core.New(rdb, core.WithTTL(time.Second))
	db, err := sql.Open(env("DRIVER"), env("DSN"))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	store, err := idempotency.NewSQLStore(db, idempotency.WithSQLTable(env("ANSWERS")),
		idempotency.WithGuardOptions(sqlguard.WithTable(env("FENCES"))))
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	die := func(stage string) {
		fmt.Println(stage)
		select {} // wait for SIGKILL
	}
	never := func() string { return "" }
	h := payHandler(env("PAYMENTS"), never)
	if mode == modeDieWrote {
		h = payHandler(env("PAYMENTS"), func() string { die("WROTE"); return "" })
	}
	mw := idempotency.Middleware(locker, store)(h)
	return serveChild(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if mode == modeDieCommit {
			w = &dieOnWrite{ResponseWriter: w, die: func() { die("COMMITTED") }}
		}
		mw.ServeHTTP(w, r)
	}))
}

// redisSlowHandler is POST /charges on the Redis store with a 300ms lease
// renewed by the watchdog.
func redisSlowHandler(rdb *redis.Client) http.Handler {
	locker := core.New(rdb)
	store := idempotency.NewRedisStore(rdb, "")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("ENTERED")
		time.Sleep(300 * time.Millisecond)
		fmt.Fprintf(w, "answer of pid %d", os.Getpid())
	})
	return idempotency.Middleware(locker, store, idempotency.WithTTL(300*time.Millisecond), idempotency.WithAutoRefresh())(h)
}

func serveChild(h http.Handler) int {
	mux := http.NewServeMux()
	mux.Handle("POST /charges", h)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("ERR", err)
		return 1
	}
	fmt.Println("ADDR", ln.Addr())
	_ = http.Serve(ln, mux)
	return 0
}

// dieOnWrite stops the process at the first byte of the response: the
// middleware writes it only after the answer is committed.
type dieOnWrite struct {
	http.ResponseWriter
	die func()
}

func (d *dieOnWrite) WriteHeader(int)           { d.die() }
func (d *dieOnWrite) Write([]byte) (int, error) { d.die(); return 0, nil }

// child is one service instance in a subprocess.
type child struct {
	cmd   *exec.Cmd
	lines chan string
	addr  string
}

func startChild(t *testing.T, sf *sqlFixture, redisAddr, mode string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode, "IDEM_REDIS="+redisAddr)
	if sf != nil {
		cmd.Env = append(cmd.Env, "IDEM_DRIVER="+sf.driver, "IDEM_DSN="+sf.dsn,
			"IDEM_ANSWERS="+sf.answers, "IDEM_FENCES="+sf.fences, "IDEM_PAYMENTS="+sf.payments)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, lines: make(chan string, 16)}
	go func() { // ends at EOF, when the child is gone
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
	}()
	t.Cleanup(c.kill)
	line := c.expect(t, "ADDR")
	c.addr = strings.TrimPrefix(line, "ADDR ")
	return c
}

func (c *child) expect(t *testing.T, prefix string) string {
	t.Helper()
	select {
	case l, ok := <-c.lines:
		if !ok || !strings.HasPrefix(l, prefix) {
			t.Fatalf("child said %q (open %v), want %s", l, ok, prefix)
		}
		return l
	case <-time.After(20 * time.Second):
		t.Fatalf("child did not say %s within 20s", prefix)
		return ""
	}
}

// kill SIGKILLs the child and waits for it and its output reader.
func (c *child) kill() {
	if c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGCONT) // a stopped child dies too
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	for range c.lines {
	}
	_ = c.cmd.Wait()
}

func TestSQLStore_processKilled(t *testing.T) {
	cases := []struct {
		mode, stage  string
		wantReplayed bool
	}{
		{modeDieCommit, "COMMITTED", true}, // the retry gets the stored answer
		{modeDieWrote, "WROTE", false},     // nothing committed: the retry runs again
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			eachSQL(t, func(t *testing.T, sf *sqlFixture) {
				fx := newFixture(t)
				first := startChild(t, sf, fx.srv.Addr(), c.mode)
				cl := ownClient(t, 30*time.Second)
				sent := make(chan reply, 1)
				go func() { sent <- post(context.Background(), cl, "http://"+first.addr+"/charges", "k1", "x") }()
				first.expect(t, c.stage)
				first.kill()
				if r := <-sent; r.err == nil {
					t.Fatalf("killed instance answered %+v", r)
				}

				second := startChild(t, sf, fx.srv.Addr(), modeServe)
				r := post(context.Background(), cl, "http://"+second.addr+"/charges", "k1", "x")
				if r.status != http.StatusCreated || r.body != "payment for k1" || r.replayed != c.wantReplayed {
					t.Fatalf("retry: %+v, want 201 replayed=%v", r, c.wantReplayed)
				}
				if n := sf.paymentsFor(t, "k1"); n != 1 {
					t.Fatalf("%d payments, want exactly 1", n)
				}
			})
		})
	}
}

// A first holder SIGSTOPped past its lease while a retry on another
// instance completes: when it resumes, its late store write is refused by
// the fence, its client gets 409, and the stored answer stays the retry's.
func TestMiddleware_sigstoppedHolder_lateWriteRefused(t *testing.T) {
	fx := newFixture(t)
	first := startChild(t, nil, fx.srv.Addr(), modeRedisSlow)
	second := startChild(t, nil, fx.srv.Addr(), modeRedisSlow)
	cl := ownClient(t, 30*time.Second)
	sent := make(chan reply, 1)
	go func() { sent <- post(context.Background(), cl, "http://"+first.addr+"/charges", "z1", "x") }()
	first.expect(t, "ENTERED")
	if err := first.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // twice the lease: it has expired in Redis

	r := post(context.Background(), cl, "http://"+second.addr+"/charges", "z1", "x")
	second.expect(t, "ENTERED")
	want := fmt.Sprintf("answer of pid %d", second.cmd.Process.Pid)
	if r.status != http.StatusOK || r.body != want {
		t.Fatalf("retry: %+v, want 200 %q", r, want)
	}
	if err := first.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if sr := <-sent; sr.status != http.StatusConflict {
		t.Fatalf("resumed holder answered %+v, want 409", sr)
	}
	rec, err := fx.store.Lookup(context.Background(), idempotency.Scope{Route: "POST /charges", Key: "z1"}.LockKey())
	if err != nil || string(rec.Body) != want {
		t.Fatalf("stored %v, %v; want the retry's answer", rec, err)
	}
}
