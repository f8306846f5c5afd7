package sqlguard_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/fencedlock/fencedlock/sqlguard"
)

// lockBackends are the lock services the stale-holder story runs on: the
// in-memory fake always, a real redis-server when one is installed (its
// fences are microsecond clock readings, about 1.8e15).
var lockBackends = []struct {
	name string
	new  func(t *testing.T) *core.Client
}{
	{"locktest", func(t *testing.T) *core.Client { return locktest.New() }},
	{"redis", func(t *testing.T) *core.Client {
		srv := redistest.Start(t)
		return core.New(srv.Client(t))
	}},
}

// TestStaleHolder is the failure fencing exists for: holder A is paused (a
// GC pause, a VM stall) past its TTL, B acquires the lock and writes, then A
// wakes and writes as if it still held the lock. With the guard A's write is
// refused and B's survives; without it (the negative control) A's write is
// accepted and silently overwrites B's.
func TestStaleHolder(t *testing.T) {
	eachWriteDB(t, func(t *testing.T, db *testDB) {
		for _, lb := range lockBackends {
			t.Run(lb.name, func(t *testing.T) {
				locks := lb.new(t)
				defer locks.Close()
				for _, guard := range []bool{true, false} {
					name := "guarded"
					if !guard {
						name = "unguarded (negative control)"
					}
					t.Run(name, func(t *testing.T) { staleHolder(t, db, locks, guard) })
				}
			})
		}
	})
}

func staleHolder(t *testing.T, db *testDB, locks *core.Client, guard bool) {
	const ttl = 100 * time.Millisecond
	ctx := context.Background()
	fences, accounts := db.fenceTable(t), db.accounts(t)
	key := "account:" + accounts // unique per run: fences are per key

	// write sets the balance as the holder of l: through sqlguard, or with a
	// plain transaction.
	write := func(l *core.Lock, balance int64) error {
		// A paused holder does not look at l.Done(); its context still
		// carries the lock it had.
		lctx := core.ContextWithLock(ctx, l)
		if !guard {
			tx, err := db.db.BeginTx(lctx, nil)
			if err != nil {
				return err
			}
			defer tx.Rollback()
			if _, err := tx.ExecContext(lctx, db.rebind("UPDATE "+accounts+" SET balance = ? WHERE id = 1"), balance); err != nil {
				return err
			}
			return tx.Commit()
		}
		tx, err := sqlguard.BeginTx(lctx, db.db, nil, sqlguard.WithTable(fences))
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.Update(accounts).Set("balance", balance).Where("id", 1).Exec(lctx); err != nil {
			return err
		}
		return tx.Commit()
	}

	a, err := locks.Acquire(ctx, key, core.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(ttl + ttl/2) // A's pause: its lease runs out meanwhile

	b, err := locks.TryAcquire(ctx, key, core.WithTTL(time.Minute))
	if err != nil {
		t.Fatalf("B could not acquire after A's lease expired: %v", err)
	}
	defer b.Release(ctx)
	if b.Fence() <= a.Fence() {
		t.Fatalf("fences not increasing: A %d, B %d", a.Fence(), b.Fence())
	}
	if err := write(b, 200); err != nil {
		t.Fatalf("B's write: %v", err)
	}

	aErr := write(a, 100) // A wakes up and writes
	balance := db.int64(t, "SELECT balance FROM "+accounts+" WHERE id = 1")
	t.Logf("fences A=%d B=%d; A's write: %v; balance %d", a.Fence(), b.Fence(), aErr, balance)

	if !guard {
		// Without fencing the stale write goes through: this is the bug.
		if aErr != nil || balance != 100 {
			t.Fatalf("negative control: A's stale write err=%v balance=%d; want it accepted (100)", aErr, balance)
		}
		return
	}
	if !errors.Is(aErr, sqlguard.ErrStaleFence) {
		t.Fatalf("A's stale write: err = %v, want ErrStaleFence", aErr)
	}
	if balance != 200 {
		t.Fatalf("balance = %d, want B's 200", balance)
	}
	if got := uint64(db.storedFence(t, fences, key)); got != b.Fence() {
		t.Fatalf("stored fence %d, want B's %d", got, b.Fence())
	}
	if !errors.Is(a.Err(), core.ErrLost) {
		t.Fatalf("A's lock: Err = %v, want ErrLost", a.Err())
	}
}
