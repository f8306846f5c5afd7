package sqlguard_test

import (
	"context"
	"database/sql"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/sqlguard"
)

// base is a realistic fence: core issues microsecond clock readings.
const base uint64 = 1_800_000_000_000_000

func tok(resource string, fence uint64, owner string) core.FenceToken {
	return core.FenceToken{Key: resource, Fence: fence, Owner: owner}
}

// guarded begins and commits an empty guarded transaction with t.
func guarded(ctx context.Context, db *testDB, table string, t core.FenceToken) error {
	tx, err := sqlguard.BeginTx(ctx, db.db, nil, sqlguard.WithTable(table), sqlguard.WithFence(t))
	if err != nil {
		return err
	}
	return tx.Commit()
}

func TestBeginTx_resourceGuard(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		table := db.fenceTable(t)
		const r = "coupon:42"

		steps := []struct {
			name  string
			tok   core.FenceToken
			stale bool
		}{
			{"first fence inserts", tok(r, base+10, "a"), false},
			{"same fence same owner writes again", tok(r, base+10, "a"), false},
			{"lower fence rejected", tok(r, base+9, "old"), true},
			{"same fence other owner rejected", tok(r, base+10, "b"), true},
			{"higher fence accepted", tok(r, base+11, "b"), false},
			{"previous holder rejected after it", tok(r, base+10, "a"), true},
			{"much higher fence accepted", tok(r, base+1_000_000, "c"), false},
			{"empty owner on a new resource", tok("other", 5, ""), false},
			{"empty owner again", tok("other", 5, ""), false},
		}
		want := map[string]uint64{}
		for _, s := range steps {
			err := guarded(ctx, db, table, s.tok)
			if s.stale {
				if !errors.Is(err, sqlguard.ErrStaleFence) {
					t.Fatalf("%s: err = %v, want ErrStaleFence", s.name, err)
				}
				var se *sqlguard.StaleFenceError
				if !errors.As(err, &se) || se.Resource != r || se.Fence != s.tok.Fence || se.Row {
					t.Fatalf("%s: StaleFenceError = %+v", s.name, se)
				}
				if db.dialect == sqlguard.MySQL && se.Current != want[r] {
					t.Fatalf("%s: Current = %d, want stored %d", s.name, se.Current, want[r])
				}
			} else {
				if err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				want[s.tok.Key] = s.tok.Fence
			}
			if got := uint64(db.storedFence(t, table, r)); got != want[r] {
				t.Fatalf("%s: stored fence %d, want %d", s.name, got, want[r])
			}
		}
		// writes counts accepted guards only: 4 for r.
		if n := db.int64(t, "SELECT writes FROM "+table+" WHERE resource = ?", r); n != 4 {
			t.Fatalf("writes = %d, want 4", n)
		}
	})
}

// MySQL and MariaDB report rows affected differently when the DSN sets
// clientFoundRows; the guard must read both the same way, and a rejection's
// LAST_INSERT_ID must not leak into the next guard on the same connection.
func TestBeginTx_mysqlClientFoundRows(t *testing.T) {
	for _, found := range []bool{false, true} {
		name := "clientFoundRows=false"
		if found {
			name = "clientFoundRows=true"
		}
		t.Run(name, func(t *testing.T) {
			_, dsn, _ := dsnFor(t, "mariadb")
			dsn = withMySQLConfig(t, dsn, func(c *mysql.Config) { c.ClientFoundRows = found })
			db := openDSN(t, "mariadb", "mysql", dsn, sqlguard.MySQL)
			db.db.SetMaxOpenConns(1) // one connection: state would carry over
			ctx := context.Background()
			table := db.fenceTable(t)
			for i, s := range []struct {
				tok   core.FenceToken
				stale bool
			}{
				{tok("r", 100, "a"), false},  // insert: 1 row
				{tok("r", 100, "a"), false},  // same holder: 2 rows (writes bumped)
				{tok("r", 99, "x"), true},    // 0 rows, or 1 under clientFoundRows
				{tok("s", 1, "a"), false},    // insert right after a rejection
				{tok("r", 100, "b"), true},   // equal fence, other owner
				{tok("r", 101, "b"), false},  // update: 2 rows
				{tok("t", 7, "a"), false},    // insert
				{tok("t", 7, "zz"), true},    // rejected
				{tok("t", 8, "zz"), false},   // accepted
				{tok("u", 1, "long"), false}, // insert after an accept
			} {
				err := guarded(ctx, db, table, s.tok)
				if s.stale != errors.Is(err, sqlguard.ErrStaleFence) || (!s.stale && err != nil) {
					t.Fatalf("step %d %+v: err = %v, stale want %v", i, s.tok, err, s.stale)
				}
			}
			if got := db.storedFence(t, table, "r"); got != 101 {
				t.Fatalf("stored fence %d, want 101", got)
			}
		})
	}
}

