// Command sqlfence shows why a lock alone cannot protect data, and how
// fencing does: holder A takes the lock on an account, reads the balance and
// is then paused (a GC pause, a VM stall) for longer than its lease. The lock
// expires, holder B takes it, and deposits. A wakes up and writes the balance
// it computed before the pause. Without sqlguard, A's stale write silently
// erases B's deposit; with sqlguard the database refuses it, because B's
// higher fence is already recorded.
//
//	go run ./examples/sqlfence                          # SQLite file, embedded Redis
//	go run ./examples/sqlfence -redis 127.0.0.1:6379    # a real Redis
//	go run ./examples/sqlfence -dsn 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
//	go run ./examples/sqlfence -dsn 'root@tcp(127.0.0.1:3306)/test'
//
// The driver is told from the DSN (pgx for postgres:// URLs and key=value
// strings, go-sql-driver/mysql for user@tcp(...)/db, modernc.org/sqlite
// otherwise) or set with -driver. The program creates and drops the tables
// sqlfence_accounts and sqlfence_fences.
package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/sqlguard"
)

const (
	accounts = "sqlfence_accounts"
	fences   = "sqlfence_fences"
	key      = "account:42"
)

func main() {
	addr := flag.String("redis", "", "Redis address (host:port); empty runs an embedded miniredis")
	dsn := flag.String("dsn", "", "database DSN; empty uses a SQLite file in a temporary directory")
	drv := flag.String("driver", "", "database/sql driver: pgx, mysql or sqlite (default: told from -dsn)")
	ttl := flag.Duration("ttl", 300*time.Millisecond, "lock lease")
	flag.Parse()
	log.SetFlags(0)

	var mr *miniredis.Miniredis
	if *addr == "" {
		var err error
		if mr, err = miniredis.Run(); err != nil {
			log.Fatal(err)
		}
		defer mr.Close()
		*addr = mr.Addr()
		fmt.Println("redis:    embedded miniredis at", *addr)
	} else {
		fmt.Println("redis:   ", *addr)
	}
	// A and B are two service instances: each has its own Redis connection
	// and lock client.
	var inst [2]*core.Client
	for i := range inst {
		rdb := redis.NewClient(&redis.Options{Addr: *addr})
		defer rdb.Close()
		inst[i] = core.New(rdb, core.WithTTL(*ttl))
		defer inst[i].Close()
	}

	db, desc, cleanup, err := open(*dsn, *drv)
	if err != nil {
		log.Fatal(err)
	}
	defer cleanup()
	fmt.Println("database:", desc)

	d := demo{db: db, a: inst[0], b: inst[1], mr: mr, ttl: *ttl}
	ctx := context.Background()
	var failed bool
	for _, guarded := range []bool{false, true} {
		balance, aErr, err := d.run(ctx, guarded)
		if err != nil {
			log.Fatal(err)
		}
		switch {
		case !guarded && aErr == nil && balance == 70:
			fmt.Println("  => B's deposit is lost: the lock expired under A, and nothing stopped its write.")
		case guarded && errors.Is(aErr, sqlguard.ErrStaleFence) && balance == 120:
			fmt.Println("  => A's stale write is refused by the database; redone under a new lock, both changes stand.")
		default:
			failed = true
			fmt.Println("  => unexpected outcome")
		}
	}
	d.drop(ctx)
	if failed {
		os.Exit(1)
	}
}

type demo struct {
	db   *sql.DB
	a, b *core.Client         // instance A's and instance B's lock clients
	mr   *miniredis.Miniredis // nil with a real Redis
	ttl  time.Duration
}

// run plays the story once and returns the final balance and A's error.
func (d demo) run(ctx context.Context, guarded bool) (balance int64, aErr error, err error) {
	title := "without sqlguard"
	if guarded {
		title = "with sqlguard"
	}
	fmt.Printf("\n%s\n", title)
	if err := d.reset(ctx); err != nil {
		return 0, nil, err
	}

	a, err := d.a.Acquire(ctx, key)
	if err != nil {
		return 0, nil, err
	}
	aBal, err := d.balance(ctx)
	if err != nil {
		return 0, nil, err
	}
	fmt.Printf("  A acquires %s  fence %d, reads balance %d, will withdraw 30\n", key, a.Fence(), aBal)

	pause := 2 * d.ttl
	fmt.Printf("  A pauses for %v (simulated GC pause; the lease is %v)\n", pause, d.ttl)
	time.Sleep(pause)
	if d.mr != nil {
		d.mr.FastForward(pause) // miniredis expires keys on its own clock
	}

	b, err := d.b.TryAcquire(ctx, key)
	if err != nil {
		return 0, nil, fmt.Errorf("B could not acquire after A's lease expired: %w", err)
	}
	bctx, cancel := b.Context(ctx)
	bBal, err := d.balance(bctx)
	if err != nil {
		cancel()
		return 0, nil, err
	}
	bErr := d.write(bctx, guarded, bBal+50)
	cancel()
	_ = b.Release(ctx)
	fmt.Printf("  B acquires %s  fence %d, reads balance %d, deposits 50: %s\n", key, b.Fence(), bBal, outcome(bErr))
	if bErr != nil {
		return 0, nil, bErr
	}

	// A resumes where it stopped. A paused process has not seen its lock's
	// Done channel close; its context still carries the lock it had.
	aErr = d.write(core.ContextWithLock(ctx, a), guarded, aBal-30)
	fmt.Printf("  A wakes up, writes balance %d:  %s\n", aBal-30, outcome(aErr))
	if err := a.Release(ctx); err != nil {
		fmt.Printf("  A's release: %v\n", err)
	}

	if errors.Is(aErr, sqlguard.ErrStaleFence) {
		// The right reaction to a stale fence: acquire again (a new, higher
		// fence), read again, redo the work.
		if err := d.redo(ctx); err != nil {
			return 0, nil, err
		}
	}

	balance, err = d.balance(ctx)
	if err != nil {
		return 0, nil, err
	}
	fmt.Printf("  final balance %d\n", balance)
	return balance, aErr, nil
}

