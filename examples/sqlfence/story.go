package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/sqlguard"
)

const (
	accounts = "sqlfence_accounts"
	fences   = "sqlfence_fences"
	key      = "account:42"
	start    = 100 // the opening balance; A withdraws 30, B deposits 50
)

type demo struct {
	out  io.Writer
	db   *sql.DB
	a, b *core.Client         // instance A's and instance B's lock clients
	mr   *miniredis.Miniredis // nil with a real Redis
	ttl  time.Duration
}

// lockedWriter serializes the prints of A's goroutine and the main one.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

type story struct {
	title string
	play  func(context.Context) error
	want  int64  // the final balance this story ends with
	moral string // printed when it does
}

// all plays the four stories of the package doc.
func (d *demo) all(ctx context.Context) error {
	var failed []string
	for _, s := range []story{
		{"1. without sqlguard", d.unguarded, 70, "B's deposit is lost: the lock expired under A, and nothing stopped its write."},
		{"2. with sqlguard, A paused before its transaction", d.pausedBefore, 120, "A's stale transaction is refused; redone under a new lock, both changes stand."},
		{"3. with sqlguard, A paused inside its transaction", func(ctx context.Context) error { return d.pausedInside(ctx, false) }, 120,
			"B's transaction waited for A's; B's read, inside it, saw A's withdrawal. Both stand."},
		{"4. the mistake: as 3, but B reads before BeginTx", func(ctx context.Context) error { return d.pausedInside(ctx, true) }, 150,
			"A's committed withdrawal is lost although every fence check passed: B's read was not ordered with A's write. Read inside the transaction."},
	} {
		fmt.Fprintf(d.out, "\n%s\n", s.title)
		if err := d.reset(ctx); err != nil {
			return err
		}
		if err := s.play(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.title, err)
		}
		bal, err := d.balance(ctx, d.db)
		if err != nil {
			return err
		}
		fmt.Fprintf(d.out, "  final balance %d\n", bal)
		if bal != s.want {
			failed = append(failed, s.title)
			fmt.Fprintf(d.out, "  => unexpected: want %d\n", s.want)
			continue
		}
		fmt.Fprintln(d.out, "  =>", s.moral)
	}
	if failed != nil {
		return fmt.Errorf("sqlfence: unexpected outcome in %q", failed)
	}
	return nil
}

// pause is A's stall: the lease runs out meanwhile (miniredis expires keys
// on its own clock, so it is moved on too).
func (d *demo) pause(dur time.Duration) {
	time.Sleep(dur)
	if d.mr != nil {
		d.mr.FastForward(dur)
	}
}

func (d *demo) unguarded(ctx context.Context) error {
	a, err := d.a.Acquire(ctx, key)
	if err != nil {
		return err
	}
	defer a.Release(ctx)
	aBal, err := d.balance(ctx, d.db)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  A acquires %s (fence %d), reads %d, pauses for %v (lease %v)\n", key, a.Fence(), aBal, 2*d.ttl, d.ttl)
	d.pause(2 * d.ttl)
	b, err := d.b.TryAcquire(ctx, key)
	if err != nil {
		return fmt.Errorf("holder B could not acquire after A's lease expired: %w", err)
	}
	bBal, err := d.balance(ctx, d.db)
	if err == nil {
		err = d.plainWrite(ctx, bBal+50)
	}
	_ = b.Release(ctx)
	fmt.Fprintf(d.out, "  B acquires (fence %d), reads %d, deposits 50: %s\n", b.Fence(), bBal, outcome(err))
	if err != nil {
		return err
	}
	err = d.plainWrite(ctx, aBal-30)
	fmt.Fprintf(d.out, "  A wakes up, writes %d: %s\n", aBal-30, outcome(err))
	return err
}

func (d *demo) pausedBefore(ctx context.Context) error {
	a, err := d.a.Acquire(ctx, key)
	if err != nil {
		return err
	}
	defer a.Release(ctx)
	fmt.Fprintf(d.out, "  A acquires %s (fence %d), pauses for %v before its transaction\n", key, a.Fence(), 2*d.ttl)
	d.pause(2 * d.ttl)
	if err := d.deposit(ctx, false); err != nil {
		return err
	}
	// A paused process has not seen its lock's Done channel close; its
	// context still carries the lock it had.
	aErr := d.withdraw(core.ContextWithLock(ctx, a), "A", nil)
	if !errors.Is(aErr, sqlguard.ErrStaleFence) {
		return fmt.Errorf("holder A's stale transaction: %v, want ErrStaleFence", aErr)
	}
	// The right reaction to a stale fence: acquire again (a new, higher
	// fence), read again inside the new transaction, redo the work.
	a2, err := d.a.Acquire(ctx, key)
	if err != nil {
		return err
	}
	defer a2.Release(ctx)
	return d.withdraw(core.ContextWithLock(ctx, a2), "A again", nil)
}

