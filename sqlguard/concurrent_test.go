package sqlguard_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/sqlguard"
)

// writesFor returns how many fenced writes the stress test pushes: 50 000 on
// PostgreSQL and MariaDB, 10 000 on SQLite (modernc.org/sqlite is slow under
// -race, and SQLite serializes writers whatever the guard does). -short
// lowers every count to 2 000; FENCEDLOCK_SQL_WRITES sets them all.
func writesFor(t *testing.T, db *testDB) int {
	if v := os.Getenv("FENCEDLOCK_SQL_WRITES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("FENCEDLOCK_SQL_WRITES=%q", v)
		}
		return n
	}
	switch {
	case testing.Short():
		return 2_000
	case db.dialect == sqlguard.SQLite:
		return 10_000
	}
	return 50_000
}

// TestGuard_concurrentShuffledFences has 16 goroutines push fenced writes at
// one resource, with fences shuffled in small windows and reordered again by
// scheduling. Every accepted transaction appends its fence to a log table in
// the same transaction; the log's ids follow commit order (they are assigned
// while the fence row is locked). The log must be strictly increasing, hold
// exactly the accepted writes, and end at the maximum fence; the only error
// allowed is ErrStaleFence.
func TestGuard_concurrentShuffledFences(t *testing.T) {
	eachDBParallel(t, func(t *testing.T, db *testDB) {
		const workers, window = 16, 8
		n := writesFor(t, db)
		ctx := context.Background()
		fences := db.fenceTable(t)
		log := db.table(t, "log")
		ddl := map[sqlguard.Dialect]string{
			sqlguard.Postgres: "CREATE TABLE " + log + " (id BIGSERIAL PRIMARY KEY, fence BIGINT NOT NULL, owner TEXT NOT NULL)",
			sqlguard.MySQL:    "CREATE TABLE " + log + " (id BIGINT AUTO_INCREMENT PRIMARY KEY, fence BIGINT NOT NULL, owner VARCHAR(16) NOT NULL) ENGINE=InnoDB",
			sqlguard.SQLite:   "CREATE TABLE " + log + " (id INTEGER PRIMARY KEY, fence INTEGER NOT NULL, owner TEXT NOT NULL)",
		}[db.dialect]
		db.exec(t, ddl)
		db.db.SetMaxOpenConns(workers)
		insert := db.rebind("INSERT INTO " + log + " (fence, owner) VALUES (?, ?)")

		order := make([]uint64, n)
		for i := range order {
			order[i] = base + uint64(i)
		}
		for i := 0; i < n; i += window {
			w := order[i:min(i+window, n)]
			rand.Shuffle(len(w), func(a, b int) { w[a], w[b] = w[b], w[a] })
		}

		var (
			next     atomic.Int64
			stale    atomic.Int64
			mu       sync.Mutex
			accepted = make(map[uint64]bool)
			errs     []error
			wg       sync.WaitGroup
		)
		start := time.Now()
		for w := range workers {
			owner := fmt.Sprintf("w%d", w)
			wg.Go(func() {
				for {
					i := next.Add(1) - 1
					if i >= int64(n) {
						return
					}
					f := order[i]
					err := func() error {
						tx, err := sqlguard.BeginTx(ctx, db.db, nil, sqlguard.WithTable(fences), sqlguard.WithFence(tok("hot", f, owner)))
						if err != nil {
							return err
						}
						defer tx.Rollback()
						if _, err := tx.ExecContext(ctx, insert, int64(f), owner); err != nil {
							return err
						}
						return tx.Commit()
					}()
					switch {
					case err == nil:
						mu.Lock()
						accepted[f] = true
						mu.Unlock()
					case errors.Is(err, sqlguard.ErrStaleFence):
						stale.Add(1)
					default:
						mu.Lock()
						errs = append(errs, fmt.Errorf("fence %d: %w", f, err))
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		for i, err := range errs {
			if i == 5 {
				t.Errorf("... and %d more", len(errs)-5)
				break
			}
			t.Errorf("unexpected error: %v", err)
		}
		t.Logf("%s: %d fenced writes by %d goroutines in %v (%.0f tx/s): %d accepted, %d stale",
			db.name, n, workers, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), len(accepted), stale.Load())

		// The accepted sequence, in commit order.
		rows, err := db.db.QueryContext(ctx, "SELECT fence FROM "+log+" ORDER BY id")
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var prev int64
		count := 0
		for rows.Next() {
			var f int64
			if err := rows.Scan(&f); err != nil {
				t.Fatal(err)
			}
			if f <= prev {
				t.Fatalf("commit #%d: fence %d accepted after %d", count+1, f, prev)
			}
			if !accepted[uint64(f)] {
				t.Fatalf("fence %d is in the log but its transaction did not report success", f)
			}
			prev = f
			count++
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		if count != len(accepted) {
			t.Fatalf("%d log rows, %d accepted transactions", count, len(accepted))
		}
		if int64(count)+stale.Load()+int64(len(errs)) != int64(n) {
			t.Fatalf("%d accepted + %d stale + %d errors != %d writes", count, stale.Load(), len(errs), n)
		}
		maxFence := base + uint64(n) - 1
		if uint64(prev) != maxFence {
			t.Fatalf("last accepted fence %d, want the maximum %d", prev, maxFence)
		}
		if got := uint64(db.storedFence(t, fences, "hot")); got != maxFence {
			t.Fatalf("stored fence %d, want the maximum %d", got, maxFence)
		}
		if w := db.int64(t, "SELECT writes FROM "+fences+" WHERE resource = 'hot'"); w != int64(count) {
			t.Fatalf("fence row counts %d writes, %d committed", w, count)
		}
		if stale.Load() == 0 || count < 2 {
			t.Fatalf("the shuffle exercised too little: %d accepted, %d stale", count, stale.Load())
		}
	})
}
