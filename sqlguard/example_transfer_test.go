package sqlguard_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/sqlguard"
)

var errInsufficientFunds = errors.New("insufficient funds")

// transfer moves amount between two accounts under the locks of both (in
// ctx, as httpmw.LockKeys puts them there). The balance is read inside the
// guarded transaction, after the guard, so it is ordered with every other
// holder's writes.
func transfer(ctx context.Context, db *sql.DB, from, to, amount int64) error {
	tx, err := sqlguard.BeginTx(ctx, db, nil) // guards both locks
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var balance int64
	if err := tx.QueryRowContext(ctx, "SELECT balance FROM accounts WHERE id = ?", from).Scan(&balance); err != nil {
		return err
	}
	if balance < amount {
		return errInsufficientFunds
	}
	if _, err := tx.Update("accounts").Add("balance", -amount).Where("id", from).For(fmt.Sprint("account:", from)).Exec(ctx); err != nil {
		return err
	}
	if _, err := tx.Update("accounts").Add("balance", amount).Where("id", to).For(fmt.Sprint("account:", to)).Exec(ctx); err != nil {
		return err
	}
	return tx.Commit()
}

// A transfer between two accounts, each protected by its own lock.
func Example_transfer() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "sqlguard-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", filepath.Join(dir, "bank.db")+"?_pragma=busy_timeout(5000)&_txlock=immediate")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if err := sqlguard.Migrate(ctx, db, sqlguard.SQLite); err != nil {
		log.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL, fence INTEGER NOT NULL DEFAULT 0);
		INSERT INTO accounts (id, balance) VALUES (1, 100), (2, 0)`); err != nil {
		log.Fatal(err)
	}

	locks := locktest.New()
	defer locks.Close()
	l1, _ := locks.Acquire(ctx, "account:1")
	l2, _ := locks.Acquire(ctx, "account:2")
	lctx := core.ContextWithLock(core.ContextWithLock(ctx, l1), l2)
	fmt.Println("transfer 60:", transfer(lctx, db, 1, 2, 60))
	fmt.Println("transfer 60:", transfer(lctx, db, 1, 2, 60))
	_ = l1.Release(ctx)
	_ = l2.Release(ctx)

	var a, b int64
	_ = db.QueryRowContext(ctx, "SELECT (SELECT balance FROM accounts WHERE id = 1), (SELECT balance FROM accounts WHERE id = 2)").Scan(&a, &b)
	fmt.Println("balances:", a, b)
	// Output:
	// transfer 60: <nil>
	// transfer 60: insufficient funds
	// balances: 40 60
}
