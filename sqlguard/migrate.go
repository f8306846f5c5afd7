package sqlguard

import (
	"context"
	"database/sql"
	"fmt"
)

// Execer runs a statement. *sql.DB, *sql.Conn and *sql.Tx implement it.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// DDL returns the CREATE TABLE IF NOT EXISTS statement of the fence table
// in dialect d, for migration tools. WithTable names the table; other
// options are ignored.
func DDL(d Dialect, opts ...Option) (string, error) {
	cfg := newConfig(opts)
	if !d.valid() {
		return "", fmt.Errorf("%w: %v", ErrUnknownDialect, d)
	}
	if err := checkTable(cfg.table); err != nil {
		return "", err
	}
	return d.ddl(cfg.table), nil
}

// Migrate creates the fence table if it does not exist (see DDL); running it
// again is harmless. A zero d detects the dialect when db is a *sql.DB or
// *sql.Conn. WithTable names the table.
func Migrate(ctx context.Context, db Execer, d Dialect, opts ...Option) error {
	if db == nil {
		return fmt.Errorf("sqlguard: Migrate with a nil database")
	}
	if d == 0 {
		var err error
		if d, err = dialectOf(ctx, db); err != nil {
			return err
		}
	}
	q, err := DDL(d, opts...)
	if err != nil {
		return err
	}
	if _, err := db.ExecContext(ctx, q); err != nil {
		// PostgreSQL's IF NOT EXISTS is not atomic: a concurrent creator
		// can win between its check and its insert into the catalog.
		if s := sqlState(err); d == Postgres && (s == "23505" || s == "42P07") {
			return nil
		}
		return fmt.Errorf("sqlguard: creating the fence table: %w", err)
	}
	return nil
}
