package sqlguard

import (
	"context"
	"database/sql"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// Dialect is an SQL dialect sqlguard can write its statements in. The zero
// value means "detect from the driver".
type Dialect uint8

// Supported dialects.
const (
	// Postgres is PostgreSQL ($n placeholders, INSERT ... ON CONFLICT DO
	// UPDATE ... WHERE), through github.com/jackc/pgx/v5/stdlib or
	// github.com/lib/pq.
	Postgres Dialect = iota + 1
	// MySQL is MySQL 5.7+ and MariaDB 10.3+ with InnoDB tables (? placeholders,
	// INSERT ... ON DUPLICATE KEY UPDATE), through github.com/go-sql-driver/mysql.
	MySQL
	// SQLite is SQLite 3.24+ (? placeholders, INSERT ... ON CONFLICT DO UPDATE
	// ... WHERE), through modernc.org/sqlite or github.com/mattn/go-sqlite3.
	SQLite
)

func (d Dialect) String() string {
	switch d {
	case Postgres:
		return "postgres"
	case MySQL:
		return "mysql"
	case SQLite:
		return "sqlite"
	case 0:
		return "auto"
	}
	return "Dialect(" + strconv.Itoa(int(d)) + ")"
}

func (d Dialect) valid() bool { return d >= Postgres && d <= SQLite }

// placeholder returns the n-th (1-based) bind parameter.
func (d Dialect) placeholder(n int) string {
	if d == Postgres {
		return "$" + strconv.Itoa(n)
	}
	return "?"
}

// driverPackages maps Go package paths of database/sql drivers to dialects.
var driverPackages = []struct {
	pkg string
	d   Dialect
}{
	{"github.com/jackc/pgx", Postgres},
	{"github.com/lib/pq", Postgres},
	{"github.com/go-sql-driver/mysql", MySQL},
	{"modernc.org/sqlite", SQLite},
	{"github.com/mattn/go-sqlite3", SQLite},
	{"github.com/ncruces/go-sqlite3", SQLite},
}

// DetectDialect tells the dialect from a database/sql driver (db.Driver())
// or driver connection (what sql.Conn.Raw hands out) by its Go package:
// pgx and lib/pq are Postgres, go-sql-driver/mysql is MySQL, modernc.org/sqlite
// and mattn/go-sqlite3 are SQLite. Other values, including drivers wrapped
// by instrumentation, give ErrUnknownDialect.
func DetectDialect(v any) (Dialect, error) {
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil {
		return 0, ErrUnknownDialect
	}
	pkg := t.PkgPath()
	for _, p := range driverPackages {
		if pkg == p.pkg || strings.HasPrefix(pkg, p.pkg+"/") {
			return p.d, nil
		}
	}
	return 0, fmt.Errorf("%w (driver type %s)", ErrUnknownDialect, t.String())
}

// dialectOf detects the dialect of a *sql.DB (from its driver) or *sql.Conn
// (from its driver connection, through Raw).
func dialectOf(ctx context.Context, db any) (Dialect, error) {
	switch db := db.(type) {
	case *sql.DB:
		return DetectDialect(db.Driver())
	case *sql.Conn:
		var (
			d   Dialect
			err error
		)
		if rerr := db.Raw(func(dc any) error {
			d, err = DetectDialect(dc)
			return nil
		}); rerr != nil {
			return 0, fmt.Errorf("sqlguard: detecting the dialect: %w", rerr)
		}
		return d, err
	}
	return 0, ErrUnknownDialect
}

// resolveDialect returns the configured dialect or detects it.
func (c *config) resolveDialect(ctx context.Context, db any) (Dialect, error) {
	if c.dialect != 0 {
		if !c.dialect.valid() {
			return 0, fmt.Errorf("%w: %v", ErrUnknownDialect, c.dialect)
		}
		return c.dialect, nil
	}
	return dialectOf(ctx, db)
}

// validName reports whether s is a plain identifier, optionally qualified by
// one schema: [A-Za-z_][A-Za-z0-9_]* parts of at most 63 bytes.
func validName(s string, qualified bool) bool {
	parts := []string{s}
	if qualified {
		if a, b, ok := strings.Cut(s, "."); ok {
			parts = []string{a, b}
		}
	}
	for _, p := range parts {
		if p == "" || len(p) > 63 {
			return false
		}
		for i := 0; i < len(p); i++ {
			c := p[i]
			switch {
			case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
			case '0' <= c && c <= '9' && i > 0:
			default:
				return false
			}
		}
	}
	return true
}

func checkTable(name string) error {
	if !validName(name, true) {
		return fmt.Errorf("%w: table %q", ErrInvalidName, name)
	}
	return nil
}

// ddl returns the CREATE TABLE statement of the fence table.
//
// Resources and owners are compared byte for byte: PostgreSQL and SQLite
// compare TEXT that way by default, MySQL needs VARBINARY (its default
// collations ignore case and trailing spaces, which would make two lock keys
// share one fence).
func (d Dialect) ddl(table string) string {
	switch d {
	case Postgres:
		return `CREATE TABLE IF NOT EXISTS ` + table + ` (
    resource   TEXT        NOT NULL PRIMARY KEY,
    fence      BIGINT      NOT NULL,
    owner      TEXT        NOT NULL,
    writes     BIGINT      NOT NULL DEFAULT 1,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
)`
	case MySQL:
		return `CREATE TABLE IF NOT EXISTS ` + table + ` (
    resource   VARBINARY(255) NOT NULL PRIMARY KEY,
    fence      BIGINT         NOT NULL,
    owner      VARBINARY(64)  NOT NULL,
    writes     BIGINT         NOT NULL DEFAULT 1,
    updated_at TIMESTAMP(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB`
	case SQLite:
		return `CREATE TABLE IF NOT EXISTS ` + table + ` (
    resource   TEXT    NOT NULL PRIMARY KEY,
    fence      INTEGER NOT NULL,
    owner      TEXT    NOT NULL,
    writes     INTEGER NOT NULL DEFAULT 1,
    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)`
	}
	return ""
}

// guardStmt returns the one conditional statement that records fence for
// resource: insert the row, or update it only if the stored fence is lower,
// or equal under the same owner. It never reads into Go and compares there;
// the database evaluates the condition on the row it has locked.
func (d Dialect) guardStmt(table, resource string, fence int64, owner string) (string, []any) {
	switch d {
	case Postgres, SQLite:
		return d.upsertGuard(table, 1), []any{resource, fence, owner}
	case MySQL:
		// ON DUPLICATE KEY UPDATE has no WHERE, so every assignment is
		// conditional. MySQL assigns left to right and later expressions see
		// earlier new values; the order below keeps the condition's value
		// stable (owner changes only when it holds, and then it still holds
		// with the new owner; fence changes last but one).
		//
		// Rows affected cannot tell an accepted insert (1) from a rejection
		// under CLIENT_FOUND_ROWS (1), so a rejection also sets
		// LAST_INSERT_ID(stored fence): the statement's insert id is non-zero
		// exactly when it was rejected, whatever the DSN says. An accepted
		// update always bumps writes, so it reports 2, never "unchanged".
		const cond = `(fence < ? OR (fence = ? AND owner = ?))`
		q := `INSERT INTO ` + table + ` (resource, fence, owner) VALUES (?, ?, ?)
ON DUPLICATE KEY UPDATE
    writes = IF(` + cond + `, writes + 1, writes + 0 * LAST_INSERT_ID(fence)),
    updated_at = IF(` + cond + `, CURRENT_TIMESTAMP(6), updated_at),
    owner = IF(` + cond + `, ?, owner),
    fence = IF(` + cond + `, ?, fence)`
		return q, []any{
			resource, fence, owner, // VALUES
			fence, fence, owner, // writes
			fence, fence, owner, // updated_at
			fence, fence, owner, owner, // owner
			fence, fence, owner, fence, // fence
		}
	}
	return "", nil
}

// upsertGuard is the PostgreSQL or SQLite guard statement for n resources:
// one INSERT ... ON CONFLICT DO UPDATE ... WHERE with n rows of (resource,
// fence, owner). Rows affected is the number of resources accepted. Rows are
// taken in the order given (sorted by the caller), so concurrent guards over
// overlapping sets lock the fence rows in one order.
func (d Dialect) upsertGuard(table string, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(" + d.placeholder(3*i+1) + ", " + d.placeholder(3*i+2) + ", " + d.placeholder(3*i+3) + ")")
	}
	if d == Postgres {
		// The alias keeps the WHERE unambiguous for schema-qualified names.
		// A conflicting row is locked even when WHERE is false, so concurrent
		// guards on one resource queue up behind each other.
		return `INSERT INTO ` + table + ` AS f (resource, fence, owner) VALUES ` + b.String() + `
ON CONFLICT (resource) DO UPDATE
SET fence = EXCLUDED.fence, owner = EXCLUDED.owner, writes = f.writes + 1, updated_at = now()
WHERE f.fence < EXCLUDED.fence OR (f.fence = EXCLUDED.fence AND f.owner = EXCLUDED.owner)`
	}
	return `INSERT INTO ` + table + ` (resource, fence, owner) VALUES ` + b.String() + `
ON CONFLICT (resource) DO UPDATE
SET fence = excluded.fence, owner = excluded.owner, writes = writes + 1,
    updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE fence < excluded.fence OR (fence = excluded.fence AND owner = excluded.owner)`
}
