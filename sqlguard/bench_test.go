package sqlguard_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/sqlguard"
)

// BenchmarkGuard measures what the guard adds to a transaction on each
// database, one goroutine, no contention. Run it with
//
//	go test -run '^$' -bench BenchmarkGuard -benchtime 300x -count 5 ./sqlguard/
//
// commit/plain is BEGIN, one UPDATE, COMMIT; commit/guarded the same begun
// with sqlguard.BeginTx under a new, higher fence each time, as successive
// lock holders would. rollback/plain and rollback/guarded are BEGIN (+ guard)
// and ROLLBACK, so the guard statement's own cost shows without the commit's
// fsync; rollback/stale is a holder turned away (BEGIN, guard, ROLLBACK).
// transfer/plain is BEGIN, two UPDATE ... SET balance = balance +/- ?,
// COMMIT; transfer/guarded the same under two locks (a two-resource guard:
// one statement for both on PostgreSQL and SQLite, one per resource on
// MariaDB) with row guards (Update.Add ... For).
func BenchmarkGuard(b *testing.B) {
	for _, name := range dbNames {
		b.Run(name, func(b *testing.B) {
			db := openDB(b, name)
			ctx := context.Background()
			fences, counters := db.fenceTable(b), db.accounts(b)
			update := db.rebind("UPDATE " + counters + " SET balance = balance + 1 WHERE id = ?")
			fence := base
			guardedTx := func(b *testing.B) *sqlguard.Tx {
				fence++
				tx, err := sqlguard.BeginTx(ctx, db.db, nil, sqlguard.WithTable(fences), sqlguard.WithFence(tok("bench", fence, "o")))
				if err != nil {
					b.Fatal(err)
				}
				return tx
			}
			plainTx := func(b *testing.B) *sql.Tx {
				tx, err := db.db.BeginTx(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				return tx
			}
			commit := func(b *testing.B, tx committer) {
				if _, err := tx.ExecContext(ctx, update, 1); err != nil {
					b.Fatal(err)
				}
				if err := tx.Commit(); err != nil {
					b.Fatal(err)
				}
			}

			b.Run("commit/plain", func(b *testing.B) {
				for b.Loop() {
					commit(b, plainTx(b))
				}
			})
			b.Run("commit/guarded", func(b *testing.B) {
				for b.Loop() {
					commit(b, guardedTx(b))
				}
			})
			b.Run("rollback/plain", func(b *testing.B) {
				for b.Loop() {
					if err := plainTx(b).Rollback(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("rollback/guarded", func(b *testing.B) {
				for b.Loop() {
					if err := guardedTx(b).Rollback(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("transfer/plain", func(b *testing.B) { benchTransfer(b, db, counters, "", false) })
			b.Run("transfer/guarded", func(b *testing.B) { benchTransfer(b, db, counters, fences, true) })
			b.Run("rollback/stale", func(b *testing.B) { benchStale(b, db, fences) })
		})
	}
}

// benchTransfer moves 1 from account 1 to account 2 per iteration.
func benchTransfer(b *testing.B, db *testDB, accounts, fences string, guarded bool) {
	ctx := context.Background()
	db.exec(b, "DELETE FROM "+accounts+" WHERE id = 2")
	db.exec(b, "INSERT INTO "+accounts+" (id, balance, fence) VALUES (2, 0, 0)")
	locks := locktest.New()
	defer locks.Close()
	// A fresh lock service restarts fences at 1: new keys per run (-count)
	// keep earlier runs' records from making these look stale.
	run := fmt.Sprint(time.Now().UnixNano())
	la, lb := mustAcquireB(b, locks, "bench:a:"+run), mustAcquireB(b, locks, "bench:b:"+run)
	lctx := core.ContextWithLock(core.ContextWithLock(ctx, la), lb)
	move := db.rebind("UPDATE " + accounts + " SET balance = balance + ? WHERE id = ?")
	for b.Loop() {
		if !guarded {
			tx, err := db.db.BeginTx(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			_, err = tx.ExecContext(ctx, move, -1, 1)
			if err == nil {
				_, err = tx.ExecContext(ctx, move, 1, 2)
			}
			if err == nil {
				err = tx.Commit()
			}
			if err != nil {
				b.Fatal(err)
			}
			continue
		}
		tx, err := sqlguard.BeginTx(lctx, db.db, nil, sqlguard.WithTable(fences))
		if err != nil {
			b.Fatal(err)
		}
		_, err = tx.Update(accounts).Add("balance", -1).Where("id", 1).For(la.FenceToken().Key).Exec(ctx)
		if err == nil {
			_, err = tx.Update(accounts).Add("balance", 1).Where("id", 2).For(lb.FenceToken().Key).Exec(ctx)
		}
		if err == nil {
			err = tx.Commit()
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}

func mustAcquireB(b *testing.B, c *core.Client, key string) *core.Lock {
	l, err := c.Acquire(context.Background(), key)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// committer is what commit needs of *sql.Tx and *sqlguard.Tx.
type committer interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
	Commit() error
}

// benchStale is a holder turned away: BEGIN, guard refused, ROLLBACK.
func benchStale(b *testing.B, db *testDB, fences string) {
	for b.Loop() {
		_, err := sqlguard.BeginTx(context.Background(), db.db, nil, sqlguard.WithTable(fences), sqlguard.WithFence(tok("bench", base, "old")))
		if !errors.Is(err, sqlguard.ErrStaleFence) {
			b.Fatal(err)
		}
	}
}