func TestBeginTx_fenceSources(t *testing.T) {
	db := openDB(t, "sqlite")
	ctx := context.Background()
	table := db.fenceTable(t)
	locks := locktest.New(core.WithTTL(time.Minute))
	defer locks.Close()

	l1, err := locks.Acquire(ctx, "job:1")
	if err != nil {
		t.Fatal(err)
	}
	l2, err := locks.Acquire(ctx, "job:2")
	if err != nil {
		t.Fatal(err)
	}
	fwd := core.FenceToken{Key: "job:3", Fence: 77, Owner: "upstream"}

	cases := []struct {
		name     string
		ctx      context.Context
		opts     []sqlguard.Option
		resource string
		fence    uint64
		owner    string
	}{
		{"lock in context", core.ContextWithLock(ctx, l1), nil, "job:1", l1.Fence(), l1.Owner()},
		{"innermost lock wins", core.ContextWithLock(core.ContextWithLock(ctx, l1), l2), nil, "job:2", l2.Fence(), l2.Owner()},
		{"WithLock overrides the context", core.ContextWithLock(ctx, l1), []sqlguard.Option{sqlguard.WithLock(l2)}, "job:2", l2.Fence(), l2.Owner()},
		{"forwarded fence", core.ContextWithFence(ctx, fwd), nil, "job:3", 77, "upstream"},
		{"lock beats forwarded fence", core.ContextWithLock(core.ContextWithFence(ctx, fwd), l1), nil, "job:1", l1.Fence(), l1.Owner()},
		{"WithFence", ctx, []sqlguard.Option{sqlguard.WithFence(fwd)}, "job:3", 77, "upstream"},
		{"WithResource", core.ContextWithLock(ctx, l1), []sqlguard.Option{sqlguard.WithResource("accounts/9")}, "accounts/9", l1.Fence(), l1.Owner()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tx, err := sqlguard.BeginTx(c.ctx, db.db, nil, append(c.opts, sqlguard.WithTable(table))...)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			if tx.Resource() != c.resource || tx.Fence() != c.fence || tx.Owner() != c.owner || tx.Dialect() != sqlguard.SQLite {
				t.Fatalf("tx = (%q, %d, %q, %v), want (%q, %d, %q, sqlite)",
					tx.Resource(), tx.Fence(), tx.Owner(), tx.Dialect(), c.resource, c.fence, c.owner)
			}
			var owner string
			var fence int64
			if err := tx.QueryRowContext(ctx, "SELECT fence, owner FROM "+table+" WHERE resource = ?", c.resource).Scan(&fence, &owner); err != nil {
				t.Fatal(err)
			}
			if uint64(fence) != c.fence || owner != c.owner {
				t.Fatalf("row = (%d, %q), want (%d, %q)", fence, owner, c.fence, c.owner)
			}
			if owner == l1.Token() || owner == l2.Token() {
				t.Fatal("the secret owner token was stored")
			}
		})
	}
}

// beginner hides the *sql.DB type, as a wrapper would.
type beginner struct{ db *sql.DB }

func (b beginner) BeginTx(ctx context.Context, o *sql.TxOptions) (*sql.Tx, error) {
	return b.db.BeginTx(ctx, o)
}