// pausedInside has A stall between its read and its write, inside its
// guarded transaction, while B takes the expired lock and deposits; B reads
// inside its transaction, or before it when readFirst is set.
func (d *demo) pausedInside(ctx context.Context, readFirst bool) error {
	a, err := d.a.Acquire(ctx, key)
	if err != nil {
		return err
	}
	defer a.Release(ctx)
	read := make(chan struct{})
	aDone := make(chan error, 1)
	go func() {
		aDone <- d.withdraw(core.ContextWithLock(ctx, a), "A", func() {
			close(read)
			fmt.Fprintf(d.out, "  A pauses for %v inside its transaction (lease %v)\n", 4*d.ttl, d.ttl)
			time.Sleep(4 * d.ttl)
		})
	}()
	select {
	case <-read:
	case err := <-aDone:
		return fmt.Errorf("holder A ended before its read: %v", err)
	}
	d.pause(2 * d.ttl)
	bErr := d.deposit(ctx, readFirst)
	if aErr := <-aDone; aErr != nil {
		return fmt.Errorf("holder A's withdrawal: %w", aErr)
	}
	return bErr
}

// withdraw takes 30 under the lock in ctx: the balance is read inside the
// guarded transaction, so it is ordered with every other guarded write of
// the account. stall, when set, runs between the read and the write.
func (d *demo) withdraw(ctx context.Context, who string, stall func()) error {
	l, _ := core.FromContext(ctx)
	tx, err := sqlguard.BeginTx(ctx, d.db, nil, sqlguard.WithTable(fences))
	if err != nil {
		fmt.Fprintf(d.out, "  %s (fence %d) begins its transaction: %s\n", who, l.Fence(), outcome(err))
		return err
	}
	defer tx.Rollback()
	bal, err := d.balance(ctx, tx)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.out, "  %s (fence %d) reads %d inside its transaction, withdraws 30\n", who, l.Fence(), bal)
	if bal < 30 {
		return errors.New("insufficient funds")
	}
	if stall != nil {
		stall()
	}
	_, err = tx.Update(accounts).Set("balance", bal-30).Where("id", 42).Exec(ctx)
	if err == nil {
		err = tx.Commit()
	}
	fmt.Fprintf(d.out, "  %s writes %d: %s\n", who, bal-30, outcome(err))
	return err
}

// deposit is B taking the (expired) lock and adding 50. readFirst reads
// the balance before BeginTx: the mistake.
func (d *demo) deposit(ctx context.Context, readFirst bool) error {
	// B is not the one paused: a longer lease lets it wait for A's
	// transaction without its own lock running out.
	b, err := d.b.TryAcquire(ctx, key, core.WithTTL(time.Minute))
	if err != nil {
		return fmt.Errorf("holder B could not acquire after A's lease expired: %w", err)
	}
	defer b.Release(ctx)
	bctx, cancel := b.Context(ctx)
	defer cancel()
	var bal int64
	if readFirst {
		if bal, err = d.balance(bctx, d.db); err != nil {
			return err
		}
		fmt.Fprintf(d.out, "  B acquires (fence %d), reads %d BEFORE BeginTx\n", b.Fence(), bal)
	}
	tx, err := sqlguard.BeginTx(bctx, d.db, nil, sqlguard.WithTable(fences))
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if !readFirst {
		if bal, err = d.balance(bctx, tx); err != nil {
			return err
		}
		fmt.Fprintf(d.out, "  B acquires (fence %d), reads %d inside its transaction\n", b.Fence(), bal)
	}
	_, err = tx.Update(accounts).Set("balance", bal+50).Where("id", 42).Exec(bctx)
	if err == nil {
		err = tx.Commit()
	}
	fmt.Fprintf(d.out, "  B deposits 50, writes %d: %s\n", bal+50, outcome(err))
	return err
}

// plainWrite stores a balance with a plain transaction: no fence.
func (d *demo) plainWrite(ctx context.Context, balance int64) error {
	q := "UPDATE " + accounts + " SET balance = ? WHERE id = 42"
	if dia, _ := sqlguard.DetectDialect(d.db.Driver()); dia == sqlguard.Postgres {
		q = "UPDATE " + accounts + " SET balance = $1 WHERE id = 42"
	}
	_, err := d.db.ExecContext(ctx, q, balance)
	return err
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (d *demo) balance(ctx context.Context, q queryer) (int64, error) {
	var n int64
	err := q.QueryRowContext(ctx, "SELECT balance FROM "+accounts+" WHERE id = 42").Scan(&n)
	return n, err
}

func (d *demo) reset(ctx context.Context) error {
	d.drop(ctx)
	if err := sqlguard.Migrate(ctx, d.db, 0, sqlguard.WithTable(fences)); err != nil {
		return err
	}
	for _, q := range []string{
		"CREATE TABLE " + accounts + " (id BIGINT NOT NULL PRIMARY KEY, balance BIGINT NOT NULL, fence BIGINT NOT NULL DEFAULT 0)",
		fmt.Sprintf("INSERT INTO %s (id, balance) VALUES (42, %d)", accounts, start),
	} {
		if _, err := d.db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

func (d *demo) drop(ctx context.Context) {
	for _, t := range []string{accounts, fences} {
		if _, err := d.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+t); err != nil {
			log.Printf("dropping %s: %v", t, err)
		}
	}
}

func outcome(err error) string {
	if err == nil {
		return "committed"
	}
	if errors.Is(err, sqlguard.ErrStaleFence) {
		return "REFUSED: " + err.Error()
	}
	return "failed: " + err.Error()
}
