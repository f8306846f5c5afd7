package sqlguard_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "modernc.org/sqlite"

	"github.com/fencedlock/fencedlock/sqlguard"
)

// Real databases. SQLite always runs (a file in the test's temp dir);
// PostgreSQL and MariaDB/MySQL run when reachable at these DSNs and are
// skipped otherwise, unless FENCEDLOCK_REQUIRE_DB=1 (CI) makes that fatal.
const (
	pgEnv        = "FENCEDLOCK_PG_DSN"
	mysqlEnv     = "FENCEDLOCK_MYSQL_DSN"
	requireDBEnv = "FENCEDLOCK_REQUIRE_DB"
	defaultPG    = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	defaultMySQL = "root@tcp(127.0.0.1:3306)/test"

	// sqliteParams is what the package doc recommends for concurrent use.
	sqliteParams = "?_pragma=busy_timeout(30000)&_pragma=journal_mode(WAL)&_txlock=immediate"
)

type testDB struct {
	name    string // subtest name: sqlite, postgres, mariadb
	dialect sqlguard.Dialect
	driver  string
	dsn     string
	db      *sql.DB
}

var dbNames = []string{"sqlite", "postgres", "mariadb"}

// writeDBNames adds MariaDB with clientFoundRows=true, for the row guards
// whose outcome depends on how the server counts affected rows.
var writeDBNames = append(dbNames[:len(dbNames):len(dbNames)], "mariadb-foundrows")

// eachWriteDB runs fn as a subtest on every database of writeDBNames.
func eachWriteDB(t *testing.T, fn func(t *testing.T, db *testDB)) {
	t.Helper()
	for _, name := range writeDBNames {
		t.Run(name, func(t *testing.T) { fn(t, openDB(t, name)) })
	}
}

// eachDB runs fn as a subtest on every database.
func eachDB(t *testing.T, fn func(t *testing.T, db *testDB)) {
	t.Helper()
	for _, name := range dbNames {
		t.Run(name, func(t *testing.T) { fn(t, openDB(t, name)) })
	}
}

// eachDBParallel is eachDB with the databases running side by side, for the
// long tests: PostgreSQL, MariaDB and SQLite mostly wait on different disks
// and processes.
func eachDBParallel(t *testing.T, fn func(t *testing.T, db *testDB)) {
	t.Helper()
	parallelOver(t, dbNames, fn)
}

// eachWriteDBParallel is eachDBParallel over writeDBNames (MariaDB with and
// without clientFoundRows).
func eachWriteDBParallel(t *testing.T, fn func(t *testing.T, db *testDB)) {
	t.Helper()
	parallelOver(t, writeDBNames, fn)
}

func parallelOver(t *testing.T, names []string, fn func(t *testing.T, db *testDB)) {
	t.Helper()
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, openDB(t, name))
		})
	}
}

// dsnFor returns the driver name and DSN of a database.
func dsnFor(tb testing.TB, name string) (driver, dsn string, d sqlguard.Dialect) {
	switch name {
	case "sqlite":
		return "sqlite", filepath.Join(tb.TempDir(), "sqlguard.db") + sqliteParams, sqlguard.SQLite
	case "postgres":
		return "pgx", envOr(pgEnv, defaultPG), sqlguard.Postgres
	case "mariadb":
		return "mysql", envOr(mysqlEnv, defaultMySQL), sqlguard.MySQL
	case "mariadb-foundrows":
		dsn := withMySQLConfig(tb, envOr(mysqlEnv, defaultMySQL), func(c *mysql.Config) { c.ClientFoundRows = true })
		return "mysql", dsn, sqlguard.MySQL
	}
	tb.Fatalf("unknown database %q", name)
	return
}

// openDB opens a database for the test and closes it at the end; an
// unreachable server skips the test (or fails it under FENCEDLOCK_REQUIRE_DB=1).
func openDB(tb testing.TB, name string) *testDB {
	tb.Helper()
	driver, dsn, d := dsnFor(tb, name)
	return openDSN(tb, name, driver, dsn, d)
}

