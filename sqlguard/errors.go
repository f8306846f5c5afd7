package sqlguard

import (
	"errors"
	"fmt"
)

// Sentinel errors. Check them with errors.Is.
var (
	// ErrStaleFence means a lock holder with a higher fence (or the same
	// fence under another owner) has already written the resource or row,
	// so this holder's lock is no longer the latest one. The transaction has
	// been rolled back and none of its writes took effect. Do not retry with
	// the same lock: acquire it again (which yields a new fence) and redo the
	// work from a fresh read.
	ErrStaleFence = errors.New("sqlguard: stale fence: a newer lock holder has written")

	// ErrNoFence means BeginTx found no fence to guard with: no lock in the
	// context, no fence forwarded by an upstream service, and neither
	// WithLock nor WithFence given.
	ErrNoFence = errors.New("sqlguard: no fence: no lock in the context and none given")

	// ErrUnknownDialect means the SQL dialect could not be told from the
	// driver (a wrapped or unfamiliar driver, or a Beginner other than
	// *sql.DB and *sql.Conn). Pass WithDialect.
	ErrUnknownDialect = errors.New("sqlguard: unknown SQL dialect: pass sqlguard.WithDialect")

	// ErrInvalidName means a table or column name is not a plain SQL
	// identifier (letters, digits and '_', not starting with a digit, at
	// most 63 bytes, optionally qualified by one schema name).
	ErrInvalidName = errors.New("sqlguard: invalid SQL identifier")

	// ErrNotFound means a row guard (Update) matched no row because the row
	// does not exist, as opposed to a row written under a newer fence
	// (ErrStaleFence). The transaction has been rolled back.
	ErrNotFound = errors.New("sqlguard: fenced write: no such row")

	// ErrAmbiguousResource means the transaction guards several resources
	// (several locks in the context) and a row guard did not say which
	// lock protects the row: name it with Update.For / Insert.For. WithResource
	// with several locks is refused the same way.
	ErrAmbiguousResource = errors.New("sqlguard: several guarded resources: say which lock protects the row")

	// ErrUnknownResource means a row guard named a resource the transaction
	// does not guard.
	ErrUnknownResource = errors.New("sqlguard: the transaction does not guard this resource")
)

// StaleFenceError is the error behind ErrStaleFence; errors.As gives the
// details for logs.
type StaleFenceError struct {
	// Resource is the guarded resource (Tx.Resource).
	Resource string
	// Fence is this holder's fence.
	Fence uint64
	// Table is set when a row guard (ExecFenced, Update) matched no row: the
	// table it wrote, or "" for ExecFenced. Empty for the resource guard.
	Table string
	// Row is true when a row guard rejected the write.
	Row bool
	// Current is the fence stored for the resource when the database reports
	// it (MySQL/MariaDB do); zero otherwise.
	Current uint64
}

func (e *StaleFenceError) Error() string {
	s := fmt.Sprintf("%s (resource %q, fence %d", ErrStaleFence.Error(), e.Resource, e.Fence)
	if e.Current != 0 {
		s += fmt.Sprintf(", stored fence %d", e.Current)
	}
	if e.Row {
		if e.Table != "" {
			s += ", fenced update of " + e.Table + " matched no row"
		} else {
			s += ", fenced write matched no row"
		}
	}
	return s + ")"
}

// Is makes errors.Is(err, ErrStaleFence) true.
func (e *StaleFenceError) Is(target error) bool { return target == ErrStaleFence }
