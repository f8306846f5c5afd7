package sqlguard_test

import (
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/sqlguard"
)

// begin starts a guarded transaction or fails the test.
func begin(tb testing.TB, ctx context.Context, db *testDB, table string, t core.FenceToken) *sqlguard.Tx {
	tb.Helper()
	tx, err := sqlguard.BeginTx(ctx, db.db, nil, sqlguard.WithTable(table), sqlguard.WithFence(t))
	if err != nil {
		tb.Fatalf("BeginTx(%v): %v", t, err)
	}
	return tx
}

// ledger creates a table the caller's own statements write to.
func (db *testDB) ledger(tb testing.TB) string {
	tb.Helper()
	name := db.table(tb, "ledger")
	ddl := "CREATE TABLE " + name + " (id BIGINT NOT NULL PRIMARY KEY, note VARCHAR(64) NOT NULL)"
	if db.dialect == sqlguard.MySQL {
		ddl += " ENGINE=InnoDB"
	}
	db.exec(tb, ddl)
	return name
}

// assertEnded checks that every use of a transaction sqlguard rolled back
// reports why, that Rollback says it is done, and that nothing of it stuck.
func assertEnded(t *testing.T, ctx context.Context, tx *sqlguard.Tx, want error) {
	t.Helper()
	if err := tx.Commit(); !errors.Is(err, want) {
		t.Fatalf("Commit after the rollback = %v, want %v", err, want)
	}
	if _, err := tx.ExecContext(ctx, "SELECT 1"); !errors.Is(err, want) {
		t.Fatalf("ExecContext = %v, want %v", err, want)
	}
	if _, err := tx.QueryContext(ctx, "SELECT 1"); !errors.Is(err, want) {
		t.Fatalf("QueryContext = %v, want %v", err, want)
	}
	if _, err := tx.PrepareContext(ctx, "SELECT 1"); !errors.Is(err, want) {
		t.Fatalf("PrepareContext = %v, want %v", err, want)
	}
	if _, err := tx.ExecFenced(ctx, "SELECT 1"); !errors.Is(err, want) {
		t.Fatalf("ExecFenced = %v, want %v", err, want)
	}
	if err := tx.Rollback(); !errors.Is(err, sql.ErrTxDone) {
		t.Fatalf("Rollback = %v, want sql.ErrTxDone", err)
	}
	var one int
	if err := tx.QueryRowContext(ctx, "SELECT 1").Scan(&one); !errors.Is(err, sql.ErrTxDone) {
		t.Fatalf("QueryRowContext = %v, want sql.ErrTxDone", err)
	}
}

func TestTx_Update_rowGuard(t *testing.T) {
	eachWriteDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		fences, accounts, ledger := db.fenceTable(t), db.accounts(t), db.ledger(t)

		// A newer holder writes the row through the row guard.
		tx := begin(t, ctx, db, fences, tok("acct", base+2, "b"))
		if _, err := tx.Update(accounts).Set("balance", 200).Where("id", 1).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}

		// An older holder guarding a different resource gets through the
		// resource guard, but the row remembers the newer fence.
		tx = begin(t, ctx, db, fences, tok("other", base+1, "a"))
		if _, err := tx.ExecContext(ctx, db.rebind("INSERT INTO "+ledger+" (id, note) VALUES (?, ?)"), 1, "before"); err != nil {
			t.Fatal(err)
		}
		_, err := tx.Update(accounts).Set("balance", 100).Where("id", 1).Exec(ctx)
		var se *sqlguard.StaleFenceError
		if !errors.As(err, &se) || !se.Row || se.Table != accounts || se.Fence != base+1 {
			t.Fatalf("err = %v, want a row StaleFenceError on %s", err, accounts)
		}
		assertEnded(t, ctx, tx, sqlguard.ErrStaleFence)
		if n := db.int64(t, "SELECT balance FROM "+accounts+" WHERE id = 1"); n != 200 {
			t.Fatalf("balance = %d, want 200", n)
		}
		if n := db.int64(t, "SELECT COUNT(*) FROM "+ledger); n != 0 {
			t.Fatal("the rejected transaction's earlier insert survived")
		}
		if n := db.storedFence(t, fences, "other"); n != 0 {
			t.Fatal("the rejected transaction's fence record survived")
		}

		// The same fence writes the row again (issue 15, point 1).
		tx = begin(t, ctx, db, fences, tok("acct", base+2, "b"))
		if _, err := tx.Update(accounts).Set("balance", 202).Where("id", 1).Exec(ctx); err != nil {
			t.Fatalf("same fence: %v", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}

		// ExecFenced: the caller writes the fenced statement.
		tx = begin(t, ctx, db, fences, tok("acct", base+3, "c"))
		q := "UPDATE " + accounts + " SET balance = ?, fence = ? WHERE id = ? AND fence < ?"
		if _, err := tx.ExecFenced(ctx, db.rebind(q), 300, tx.Fence(), 1, tx.Fence()); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		tx = begin(t, ctx, db, fences, tok("elsewhere", base+1, "a"))
		if _, err := tx.ExecFenced(ctx, db.rebind(q), 1, tx.Fence(), 1, tx.Fence()); !errors.Is(err, sqlguard.ErrStaleFence) {
			t.Fatalf("ExecFenced stale: %v", err)
		}
		assertEnded(t, ctx, tx, sqlguard.ErrStaleFence)
		if n, f := db.int64(t, "SELECT balance FROM "+accounts+" WHERE id = 1"), db.int64(t, "SELECT fence FROM "+accounts+" WHERE id = 1"); n != 300 || uint64(f) != base+3 {
			t.Fatalf("row = (%d, %d), want (300, %d)", n, f, base+3)
		}
	})
}

