// Package sqlguard makes database/sql transactions carry a lock's fencing
// token, so that a holder whose lock has expired (a GC pause, a VM stall, a
// partition) cannot overwrite what a newer holder wrote.
//
// A lock service can only promise that a lease has not expired yet; it
// cannot stop a paused process from resuming and writing afterwards. core
// gives every acquisition a fence, strictly greater than the fence of every
// earlier acquisition of the same key. sqlguard has the database remember the
// highest fence that wrote each resource and refuse anything older, in the
// same transaction as the write:
//
//	lock (core.Acquire)  →  fence (core.Lock.Fence)  →  WHERE stored fence < ours (or = ours, same holder)
//
// # Usage
//
// With the lock in the context (httpmw, ginmw and grpcmw put it there; so
// does core.ContextWithLock):
//
//	tx, err := sqlguard.BeginTx(ctx, db, nil) // records the fence first
//	if err != nil {
//		return err // errors.Is(err, sqlguard.ErrStaleFence): a newer holder wrote
//	}
//	defer tx.Rollback()
//	if _, err := tx.ExecContext(ctx, "INSERT INTO coupons ..."); err != nil {
//		return err
//	}
//	return tx.Commit()
//
// The fences come from WithLock or WithFence when given, else from every
// lock in ctx, else from a fence forwarded by an upstream service
// (core.FenceFromContext). No fence is ErrNoFence. The resource is the lock
// key unless WithResource names another (with one lock only).
//
// # A transfer
//
// A route that moves money between two accounts holds both accounts' locks
// (httpmw.LockKeys, or core.ContextWithLock twice) and does its reads inside
// the guarded transaction:
//
//	func transfer(ctx context.Context, db *sql.DB, from, to, amount int64) error {
//		tx, err := sqlguard.BeginTx(ctx, db, nil) // guards both locks in ctx
//		if err != nil {
//			return err // ErrStaleFence: a newer holder of either account wrote
//		}
//		defer tx.Rollback()
//		var balance int64
//		err = tx.QueryRowContext(ctx, "SELECT balance FROM accounts WHERE id = $1", from).Scan(&balance)
//		if err != nil {
//			return err
//		}
//		if balance < amount {
//			return errInsufficientFunds
//		}
//		fromKey, toKey := fmt.Sprint("account:", from), fmt.Sprint("account:", to)
//		if _, err := tx.Update("accounts").Add("balance", -amount).Where("id", from).For(fromKey).Exec(ctx); err != nil {
//			return err
//		}
//		if _, err := tx.Update("accounts").Add("balance", amount).Where("id", to).For(toKey).Exec(ctx); err != nil {
//			return err
//		}
//		return tx.Commit()
//	}
//
// The read must come after BeginTx. The guard's upsert locks the resource's
// fence row until commit, so a read made after it sees everything earlier
// holders committed, and no later holder can write before this transaction
// ends. A read made before BeginTx can see a state that a previous holder,
// paused with its transaction open, is about to change: its commit is
// accepted (its fence was recorded first), and this transaction's writes,
// computed from the old read, then overwrite it with a fence every check
// accepts. examples/sqlfence plays both.
//
// # Resource guard
//
// BeginTx starts the transaction and, before anything else, records the
// fence for the resource in the fence table with one conditional upsert: it
// inserts the row, or updates it only when the stored fence is lower than
// ours, or equal with the same owner (the same acquisition writing again).
// The database evaluates the condition on the row it has locked; nothing is
// read into Go and compared there. When the upsert touches no row, BeginTx
// rolls back and returns an error matching ErrStaleFence, so the caller's
// statements never run. The row lock the upsert takes is held until commit:
// guarded transactions on one resource run one after another, and reads
// made inside the transaction see everything the previous holder committed.
//
// Under several locks (every lock in the context, core.LocksFromContext)
// BeginTx guards each resource, in sorted order so that transactions over
// overlapping sets cannot deadlock on the fence rows: one multi-row upsert
// for all of them on PostgreSQL and SQLite, one statement per resource on
// MySQL/MariaDB (whose refusal marker, the insert id, is per statement).
// Any refusal rolls back. Tx.Resources lists them and Tx.FenceFor
// gives each one's fence. WithLock, WithFence and a forwarded fence guard
// one resource.
//
// # Row guards
//
// Rows can carry their own fence column. Tx.Update builds
// "UPDATE t SET ..., fence = <ours> WHERE <key> AND fence <= <ours>" in the
// transaction's dialect, with values (Set), increments (Add) or expressions
// (SetExpr) in the SET list. A row last written under a higher fence is
// ErrStaleFence; a row written under our own fence is the same acquisition
// and is written again; a row that does not exist is ErrNotFound. When the
// update changes no row, one SELECT of the row's fence tells these apart
// (this is also what makes an unchanged rewrite succeed on MySQL without
// clientFoundRows). Tx.Insert writes a new row with our fence, and
// Insert.OnConflict makes it an upsert that overwrites a row only when the
// row's fence is not higher than ours. Under several locks, For names the
// lock that protects the row: its fence is compared and stored
// (ErrAmbiguousResource without it). Tx.ExecFenced runs a fenced statement
// written by hand and takes "no row affected" as stale.
//
// # Guarded and unguarded paths
//
// Everything run through a Tx is inside the guarded transaction: the
// resource guard covers ExecContext, QueryContext, QueryRowContext,
// PrepareContext and StmtContext. Only Update, Insert and ExecFenced also
// check a row's fence. After sqlguard ended a transaction (a refused row
// guard), every method returns that error (QueryRowContext's row reports
// sql.ErrTxDone, as database/sql allows no other) and Err says why.
// UnguardedSQLTx hands out the *sql.Tx itself: statements run through it are
// neither row-guarded nor tracked, as its name says.
//
// # Fences from other services
//
// A fence forwarded by httpmw or grpcmw is what BeginTx guards with when no
// lock is in the context. Accept forwarded fences with
// httpmw.AcceptSignedFence, ginmw.AcceptSignedFence or
// grpcmw.UnaryAcceptSignedFence (see package fencesign): an unsigned fence
// could be sent by anyone who reaches the route, and a huge one recorded
// for a resource would lock every legitimate holder out of it. Unsigned
// acceptance is available only under the name AcceptUnsignedFence.
//
// # Dialects
//
// Postgres ($n placeholders, ON CONFLICT DO UPDATE ... WHERE), MySQL
// (MySQL 5.7+ and MariaDB 10.3+, ON DUPLICATE KEY UPDATE with conditional
// assignments) and SQLite (3.24+, ON CONFLICT DO UPDATE ... WHERE). BeginTx
// detects the dialect from the driver of a *sql.DB (db.Driver()) or of a
// *sql.Conn (through Conn.Raw); any other Beginner, or a driver wrapped by
// instrumentation, needs WithDialect.
//
// MySQL's rows-affected count cannot tell an insert (1) from a rejected
// update under CLIENT_FOUND_ROWS (also 1), so the MySQL guard marks a
// rejection with LAST_INSERT_ID(stored fence) and reads the insert id as
// well; it is correct with and without clientFoundRows=true. Tables must be
// InnoDB (MyISAM has no transactions).
//
// For SQLite, writers are serialized by the database file lock: open it
// with a busy timeout, WAL and immediate transactions, for example
// "file.db?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_txlock=immediate"
// with modernc.org/sqlite.
//
// # Fence table
//
// Migrate creates it (CREATE TABLE IF NOT EXISTS; WithTable renames it, and
// DDL returns the statement for migration tools). Resources and owners are
// compared byte for byte; longer than 255 (resource) or 64 (owner) bytes
// they are stored as a SHA-256 digest. writes counts accepted guards. One
// row per resource is kept; deleting rows for resources that are no longer
// written is safe only when no holder of an older fence can still be
// running.
//
// PostgreSQL:
//
//	CREATE TABLE IF NOT EXISTS fencedlock_fences (
//	    resource   TEXT        NOT NULL PRIMARY KEY,
//	    fence      BIGINT      NOT NULL,
//	    owner      TEXT        NOT NULL,
//	    writes     BIGINT      NOT NULL DEFAULT 1,
//	    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
//	)
//
// MySQL / MariaDB (VARBINARY because the default collations ignore case and
// trailing spaces, which would merge distinct lock keys):
//
//	CREATE TABLE IF NOT EXISTS fencedlock_fences (
//	    resource   VARBINARY(255) NOT NULL PRIMARY KEY,
//	    fence      BIGINT         NOT NULL,
//	    owner      VARBINARY(64)  NOT NULL,
//	    writes     BIGINT         NOT NULL DEFAULT 1,
//	    updated_at TIMESTAMP(6)   NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
//	) ENGINE=InnoDB
//
// SQLite:
//
//	CREATE TABLE IF NOT EXISTS fencedlock_fences (
//	    resource   TEXT    NOT NULL PRIMARY KEY,
//	    fence      INTEGER NOT NULL,
//	    owner      TEXT    NOT NULL,
//	    writes     INTEGER NOT NULL DEFAULT 1,
//	    updated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
//	)
//
// Fences are stored as signed BIGINT; core's fences (microsecond clock
// readings, about 1.8e15) fit with room to spare, and a fence above
// math.MaxInt64 is refused.
//
// # Cost
//
// The guard adds one statement to a transaction (one per resource on
// MySQL/MariaDB), and a row
// guard that changes no row one SELECT; docs/sqlguard.md has the measured
// figures and the command.
//
// # Isolation levels
//
// The guard works at every isolation level. At PostgreSQL's REPEATABLE READ
// and SERIALIZABLE a concurrent guard on the same resource makes the upsert
// fail with a serialization error instead of waiting; MySQL may report a
// deadlock when two transactions insert the first row of a resource at
// once; SQLite may answer busy. Since nothing of the caller's has run yet,
// BeginTx retries such a failure of the guard statement with a fresh
// transaction (three attempts in all) and reports the last error after
// that. A failing BEGIN (SQLite's busy timeout under _txlock=immediate) is
// returned as is, and errors later in the transaction are the caller's to
// retry, as always.
package sqlguard
