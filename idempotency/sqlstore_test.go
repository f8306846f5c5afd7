package idempotency_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/idempotency"
	"github.com/fencedlock/fencedlock/sqlguard"
)

const (
	pgEnv        = "FENCEDLOCK_PG_DSN"
	requireDBEnv = "FENCEDLOCK_REQUIRE_DB"
	defaultPG    = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	sqliteParams = "?_pragma=busy_timeout(30000)&_pragma=journal_mode(WAL)&_txlock=immediate"
)

// sqlFixture is a database with uniquely named tables for one test.
type sqlFixture struct {
	driver, dsn               string
	db                        *sql.DB
	store                     *idempotency.SQLStore
	answers, fences, payments string
}

func eachSQL(t *testing.T, fn func(t *testing.T, sf *sqlFixture)) {
	onSQL(t, []string{"sqlite", "postgres"}, fn)
}

func onSQL(t *testing.T, names []string, fn func(t *testing.T, sf *sqlFixture)) {
	for _, name := range names {
		t.Run(name, func(t *testing.T) { fn(t, openSQL(t, name)) })
	}
}

func openSQL(t *testing.T, name string) *sqlFixture {
	sf := &sqlFixture{driver: "pgx", dsn: defaultPG}
	if v := os.Getenv(pgEnv); v != "" {
		sf.dsn = v
	}
	if name == "sqlite" {
		sf.driver, sf.dsn = "sqlite", filepath.Join(t.TempDir(), "idem.db")+sqliteParams
	}
	db, err := sql.Open(sf.driver, sf.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		if name == "sqlite" || os.Getenv(requireDBEnv) == "1" {
			t.Fatal(err)
		}
		t.Skipf("%s unreachable (%v); set %s", name, err, pgEnv)
	}
	sf.db = db
	var b [6]byte
	_, _ = rand.Read(b[:])
	sfx := hex.EncodeToString(b[:])
	sf.answers, sf.fences, sf.payments = "idt_answers_"+sfx, "idt_fences_"+sfx, "idt_payments_"+sfx
	t.Cleanup(func() {
		for _, tb := range []string{sf.answers, sf.fences, sf.payments} {
			_, _ = db.Exec("DROP TABLE IF EXISTS " + tb)
		}
	})
	sf.store = sf.newStore(t, db)
	if err := sf.store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE "+sf.payments+" (idem TEXT NOT NULL, amount TEXT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	return sf
}

func (sf *sqlFixture) newStore(t testing.TB, db *sql.DB) *idempotency.SQLStore {
	s, err := idempotency.NewSQLStore(db, idempotency.WithSQLTable(sf.answers),
		idempotency.WithGuardOptions(sqlguard.WithTable(sf.fences)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (sf *sqlFixture) paymentsFor(t testing.TB, key string) int {
	var n int
	if err := sf.db.QueryRow("SELECT count(*) FROM " + sf.payments + " WHERE idem = '" + key + "'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// payHandler records a payment in the attempt's transaction; fail decides
// how it ends after the write.
func payHandler(table string, fail func() string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tx, ok := idempotency.TxFromContext(r.Context())
		if !ok {
			http.Error(w, "no transaction", http.StatusInternalServerError)
			return
		}
		key := r.Header.Get("Idempotency-Key")
		if _, err := tx.ExecContext(r.Context(), "INSERT INTO "+table+" (idem, amount) VALUES ('"+key+"', '9.99')"); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		switch fail() {
		case "panic":
			panic("after the write")
		case "5xx":
			http.Error(w, "provider down", http.StatusBadGateway)
			return
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "payment for %s", key)
	})
}

func TestSQLStore_answerCommitsWithTheWrite(t *testing.T) {
	eachSQL(t, func(t *testing.T, sf *sqlFixture) {
		fx := newFixture(t)
		var calls atomic.Int64
		fail := func() string { return map[int64]string{1: "panic", 2: "5xx"}[calls.Add(1)] }
		ts := quietServer(t, fx.client(), sf.store, payHandler(sf.payments, fail))
		url, ctx := ts.URL+"/charges", context.Background()

		if r := post(ctx, ts.Client(), url, "q1", "x"); r.err == nil {
			t.Fatalf("panic answered %+v", r)
		}
		if r := post(ctx, ts.Client(), url, "q1", "x"); r.status != http.StatusBadGateway {
			t.Fatalf("5xx run answered %+v", r)
		}
		if n := sf.paymentsFor(t, "q1"); n != 0 {
			t.Fatalf("%d payments after a panic and a 5xx, want 0 (rolled back)", n)
		}
		first := post(ctx, ts.Client(), url, "q1", "x")
		again := post(ctx, ts.Client(), url, "q1", "x")
		other := post(ctx, ts.Client(), url, "q1", "y")
		if first.status != http.StatusCreated || first.replayed || !again.replayed || again.body != first.body {
			t.Fatalf("first %+v, again %+v", first, again)
		}
		if other.status != http.StatusUnprocessableEntity {
			t.Fatalf("other body: %+v, want 422", other)
		}
		if n := sf.paymentsFor(t, "q1"); n != 1 || calls.Load() != 3 {
			t.Fatalf("%d payments over %d runs, want 1 over 3", n, calls.Load())
		}
	})
}

func TestSQLStore_concurrentDuplicates(t *testing.T) {
	eachSQL(t, func(t *testing.T, sf *sqlFixture) {
		fx := newFixture(t)
		never := func() string { time.Sleep(50 * time.Millisecond); return "" }
		servers := []*httptest.Server{
			serve(t, fx.client(), sf.store, payHandler(sf.payments, never)),
			serve(t, fx.client(), sf.store, payHandler(sf.payments, never)),
		}
		replies := concurrent(servers, 8, "cc1")
		for _, r := range replies {
			if r.err != nil || r.status != http.StatusCreated || r.body != replies[0].body {
				t.Fatalf("replies differ: %+v", replies)
			}
		}
		if n := sf.paymentsFor(t, "cc1"); n != 1 {
			t.Fatalf("%d payments, want 1", n)
		}
	})
}

// A newer holder's Begin waits for an older attempt still inside its
// transaction (the fence row lock), but that wait ends with the newer
// request: a paused old holder cannot pin the retries' goroutines and
// connections past their deadlines. When the old attempt commits, its
// answer is what the next request gets.
func TestSQLStore_begin_waitEndsWithTheRequest(t *testing.T) {
	eachSQL(t, func(t *testing.T, sf *sqlFixture) {
		fx := newFixture(t)
		locker := fx.client(core.WithTTL(200 * time.Millisecond))
		ctx := context.Background()
		const key = "idem:sql-wait"
		old, err := locker.Acquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		oldAtt, err := sf.store.Begin(ctx, key, old)
		if err != nil {
			t.Fatal(err)
		}
		defer oldAtt.Abort(ctx)
		time.Sleep(300 * time.Millisecond) // the old holder's lease runs out
		lk, err := locker.Acquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		defer lk.Release(ctx)

		rctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		began := make(chan error, 1)
		go func() {
			att, err := sf.store.Begin(rctx, key, lk)
			if err == nil {
				_ = att.Abort(ctx)
			}
			began <- err
		}()
		select {
		case err := <-began:
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("newer Begin = %v, want the request's deadline", err)
			}
		case <-time.After(3 * time.Second):
			_ = oldAtt.Abort(ctx) // unblocks it, so the test ends
			<-began
			t.Fatal("newer Begin still waiting 3s after its request's deadline")
		}
		rec := &idempotency.Record{Fence: old.Fence(), Status: 201, Body: []byte("old answer")}
		if err := oldAtt.Commit(ctx, rec, time.Hour); err != nil {
			t.Fatalf("old attempt's Commit = %v", err)
		}
		got, err := sf.store.Lookup(ctx, key)
		if err != nil || string(got.Body) != "old answer" {
			t.Fatalf("Lookup = %v, %v", got, err)
		}
	})
}