func TestTx_Update_SQL(t *testing.T) {
	for _, c := range []struct {
		name string
		db   string
		u    func(*sqlguard.Tx) *sqlguard.Update
		want string
		args int
		err  error
	}{
		{"postgres reuses the fence parameter", "postgres", func(tx *sqlguard.Tx) *sqlguard.Update {
			return tx.Update("accounts").Set("balance", 1).Where("id", 7)
		}, "UPDATE accounts SET balance = $1, fence = $2 WHERE id = $3 AND fence <= $2", 3, nil},
		{"sqlite binds it twice", "sqlite", func(tx *sqlguard.Tx) *sqlguard.Update {
			return tx.Update("s.accounts").Set("a", 1).Set("b", 2).Where("id", 7).Where("shard", 1).FenceColumn("ver").AllowSameFence()
		}, "UPDATE s.accounts SET a = ?, b = ?, ver = ? WHERE id = ? AND shard = ? AND ver <= ?", 6, nil},
		{"no where", "sqlite", func(tx *sqlguard.Tx) *sqlguard.Update { return tx.Update("accounts").Set("a", 1) }, "", 0, nil},
		{"bad column", "sqlite", func(tx *sqlguard.Tx) *sqlguard.Update {
			return tx.Update("accounts").Set("a=1;--", 1).Where("id", 1)
		}, "", 0, sqlguard.ErrInvalidName},
		{"setting the fence column", "sqlite", func(tx *sqlguard.Tx) *sqlguard.Update {
			return tx.Update("accounts").Set("fence", 1).Where("id", 1)
		}, "", 0, sqlguard.ErrInvalidName},
		{"bad fence column", "sqlite", func(tx *sqlguard.Tx) *sqlguard.Update {
			return tx.Update("accounts").Where("id", 1).FenceColumn("s.fence")
		}, "", 0, sqlguard.ErrInvalidName},
		{"bad where column", "sqlite", func(tx *sqlguard.Tx) *sqlguard.Update {
			return tx.Update("accounts").Where("id or 1", 1)
		}, "", 0, sqlguard.ErrInvalidName},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := openDB(t, c.db)
			ctx := context.Background()
			tx := begin(t, ctx, db, db.fenceTable(t), tok("r", 5, "o"))
			defer tx.Rollback()
			q, args, err := c.u(tx).SQL()
			if c.want == "" {
				if err == nil || (c.err != nil && !errors.Is(err, c.err)) {
					t.Fatalf("err = %v, want %v", err, c.err)
				}
				// Exec refuses the same way and rolls back.
				_, xerr := c.u(tx).Exec(ctx)
				if xerr == nil {
					t.Fatal("Exec accepted what SQL refused")
				}
				assertEnded(t, ctx, tx, xerr)
				return
			}
			if err != nil || q != c.want || len(args) != c.args {
				t.Fatalf("SQL() = %q, %v, %v; want %q with %d args", q, args, err, c.want, c.args)
			}
		})
	}
}

