package sqlguard

import (
	"context"
	"database/sql"
	"fmt"
)

// Insert starts a fenced INSERT: the row is written with our fence in its
// fence column, so later row guards compare against it.
//
//	tx.Insert("accounts").Value("id", 7).Value("balance", 100).Exec(ctx)
//
// With OnConflict it becomes a fenced upsert: an existing row is overwritten
// only when its fence is not higher than ours, else the transaction fails
// with ErrStaleFence. For names the guarding resource as for Update.
func (tx *Tx) Insert(table string) *Insert {
	return &Insert{tx: tx, table: table, fenceCol: DefaultFenceColumn}
}

// Insert is a fenced INSERT or upsert built by Tx.Insert. Names must be
// plain identifiers; values are bound as parameters.
type Insert struct {
	tx       *Tx
	table    string
	fenceCol string
	resource string
	values   []pair
	conflict []string
}

// Value adds a column and its value.
func (in *Insert) Value(column string, value any) *Insert {
	in.values = append(in.values, pair{column, value})
	return in
}

// FenceColumn names the row's fence column (default "fence").
func (in *Insert) FenceColumn(column string) *Insert {
	in.fenceCol = column
	return in
}

// For names the resource whose fence is written (see Update.For).
func (in *Insert) For(resource string) *Insert {
	in.resource = resource
	return in
}

// OnConflict makes the insert an upsert on the unique key made of columns
// (each must also be given a Value): a row that exists gets the other
// values and our fence when its fence is at most ours.
func (in *Insert) OnConflict(columns ...string) *Insert {
	in.conflict = append(in.conflict, columns...)
	return in
}

// SQL returns the statement and arguments Exec runs.
func (in *Insert) SQL() (string, []any, error) {
	if err := in.check(); err != nil {
		return "", nil, err
	}
	tok, err := in.tx.tokenFor(in.resource)
	if err != nil {
		return "", nil, err
	}
	b := binder{d: in.tx.d}
	b.WriteString("INSERT INTO " + in.table)
	if in.conflict != nil && b.d == Postgres {
		b.WriteString(" AS t")
	}
	b.WriteString(" (")
	vals := ""
	for _, v := range in.values {
		b.WriteString(v.name + ", ")
		vals += b.bind(v.value) + ", "
	}
	b.WriteString(in.fenceCol + ") VALUES (" + vals + b.bind(int64(tok.Fence)) + ")")
	if in.conflict != nil {
		b.WriteString(in.upsertClause())
	}
	return b.String(), b.args, nil
}

// upsertClause is the dialect's "on conflict, update if not newer" clause.
func (in *Insert) upsertClause() string {
	var cols []string
	for _, v := range in.values {
		if !in.isKey(v.name) {
			cols = append(cols, v.name)
		}
	}
	f := in.fenceCol
	if in.tx.d == MySQL {
		// No WHERE on ON DUPLICATE KEY UPDATE: every assignment is
		// conditional, and the fence (which the condition reads) comes last
		// because later assignments see earlier new values.
		s := " ON DUPLICATE KEY UPDATE "
		for _, c := range cols {
			s += c + " = IF(" + f + " <= VALUES(" + f + "), VALUES(" + c + "), " + c + "), "
		}
		return s + f + " = IF(" + f + " <= VALUES(" + f + "), VALUES(" + f + "), " + f + ")"
	}
	s := " ON CONFLICT (" + join(in.conflict) + ") DO UPDATE SET "
	for _, c := range cols {
		s += c + " = excluded." + c + ", "
	}
	s += f + " = excluded." + f + " WHERE "
	if in.tx.d == Postgres {
		return s + "t." + f + " <= excluded." + f
	}
	return s + f + " <= excluded." + f
}

func (in *Insert) isKey(col string) bool {
	for _, k := range in.conflict {
		if k == col {
			return true
		}
	}
	return false
}

func (in *Insert) check() error {
	if err := checkTable(in.table); err != nil {
		return err
	}
	if !validName(in.fenceCol, false) {
		return fmt.Errorf("%w: fence column %q", ErrInvalidName, in.fenceCol)
	}
	if len(in.values) == 0 {
		return fmt.Errorf("sqlguard: fenced insert into %s without a Value", in.table)
	}
	for _, v := range in.values {
		if !validName(v.name, false) || v.name == in.fenceCol {
			return fmt.Errorf("%w: column %q", ErrInvalidName, v.name)
		}
	}
	for _, k := range in.conflict {
		if !validName(k, false) || !in.hasValue(k) {
			return fmt.Errorf("%w: conflict column %q (it needs a Value)", ErrInvalidName, k)
		}
	}
	return nil
}

func (in *Insert) hasValue(col string) bool {
	for _, v := range in.values {
		if v.name == col {
			return true
		}
	}
	return false
}

// Exec runs the insert or upsert. An upsert that found a row with a higher
// fence fails with ErrStaleFence; on MySQL/MariaDB, whose rows-affected
// count cannot tell an insert from a refused update under clientFoundRows,
// nor a rewrite of equal values from a refusal without it, a count other
// than 2 (updated) is settled by reading the row's fence. Errors roll the
// transaction back (a duplicate key of a plain insert included).
func (in *Insert) Exec(ctx context.Context) (sql.Result, error) {
	q, args, err := in.SQL()
	if err != nil {
		return nil, in.tx.fail(err)
	}
	if err := in.tx.ended(); err != nil {
		return nil, err
	}
	tok, _ := in.tx.tokenFor(in.resource)
	res, err := in.tx.tx.ExecContext(ctx, q, args...)
	if err != nil {
		return nil, in.tx.abort(fmt.Errorf("sqlguard: fenced insert into %s: %w", in.table, err))
	}
	n, err := res.RowsAffected()
	if err != nil {
		return nil, in.tx.abort(fmt.Errorf("sqlguard: fenced insert: rows affected: %w", err))
	}
	if in.conflict == nil || n == 2 || (n == 1 && in.tx.d != MySQL) {
		return res, nil
	}
	r := rowRef{table: in.table, fenceCol: in.fenceCol}
	for _, k := range in.conflict {
		for _, v := range in.values {
			if v.name == k {
				r.keys = append(r.keys, v)
			}
		}
	}
	return res, in.tx.classify(ctx, r, tok)
}

func join(names []string) string {
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}