func TestBeginTx_refusals(t *testing.T) {
	db := openDB(t, "sqlite")
	ctx := context.Background()
	table := db.fenceTable(t)
	good := sqlguard.WithFence(tok("r", 1, "o"))
	cases := []struct {
		name string
		ctx  context.Context
		db   sqlguard.Beginner
		txo  *sql.TxOptions
		opts []sqlguard.Option
		want error
	}{
		{"no fence anywhere", ctx, db.db, nil, nil, sqlguard.ErrNoFence},
		{"fence zero", ctx, db.db, nil, []sqlguard.Option{sqlguard.WithFence(tok("r", 0, "o"))}, core.ErrInvalidFence},
		{"fence beyond BIGINT", ctx, db.db, nil, []sqlguard.Option{sqlguard.WithFence(tok("r", math.MaxInt64+1, "o"))}, core.ErrInvalidFence},
		{"no resource", ctx, db.db, nil, []sqlguard.Option{sqlguard.WithFence(tok("", 1, "o"))}, core.ErrInvalidFence},
		{"nil lock", ctx, db.db, nil, []sqlguard.Option{sqlguard.WithLock(nil)}, sqlguard.ErrNoFence},
		{"table with a quote", ctx, db.db, nil, []sqlguard.Option{good, sqlguard.WithTable(`x"; DROP TABLE y`)}, sqlguard.ErrInvalidName},
		{"table starting with a digit", ctx, db.db, nil, []sqlguard.Option{good, sqlguard.WithTable("1x")}, sqlguard.ErrInvalidName},
		{"wrapped Beginner without WithDialect", ctx, beginner{db.db}, nil, []sqlguard.Option{good}, sqlguard.ErrUnknownDialect},
		{"bad dialect", ctx, db.db, nil, []sqlguard.Option{good, sqlguard.WithDialect(9)}, sqlguard.ErrUnknownDialect},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tx, err := sqlguard.BeginTx(c.ctx, c.db, c.txo, append([]sqlguard.Option{sqlguard.WithTable(table)}, c.opts...)...)
			if !errors.Is(err, c.want) || tx != nil {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			if !strings.HasPrefix(err.Error(), "sqlguard: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
		})
	}
	t.Run("read-only", func(t *testing.T) {
		_, err := sqlguard.BeginTx(ctx, db.db, &sql.TxOptions{ReadOnly: true}, good, sqlguard.WithTable(table))
		if err == nil || !strings.Contains(err.Error(), "ReadOnly") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("wrapped Beginner with WithDialect", func(t *testing.T) {
		tx, err := sqlguard.BeginTx(ctx, beginner{db.db}, nil, good, sqlguard.WithTable(table), sqlguard.WithDialect(sqlguard.SQLite))
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	})
	// Nothing was recorded by the refused calls (only "r" by the last one).
	if n := db.int64(t, "SELECT COUNT(*) FROM "+table); n != 1 {
		t.Fatalf("%d fence rows, want 1", n)
	}
}

func TestBeginTx_conn(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		table := db.fenceTable(t)
		conn, err := db.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// The dialect is detected through Conn.Raw.
		tx, err := sqlguard.BeginTx(ctx, conn, nil, sqlguard.WithTable(table), sqlguard.WithFence(tok("r", 3, "o")))
		if err != nil {
			t.Fatal(err)
		}
		if tx.Dialect() != db.dialect {
			t.Fatalf("dialect %v, want %v", tx.Dialect(), db.dialect)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if _, err := sqlguard.BeginTx(ctx, conn, nil, sqlguard.WithTable(table), sqlguard.WithFence(tok("r", 2, "o"))); !errors.Is(err, sqlguard.ErrStaleFence) {
			t.Fatalf("err = %v, want ErrStaleFence", err)
		}
		// The conn is usable again: the rejected transaction was rolled back.
		if err := conn.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestBeginTx_longNames(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		table := db.fenceTable(t)
		long := strings.Repeat("k", core.MaxKeyLen)
		owner := strings.Repeat("o", 200)
		if err := guarded(ctx, db, table, tok(long, 10, owner)); err != nil {
			t.Fatal(err)
		}
		if err := guarded(ctx, db, table, tok(long, 10, owner)); err != nil {
			t.Fatalf("same holder again: %v", err)
		}
		if err := guarded(ctx, db, table, tok(long, 9, owner)); !errors.Is(err, sqlguard.ErrStaleFence) {
			t.Fatalf("lower fence: %v", err)
		}
		if err := guarded(ctx, db, table, tok(long, 10, owner+"x")); !errors.Is(err, sqlguard.ErrStaleFence) {
			t.Fatalf("other long owner: %v", err)
		}
		// Keys that differ only in case or trailing spaces are different
		// resources (MySQL's default collations would merge them).
		for _, k := range []string{"Key", "key", "key "} {
			if err := guarded(ctx, db, table, tok(k, 5, "o")); err != nil {
				t.Fatalf("%q: %v", k, err)
			}
		}
		if n := db.int64(t, "SELECT COUNT(*) FROM "+table); n != 4 {
			t.Fatalf("%d fence rows, want 4", n)
		}
	})
}

func TestMigrate(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		table := db.table(t, "mig")
		for i := 0; i < 2; i++ { // idempotent
			if err := sqlguard.Migrate(ctx, db.db, 0, sqlguard.WithTable(table)); err != nil {
				t.Fatalf("Migrate #%d: %v", i+1, err)
			}
		}
		if err := guarded(ctx, db, table, tok("r", 1, "o")); err != nil {
			t.Fatal(err)
		}
		// Schema-qualified names work too.
		schema := map[sqlguard.Dialect]string{sqlguard.Postgres: "public", sqlguard.MySQL: "test", sqlguard.SQLite: "main"}[db.dialect]
		qtable := db.table(t, "migq")
		if err := sqlguard.Migrate(ctx, db.db, db.dialect, sqlguard.WithTable(schema+"."+qtable)); err != nil {
			t.Fatal(err)
		}
		if err := guarded(ctx, db, schema+"."+qtable, tok("r", 1, "o")); err != nil {
			t.Fatal(err)
		}
		if err := guarded(ctx, db, schema+"."+qtable, tok("r", 1, "p")); !errors.Is(err, sqlguard.ErrStaleFence) {
			t.Fatalf("err = %v", err)
		}
		// A missing table says what to do.
		err := guarded(ctx, db, "sgt_missing_table", tok("r", 1, "o"))
		if err == nil || !strings.Contains(err.Error(), "sqlguard.Migrate") {
			t.Fatalf("err = %v, want a hint to run Migrate", err)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		if err := sqlguard.Migrate(context.Background(), nil, sqlguard.SQLite); err == nil {
			t.Fatal("nil db accepted")
		}
		if err := sqlguard.Migrate(context.Background(), beginnerExec{}, 0); !errors.Is(err, sqlguard.ErrUnknownDialect) {
			t.Fatalf("err = %v", err)
		}
		if _, err := sqlguard.DDL(sqlguard.SQLite, sqlguard.WithTable("a.b.c")); !errors.Is(err, sqlguard.ErrInvalidName) {
			t.Fatalf("err = %v", err)
		}
		if _, err := sqlguard.DDL(0); !errors.Is(err, sqlguard.ErrUnknownDialect) {
			t.Fatalf("err = %v", err)
		}
	})
}

type beginnerExec struct{}

func (beginnerExec) ExecContext(context.Context, string, ...any) (sql.Result, error) {
	return nil, errors.New("unused")
}

func TestDetectDialect(t *testing.T) {
	for _, name := range dbNames {
		driver, dsn, want := dsnFor(t, name)
		db, err := sql.Open(driver, dsn) // does not connect
		if err != nil {
			t.Fatal(err)
		}
		got, err := sqlguard.DetectDialect(db.Driver())
		db.Close()
		if err != nil || got != want {
			t.Fatalf("%s: DetectDialect = %v, %v; want %v", name, got, err, want)
		}
	}
	if _, err := sqlguard.DetectDialect(nil); !errors.Is(err, sqlguard.ErrUnknownDialect) {
		t.Fatalf("nil: %v", err)
	}
	if _, err := sqlguard.DetectDialect(struct{}{}); !errors.Is(err, sqlguard.ErrUnknownDialect) {
		t.Fatalf("struct{}: %v", err)
	}
	for d, s := range map[sqlguard.Dialect]string{0: "auto", sqlguard.Postgres: "postgres", sqlguard.MySQL: "mysql", sqlguard.SQLite: "sqlite", 9: "Dialect(9)"} {
		if d.String() != s {
			t.Fatalf("%d.String() = %q, want %q", d, d.String(), s)
		}
	}
}
