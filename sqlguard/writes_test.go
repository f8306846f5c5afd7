package sqlguard_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/sqlguard"
)

// row reads an account's balance and fence.
func (db *testDB) row(tb testing.TB, table string, id int) (balance, fence int64) {
	tb.Helper()
	err := db.db.QueryRowContext(context.Background(), db.rebind("SELECT balance, fence FROM "+table+" WHERE id = ?"), id).Scan(&balance, &fence)
	if err != nil {
		tb.Fatal(err)
	}
	return balance, fence
}

// Issue 15, point 1: the same acquisition writes a row again, in one
// transaction and in the next, including a rewrite that leaves the row as
// it was (MySQL without clientFoundRows reports 0 rows for it).
func TestTx_Update_sameRowTwice(t *testing.T) {
	eachWriteDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		fences, accounts := db.fenceTable(t), db.accounts(t)
		f := tok("acct", base+10, "a")
		tx := begin(t, ctx, db, fences, f)
		for i, u := range []*sqlguard.Update{
			tx.Update(accounts).Set("balance", 5).Where("id", 1),
			tx.Update(accounts).Set("balance", 5).Where("id", 1), // unchanged
			tx.Update(accounts).Add("balance", 1).Where("id", 1),
		} {
			if _, err := u.Exec(ctx); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		tx = begin(t, ctx, db, fences, f) // the same acquisition, next transaction
		if _, err := tx.Update(accounts).Set("balance", 6).Where("id", 1).Exec(ctx); err != nil {
			t.Fatalf("rewrite under the same fence: %v", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if b, fe := db.row(t, accounts, 1); b != 6 || uint64(fe) != f.Fence {
			t.Fatalf("row = (%d, %d), want (6, %d)", b, fe, f.Fence)
		}
	})
}

// Issue 15, point 3: a missing row is ErrNotFound, not a stale fence.
func TestTx_Update_notFound(t *testing.T) {
	eachWriteDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		fences, accounts := db.fenceTable(t), db.accounts(t)
		tx := begin(t, ctx, db, fences, tok("acct", base, "a"))
		_, err := tx.Update(accounts).Add("balance", 1).Where("id", 99).Exec(ctx)
		if !errors.Is(err, sqlguard.ErrNotFound) || errors.Is(err, sqlguard.ErrStaleFence) {
			t.Fatalf("err = %v, want ErrNotFound", err)
		}
		assertEnded(t, ctx, tx, sqlguard.ErrNotFound)

		// A row with a newer fence is still stale.
		db.exec(t, "UPDATE "+accounts+" SET fence = ? WHERE id = 1", int64(base+5))
		tx = begin(t, ctx, db, fences, tok("acct", base+1, "a"))
		_, err = tx.Update(accounts).Add("balance", 1).Where("id", 1).Exec(ctx)
		var se *sqlguard.StaleFenceError
		if !errors.As(err, &se) || se.Current != base+5 {
			t.Fatalf("err = %v, want stale with the row's fence %d", err, base+5)
		}
	})
}

// Issue 15, point 3: expressions in SET, fenced INSERT and upsert.
func TestTx_writes(t *testing.T) {
	eachWriteDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		fences, accounts := db.fenceTable(t), db.accounts(t)
		f := base + 20
		tx := begin(t, ctx, db, fences, tok("acct", f, "a"))
		steps := []func(context.Context) (sql.Result, error){
			tx.Update(accounts).Add("balance", 100).Where("id", 1).Exec,
			tx.Update(accounts).SetExpr("balance", "balance - ? - ?", 20, 10).Where("id", 1).Exec,
			tx.Insert(accounts).Value("id", 2).Value("balance", 7).Exec,
			tx.Insert(accounts).Value("id", 3).Value("balance", 1).OnConflict("id").Exec, // upsert: insert
			tx.Insert(accounts).Value("id", 3).Value("balance", 9).OnConflict("id").Exec, // same fence: update
			tx.Insert(accounts).Value("id", 3).Value("balance", 9).OnConflict("id").Exec, // unchanged
		}
		for i, step := range steps {
			if _, err := step(ctx); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		for id, want := range map[int]int64{1: 70, 2: 7, 3: 9} {
			if b, fe := db.row(t, accounts, id); b != want || uint64(fe) != f {
				t.Fatalf("row %d = (%d, %d), want (%d, %d)", id, b, fe, want, f)
			}
		}

		// An older holder's upsert of an existing row is stale.
		tx = begin(t, ctx, db, fences, tok("other", f-1, "o"))
		_, err := tx.Insert(accounts).Value("id", 3).Value("balance", 0).OnConflict("id").Exec(ctx)
		if !errors.Is(err, sqlguard.ErrStaleFence) {
			t.Fatalf("stale upsert: %v", err)
		}
		// A newer holder's upsert overwrites it.
		tx = begin(t, ctx, db, fences, tok("acct", f+1, "b"))
		if _, err := tx.Insert(accounts).Value("id", 3).Value("balance", 11).OnConflict("id").Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if b, fe := db.row(t, accounts, 3); b != 11 || uint64(fe) != f+1 {
			t.Fatalf("row 3 = (%d, %d), want (11, %d)", b, fe, f+1)
		}
	})
}

