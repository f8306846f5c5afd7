// Command sqlfence shows why a lock alone cannot protect data, how fencing
// does, and why the reads belong inside the guarded transaction.
//
// Holder A takes the lock on an account and is then paused (a GC pause, a VM
// stall) for longer than its lease. The lock expires and holder B takes it.
// The program plays four runs of that story:
//
//  1. Without sqlguard: A wakes up and writes the balance it computed before
//     the pause; B's deposit is silently lost.
//
//  2. With sqlguard, A paused before its transaction: B's higher fence is
//     recorded first, so A's BeginTx is refused (ErrStaleFence); A acquires
//     again, reads again inside its new transaction and redoes the work.
//
//  3. With sqlguard, A paused inside its transaction, after its read: the
//     resource guard's row lock makes B's BeginTx wait until A commits, so B's
//     read, made inside B's transaction, sees A's withdrawal. Both stand.
//
//  4. The mistake the guard cannot catch: as 3, but B reads the balance
//     before BeginTx. B reads while A's transaction is still open, and writes
//     after it with a higher fence, which every check accepts: A's committed
//     withdrawal is lost. Fencing orders the writes; only a read made inside
//     the guarded transaction is ordered with them.
//
// Run it with
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
	"flag"
	"fmt"
	"io"
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
)

func main() {
	addr := flag.String("redis", "", "Redis address (host:port); empty runs an embedded miniredis")
	dsn := flag.String("dsn", "", "database DSN; empty uses a SQLite file in a temporary directory")
	drv := flag.String("driver", "", "database/sql driver: pgx, mysql or sqlite (default: told from -dsn)")
	ttl := flag.Duration("ttl", 300*time.Millisecond, "lock lease")
	flag.Parse()
	log.SetFlags(0)
	if err := run(os.Stdout, *addr, *dsn, *drv, *ttl); err != nil {
		log.Fatal(err)
	}
}

// run plays every story and returns an error when one ends otherwise than
// it should.
func run(out io.Writer, addr, dsn, driver string, ttl time.Duration) error {
	var mr *miniredis.Miniredis
	if addr == "" {
		var err error
		if mr, err = miniredis.Run(); err != nil {
			return err
		}
		defer mr.Close()
		addr = mr.Addr()
		fmt.Fprintln(out, "redis:    embedded miniredis at", addr)
	} else {
		fmt.Fprintln(out, "redis:   ", addr)
	}
	// A and B are two service instances: each has its own Redis connection
	// and lock client. Auto-refresh is off: a paused process renews nothing.
	var inst [2]*core.Client
	for i := range inst {
		rdb := redis.NewClient(&redis.Options{Addr: addr})
		defer rdb.Close()
		inst[i] = core.New(rdb, core.WithTTL(ttl), core.WithoutAutoRefresh())
		defer inst[i].Close()
	}
	db, desc, cleanup, err := open(dsn, driver)
	if err != nil {
		return err
	}
	defer cleanup()
	fmt.Fprintln(out, "database:", desc)

	d := &demo{out: &lockedWriter{w: out}, db: db, a: inst[0], b: inst[1], mr: mr, ttl: ttl}
	defer d.drop(context.Background())
	return d.all(context.Background())
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
