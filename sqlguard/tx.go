package sqlguard

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// Beginner starts transactions. *sql.DB and *sql.Conn implement it.
type Beginner interface {
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// Tx is a database/sql transaction whose fence has been recorded for its
// resource. It is used like *sql.Tx; its methods match those of *sql.Tx (and
// the DBTX interface that sqlc generates), plus the row guards ExecFenced and
// Update.
//
// Errors returned by sqlguard's own methods (BeginTx, ExecFenced,
// Update.Exec) leave the transaction rolled back; afterwards every method
// returns that error (Commit too), and Rollback returns sql.ErrTxDone.
// Errors from ExecContext, QueryContext and the others pass through as
// *sql.Tx returns them, and the caller decides, as with *sql.Tx.
type Tx struct {
	tx     *sql.Tx
	d      Dialect
	token  core.FenceToken   // the innermost lock's; Key is the resource
	tokens []core.FenceToken // every guarded resource, sorted

	mu  sync.Mutex
	err error // set once sqlguard rolled the transaction back
}

// BeginTx starts a transaction on db and, as its first statements, records
// the fence of each guarded resource in the fence table with a conditional
// write, in sorted order (one statement for all on PostgreSQL and SQLite,
// one per resource on MySQL). The fence comes from
// WithLock or WithFence, else from every lock in ctx
// (core.LocksFromContext: httpmw.LockKeys puts several there), else from a
// fence forwarded by an upstream service (core.FenceFromContext). The
// resource is the lock key unless WithResource names another; with several
// locks WithResource is ErrAmbiguousResource.
//
// When a holder with a higher fence (or the same fence and another owner)
// has already recorded any of them, BeginTx rolls back and returns an error matching
// ErrStaleFence; the caller's statements never run. Any other failure also
// rolls back. A deadlock or serialization failure of the guard statement
// itself is retried with a fresh transaction, up to three attempts in all.
//
// opts is passed to db.BeginTx; nil means the driver's defaults. ReadOnly is
// refused: the guard writes. As with database/sql, cancelling ctx rolls the
// transaction back.
func BeginTx(ctx context.Context, db Beginner, opts *sql.TxOptions, options ...Option) (*Tx, error) {
	if db == nil {
		return nil, errors.New("sqlguard: BeginTx with a nil Beginner")
	}
	cfg := newConfig(options)
	toks, inner, err := cfg.fences(ctx)
	if err != nil {
		return nil, err
	}
	if err := checkTable(cfg.table); err != nil {
		return nil, err
	}
	if opts != nil && opts.ReadOnly {
		return nil, errors.New("sqlguard: BeginTx with ReadOnly: the guard writes the fence table")
	}
	d, err := cfg.resolveDialect(ctx, db)
	if err != nil {
		return nil, err
	}
	g := guard{d: d, table: cfg.table, toks: toks}
	for attempt := 1; ; attempt++ {
		stx, err := db.BeginTx(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("sqlguard: begin: %w", err)
		}
		err = g.record(ctx, stx)
		if err == nil {
			return &Tx{tx: stx, d: d, token: inner, tokens: toks}, nil
		}
		_ = stx.Rollback() // may already be rolled back by the server (deadlock)
		if attempt >= guardAttempts || !transient(d, err) || ctx.Err() != nil {
			return nil, err
		}
		// Contenders that deadlocked together should not retry in step.
		if serr := sleepCtx(ctx, time.Duration(rand.Int64N(int64(attempt)*int64(time.Millisecond)))); serr != nil {
			return nil, err
		}
	}
}

// guard is the resource guard of one BeginTx call.
type guard struct {
	d     Dialect
	table string
	toks  []core.FenceToken // sorted by resource
}

// record runs the guard for every resource in tx, in sorted order, and
// interprets the outcome: one statement for all of them on PostgreSQL and
// SQLite, one per resource on MySQL (whose refusal marker, the insert id,
// is per statement). The first refusal ends it.
func (g guard) record(ctx context.Context, tx *sql.Tx) error {
	if len(g.toks) > 1 && g.d != MySQL {
		return g.recordAll(ctx, tx)
	}
	for _, t := range g.toks {
		if err := g.recordOne(ctx, tx, t); err != nil {
			return err
		}
	}
	return nil
}

// recordOne runs the guard statement of one resource.
func (g guard) recordOne(ctx context.Context, tx *sql.Tx, tok core.FenceToken) error {
	q, args := g.d.guardStmt(g.table,
		storedName(tok.Key, maxResourceLen), int64(tok.Fence), storedName(tok.Owner, maxOwnerLen))
	res, err := tx.ExecContext(ctx, q, args...)
	if err != nil {
		return fmt.Errorf("sqlguard: recording the fence in %s%s: %w", g.table, missingTableHint(g.d, err), err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("sqlguard: recording the fence: rows affected: %w", err)
	}
	stale := &StaleFenceError{Resource: tok.Key, Fence: tok.Fence}
	if g.d == MySQL {
		// See guardStmt: the insert id is the stored fence on rejection and
		// zero otherwise; rows affected is 1 (insert) or 2 (update) when
		// accepted, 0 or 1 (CLIENT_FOUND_ROWS) when rejected.
		id, err := res.LastInsertId()
		if err != nil {
			return fmt.Errorf("sqlguard: recording the fence: the driver does not report the insert id: %w", err)
		}
		if id != 0 || n == 0 {
			stale.Current = uint64(id)
			return stale
		}
		if n > 2 {
			return fmt.Errorf("sqlguard: recording the fence: unexpected rows affected %d", n)
		}
		return nil
	}
	switch n {
	case 0:
		return stale
	case 1:
		return nil
	}
	return fmt.Errorf("sqlguard: recording the fence: unexpected rows affected %d", n)
}

// Fence returns the fence this transaction writes under: the innermost
// lock's when several locks guard it (use FenceFor to pick one). Pass it as
// the value of a fence column and in the WHERE clause of row guards.
func (tx *Tx) Fence() uint64 { return tx.token.Fence }

// Resource returns the guarded resource: the innermost lock's key, or what
// WithResource named. (Names longer than 255 bytes are stored as their
// SHA-256 digest.) Resources lists all of them.
func (tx *Tx) Resource() string { return tx.token.Key }

// Resources returns every resource the transaction guards, sorted: one per
// lock in the context (httpmw.LockKeys puts several there).
func (tx *Tx) Resources() []string {
	out := make([]string, len(tx.tokens))
	for i, t := range tx.tokens {
		out[i] = t.Key
	}
	return out
}

// FenceFor returns the fence of the lock that guards resource, and whether
// the transaction guards it.
func (tx *Tx) FenceFor(resource string) (uint64, bool) {
	t, err := tx.tokenFor(resource)
	return t.Fence, err == nil
}

// tokenFor picks the token a row guard compares with: the named resource's,
// or the only one when none is named.
func (tx *Tx) tokenFor(resource string) (core.FenceToken, error) {
	if resource == "" {
		if len(tx.tokens) > 1 {
			return core.FenceToken{}, fmt.Errorf("%w (%d resources)", ErrAmbiguousResource, len(tx.tokens))
		}
		return tx.token, nil
	}
	name := storedName(resource, maxResourceLen)
	for _, t := range tx.tokens {
		if storedName(t.Key, maxResourceLen) == name {
			return t, nil
		}
	}
	return core.FenceToken{}, fmt.Errorf("%w: %q", ErrUnknownResource, resource)
}

// Owner returns the owner id recorded with the fence (core.Lock.Owner, never
// the secret token).
func (tx *Tx) Owner() string { return tx.token.Owner }

// Dialect returns the dialect the guard statements are written in.
func (tx *Tx) Dialect() Dialect { return tx.d }

// Err returns the error with which sqlguard ended the transaction (a
// rejected row guard, a failed fenced write), or nil while it is open.
func (tx *Tx) Err() error { return tx.ended() }

// UnguardedSQLTx returns the underlying *sql.Tx, for APIs that need one.
// Statements run through it are inside the guarded transaction (the
// resource guard covers them), but no row guard checks them and sqlguard
// does not track them: after sqlguard ended the transaction the *sql.Tx is
// rolled back and reports sql.ErrTxDone, not the reason (see Err).
func (tx *Tx) UnguardedSQLTx() *sql.Tx { return tx.tx }

// SQLTx is UnguardedSQLTx.
//
// Deprecated: use UnguardedSQLTx, whose name says what it gives up.
func (tx *Tx) SQLTx() *sql.Tx { return tx.tx }

// ended returns the error that ended the transaction, if sqlguard ended it.
func (tx *Tx) ended() error {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx.err
}

// abort rolls back and makes err the answer to every later call. The
// rollback happens under mu, so no method that checked ended can run a
// statement on the transaction between the two.
func (tx *Tx) abort(err error) error {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.err != nil {
		return tx.err
	}
	tx.err = err
	if rerr := tx.tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
		return errors.Join(err, fmt.Errorf("sqlguard: rollback: %w", rerr))
	}
	return err
}

// Commit commits the transaction. After sqlguard rolled the transaction back
// it returns the error that caused it (errors.Is(err, ErrStaleFence) after a
// rejected row guard).
func (tx *Tx) Commit() error {
	if err := tx.ended(); err != nil {
		return err
	}
	return tx.tx.Commit()
}

// Rollback aborts the transaction. It returns sql.ErrTxDone when the
// transaction has already ended, so `defer tx.Rollback()` is always safe.
func (tx *Tx) Rollback() error {
	if tx.ended() != nil {
		return sql.ErrTxDone
	}
	return tx.tx.Rollback()
}

// ExecContext executes a statement in the transaction, like *sql.Tx.
func (tx *Tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := tx.ended(); err != nil {
		return nil, err
	}
	return tx.tx.ExecContext(ctx, query, args...)
}

// QueryContext runs a query in the transaction, like *sql.Tx.
func (tx *Tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := tx.ended(); err != nil {
		return nil, err
	}
	return tx.tx.QueryContext(ctx, query, args...)
}

// QueryRowContext runs a query expected to return at most one row, like
// *sql.Tx. After sqlguard ended the transaction no query is sent: the row's
// Scan reports sql.ErrTxDone (database/sql offers no way to hand out a
// *sql.Row with another error) and Err says why it ended.
func (tx *Tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if tx.ended() != nil {
		return tx.tx.QueryRowContext(ctx, "") // done: Scan reports sql.ErrTxDone
	}
	return tx.tx.QueryRowContext(ctx, query, args...)
}

// PrepareContext creates a prepared statement for use within the
// transaction, like *sql.Tx.
func (tx *Tx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	if err := tx.ended(); err != nil {
		return nil, err
	}
	return tx.tx.PrepareContext(ctx, query)
}

// StmtContext returns a transaction-specific version of an existing
// statement, like *sql.Tx. Like ExecContext it is not row-guarded; after
// sqlguard ended the transaction the statement reports sql.ErrTxDone.
func (tx *Tx) StmtContext(ctx context.Context, stmt *sql.Stmt) *sql.Stmt {
	return tx.tx.StmtContext(ctx, stmt)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
