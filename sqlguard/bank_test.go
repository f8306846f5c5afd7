package sqlguard_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/fencedlock/fencedlock/sqlguard"
)

// The bank-transfer workload of issue 15: bankWorkers Clients (service
// instances, each with its own connection to a real redis-server) move money
// between bankAccounts accounts, each transfer under the locks of both
// accounts. Holders are paused past their lease at random, before their
// transaction or between its reads and its writes, and the witness writes
// are non-atomic (read, pause, write absolute balances). In-process pauses
// stand in for SIGSTOP; auto-refresh is off so a paused holder's lease runs
// out as a stopped process's would.
const (
	bankWorkers   = 8
	bankAccounts  = 50
	bankTransfers = 20 // per worker
	bankStart     = 1000
	bankTTL       = 150 * time.Millisecond
	bankPauseProb = 0.25
)

func TestBank_transfersUnderMultiKeyLocks(t *testing.T) {
	srv := redistest.Start(t)
	eachDBParallel(t, func(t *testing.T, db *testDB) {
		for _, guarded := range []bool{true, false} {
			name := "guarded"
			if !guarded {
				name = "unguarded (negative control)"
			}
			t.Run(name, func(t *testing.T) {
				b := newBank(t, db, srv, guarded)
				b.run(t)
				sum := db.int64(t, "SELECT SUM(balance) FROM "+b.accounts)
				t.Logf("committed %d, refused as stale %d, sum %d (want %d)",
					b.committed.Load(), b.stale.Load(), sum, bankAccounts*bankStart)
				if guarded {
					if sum != bankAccounts*bankStart {
						t.Fatalf("sum of balances %d, want %d: money was lost or made", sum, bankAccounts*bankStart)
					}
					if b.stale.Load() == 0 {
						t.Fatal("no paused holder was refused: the workload did not exercise the guard")
					}
					return
				}
				if sum == bankAccounts*bankStart {
					t.Fatal("negative control: the sum survived without the guard; the workload is too weak to show anything")
				}
			})
		}
	})
}

type bank struct {
	db        *testDB
	srv       *redistest.Server
	guarded   bool
	fences    string
	accounts  string
	prefix    string
	pauseProb float64 // in-process pauses; 0 when the holder is SIGSTOPped instead
	committed atomic.Int64
	stale     atomic.Int64
}

func newBank(t *testing.T, db *testDB, srv *redistest.Server, guarded bool) *bank {
	b := &bank{db: db, srv: srv, guarded: guarded, fences: db.fenceTable(t), accounts: db.table(t, "bank")}
	ddl := "CREATE TABLE " + b.accounts + " (id BIGINT NOT NULL PRIMARY KEY, balance BIGINT NOT NULL, fence BIGINT NOT NULL DEFAULT 0)"
	if db.dialect == sqlguard.MySQL {
		ddl += " ENGINE=InnoDB"
	}
	db.exec(t, ddl)
	for i := range bankAccounts {
		db.exec(t, "INSERT INTO "+b.accounts+" (id, balance) VALUES (?, ?)", i, bankStart)
	}
	b.prefix = "bank:" + b.accounts + ":"
	b.pauseProb = bankPauseProb
	return b
}

// run starts the workers and waits for all of them.
func (b *bank) run(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, bankWorkers)
	for w := range bankWorkers {
		c := core.New(b.srv.Client(t), core.WithTTL(bankTTL), core.WithoutAutoRefresh(), core.WithWait(30*time.Second))
		t.Cleanup(func() { _ = c.Close() })
		rng := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range bankTransfers {
				if err := b.transfer(c, rng); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// transfer moves a random amount between two random accounts under both
// accounts' locks. A stale refusal is counted, not an error.
func (b *bank) transfer(c *core.Client, rng *rand.Rand) error {
	ctx := context.Background()
	from, to := rng.IntN(bankAccounts), rng.IntN(bankAccounts-1)
	if to >= from {
		to++
	}
	lo, hi := min(from, to), max(from, to) // lock in one order
	var locks [2]*core.Lock
	for i, id := range []int{lo, hi} {
		l, err := c.Acquire(ctx, b.key(id))
		if err != nil {
			return fmt.Errorf("acquire %s: %w", b.key(id), err)
		}
		defer l.Release(ctx)
		locks[i] = l
	}
	// A paused holder does not look at its locks' Done channels; its
	// context still carries them.
	lctx := core.ContextWithLock(core.ContextWithLock(ctx, locks[0]), locks[1])
	pause := func() {
		if rng.Float64() < b.pauseProb {
			time.Sleep(2 * bankTTL)
		}
	}
	amount := int64(1 + rng.IntN(100))
	pause() // before the transaction: a guarded holder is then refused
	var err error
	if b.guarded {
		err = b.guardedMove(lctx, pause, from, to, amount)
	} else {
		err = b.plainMove(lctx, pause, from, to, amount)
	}
	switch {
	case errors.Is(err, sqlguard.ErrStaleFence):
		b.stale.Add(1)
		return nil
	case err != nil:
		return err
	}
	b.committed.Add(1)
	return nil
}

func (b *bank) key(id int) string { return fmt.Sprintf("%s%02d", b.prefix, id) }

// guardedMove reads both balances inside the guarded transaction, pauses,
// and writes them back through row guards.
func (b *bank) guardedMove(ctx context.Context, pause func(), from, to int, amount int64) error {
	tx, err := sqlguard.BeginTx(ctx, b.db.db, nil, sqlguard.WithTable(b.fences))
	if err != nil {
		return err
	}
	defer tx.Rollback()
	bal := map[int]int64{}
	for _, id := range []int{from, to} {
		var v int64
		if err := tx.QueryRowContext(ctx, b.db.rebind("SELECT balance FROM "+b.accounts+" WHERE id = ?"), id).Scan(&v); err != nil {
			return err
		}
		bal[id] = v
	}
	pause()
	for _, id := range []int{min(from, to), max(from, to)} {
		v := bal[id] + amount
		if id == from {
			v = bal[id] - amount
		}
		if _, err := tx.Update(b.accounts).Set("balance", v).Where("id", id).For(b.key(id)).Exec(ctx); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// plainMove is the same without the guard: the balances are read, the
// holder pauses, and a plain transaction writes what it computed.
func (b *bank) plainMove(ctx context.Context, pause func(), from, to int, amount int64) error {
	bal := map[int]int64{}
	for _, id := range []int{from, to} {
		var v int64
		if err := b.db.db.QueryRowContext(ctx, b.db.rebind("SELECT balance FROM "+b.accounts+" WHERE id = ?"), id).Scan(&v); err != nil {
			return err
		}
		bal[id] = v
	}
	pause()
	tx, err := b.db.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, id := range []int{min(from, to), max(from, to)} {
		v := bal[id] + amount
		if id == from {
			v = bal[id] - amount
		}
		if _, err := tx.ExecContext(ctx, b.db.rebind("UPDATE "+b.accounts+" SET balance = ? WHERE id = ?"), v, id); err != nil {
			return err
		}
	}
	return tx.Commit()
}
