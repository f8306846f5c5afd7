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

// A holder whose lease expired while it was paused tries to write after the
// next holder did: the guard refuses it.
func Example() {
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
		INSERT INTO accounts (id, balance) VALUES (7, 100)`); err != nil {
		log.Fatal(err)
	}

	// setBalance writes as the holder of the lock in ctx.
	setBalance := func(ctx context.Context, balance int) error {
		tx, err := sqlguard.BeginTx(ctx, db, nil) // records the lock's fence first
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.Update("accounts").Set("balance", balance).Where("id", 7).Exec(ctx); err != nil {
			return err
		}
		return tx.Commit()
	}

	// Two processes, one lock service.
	store := locktest.NewStore()
	procA, procB := store.Client(), store.Client()
	defer procA.Close()
	defer procB.Close()
	a, _ := procA.Acquire(ctx, "account:7")
	store.Expire(core.DefaultPrefix, "account:7") // A is paused past its TTL
	b, _ := procB.Acquire(ctx, "account:7")

	fmt.Println("B writes:", setBalance(core.ContextWithLock(ctx, b), 150))
	err = setBalance(core.ContextWithLock(ctx, a), 70)
	fmt.Println("A is stale:", errors.Is(err, sqlguard.ErrStaleFence))

	var balance int
	_ = db.QueryRowContext(ctx, "SELECT balance FROM accounts WHERE id = 7").Scan(&balance)
	fmt.Println("balance:", balance)
	// Output:
	// B writes: <nil>
	// A is stale: true
	// balance: 150
}

func ExampleDDL() {
	ddl, err := sqlguard.DDL(sqlguard.MySQL)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ddl)
	// Output:
	// CREATE TABLE IF NOT EXISTS fencedlock_fences (
	//     resource   VARBINARY(255) NOT NULL PRIMARY KEY,
	//     fence      BIGINT         NOT NULL,
	//     owner      VARBINARY(64)  NOT NULL,
	//     writes     BIGINT         NOT NULL DEFAULT 1,
	//     updated_at TIMESTAMP(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
	// ) ENGINE=InnoDB
}
