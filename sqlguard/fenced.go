package sqlguard

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
)

// ExecFenced executes a write that carries the fence in its own WHERE clause
// and treats "no row affected" as a stale fence:
//
//	tx.ExecFenced(ctx,
//		"UPDATE accounts SET balance = $1, fence = $2 WHERE id = $3 AND fence < $2",
//		balance, tx.Fence(), id)
//
// When the statement affects no row, or fails, the transaction is rolled
// back and ExecFenced returns the error (ErrStaleFence for no row). A write
// that matches no row because the row does not exist is reported the same
// way: fence rows that exist, or use an upsert.
//
// MySQL/MariaDB count only changed rows unless the DSN sets
// clientFoundRows=true: a statement that can leave a matched row unchanged
// (a "fence <= ?" rewrite of the same values) reports 0 there. A strict
// "fence < ?" that also sets the fence always changes the row.
func (tx *Tx) ExecFenced(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return tx.execFenced(ctx, "", query, args)
}

func (tx *Tx) execFenced(ctx context.Context, table, query string, args []any) (sql.Result, error) {
	if err := tx.ended(); err != nil {
		return nil, err
	}
	res, err := tx.tx.ExecContext(ctx, query, args...)
	if err != nil {
		return nil, tx.abort(fmt.Errorf("sqlguard: fenced write: %w", err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, tx.abort(fmt.Errorf("sqlguard: fenced write: rows affected: %w", err))
	}
	if n == 0 {
		return nil, tx.abort(&StaleFenceError{Resource: tx.token.Key, Fence: tx.token.Fence, Table: table, Row: true})
	}
	return res, nil
}

// Update starts a fenced single-table UPDATE, written in the transaction's
// dialect:
//
//	tx.Update("accounts").Set("balance", 120).Where("id", 7).Exec(ctx)
//
// runs
//
//	UPDATE accounts SET balance = $1, fence = $2 WHERE id = $3 AND fence < $2
//
// so a row last written under a higher (or, by default, the same) fence is
// left alone and the transaction fails with ErrStaleFence. The fence column
// must be NOT NULL (DEFAULT 0 for rows created before fencing).
func (tx *Tx) Update(table string) *Update {
	return &Update{tx: tx, table: table, fenceCol: DefaultFenceColumn}
}

// Update is a fenced UPDATE built by Tx.Update. Table and column names must
// be plain identifiers (ErrInvalidName otherwise); values are always bound
// as parameters.
type Update struct {
	tx       *Tx
	table    string
	fenceCol string
	sets     []pair
	wheres   []pair
	orEqual  bool
}

type pair struct {
	name  string
	value any
}

// Set adds "column = value" to the SET list.
func (u *Update) Set(column string, value any) *Update {
	u.sets = append(u.sets, pair{column, value})
	return u
}

// Where adds "column = value" to the WHERE clause (conditions are ANDed). At
// least one is required: a fenced update targets rows, not a table.
func (u *Update) Where(column string, value any) *Update {
	u.wheres = append(u.wheres, pair{column, value})
	return u
}

// FenceColumn names the row's fence column (default "fence").
func (u *Update) FenceColumn(column string) *Update {
	u.fenceCol = column
	return u
}

// AllowSameFence also accepts rows whose fence equals ours ("fence <= ?"),
// so one lock holder can update a row more than once. Fences are unique per
// lock key, so the same fence means the same acquisition as long as the
// row's fence only ever comes from one key. On MySQL/MariaDB without
// clientFoundRows=true, an update that leaves the row unchanged then reports
// no row affected, which is taken as stale.
func (u *Update) AllowSameFence() *Update {
	u.orEqual = true
	return u
}

// SQL returns the statement and arguments Exec runs.
func (u *Update) SQL() (string, []any, error) {
	if err := checkTable(u.table); err != nil {
		return "", nil, err
	}
	if !validName(u.fenceCol, false) {
		return "", nil, fmt.Errorf("%w: fence column %q", ErrInvalidName, u.fenceCol)
	}
	if len(u.wheres) == 0 {
		return "", nil, fmt.Errorf("sqlguard: fenced update of %s without a Where condition", u.table)
	}
	d := u.tx.d
	var (
		b    strings.Builder
		args []any
	)
	bind := func(v any) string {
		args = append(args, v)
		return d.placeholder(len(args))
	}
	b.WriteString("UPDATE " + u.table + " SET ")
	for _, c := range u.sets {
		if !validName(c.name, false) || c.name == u.fenceCol {
			return "", nil, fmt.Errorf("%w: column %q", ErrInvalidName, c.name)
		}
		b.WriteString(c.name + " = " + bind(c.value) + ", ")
	}
	fence := int64(u.tx.token.Fence)
	fp := bind(fence)
	b.WriteString(u.fenceCol + " = " + fp + " WHERE ")
	for _, c := range u.wheres {
		if !validName(c.name, false) {
			return "", nil, fmt.Errorf("%w: column %q", ErrInvalidName, c.name)
		}
		b.WriteString(c.name + " = " + bind(c.value) + " AND ")
	}
	op := " < "
	if u.orEqual {
		op = " <= "
	}
	if d == Postgres {
		b.WriteString(u.fenceCol + op + fp) // $n can be used twice
	} else {
		b.WriteString(u.fenceCol + op + bind(fence))
	}
	return b.String(), args, nil
}

// Exec runs the update. No row affected means a newer holder wrote the row
// (or the row does not exist): the transaction is rolled back and the error
// matches ErrStaleFence. Any other failure, including an invalid name, also
// rolls back.
func (u *Update) Exec(ctx context.Context) (sql.Result, error) {
	q, args, err := u.SQL()
	if err != nil {
		if eerr := u.tx.ended(); eerr != nil {
			return nil, eerr
		}
		return nil, u.tx.abort(err)
	}
	return u.tx.execFenced(ctx, u.table, q, args)
}
