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
	// The negative controls: the same runs with the protection switched off.
	modeRedisSlowUnfenced = "redis-slow-unfenced"     // redis-slow, the store write not fenced
	modeServeOutsideTx    = "serve-outside-tx"        // the payment written outside the attempt's transaction
	modeDieWroteOutsideTx = "die-after-write-outside" // that, killed after the write
)

func runChild() int {
	mode := os.Getenv(childEnv)
	env := func(k string) string { return os.Getenv("IDEM_" + k) }
	rdb := redis.NewClient(&redis.Options{Addr: env("REDIS")})
	switch mode {
	case modeRedisSlow:
		return serveChild(redisSlowHandler(rdb, idempotency.NewRedisStore(rdb, "")))
	case modeRedisSlowUnfenced:
		return serveChild(redisSlowHandler(rdb, unfencedStore{idempotency.NewRedisStore(rdb, ""), rdb}))
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
	wrote := func() string { die("WROTE"); return "" }
	var h http.Handler
	switch mode {
	case modeDieWrote:
		h = payHandler(env("PAYMENTS"), wrote)
	case modeServeOutsideTx:
		h = payOutsideTx(db, env("PAYMENTS"), never)
	case modeDieWroteOutsideTx:
		h = payOutsideTx(db, env("PAYMENTS"), wrote)
	default:
		h = payHandler(env("PAYMENTS"), never)
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
func redisSlowHandler(rdb *redis.Client, store idempotency.Store) http.Handler {
	locker := core.New(rdb)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Println("ENTERED")
		time.Sleep(300 * time.Millisecond)
		fmt.Fprintf(w, "answer of pid %d", os.Getpid())
	})
	return idempotency.Middleware(locker, store, idempotency.WithTTL(300*time.Millisecond), idempotency.WithAutoRefresh())(h)
}

// unfencedStore is a RedisStore whose answer write ignores fences, as a
// store without fencing would: the stale-holder test's negative control.
type unfencedStore struct {
	*idempotency.RedisStore
	rdb *redis.Client
}

func (s unfencedStore) Begin(ctx context.Context, key string, lock *core.Lock) (idempotency.Attempt, error) {
	att, err := s.RedisStore.Begin(ctx, key, lock)
	if err != nil {
		return nil, err
	}
	return unfencedAttempt{Attempt: att, rdb: s.rdb, key: s.RecordKey(key)}, nil
}

type unfencedAttempt struct {
	idempotency.Attempt
	rdb *redis.Client
	key string
}

func (a unfencedAttempt) Commit(ctx context.Context, rec *idempotency.Record, retention time.Duration) error {
	return a.rdb.HSet(ctx, a.key, "fence", rec.Fence, "rec", rec.Encode()).Err()
}

// payOutsideTx is payHandler with the payment written on db directly
// instead of in the attempt's transaction: the SQL store's negative control.
func payOutsideTx(db *sql.DB, table string, fail func() string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Idempotency-Key")
		if _, err := db.ExecContext(r.Context(), "INSERT INTO "+table+" (idem, amount) VALUES ('"+key+"', '9.99')"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fail()
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "payment for %s", key)
	})
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
	both, pg := []string{"sqlite", "postgres"}, []string{"postgres"}
	cases := []struct {
		mode, stage, retry string
		wantReplayed       bool
		wantPayments       int
		dbs                []string
	}{
		{modeDieCommit, "COMMITTED", modeServe, true, 1, both}, // the retry gets the stored answer
		{modeDieWrote, "WROTE", modeServe, false, 1, both},     // nothing committed: the retry runs again
		// The negative control: the payment written outside the attempt's
		// transaction survives the kill, the answer does not, and the
		// retry pays again. PostgreSQL only: SQLite has one writer, so a
		// write beside the open attempt's transaction waits for it.
		{modeDieWroteOutsideTx, "WROTE", modeServeOutsideTx, false, 2, pg},
	}
	for _, c := range cases {
		t.Run(c.mode, func(t *testing.T) {
			onSQL(t, c.dbs, func(t *testing.T, sf *sqlFixture) {
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

				second := startChild(t, sf, fx.srv.Addr(), c.retry)
				r := post(context.Background(), cl, "http://"+second.addr+"/charges", "k1", "x")
				if r.status != http.StatusCreated || r.body != "payment for k1" || r.replayed != c.wantReplayed {
					t.Fatalf("retry: %+v, want 201 replayed=%v", r, c.wantReplayed)
				}
				if n := sf.paymentsFor(t, "k1"); n != c.wantPayments {
					t.Fatalf("%d payments, want %d", n, c.wantPayments)
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
	_, second, stale := sigstopRace(t, fx, modeRedisSlow)
	if stale.status != http.StatusConflict {
		t.Fatalf("resumed holder answered %+v, want 409", stale)
	}
	if got, want := storedBody(t, fx, "z1"), childAnswer(second); got != want {
		t.Fatalf("stored %q; want the retry's answer %q", got, want)
	}
}

// The negative control: with the store write unfenced the resumed holder's
// late answer replaces the retry's, so two different answers were given
// for one key and the stored one is not what the retry's client saw.
func TestMiddleware_sigstoppedHolder_unfencedOverwrites(t *testing.T) {
	fx := newFixture(t)
	first, _, stale := sigstopRace(t, fx, modeRedisSlowUnfenced)
	if stale.status != http.StatusOK {
		t.Fatalf("resumed holder answered %+v, want its own 200", stale)
	}
	if got, want := storedBody(t, fx, "z1"), childAnswer(first); got != want {
		t.Fatalf("stored %q; the control should show the stale answer %q overwriting the retry's", got, want)
	}
}

// sigstopRace starts two instances in mode, sends key z1 to the first and
// SIGSTOPs it inside the handler for twice its lease, completes a retry on
// the second, then resumes the first and returns its client's answer.
func sigstopRace(t *testing.T, fx *fixture, mode string) (first, second *child, stale reply) {
	first = startChild(t, nil, fx.srv.Addr(), mode)
	second = startChild(t, nil, fx.srv.Addr(), mode)
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
	if want := childAnswer(second); r.status != http.StatusOK || r.body != want || r.replayed {
		t.Fatalf("retry: %+v, want a fresh 200 %q", r, want)
	}
	if err := first.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	return first, second, <-sent
}

func childAnswer(c *child) string { return fmt.Sprintf("answer of pid %d", c.cmd.Process.Pid) }

func storedBody(t *testing.T, fx *fixture, key string) string {
	t.Helper()
	rec, err := fx.store.Lookup(context.Background(), idempotency.Scope{Route: "POST /charges", Key: key}.LockKey())
	if err != nil {
		t.Fatalf("stored answer: %v", err)
	}
	return string(rec.Body)
}
