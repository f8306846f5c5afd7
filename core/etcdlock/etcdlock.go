package etcdlock

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fencedlock/fencedlock/core"
)

// Sentinel errors of this package; core's sentinels (ErrNotHeld,
// ErrUnavailable, ...) keep their meaning.
var (
	// ErrTTLTooLong is returned when a lock TTL (core.WithTTL, or a
	// Refresh) is longer than the session lease (WithSessionTTL): the lease
	// could end on the server before the lock's validity deadline.
	ErrTTLTooLong = errors.New("etcdlock: lock TTL longer than the session TTL")

	// ErrHandoffDeclined is returned by a hand-off (only with
	// core.WithHandoffLimit above zero) when waiters of other processes
	// are queued: the lock was released to them instead, and the local
	// waiter queues behind them.
	ErrHandoffDeclined = errors.New("etcdlock: hand-off declined: waiters in other processes are queued; the lock was released")
)

// Backend is the etcd core.Backend. It keeps one session lease for all its
// locks and queue entries, renews that lease in the background, and queues
// waiters in etcd itself (core.NativeWaiter). Create one per process and
// share it through one core.Client (New does both).
type Backend struct {
	cli *clientv3.Client
	cfg config

	ctx    context.Context // ends at Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // keep-alive loop, clean-ups, subscriptions

	mu       sync.Mutex
	closed   bool
	sess     *session
	granting chan struct{}               // non-nil while a new lease is being granted
	held     map[string]*entry           // granted locks by owner token
	slots    map[string]map[int]struct{} // reserved entry slots by queue prefix
}

var (
	_ core.Backend      = (*Backend)(nil)
	_ core.NativeWaiter = (*Backend)(nil)
)

// New returns a core.Client whose locks live in etcd, on a Backend with the
// default session (see NewBackend). Options set the defaults for every
// acquisition, as for core.New; hand-offs between local goroutines are off
// (etcd's queue already orders waiters fairly across processes). Closing the
// Client closes the Backend, which revokes its lease; cli stays open.
func New(cli *clientv3.Client, opts ...core.Option) (*core.Client, error) {
	if cli == nil {
		panic("etcdlock: New with a nil etcd client")
	}
	b, err := NewBackend(cli)
	if err != nil {
		return nil, err
	}
	return NewClient(b, opts...), nil
}

// NewClient returns a core.Client driving b with etcd's defaults
// (core.WithHandoffLimit(0)) followed by opts. Closing the Client closes b,
// so give every Client its own Backend.
func NewClient(b *Backend, opts ...core.Option) *core.Client {
	if b == nil {
		panic("etcdlock: NewClient with a nil Backend")
	}
	return core.NewWithBackend(b, append([]core.Option{core.WithHandoffLimit(0)}, opts...)...)
}

// NewBackend returns a Backend on cli and grants its session lease (one
// round trip, so an unreachable cluster is reported here, wrapped in
// core.ErrUnavailable). The lease is renewed until Close.
func NewBackend(cli *clientv3.Client, opts ...Option) (*Backend, error) {
	if cli == nil {
		panic("etcdlock: NewBackend with a nil etcd client")
	}
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Backend{cli: cli, cfg: cfg, ctx: ctx, cancel: cancel, held: make(map[string]*entry), slots: make(map[string]map[int]struct{})}
	gctx, gcancel := context.WithTimeout(ctx, max(cfg.retryFor, opTimeout))
	_, err := b.session(gctx)
	gcancel()
	if err != nil {
		cancel()
		return nil, err
	}
	b.wg.Add(1)
	go b.keepAlive()
	return b, nil
}

// Name implements core.Backend.
func (b *Backend) Name() string { return "etcd" }

// SessionTTL returns the session lease length: the longest lock TTL the
// Backend accepts, and how long locks of a dead process can outlive it.
func (b *Backend) SessionTTL() time.Duration { return b.cfg.sessionTTL }

// Close stops the keep-alive and the clean-ups, ends pending waits with
// core.ErrClosed and revokes the session lease, which deletes every lock
// and queue entry of this Backend at once. It does not close the etcd
// client.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for _, e := range b.held {
		e.timer.Stop()
	}
	b.held = map[string]*entry{}
	s := b.sess
	b.mu.Unlock()
	b.cancel()
	b.wg.Wait()
	if s == nil || s.gone() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if _, err := b.cli.Revoke(ctx, s.id); err != nil && !leaseGone(err) {
		return core.Unavailable(fmt.Errorf("etcdlock: revoke session lease: %w", err))
	}
	return nil
}

// QueuePrefix returns the etcd key prefix under which the lock on key
// (with the Client's prefix, core.DefaultPrefix by default) keeps its queue:
// one entry per holder or waiter, the holder being the entry with the lowest
// create revision. Use it for RBAC rules, audits and tests.
func QueuePrefix(prefix, key string) string { return queuePrefix(core.KeysFor(prefix, key)) }

func queuePrefix(keys core.Keys) string { return keys.Lock + "/" }

// Queue entries are named <session lease, hex>-<slot> under the queue
// prefix. A slot is a small number reserved by one acquisition of this
// Backend until its entry is known to be gone, so names are reused: etcd
// keeps a deleted key in its index until the next compaction, and a fresh
// name per acquisition would make every read of a busy queue slower. The
// entry's value carries the lock TTL and a hash of the owner token, so a
// clean-up whose create revision is unknown still deletes only its own
// entry.
func entryName(prefix string, lease clientv3.LeaseID, slot int) string {
	return prefix + strconv.FormatInt(int64(lease), 16) + "-" + strconv.Itoa(slot)
}

// entryValue is what an entry stores: the lock TTL in milliseconds (for
// contenders' Retry-After hints) and the owner id (a hash of the token).
func entryValue(ttl time.Duration, token string) string {
	sum := sha256.Sum256([]byte(token))
	return strconv.FormatInt(ttl.Milliseconds(), 10) + " " + hex.EncodeToString(sum[:16])
}

// holderTTL reads the lock TTL back from an entry's value.
func holderTTL(v []byte) time.Duration {
	s, _, _ := strings.Cut(string(v), " ")
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms <= 0 {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// takeSlot reserves the lowest free slot of a queue for one acquisition.
func (b *Backend) takeSlot(prefix string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	used := b.slots[prefix]
	if used == nil {
		used = make(map[int]struct{})
		b.slots[prefix] = used
	}
	for i := 0; ; i++ {
		if _, ok := used[i]; !ok {
			used[i] = struct{}{}
			return i
		}
	}
}

// freeSlot returns a slot once its entry is known to be gone.
func (b *Backend) freeSlot(prefix string, slot int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if used := b.slots[prefix]; used != nil {
		delete(used, slot)
		if len(used) == 0 {
			delete(b.slots, prefix)
		}
	}
}

// bound limits one round trip. clientv3 waits for a connection instead of
// failing (gRPC wait-for-ready), so without a bound a caller without a
// deadline would block for as long as the cluster is unreachable, instead
// of getting core.ErrUnavailable (a 503 at the adapters).
func bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, opTimeout)
}

// withClose derives a context that also ends, with cause core.ErrClosed,
// when the Backend closes.
func (b *Backend) withClose(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	stop := context.AfterFunc(b.ctx, func() { cancel(core.ErrClosed) })
	return ctx, func() { stop(); cancel(context.Canceled) }
}

// goBackground runs f on a goroutine Close waits for, unless the Backend
// is closed.
func (b *Backend) goBackground(f func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
	return true
}