func TestTx_rollbackOnErrors(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		fences, ledger := db.fenceTable(t), db.ledger(t)
		insert := db.rebind("INSERT INTO " + ledger + " (id, note) VALUES (?, ?)")
		nothingStuck := func(t *testing.T, resource string) {
			t.Helper()
			if n := db.int64(t, "SELECT COUNT(*) FROM "+ledger); n != 0 {
				t.Fatalf("%d ledger rows survived", n)
			}
			if n := db.storedFence(t, fences, resource); n != 0 {
				t.Fatalf("fence %d for %q survived", n, resource)
			}
		}

		t.Run("failing fenced statement", func(t *testing.T) {
			tx := begin(t, ctx, db, fences, tok("r1", 10, "o"))
			if _, err := tx.ExecContext(ctx, insert, 1, "x"); err != nil {
				t.Fatal(err)
			}
			_, err := tx.ExecFenced(ctx, "UPDATE no_such_table_sg SET x = 1")
			if err == nil || errors.Is(err, sqlguard.ErrStaleFence) {
				t.Fatalf("err = %v", err)
			}
			assertEnded(t, ctx, tx, err)
			nothingStuck(t, "r1")
		})

		t.Run("stale fence at begin runs nothing", func(t *testing.T) {
			if err := guarded(ctx, db, fences, tok("r2", 20, "new")); err != nil {
				t.Fatal(err)
			}
			tx, err := sqlguard.BeginTx(ctx, db.db, nil, sqlguard.WithTable(fences), sqlguard.WithFence(tok("r2", 19, "old")))
			if !errors.Is(err, sqlguard.ErrStaleFence) || tx != nil {
				t.Fatalf("BeginTx = %v, %v", tx, err)
			}
			if n := db.int64(t, "SELECT writes FROM "+fences+" WHERE resource = ?", "r2"); n != 1 {
				t.Fatalf("writes = %d, want 1", n)
			}
		})

		t.Run("context cancelled mid-transaction", func(t *testing.T) {
			cctx, cancel := context.WithCancel(ctx)
			tx := begin(t, cctx, db, fences, tok("r3", 30, "o"))
			if _, err := tx.ExecContext(cctx, insert, 3, "x"); err != nil {
				t.Fatal(err)
			}
			cancel()
			// database/sql rolls the transaction back on cancellation.
			if err := tx.Commit(); err == nil {
				t.Fatal("Commit succeeded after cancellation")
			}
			nothingStuck(t, "r3")
			// The connection went back to the pool clean: a new guard on
			// the same resource starts from nothing.
			if err := guarded(ctx, db, fences, tok("r3", 1, "other")); err != nil {
				t.Fatal(err)
			}
		})

		t.Run("context cancelled before begin", func(t *testing.T) {
			cctx, cancel := context.WithCancel(ctx)
			cancel()
			_, err := sqlguard.BeginTx(cctx, db.db, nil, sqlguard.WithTable(fences), sqlguard.WithFence(tok("r4", 40, "o")))
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want context.Canceled", err)
			}
			nothingStuck(t, "r4")
		})

		t.Run("caller rollback", func(t *testing.T) {
			tx := begin(t, ctx, db, fences, tok("r5", 50, "o"))
			if _, err := tx.ExecContext(ctx, insert, 5, "x"); err != nil {
				t.Fatal(err)
			}
			if err := tx.Rollback(); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(); !errors.Is(err, sql.ErrTxDone) {
				t.Fatalf("Commit after Rollback = %v", err)
			}
			nothingStuck(t, "r5")
		})
	})
}

// The guard is one statement among the caller's: its fence record commits
// or rolls back together with them, and statements of every kind work.
func TestTx_composes(t *testing.T) {
	eachDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		fences, accounts, ledger := db.fenceTable(t), db.accounts(t), db.ledger(t)
		tx := begin(t, ctx, db, fences, tok("acct:1", base+5, "o"))
		defer tx.Rollback()

		var bal int64
		if err := tx.QueryRowContext(ctx, db.rebind("SELECT balance FROM "+accounts+" WHERE id = ?"), 1).Scan(&bal); err != nil {
			t.Fatal(err)
		}
		st, err := tx.PrepareContext(ctx, db.rebind("INSERT INTO "+ledger+" (id, note) VALUES (?, ?)"))
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 3; i++ {
			if _, err := st.ExecContext(ctx, i, "credit"); err != nil {
				t.Fatal(err)
			}
		}
		st.Close()
		if _, err := tx.Update(accounts).Set("balance", bal+30).Where("id", 1).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		rows, err := tx.QueryContext(ctx, "SELECT id FROM "+ledger+" ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Close(); err != nil || n != 3 {
			t.Fatalf("read %d rows inside the transaction (%v)", n, err)
		}
		// Other connections see nothing before Commit...
		if n := db.int64(t, "SELECT COUNT(*) FROM "+ledger); n != 0 {
			t.Fatalf("uncommitted rows visible: %d", n)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		// ...and everything after.
		if n := db.int64(t, "SELECT COUNT(*) FROM "+ledger); n != 3 {
			t.Fatalf("%d ledger rows, want 3", n)
		}
		if got := db.int64(t, "SELECT balance FROM "+accounts+" WHERE id = 1"); got != 30 {
			t.Fatalf("balance %d, want 30", got)
		}
		if got := uint64(db.storedFence(t, fences, "acct:1")); got != base+5 {
			t.Fatalf("fence %d, want %d", got, base+5)
		}
		// The *sql.Tx is there for APIs that need one.
		if tx.SQLTx() == nil {
			t.Fatal("SQLTx() = nil")
		}
	})
}

// errors from the database keep the package prefix and the driver's error.
func TestTx_errorText(t *testing.T) {
	db := openDB(t, "sqlite")
	err := guarded(context.Background(), db, "sgt_nope", tok("r", 1, "o"))
	if err == nil || !strings.HasPrefix(err.Error(), "sqlguard: ") || !strings.Contains(err.Error(), "no such table") {
		t.Fatalf("err = %v", err)
	}
}

// Tx fits where generated code (sqlc's DBTX) expects a *sql.Tx-like value.
var _ interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
	PrepareContext(context.Context, string) (*sql.Stmt, error)
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
	QueryRowContext(context.Context, string, ...any) *sql.Row
} = (*sqlguard.Tx)(nil)