// redo is A's withdrawal done again after the rejection.
func (d demo) redo(ctx context.Context) error {
	a, err := d.a.Acquire(ctx, key)
	if err != nil {
		return err
	}
	defer a.Release(ctx)
	actx, cancel := a.Context(ctx)
	defer cancel()
	bal, err := d.balance(actx)
	if err != nil {
		return err
	}
	err = d.write(actx, true, bal-30)
	fmt.Printf("  A acquires again  fence %d, reads balance %d, writes %d: %s\n", a.Fence(), bal, bal-30, outcome(err))
	return err
}

// write stores a new balance as the holder of the lock in ctx.
func (d demo) write(ctx context.Context, guarded bool, balance int64) error {
	if !guarded {
		tx, err := d.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if _, err := tx.ExecContext(ctx, "UPDATE "+accounts+" SET balance = "+d.param1()+" WHERE id = 42", balance); err != nil {
			return err
		}
		return tx.Commit()
	}
	// The resource guard records the fence for "account:42" first; a holder
	// whose fence is lower than the recorded one is refused right here.
	tx, err := sqlguard.BeginTx(ctx, d.db, nil, sqlguard.WithTable(fences))
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// The row guard: UPDATE ... SET balance = ?, fence = ? WHERE id = ? AND fence < ?
	if _, err := tx.Update(accounts).Set("balance", balance).Where("id", 42).Exec(ctx); err != nil {
		return err
	}
	return tx.Commit()
}

// param1 is the first bind parameter in the database's dialect.
func (d demo) param1() string {
	if dia, _ := sqlguard.DetectDialect(d.db.Driver()); dia == sqlguard.Postgres {
		return "$1"
	}
	return "?"
}

func (d demo) balance(ctx context.Context) (int64, error) {
	var n int64
	err := d.db.QueryRowContext(ctx, "SELECT balance FROM "+accounts+" WHERE id = 42").Scan(&n)
	return n, err
}

func (d demo) reset(ctx context.Context) error {
	d.drop(ctx)
	if err := sqlguard.Migrate(ctx, d.db, 0, sqlguard.WithTable(fences)); err != nil {
		return err
	}
	for _, q := range []string{
		"CREATE TABLE " + accounts + " (id BIGINT NOT NULL PRIMARY KEY, balance BIGINT NOT NULL, fence BIGINT NOT NULL DEFAULT 0)",
		"INSERT INTO " + accounts + " (id, balance) VALUES (42, 100)",
	} {
		if _, err := d.db.ExecContext(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

func (d demo) drop(ctx context.Context) {
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
		return "REJECTED: " + err.Error()
	}
	return "failed: " + err.Error()
}

// open opens the database named by dsn (a temporary SQLite file when empty).
func open(dsn, driver string) (db *sql.DB, desc string, cleanup func(), err error) {
	cleanup = func() {}
	if dsn == "" {
		dir, err := os.MkdirTemp("", "sqlfence")
		if err != nil {
			return nil, "", nil, err
		}
		path := filepath.Join(dir, "sqlfence.db")
		dsn, driver, desc = path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate", "sqlite", "SQLite "+path
		cleanup = func() { _ = os.RemoveAll(dir) }
	}
	if driver == "" {
		switch {
		case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"), strings.Contains(dsn, "host="):
			driver = "pgx"
		case strings.Contains(dsn, "@tcp("), strings.Contains(dsn, "@unix("), strings.Contains(dsn, "@/"):
			driver = "mysql"
		default:
			driver = "sqlite"
		}
	}
	if desc == "" {
		desc = driver + " " + redact(dsn)
	}
	db, err = sql.Open(driver, dsn)
	if err != nil {
		cleanup()
		return nil, "", nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		cleanup()
		return nil, "", nil, fmt.Errorf("sqlfence: %s: %w", desc, err)
	}
	inner := cleanup
	return db, desc, func() { db.Close(); inner() }, nil
}

// redact hides a password in a DSN before printing it.
func redact(dsn string) string {
	at := strings.LastIndex(dsn, "@")
	if at < 0 {
		return dsn
	}
	head := dsn[:at]
	if i := strings.LastIndex(head, ":"); i >= 0 && !strings.HasSuffix(head[:i+1], "://") {
		return head[:i] + ":***" + dsn[at:]
	}
	return dsn
}
