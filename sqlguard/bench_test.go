package sqlguard_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"

	"github.com/fencedlock/fencedlock/sqlguard"
)

// BenchmarkGuard measures what the guard adds to a transaction on each
// database, one goroutine, no contention. Run it with
//
//	go test -run x -bench . ./sqlguard
//
// commit/plain is BEGIN, one UPDATE, COMMIT; commit/guarded the same begun
// with sqlguard.BeginTx under a new, higher fence each time, as successive
// lock holders would. rollback/plain and rollback/guarded are BEGIN (+ guard)
// and ROLLBACK, so the guard statement's own cost shows without the commit's
// fsync; rollback/stale is a holder turned away (BEGIN, guard, ROLLBACK).
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
			type execer interface {
				ExecContext(context.Context, string, ...any) (sql.Result, error)
				Commit() error
			}
			commit := func(b *testing.B, tx execer) {
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
			b.Run("rollback/stale", func(b *testing.B) {
				for b.Loop() {
					_, err := sqlguard.BeginTx(ctx, db.db, nil, sqlguard.WithTable(fences), sqlguard.WithFence(tok("bench", base, "old")))
					if !errors.Is(err, sqlguard.ErrStaleFence) {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
