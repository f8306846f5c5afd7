package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/fencedlock/fencedlock/core"
)

// On etcd (package etcdlock) a lock is a queue of entries under
// KeysFor(prefix, key).Lock + "/": the entry with the lowest create revision
// holds the lock and its create revision is the fence; the others wait. An
// entry's value is "<lock TTL ms> <first 16 bytes of SHA-256(token), hex>",
// of which Lock.Owner is the first 8 bytes. The lock's lease is enforced by
// the holder's Client (etcd keeps only the session lease), so ttl_ms is the
// lock's TTL, not the time left.

func connectEtcd(ctx context.Context, g *globals) (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: strings.Split(g.etcd, ","), DialTimeout: g.timeout,
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("%w: -etcd: %v", errInput, err)
	}
	cctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	if _, err := cli.Get(cctx, "fencedlock-ping"); err != nil {
		cli.Close()
		return nil, &unreachableError{addr: "etcd at " + g.etcd, err: err}
	}
	return cli, nil
}

// etcdQueue reads the queue of one lock, ordered by create revision.
func etcdQueue(ctx context.Context, cli *clientv3.Client, lockKey string) ([]*etcdEntry, error) {
	resp, err := cli.Get(ctx, lockKey+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	var q []*etcdEntry
	for _, kv := range resp.Kvs {
		ttl, owner, _ := strings.Cut(string(kv.Value), " ")
		q = append(q, &etcdEntry{key: string(kv.Key), rev: kv.CreateRevision, ttl: ttl, owner: owner})
	}
	slices.SortFunc(q, func(a, b *etcdEntry) int { return int(a.rev - b.rev) })
	return q, nil
}

type etcdEntry struct {
	key, ttl, owner string
	rev             int64
}

func etcdRow(key, lockKey string, q []*etcdEntry) lockRow {
	h := q[0]
	owner := h.owner
	if len(owner) > 16 {
		owner = owner[:16]
	}
	var ms int64
	fmt.Sscan(h.ttl, &ms)
	return lockRow{Key: key, Owner: owner, TTLms: ms, Fence: uint64(h.rev), Waiters: int64(len(q) - 1), BackendKey: lockKey}
}

// etcdList lists every held lock under prefix.
func etcdList(ctx context.Context, cli *clientv3.Client, prefix, pattern string) ([]lockRow, error) {
	resp, err := cli.Get(ctx, prefix+"{", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	rows := []lockRow{}
	for _, kv := range resp.Kvs {
		lockKey, _, ok := strings.Cut(string(kv.Key), "}/")
		lockKey += "}"
		if !ok || seen[lockKey] {
			continue
		}
		seen[lockKey] = true
		key, hashed, ok := callerKey(prefix, lockKey)
		if !ok || (pattern != "" && !globMatch(pattern, key)) {
			continue
		}
		q, err := etcdQueue(ctx, cli, lockKey)
		if err != nil {
			return nil, err
		}
		if len(q) > 0 {
			r := etcdRow(key, lockKey, q)
			r.Hashed = hashed
			rows = append(rows, r)
		}
	}
	return rows, nil
}

// etcdForceRelease deletes the holding entry if it still holds. The next
// entry's create revision, above the evicted fence, becomes the fence.
func etcdForceRelease(ctx context.Context, cli *clientv3.Client, prefix, key string) (evicted, bool, error) {
	lockKey := core.KeysFor(prefix, key).Lock
	q, err := etcdQueue(ctx, cli, lockKey)
	if err != nil || len(q) == 0 {
		return evicted{}, false, err
	}
	h := q[0]
	resp, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(h.key), "=", h.rev)).
		Then(clientv3.OpDelete(h.key)).Commit()
	if err != nil || !resp.Succeeded {
		return evicted{}, false, err
	}
	row := etcdRow(key, lockKey, q)
	return evicted{Key: key, Owner: row.Owner, Fence: uint64(resp.Header.Revision), Notified: int64(len(q) - 1)}, true, nil
}
