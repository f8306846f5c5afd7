package idempotency

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/sqlguard"
)

// DefaultSQLTable is the answers table of an SQLStore.
const DefaultSQLTable = "fencedlock_idempotency"

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$`)

// SQLStore keeps answers in a database table (PostgreSQL or SQLite). Each
// attempt is a sqlguard transaction on the lock's fence: the handler finds
// it with TxFromContext and does its own writes in it, and the answer is
// recorded in it before the commit, so "the effect happened" and "the
// answer is stored" are one commit. A crash before the commit loses both (a
// retry runs again); after it, a retry gets the answer.
//
// The transaction's fence guard serializes attempts on one key (its row
// lock is held until commit): a newer holder waits for an older one that is
// still in its transaction, then sees what it committed. The wait ends with
// the newer request (its deadline, its client leaving), so a paused holder
// cannot pin its retries.
type SQLStore struct {
	db      *sql.DB
	dialect sqlguard.Dialect
	table   string
	guard   []sqlguard.Option
	now     func() time.Time
}

// SQLOption configures an SQLStore.
type SQLOption func(*SQLStore)

// WithSQLTable names the answers table (default DefaultSQLTable).
func WithSQLTable(name string) SQLOption {
	if !identRE.MatchString(name) {
		panic("idempotency: WithSQLTable: not a plain SQL identifier")
	}
	return func(s *SQLStore) { s.table = name }
}

// WithGuardOptions passes sqlguard options (sqlguard.WithTable, ...) to
// every attempt's sqlguard.BeginTx.
func WithGuardOptions(opts ...sqlguard.Option) SQLOption {
	return func(s *SQLStore) { s.guard = append(s.guard, opts...) }
}

// NewSQLStore returns a store on db. The dialect is detected from the
// driver (pgx, lib/pq, modernc.org/sqlite, mattn/go-sqlite3); MySQL is not
// supported yet. Errors wrap sqlguard.ErrUnknownDialect.
func NewSQLStore(db *sql.DB, opts ...SQLOption) (*SQLStore, error) {
	if db == nil {
		panic("idempotency: NewSQLStore with a nil *sql.DB")
	}
	d, err := sqlguard.DetectDialect(db.Driver())
	if err != nil {
		return nil, err
	}
	if d != sqlguard.Postgres && d != sqlguard.SQLite {
		return nil, fmt.Errorf("%w: SQLStore supports PostgreSQL and SQLite, not %v", sqlguard.ErrUnknownDialect, d)
	}
	s := &SQLStore{db: db, dialect: d, table: DefaultSQLTable, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Migrate creates the answers table and sqlguard's fence table if they do
// not exist.
func (s *SQLStore) Migrate(ctx context.Context) error {
	if err := sqlguard.Migrate(ctx, s.db, s.dialect, s.guard...); err != nil {
		return err
	}
	blob := "BYTEA"
	if s.dialect == sqlguard.SQLite {
		blob = "BLOB"
	}
	_, err := s.db.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS "+s.table+` (
	idem_key   TEXT   NOT NULL PRIMARY KEY,
	fence      BIGINT NOT NULL,
	record     `+blob+`  NOT NULL,
	expires_at BIGINT NOT NULL
)`)
	return err
}

// DeleteExpired removes answers past their retention; run it now and then.
func (s *SQLStore) DeleteExpired(ctx context.Context) (int64, error) {
	res, err := s.db.ExecContext(ctx, "DELETE FROM "+s.table+" WHERE expires_at <= "+s.ph(1), s.now().UnixMilli())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (s *SQLStore) ph(n int) string {
	if s.dialect == sqlguard.Postgres {
		return fmt.Sprintf("$%d", n)
	}
	return "?"
}

// Lookup implements Store: one SELECT outside any transaction.
func (s *SQLStore) Lookup(ctx context.Context, key string) (*Record, error) {
	return s.lookup(ctx, s.db.QueryRowContext, key)
}

type queryRow func(ctx context.Context, query string, args ...any) *sql.Row

func (s *SQLStore) lookup(ctx context.Context, q queryRow, key string) (*Record, error) {
	var b []byte
	err := q(ctx, "SELECT record FROM "+s.table+" WHERE idem_key = "+s.ph(1)+" AND expires_at > "+s.ph(2),
		key, s.now().UnixMilli()).Scan(&b)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, ErrNotFound
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return DecodeRecord(b)
}

// Begin implements Store: it starts a sqlguard transaction fenced by lock
// (stale: ErrStaleFence) and reads an answer committed before.
func (s *SQLStore) Begin(ctx context.Context, key string, lock *core.Lock) (Attempt, error) {
	if lock == nil {
		return nil, fmt.Errorf("%w: Begin without a lock", ErrMisconfigured)
	}
	tx, end, err := s.begin(ctx, key, lock)
	if err != nil {
		return nil, err
	}
	a := &sqlAttempt{s: s, tx: tx, key: key, end: end}
	rec, err := s.lookup(ctx, tx.QueryRowContext, key)
	switch {
	case err == nil:
		a.existing = rec
	case !errors.Is(err, ErrNotFound):
		_ = a.Abort(ctx)
		return nil, err
	}
	return a, nil
}

// begin starts the attempt's sqlguard transaction. The transaction runs
// detached from the request, so that an answer that succeeded after its
// client went away is still committed (see Engine.Run); Commit or Abort
// end it and then call end. Only the wait inside begin, for an older
// attempt still in its transaction (the fence row lock), ends with the
// request: a paused holder must not pin its retries past their deadlines.
func (s *SQLStore) begin(ctx context.Context, key string, lock *core.Lock) (*sqlguard.Tx, context.CancelFunc, error) {
	tctx, end := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, end)
	opts := append([]sqlguard.Option{sqlguard.WithLock(lock), sqlguard.WithResource(key)}, s.guard...)
	tx, err := sqlguard.BeginTx(tctx, s.db, nil, opts...)
	if !stop() { // the request ended while begin waited: tctx is cancelled
		if err == nil {
			_ = tx.Rollback()
		}
		end()
		return nil, nil, fmt.Errorf("idempotency: waiting for an older attempt's transaction: %w", ctx.Err())
	}
	switch {
	case errors.Is(err, sqlguard.ErrStaleFence):
		end()
		return nil, nil, fmt.Errorf("%w: %w", ErrStaleFence, err)
	case err != nil:
		end()
		return nil, nil, err
	}
	return tx, end, nil
}

type sqlAttempt struct {
	s        *SQLStore
	tx       *sqlguard.Tx
	key      string
	existing *Record
	end      context.CancelFunc // releases the transaction's context
}

type txKey struct{}

// TxFromContext returns the transaction of the SQLStore attempt the
// handler runs in. Do the request's writes in it and do not commit or roll
// it back: the middleware commits it together with the answer, or rolls it
// back when nothing is stored (a panic, a 5xx, a stale fence).
func TxFromContext(ctx context.Context) (*sqlguard.Tx, bool) {
	tx, ok := ctx.Value(txKey{}).(*sqlguard.Tx)
	return tx, ok
}

func (a *sqlAttempt) Existing() *Record { return a.existing }

func (a *sqlAttempt) Context(parent context.Context) context.Context {
	return context.WithValue(parent, txKey{}, a.tx)
}

// Commit upserts the answer, fenced, and commits the transaction.
func (a *sqlAttempt) Commit(ctx context.Context, rec *Record, retention time.Duration) error {
	defer a.end()
	s := a.s
	q := "INSERT INTO " + s.table + " AS t (idem_key, fence, record, expires_at) VALUES (" +
		s.ph(1) + ", " + s.ph(2) + ", " + s.ph(3) + ", " + s.ph(4) + ") ON CONFLICT (idem_key) DO UPDATE SET " +
		"fence = excluded.fence, record = excluded.record, expires_at = excluded.expires_at WHERE t.fence <= excluded.fence"
	res, err := a.tx.ExecContext(ctx, q, a.key, int64(rec.Fence), rec.Encode(), s.now().Add(retention).UnixMilli())
	if err != nil {
		_ = a.tx.Rollback()
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if n, err := res.RowsAffected(); err == nil && n == 0 {
		_ = a.tx.Rollback()
		return ErrStaleFence
	}
	if err := a.tx.Commit(); err != nil {
		if errors.Is(err, sqlguard.ErrStaleFence) {
			return fmt.Errorf("%w: %w", ErrStaleFence, err)
		}
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// Abort rolls the transaction back: the handler's writes are undone too.
func (a *sqlAttempt) Abort(context.Context) error {
	defer a.end()
	if err := a.tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return err
	}
	return nil
}
