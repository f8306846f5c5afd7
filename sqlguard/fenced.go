package sqlguard

import (
	"context"
	"database/sql"
	"fmt"
)

// ExecFenced executes a hand-written write that carries the fence in its
// own WHERE clause and treats "no row affected" as a stale fence. Prefer
// Tx.Update and Tx.Insert, which let the same holder write a row twice,
// tell a missing row from a stale one and bind the fence per dialect; a
// strict "fence < ours" as below refuses the holder's own second write:
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
//	tx.Update("accounts").Add("balance", -30).Where("id", 7).Exec(ctx)
//
// runs
//
//	UPDATE accounts SET balance = balance + $1, fence = $2 WHERE id = $3 AND fence <= $2
//
// so a row last written under a higher fence is left alone and the
// transaction fails with ErrStaleFence. A row written earlier under the same
// fence (the same acquisition writing again) is updated: a transaction may
// write a row any number of times, on every dialect and DSN. A row that does
// not exist is ErrNotFound. The fence column must be NOT NULL (DEFAULT 0
// for rows created before fencing).
//
// When the transaction guards several resources (several locks in the
// context), For names the one whose lock protects the row; its fence is the
// one compared and stored.
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
	resource string
	sets     []setItem
	wheres   []pair
}

type pair struct {
	name  string
	value any
}

// setItem is one "column = ..." of a SET list: a bound value, or an
// expression whose '?' marks are bound to args.
type setItem struct {
	name string
	expr string // "" binds args[0]
	args []any
}

// Set adds "column = value" to the SET list.
func (u *Update) Set(column string, value any) *Update {
	u.sets = append(u.sets, setItem{name: column, args: []any{value}})
	return u
}

// Add adds "column = column + delta" to the SET list: the read-modify-write
// done by the database, as in a transfer (Add("balance", -amount)).
func (u *Update) Add(column string, delta any) *Update {
	u.sets = append(u.sets, setItem{name: column, expr: column + " + ?", args: []any{delta}})
	return u
}

// SetExpr adds "column = (expr)" to the SET list. expr is SQL written by the
// caller, never by its users: each '?' in it is replaced by the dialect's
// next bind parameter and bound to the next of args (so it must contain no
// other '?', not even in a string literal). Column names in expr are not
// checked; ';' is refused.
func (u *Update) SetExpr(column, expr string, args ...any) *Update {
	u.sets = append(u.sets, setItem{name: column, expr: expr, args: args})
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

// For names the resource (lock key) whose fence guards the row. It is
// required when the transaction guards several resources
// (ErrAmbiguousResource otherwise) and must be one of them
// (ErrUnknownResource).
func (u *Update) For(resource string) *Update {
	u.resource = resource
	return u
}

// AllowSameFence is the default now: a row whose fence equals ours is the
// same acquisition's earlier write and is updated again.
//
// Deprecated: it has no effect.
func (u *Update) AllowSameFence() *Update { return u }

// SQL returns the statement and arguments Exec runs.
func (u *Update) SQL() (string, []any, error) {
	if err := u.check(); err != nil {
		return "", nil, err
	}
	tok, err := u.tx.tokenFor(u.resource)
	if err != nil {
		return "", nil, err
	}
	b := binder{d: u.tx.d}
	b.WriteString("UPDATE " + u.table + " SET ")
	for _, c := range u.sets {
		if err := b.set(c); err != nil {
			return "", nil, err
		}
		b.WriteString(", ")
	}
	fence := int64(tok.Fence)
	fp := b.bind(fence)
	b.WriteString(u.fenceCol + " = " + fp + " WHERE ")
	for _, c := range u.wheres {
		b.WriteString(c.name + " = " + b.bind(c.value) + " AND ")
	}
	if b.d == Postgres {
		b.WriteString(u.fenceCol + " <= " + fp) // $n can be used twice
	} else {
		b.WriteString(u.fenceCol + " <= " + b.bind(fence))
	}
	return b.String(), b.args, nil
}

// check validates the names and the shape of the statement.
func (u *Update) check() error {
	if err := checkTable(u.table); err != nil {
		return err
	}
	if !validName(u.fenceCol, false) {
		return fmt.Errorf("%w: fence column %q", ErrInvalidName, u.fenceCol)
	}
	if len(u.wheres) == 0 {
		return fmt.Errorf("sqlguard: fenced update of %s without a Where condition", u.table)
	}
	for _, c := range u.sets {
		if !validName(c.name, false) || c.name == u.fenceCol {
			return fmt.Errorf("%w: column %q", ErrInvalidName, c.name)
		}
	}
	for _, c := range u.wheres {
		if !validName(c.name, false) {
			return fmt.Errorf("%w: column %q", ErrInvalidName, c.name)
		}
	}
	return nil
}

// Exec runs the update. When it changes no row, Exec tells why with one
// more statement (a SELECT of the row's fence): no such row is ErrNotFound,
// a higher fence is ErrStaleFence, and our own fence (MySQL/MariaDB without
// clientFoundRows report an update that left the row as it was as no row
// affected) is success. Errors roll the transaction back, including an
// invalid name.
func (u *Update) Exec(ctx context.Context) (sql.Result, error) {
	q, args, err := u.SQL()
	if err != nil {
		return nil, u.tx.fail(err)
	}
	tok, _ := u.tx.tokenFor(u.resource)
	if err := u.tx.ended(); err != nil {
		return nil, err
	}
	res, err := u.tx.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return nil, u.tx.abort(fmt.Errorf("sqlguard: fenced update of %s: %w", u.table, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, u.tx.abort(fmt.Errorf("sqlguard: fenced update: rows affected: %w", err))
	}
	if n > 0 {
		return res, nil
	}
	return res, u.tx.classify(ctx, rowRef{table: u.table, fenceCol: u.fenceCol, keys: u.wheres}, tok)
}