// Issue 15, point 2: under several locks BeginTx guards each of them, and a
// row guard compares with the fence of the lock that protects the row.
func TestBeginTx_multiKey(t *testing.T) {
	eachWriteDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		fences, accounts := db.fenceTable(t), db.accounts(t)
		db.exec(t, "INSERT INTO "+accounts+" (id, balance, fence) VALUES (2, 0, 0)")
		locks := locktest.New()
		defer locks.Close()
		ka, kb := "acct:"+accounts+":1", "acct:"+accounts+":2"
		la, lb := mustAcquire(t, locks, ka), mustAcquire(t, locks, kb)
		defer la.Release(ctx)
		defer lb.Release(ctx)
		lctx := core.ContextWithLock(core.ContextWithLock(ctx, la), lb)

		tx, err := sqlguard.BeginTx(lctx, db.db, nil, sqlguard.WithTable(fences))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Update(accounts).Add("balance", 1).Where("id", 1).Exec(ctx); !errors.Is(err, sqlguard.ErrAmbiguousResource) {
			t.Fatalf("row guard without For: %v", err)
		}
		tx, err = sqlguard.BeginTx(lctx, db.db, nil, sqlguard.WithTable(fences))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Update(accounts).Add("balance", -5).Where("id", 1).For(ka).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Update(accounts).Add("balance", 5).Where("id", 2).For(kb).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		if db.storedFence(t, fences, ka) != int64(la.Fence()) || db.storedFence(t, fences, kb) != int64(lb.Fence()) {
			t.Fatal("not every lock's fence was recorded")
		}
		if _, f := db.row(t, accounts, 1); uint64(f) != la.Fence() {
			t.Fatalf("row 1 fence %d, want lock A's %d", f, la.Fence())
		}
		if _, f := db.row(t, accounts, 2); uint64(f) != lb.Fence() {
			t.Fatalf("row 2 fence %d, want lock B's %d", f, lb.Fence())
		}

		// A newer holder of the outer lock only: the pair is stale.
		if err := guarded(ctx, db, fences, tok(ka, la.Fence()+1, "newer")); err != nil {
			t.Fatal(err)
		}
		_, err = sqlguard.BeginTx(lctx, db.db, nil, sqlguard.WithTable(fences))
		var se *sqlguard.StaleFenceError
		if !errors.As(err, &se) || se.Resource != ka || se.Fence != la.Fence() {
			t.Fatalf("BeginTx with a stale outer lock: %v, want stale on %s", err, ka)
		}
		if db.storedFence(t, fences, kb) != int64(lb.Fence()) {
			t.Fatal("the refused transaction changed the other lock's record")
		}
	})
}

// Issue 15, point 2: a row guard compares the row's fence with the fence of
// the lock that protects the row, not with another lock's. Row 1 is A's; a
// row fence above A's but not above B's is stale for it.
func TestBeginTx_multiKey_rowComparesItsOwnLock(t *testing.T) {
	eachWriteDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		fences, accounts := db.fenceTable(t), db.accounts(t)
		locks := locktest.New()
		defer locks.Close()
		ka, kb := "acct:"+accounts+":1", "acct:"+accounts+":2"
		for range 3 { // fences are per key: move B's ahead of A's
			mustAcquire(t, locks, kb).Release(ctx)
		}
		la, lb := mustAcquire(t, locks, ka), mustAcquire(t, locks, kb)
		defer la.Release(ctx)
		defer lb.Release(ctx)
		if la.Fence() >= lb.Fence() {
			t.Fatalf("fences A %d, B %d: want A's lower", la.Fence(), lb.Fence())
		}
		db.exec(t, "UPDATE "+accounts+" SET fence = ? WHERE id = 1", int64(lb.Fence()))
		lctx := core.ContextWithLock(core.ContextWithLock(ctx, la), lb) // B innermost
		tx, err := sqlguard.BeginTx(lctx, db.db, nil, sqlguard.WithTable(fences))
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback()
		var se *sqlguard.StaleFenceError
		_, err = tx.Update(accounts).Add("balance", 1).Where("id", 1).For(ka).Exec(ctx)
		if !errors.As(err, &se) || se.Resource != ka || se.Fence != la.Fence() || se.Current != lb.Fence() {
			t.Fatalf("row 1 under A's lock, row fence B's: %v, want stale against A's fence", err)
		}
		if b, f := db.row(t, accounts, 1); b != 0 || uint64(f) != lb.Fence() {
			t.Fatalf("row 1 = (%d, %d), want it untouched", b, f)
		}
	})
}

func mustAcquire(t *testing.T, c *core.Client, key string) *core.Lock {
	t.Helper()
	l, err := c.Acquire(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// Issue 15, point 5: after sqlguard ended a transaction, every path says so:
// Err gives the reason and QueryRowContext sends nothing.
func TestTx_endedPaths(t *testing.T) {
	eachWriteDB(t, func(t *testing.T, db *testDB) {
		ctx := context.Background()
		fences, accounts := db.fenceTable(t), db.accounts(t)
		db.exec(t, "UPDATE "+accounts+" SET fence = ? WHERE id = 1", int64(base+9))
		tx := begin(t, ctx, db, fences, tok("acct", base, "a"))
		if tx.Err() != nil {
			t.Fatal("Err of an open transaction")
		}
		if _, err := tx.Update(accounts).Set("balance", 1).Where("id", 1).Exec(ctx); !errors.Is(err, sqlguard.ErrStaleFence) {
			t.Fatal(err)
		}
		if !errors.Is(tx.Err(), sqlguard.ErrStaleFence) {
			t.Fatalf("Err = %v", tx.Err())
		}
		var n int64
		if err := tx.QueryRowContext(ctx, "SELECT 1").Scan(&n); !errors.Is(err, sql.ErrTxDone) {
			t.Fatalf("QueryRowContext after the end: %v", err)
		}
		if tx.UnguardedSQLTx() == nil {
			t.Fatal("UnguardedSQLTx is nil")
		}
	})
}
