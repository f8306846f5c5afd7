// Package etcdlock is the etcd backend of fencedlock: the same core.Lock
// contract as the Redis backend, with acquisition decided by Raft, for the
// few critical sections where a Redis lock is not enough (settlements, core
// state changes). Swap one constructor; adapters, sqlguard and otel run
// unchanged on the *core.Client it returns:
//
//	cli, _ := clientv3.New(clientv3.Config{Endpoints: endpoints})
//	locker, err := etcdlock.New(cli, core.WithTTL(5*time.Second))
//	...
//	l, err := locker.Acquire(ctx, "settlement:42", core.WithAutoRefresh())
//
// # Queue and fences
//
// Each lock is a queue: every holder or waiter owns one key under
// QueuePrefix, named after its Backend's session lease and a slot that the
// Backend reuses (so busy queues leave no tombstones in etcd's index), and
// the key with the lowest create revision holds the lock. A waiter watches
// only the key just ahead of it, from the current revision, so a release
// wakes exactly one waiter, in FIFO order. The fence is the holder's create revision:
// cluster-wide, assigned by Raft, strictly increasing per key and across
// leader failovers. Fences from etcd and from Redis count differently and
// must never be compared; a resource guarded by sqlguard must stay with one
// backend (or be re-fenced from scratch when it moves).
//
// # Shared holds and permits
//
// core.Shared() and core.Permits(n) queue in the same place. A shared or
// permit entry is named <prefix>~<tag>/<lease>-<slot>, its tag being "s"
// or "p<n>"; writers' (exclusive) entries sort before '~'. Order is the
// create revision across the whole queue, and:
//
//   - a writer holds when its entry is the oldest;
//   - a shared entry holds when no writer's entry is older;
//   - a permit entry holds when no writer's entry is older and fewer than
//     n entries of its tag are.
//
// So once a writer's entry is queued, later readers and permits queue
// behind it, however many readers keep coming: writers are not starved.
// Each shared hold or permit is its own entry, with its own token, lock
// TTL, renewal, loss notice and fence, so a holder that stops renewing
// frees its share when its own TTL ends (and a dead process frees its
// shares with its session lease).
//
// The mode check is part of the transaction that queues the entry: it
// creates the entry only if no entry of another tag exists (two range
// comparisons around the tag's own range), so Shared against Permits(n),
// or Permits(2) against Permits(3), is refused with a *core.ModeError
// (errors.Is core.ErrModeMismatch) and leaves nothing behind. Waiters count
// too: a queued Permits(2) waiter fixes the key's mode as a holder does.
// Exclusive entries go with any tag. TryAcquire is one transaction that
// also requires no writer's entry (a waiting writer refuses new readers);
// for a permit it counts the tag's entries ahead in the same step, and a
// permit over the limit is deleted again at once (a second round trip,
// refusals only).
//
// Waiting watches only what must go. A reader with writers ahead watches
// the youngest of them, and holds when it goes if it was the only one
// (else it looks again); a writer watches the entry just ahead, as above. A
// permit waiter first waits the same way for the writers ahead, then opens
// one watch on its tag's entries and counts the deletions of entries older
// than its own until fewer than n are left: every waiter of the tag hears
// every release, but only the one whose count reaches the limit goes on,
// with no read, so a release grants exactly as many waiters as it frees
// permits (one) and wakes no herd of round trips. A re-check, after an
// error or a watch that started late, reads the keys of the tag's entries
// ahead (etcd's Count ignores the revision filter).
//
// The fence is the entry's create revision for every kind of hold. Entries
// start to hold in the order of their create revisions (entries ahead only
// ever go away), so fences increase in grant order across exclusive,
// shared and permit holds, and a writer's fence is above that of every hold
// before it. Grant.Free of a permit grant is the permits its entries ahead
// leave (for a waiter an upper bound: entries behind it may take them
// first); -1 for shared holds. Release, Refresh and the expiry of the lock
// TTL work for shares as for exclusive holds; Handoff declines for shared
// and permit holds: it releases them and returns an error matching
// ErrHandoffDeclined (not core.ErrNotHeld).
//
// # Leases
//
// A Backend keeps ONE session lease for all its locks and waiters and
// renews it every fifth of its TTL (WithSessionTTL, default 30s). The lock
// TTL of core.WithTTL is kept per lock on top of it: a lock whose TTL
// passes without a renewal has its key deleted by the Backend, exactly as a
// Redis key would expire. A lock TTL longer than the session TTL is refused
// with ErrTTLTooLong. The watchdog (core.WithAutoRefresh) batches renewals
// into one read transaction that checks each key still exists, and renews
// the lease only if the keep-alive has not already covered the new TTL.
//
// Every validity deadline the Client computes is the send time of the
// command that granted or renewed the lock plus its TTL minus the drift
// allowance, and the Backend grants only when the session lease is known
// (from the send time of its latest renewal, on the monotonic clock) to
// outlive that deadline. So if the process is cut off from etcd, Done is
// closed and Err reports core.ErrLost before the lease can end on the
// server and another process can hold the lock. If the process dies, its
// locks and queue entries end with the lease: at most the session TTL
// later.
//
// Releases and clean-ups delete a key only if it still has the revision it
// was created with, so a late or retried release never deletes a newer
// holder's key (the trap of etcd issue 22082).
//
// # Differences from the Redis backend
//
//   - Hand-offs between goroutines of one Client are off by default
//     (core.WithHandoffLimit(0)): etcd's FIFO queue already orders waiters
//     fairly across processes. With hand-offs enabled, a hand-off that
//     would jump waiters of other processes releases instead and Release
//     returns ErrHandoffDeclined.
//   - core.RetryAfter hints carry the holder's lock TTL, an upper bound of
//     its remaining time.
//   - Waiters ride out transient errors (an election, a restarting member)
//     for WithRetryFor, keeping their place, before reporting
//     core.ErrUnavailable.
//   - New and NewBackend grant the session lease at once and fail (with
//     core.ErrUnavailable) when etcd cannot be reached; every later round
//     trip is bounded, so an unreachable cluster fails acquisitions closed
//     rather than blocking them.
//   - Every acquisition and release is a Raft write; expect a few hundred
//     microseconds to milliseconds more than Redis, depending on the disk.
package etcdlock
