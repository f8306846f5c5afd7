//go:build linux

package reliability_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/fencedlock/fencedlock/sqlguard"
)

// The same switches as sqlguard's own tests: SQLite always, PostgreSQL and
// MariaDB when reachable (FENCEDLOCK_REQUIRE_DB=1 makes unreachable fatal).
const (
	pgEnv        = "FENCEDLOCK_PG_DSN"
	mysqlEnv     = "FENCEDLOCK_MYSQL_DSN"
	requireDBEnv = "FENCEDLOCK_REQUIRE_DB"
	defaultPG    = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	defaultMySQL = "root@tcp(127.0.0.1:3306)/test"
	// Workers in separate processes share one SQLite file: WAL, a generous
	// busy timeout (a SIGSTOPped holder keeps its write lock), and BEGIN
	// IMMEDIATE so a transaction takes the write lock before it reads.
	sqliteParams = "?_pragma=busy_timeout(20000)&_pragma=journal_mode(WAL)&_txlock=immediate"
)

// dbConfig tells a worker which database to write its witness to.
type dbConfig struct {
	Name       string // sqlite, postgres, mariadb
	Driver     string
	DSN        string
	Dialect    sqlguard.Dialect
	FenceTable string // sqlguard's fence table
	Witness    string // resource TEXT PRIMARY KEY, value BIGINT
}

func ph(d sqlguard.Dialect, n int) string {
	if d == sqlguard.Postgres {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// openDB opens a database by name. ok is false when it is unreachable and
// not required.
func openDB(t *testing.T, name string) (dbConfig, *sql.DB, bool) {
	t.Helper()
	var c dbConfig
	switch name {
	case "sqlite":
		c = dbConfig{Name: name, Driver: "sqlite", Dialect: sqlguard.SQLite,
			DSN: filepath.Join(t.TempDir(), "witness.db") + sqliteParams}
	case "postgres":
		c = dbConfig{Name: name, Driver: "pgx", Dialect: sqlguard.Postgres, DSN: envOr(pgEnv, defaultPG)}
	case "mariadb":
		c = dbConfig{Name: name, Driver: "mysql", Dialect: sqlguard.MySQL, DSN: envOr(mysqlEnv, defaultMySQL)}
	default:
		t.Fatalf("unknown database %q", name)
	}
	db, err := sql.Open(c.Driver, c.DSN)
	if err != nil {
		t.Fatalf("sql.Open(%s): %v", c.Driver, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		if name == "sqlite" || os.Getenv(requireDBEnv) == "1" {
			t.Fatalf("%s unreachable: %v", name, err)
		}
		t.Logf("%s unreachable (%v); set %s / %s (%s=1 makes this fatal)", name, err, pgEnv, mysqlEnv, requireDBEnv)
		return c, nil, false
	}
	t.Cleanup(func() { _ = db.Close() })
	return c, db, true
}

// lockStore is the storage the lock scenarios write through: PostgreSQL
// when reachable, else SQLite.
func lockStore(t *testing.T) (dbConfig, *sql.DB) {
	t.Helper()
	if c, db, ok := openDB(t, "postgres"); ok {
		return c, db
	}
	c, db, _ := openDB(t, "sqlite")
	return c, db
}

// newTables creates this run's fence and witness tables (a witness row at
// 0 per key) and drops them when the test ends.
func newTables(t *testing.T, c *dbConfig, db *sql.DB, keys []string) {
	t.Helper()
	var b [5]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	c.FenceTable = "rel_fence_" + suffix
	c.Witness = "rel_witness_" + suffix
	ctx := context.Background()
	if err := sqlguard.Migrate(ctx, db, c.Dialect, sqlguard.WithTable(c.FenceTable)); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE "+c.Witness+" (resource VARCHAR(255) PRIMARY KEY, value BIGINT NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, tab := range []string{c.FenceTable, c.Witness} {
			if _, err := db.ExecContext(ctx, "DROP TABLE IF EXISTS "+tab); err != nil {
				t.Logf("dropping %s: %v", tab, err)
			}
		}
	})
	for _, k := range keys {
		if _, err := db.ExecContext(ctx, "INSERT INTO "+c.Witness+" (resource, value) VALUES ("+ph(c.Dialect, 1)+", 0)", k); err != nil {
			t.Fatal(err)
		}
	}
}

// witnessValues reads the final witness value of every key.
func witnessValues(t *testing.T, c dbConfig, db *sql.DB, keys []string) map[string]int64 {
	t.Helper()
	out := make(map[string]int64, len(keys))
	for _, k := range keys {
		var v int64
		if err := db.QueryRowContext(context.Background(),
			"SELECT value FROM "+c.Witness+" WHERE resource = "+ph(c.Dialect, 1), k).Scan(&v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
