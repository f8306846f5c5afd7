package sqlguard

import (
	"context"
	"database/sql"
	"fmt"
)

// recordAll is the resource guard for several resources in one statement
// (PostgreSQL, SQLite). Rows affected counts the accepted resources; when
// one is missing, the stored fences say which resource was refused.
func (g guard) recordAll(ctx context.Context, tx *sql.Tx) error {
	args := make([]any, 0, 3*len(g.toks))
	for _, t := range g.toks {
		args = append(args, storedName(t.Key, maxResourceLen), int64(t.Fence), storedName(t.Owner, maxOwnerLen))
	}
	res, err := tx.ExecContext(ctx, g.d.upsertGuard(g.table, len(g.toks)), args...)
	if err != nil {
		return fmt.Errorf("sqlguard: recording the fences in %s%s: %w", g.table, missingTableHint(g.d, err), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlguard: recording the fences: rows affected: %w", err)
	}
	switch {
	case n == int64(len(g.toks)):
		return nil
	case n > int64(len(g.toks)):
		return fmt.Errorf("sqlguard: recording the fences: unexpected rows affected %d", n)
	}
	return g.refused(ctx, tx)
}

// refused finds a resource whose stored fence is not ours after a
// multi-resource guard accepted fewer rows than it had.
func (g guard) refused(ctx context.Context, tx *sql.Tx) error {
	q := "SELECT fence, owner FROM " + g.table + " WHERE resource = " + g.d.placeholder(1)
	for _, t := range g.toks {
		var (
			fence int64
			owner string
		)
		if err := tx.QueryRowContext(ctx, q, storedName(t.Key, maxResourceLen)).Scan(&fence, &owner); err != nil {
			return fmt.Errorf("sqlguard: reading the refused fence: %w", err)
		}
		if fence != int64(t.Fence) || owner != storedName(t.Owner, maxOwnerLen) {
			return &StaleFenceError{Resource: t.Key, Fence: t.Fence, Current: uint64(max(fence, 0))}
		}
	}
	return &StaleFenceError{Resource: g.toks[0].Key, Fence: g.toks[0].Fence}
}
