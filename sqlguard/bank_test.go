package sqlguard_test

import (
	"context"
	"database/sql"
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
//
// Every committed transfer also writes a journal row in its transaction, so
// besides the sum each account's balance is checked against the transfers
// that committed: a stale write accepted (a transfer overwritten by a holder
// that read before it) shows there even when it happens to keep the sum.
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
	eachWriteDBParallel(t, func(t *testing.T, db *testDB) {
		variants := []bankVariant{
			{"guarded", true, true},
			{"unguarded (negative control)", false, false},
		}
		if db.dialect != sqlguard.SQLite {
			// The guarded run's own shape with only the guard taken away.
			// (SQLite runs one write transaction at a time, so reads in a
			// plain transaction are already ordered there.)
			variants = append(variants, bankVariant{"unguarded, reads inside the transaction (negative control)", false, true})
		}
		for _, v := range variants {
			guarded := v.guarded
			t.Run(v.name, func(t *testing.T) {
				b := newBank(t, db, srv, guarded)
				b.readInTx = v.readInTx
				b.run(t)
				sum, off := b.audit(t)
				t.Logf("committed %d, refused as stale %d, sum %d (want %d), %d accounts off their journal",
					b.committed.Load(), b.stale.Load(), sum, bankAccounts*bankStart, off)
				if guarded {
					if sum != bankAccounts*bankStart || off != 0 {
						t.Fatalf("sum of balances %d (want %d), %d accounts off their journal: a stale write was accepted",
							sum, bankAccounts*bankStart, off)
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

// bankVariant is one way of running the workload.
type bankVariant struct {
	name              string
	guarded, readInTx bool
}

// audit returns the sum of the balances and the number of accounts whose
// balance is not the start plus the committed transfers of the journal.
func (b *bank) audit(t *testing.T) (sum int64, off int) {
	t.Helper()
	want := map[int64]int64{}
	rows, err := b.db.db.Query("SELECT src, dst, amount FROM " + b.journal)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var src, dst, amount int64
		if err := rows.Scan(&src, &dst, &amount); err != nil {
			t.Fatal(err)
		}
		want[src] -= amount
		want[dst] += amount
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		t.Fatal(err)
	}
	for id := range bankAccounts {
		bal := b.db.int64(t, "SELECT balance FROM "+b.accounts+" WHERE id = ?", id)
		sum += bal
		if bal != bankStart+want[int64(id)] {
			off++
		}
	}
	return sum, off
}

type bank struct {
	db        *testDB
	srv       *redistest.Server
	guarded   bool
	fences    string
	accounts  string
	journal   string // one row per committed transfer
	prefix    string
	pauseProb float64 // in-process pauses; 0 when the holder is SIGSTOPped instead
	readInTx  bool    // unguarded: read the balances in the plain transaction
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
	b.journal = db.table(t, "journal")
	db.exec(t, "CREATE TABLE "+b.journal+" (id BIGINT NOT NULL PRIMARY KEY, src BIGINT NOT NULL, dst BIGINT NOT NULL, amount BIGINT NOT NULL)")
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
			for i := range bankTransfers {
				if err := b.transfer(c, rng, int64(w*1000+i)); err != nil {
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
// accounts' locks, journaled as id. A stale refusal is counted, not an error.
func (b *bank) transfer(c *core.Client, rng *rand.Rand, id int64) error {
	ctx := context.Background()
	from, to := rng.IntN(bankAccounts), rng.IntN(bankAccounts-1)
	if to >= from {
		to++
	}
	lo, hi := min(from, to), max(from, to) // lock in one order
	var locks [2]*core.Lock
	for i, id := range []int{lo, hi} {
		l, err := c.Acquire(ctx, b.key(id))
		for errors.Is(err, core.ErrLateGrant) {
			// Stopped while the acquire was on its way: the grant came
			// back after its lease and was given back. Ask again, as a
			// client would after a 503.
			l, err = c.Acquire(ctx, b.key(id))
		}
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
	m := move{id: id, from: from, to: to, amount: int64(1 + rng.IntN(100))}
	pause() // before the transaction: a guarded holder is then refused
	var err error
	if b.guarded {
		err = b.guardedMove(lctx, pause, m)
	} else {
		err = b.plainMove(lctx, pause, m)
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

// move is one transfer: its journal id, the accounts and the amount.
type move struct {
	id       int64
	from, to int
	amount   int64
}

// balances returns the accounts' balances after the move, from what was read.
func (m move) balances(read map[int]int64) map[int]int64 {
	return map[int]int64{m.from: read[m.from] - m.amount, m.to: read[m.to] + m.amount}
}

func (b *bank) journalStmt() string {
	return b.db.rebind("INSERT INTO " + b.journal + " (id, src, dst, amount) VALUES (?, ?, ?, ?)")
}

// guardedMove reads both balances inside the guarded transaction, pauses,
// and writes them back through row guards.
func (b *bank) guardedMove(ctx context.Context, pause func(), m move) error {
	tx, err := sqlguard.BeginTx(ctx, b.db.db, nil, sqlguard.WithTable(b.fences))
	if err != nil {
		return err
	}
	defer tx.Rollback()
	bal := map[int]int64{}
	for _, id := range []int{m.from, m.to} {
		var v int64
		if err := tx.QueryRowContext(ctx, b.db.rebind("SELECT balance FROM "+b.accounts+" WHERE id = ?"), id).Scan(&v); err != nil {
			return err
		}
		bal[id] = v
	}
	pause()
	next := m.balances(bal)
	for _, id := range []int{min(m.from, m.to), max(m.from, m.to)} {
		if _, err := tx.Update(b.accounts).Set("balance", next[id]).Where("id", id).For(b.key(id)).Exec(ctx); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, b.journalStmt(), m.id, m.from, m.to, m.amount); err != nil {
		return err
	}
	return tx.Commit()
}

// plainMove is the same without the guard: the balances are read (before
// the transaction, or inside it with readInTx), the holder pauses, and a
// plain transaction writes what it computed.
func (b *bank) plainMove(ctx context.Context, pause func(), m move) error {
	var tx *sql.Tx
	begin := func() (err error) {
		tx, err = b.db.db.BeginTx(ctx, nil)
		return err
	}
	var q interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	} = b.db.db
	if b.readInTx {
		if err := begin(); err != nil {
			return err
		}
		defer tx.Rollback()
		q = tx
	}
	bal := map[int]int64{}
	for _, id := range []int{m.from, m.to} {
		var v int64
		if err := q.QueryRowContext(ctx, b.db.rebind("SELECT balance FROM "+b.accounts+" WHERE id = ?"), id).Scan(&v); err != nil {
			return err
		}
		bal[id] = v
	}
	pause()
	if tx == nil {
		if err := begin(); err != nil {
			return err
		}
		defer tx.Rollback()
	}
	next := m.balances(bal)
	for _, id := range []int{min(m.from, m.to), max(m.from, m.to)} {
		if _, err := tx.ExecContext(ctx, b.db.rebind("UPDATE "+b.accounts+" SET balance = ? WHERE id = ?"), next[id], id); err != nil {
			return err
		}
	}
	if _, err := tx.ExecContext(ctx, b.journalStmt(), m.id, m.from, m.to, m.amount); err != nil {
		return err
	}
	return tx.Commit()
}