func openDSN(tb testing.TB, name, driver, dsn string, d sqlguard.Dialect) *testDB {
	tb.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		tb.Fatalf("sql.Open(%s): %v", driver, err)
	}
	tb.Cleanup(func() { _ = db.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := db.PingContext(ctx); err != nil {
		env := map[string]string{"postgres": pgEnv, "mariadb": mysqlEnv, "mariadb-foundrows": mysqlEnv}[name]
		msg := fmt.Sprintf("%s unreachable (%v); set %s to a reachable server", name, err, env)
		if name == "sqlite" || os.Getenv(requireDBEnv) == "1" {
			tb.Fatal(msg)
		}
		tb.Skip(msg + " (" + requireDBEnv + "=1 makes this fatal)")
	}
	db.SetMaxIdleConns(32)
	return &testDB{name: name, dialect: d, driver: driver, dsn: dsn, db: db}
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// table returns a table name unique to this run, dropped when the test ends,
// so parallel test binaries sharing a server never collide.
func (db *testDB) table(tb testing.TB, base string) string {
	tb.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "sgt_" + base + "_" + hex.EncodeToString(b[:])
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := db.db.ExecContext(ctx, "DROP TABLE IF EXISTS "+name); err != nil {
			tb.Logf("dropping %s: %v", name, err)
		}
	})
	return name
}

// fenceTable creates a fence table for the test and returns its name.
func (db *testDB) fenceTable(tb testing.TB) string {
	tb.Helper()
	name := db.table(tb, "fences")
	if err := sqlguard.Migrate(context.Background(), db.db, db.dialect, sqlguard.WithTable(name)); err != nil {
		tb.Fatalf("Migrate: %v", err)
	}
	return name
}

// accounts creates a table of accounts with a per-row fence column and one
// account (id 1, balance 0, fence 0).
func (db *testDB) accounts(tb testing.TB) string {
	tb.Helper()
	name := db.table(tb, "accounts")
	ddl := "CREATE TABLE " + name + " (id BIGINT NOT NULL PRIMARY KEY, balance BIGINT NOT NULL, fence BIGINT NOT NULL DEFAULT 0)"
	if db.dialect == sqlguard.MySQL {
		ddl += " ENGINE=InnoDB"
	}
	db.exec(tb, ddl)
	db.exec(tb, "INSERT INTO "+name+" (id, balance, fence) VALUES (1, 0, 0)")
	return name
}

func (db *testDB) exec(tb testing.TB, q string, args ...any) {
	tb.Helper()
	if _, err := db.db.ExecContext(context.Background(), db.rebind(q), args...); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
}

// int64 runs a query returning one integer.
func (db *testDB) int64(tb testing.TB, q string, args ...any) int64 {
	tb.Helper()
	var n int64
	if err := db.db.QueryRowContext(context.Background(), db.rebind(q), args...).Scan(&n); err != nil {
		tb.Fatalf("%s: %v", q, err)
	}
	return n
}

// storedFence returns the fence recorded for resource, or 0 when none is.
func (db *testDB) storedFence(tb testing.TB, table, resource string) int64 {
	tb.Helper()
	var n int64
	err := db.db.QueryRowContext(context.Background(), db.rebind("SELECT fence FROM "+table+" WHERE resource = ?"), resource).Scan(&n)
	if err == sql.ErrNoRows {
		return 0
	}
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// rebind turns ? placeholders into $n for PostgreSQL (test queries never
// hold a literal '?').
func (db *testDB) rebind(q string) string { return rebind(db.dialect, q) }

func rebind(d sqlguard.Dialect, q string) string {
	if d != sqlguard.Postgres {
		return q
	}
	out := make([]byte, 0, len(q)+8)
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			out = fmt.Appendf(out, "$%d", n)
			continue
		}
		out = append(out, q[i])
	}
	return string(out)
}

// withMySQLConfig returns a copy of a go-sql-driver DSN with cfg changed.
func withMySQLConfig(tb testing.TB, dsn string, change func(*mysql.Config)) string {
	tb.Helper()
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	change(cfg)
	return cfg.FormatDSN()
}
