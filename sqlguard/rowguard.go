package sqlguard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/fencedlock/fencedlock/core"
)

// binder builds a statement in a dialect, collecting the bound arguments.
type binder struct {
	strings.Builder
	d    Dialect
	args []any
}

// bind appends v to the arguments and returns its placeholder.
func (b *binder) bind(v any) string {
	b.args = append(b.args, v)
	return b.d.placeholder(len(b.args))
}

// set writes "name = <value or expression>".
func (b *binder) set(c setItem) error {
	if c.expr == "" {
		b.WriteString(c.name + " = " + b.bind(c.args[0]))
		return nil
	}
	if strings.Contains(c.expr, ";") {
		return fmt.Errorf("%w: expression for %q contains ';'", ErrInvalidName, c.name)
	}
	if n := strings.Count(c.expr, "?"); n != len(c.args) {
		return fmt.Errorf("sqlguard: expression for %q has %d '?' and %d arguments", c.name, n, len(c.args))
	}
	b.WriteString(c.name + " = (")
	rest, args := c.expr, c.args
	for {
		before, after, ok := strings.Cut(rest, "?")
		b.WriteString(before)
		if !ok {
			break
		}
		b.WriteString(b.bind(args[0]))
		rest, args = after, args[1:]
	}
	b.WriteString(")")
	return nil
}

// fail ends the transaction with err unless it has ended already, in which
// case the first error stands.
func (tx *Tx) fail(err error) error {
	if eerr := tx.ended(); eerr != nil {
		return eerr
	}
	return tx.abort(err)
}

// rowRef names the row a row guard wrote: its table, fence column and the
// column = value pairs that identify it.
type rowRef struct {
	table    string
	fenceCol string
	keys     []pair
}

// rowFence reads the fence stored in the row; ok is false when there is no
// such row.
func (tx *Tx) rowFence(ctx context.Context, r rowRef) (fence int64, ok bool, err error) {
	b := binder{d: tx.d}
	b.WriteString("SELECT " + r.fenceCol + " FROM " + r.table + " WHERE ")
	for i, k := range r.keys {
		if i > 0 {
			b.WriteString(" AND ")
		}
		b.WriteString(k.name + " = " + b.bind(k.value))
	}
	err = tx.tx.QueryRowContext(ctx, b.String(), b.args...).Scan(&fence)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return fence, err == nil, err
}

// classify is called when a row guard changed no row (or, on MySQL, when
// rows affected cannot tell): it reads the row's fence and returns nil when
// the row carries ours (the write is in place), ErrNotFound when there is
// no row, and a StaleFenceError otherwise. Errors end the transaction.
func (tx *Tx) classify(ctx context.Context, r rowRef, tok core.FenceToken) error {
	f, ok, err := tx.rowFence(ctx, r)
	switch {
	case err != nil:
		return tx.abort(fmt.Errorf("sqlguard: fenced write to %s: reading the row's fence: %w", r.table, err))
	case !ok:
		return tx.abort(fmt.Errorf("%w (table %s)", ErrNotFound, r.table))
	case f == int64(tok.Fence):
		return nil
	}
	return tx.abort(&StaleFenceError{Resource: tok.Key, Fence: tok.Fence, Table: r.table, Row: true, Current: uint64(max(f, 0))})
}
