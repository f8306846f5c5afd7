package idempotency

import (
	"context"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// DefaultRetention is how long a stored answer is kept.
const DefaultRetention = 24 * time.Hour

// Store keeps answers per lock key (Scope.LockKey). RedisStore and SQLStore
// implement it. Every method must be safe for concurrent use.
type Store interface {
	// Lookup returns the completed answer stored for key, or ErrNotFound.
	// It is the replay's only round trip.
	Lookup(ctx context.Context, key string) (*Record, error)

	// Begin starts an attempt by the holder of lock, the lock on key. It
	// records the lock's fence as the key's claim, so that older holders'
	// writes are refused from then on, and reports an answer completed
	// before (Attempt.Existing). A claim by a higher fence is ErrStaleFence.
	Begin(ctx context.Context, key string, lock *core.Lock) (Attempt, error)
}

// Attempt is one holder's run for a key, between Store.Begin and Commit or
// Abort.
type Attempt interface {
	// Existing is the answer stored before the attempt began, or nil.
	Existing() *Record
	// Context returns the context the handler runs with; the SQL store puts
	// its transaction there (see TxFromContext).
	Context(parent context.Context) context.Context
	// Commit stores rec (whose Fence is the attempt's) for retention,
	// fenced: when a higher fence has claimed the key it stores nothing and
	// returns ErrStaleFence.
	Commit(ctx context.Context, rec *Record, retention time.Duration) error
	// Abort ends the attempt without storing; safe after Commit and more
	// than once.
	Abort(ctx context.Context) error
}
