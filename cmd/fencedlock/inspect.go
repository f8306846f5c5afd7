package main

import (
	"context"
	"errors"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
)

// lockRow is one held lock as ls and show print it. Fields are only ever
// added (shared and permit holders will join when the lock family exists),
// so scripts reading -json keep working.
type lockRow struct {
	Key   string `json:"key"`    // the caller's key, unescaped ("#hash" when stored hashed)
	Owner string `json:"owner"`  // Lock.Owner of the holder, never the token
	TTLms int64  `json:"ttl_ms"` // remaining lease in Redis
	Fence uint64 `json:"fence"`  // the holder's fence (the newest holder's for shared and permit holds)
	// FenceCounter is the key's fence counter, the highest fence granted;
	// the next holder's fence is above it. 0 on etcd, which has none (its
	// fences are create revisions).
	FenceCounter uint64 `json:"fence_counter,omitempty"`
	Waiters      int64  `json:"waiters"`     // connections subscribed to the release channel
	BackendKey   string `json:"backend_key"` // the Redis key, for redis-cli
	Hashed       bool   `json:"hashed,omitempty"`
	// Shared and permit holds: the mode ("shared", "permits(n)") and one
	// entry per holder. Owner and Fence above are then the newest holder's.
	Mode    string      `json:"mode,omitempty"`
	Holders []holderRow `json:"holders,omitempty"`
}

// holderRow is one shared or permit holder.
type holderRow struct {
	Owner string `json:"owner"`
	TTLms int64  `json:"ttl_ms"`
	Fence uint64 `json:"fence"`
}

// ownerID is core.OwnerID: operators see this id, which cannot release the
// lock.
func ownerID(token string) string { return core.OwnerID(token) }

var keyUnescaper = strings.NewReplacer("%25", "%", "%7B", "{", "%7D", "}", "%23", "#")

// callerKey recovers the caller's key from a backend lock key under
// prefix; ok is false for keys that are not lock keys (fence counters,
// foreign keys).
func callerKey(prefix, backendKey string) (key string, hashed, ok bool) {
	rest, found := strings.CutPrefix(backendKey, prefix+"{")
	if !found || !strings.HasSuffix(rest, "}") {
		return "", false, false
	}
	tag := strings.TrimSuffix(rest, "}")
	if tag == "" || strings.ContainsAny(tag, "{}") {
		return "", false, false
	}
	if strings.HasPrefix(tag, "#") {
		return tag, true, true
	}
	return keyUnescaper.Replace(tag), false, true
}

// globEscape quotes the glob metacharacters of a literal for SCAN MATCH.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// scanLocks lists the lock keys under prefix on every primary.
func scanLocks(ctx context.Context, rdb redis.UniversalClient, prefix string) ([]string, error) {
	match := globEscape(prefix) + "{*}"
	var keys []string
	scanOne := func(ctx context.Context, c *redis.Client) error {
		it := c.Scan(ctx, 0, match, 500).Iterator()
		for it.Next(ctx) {
			keys = append(keys, it.Val())
		}
		return it.Err()
	}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex // ForEachMaster runs the callbacks concurrently
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			return scanOne(ctx, c)
		})
		return keys, err
	}
	c, ok := rdb.(*redis.Client)
	if !ok {
		return nil, errors.New("fencedlock: ls needs a standalone, Sentinel or Cluster client")
	}
	return keys, scanOne(ctx, c)
}

// keysOf derives a lock's fence counter and release channel from its
// backend lock key, as core.KeysFor lays them out.
func keysOf(lockKey string) core.Keys {
	return core.Keys{Lock: lockKey, Fence: lockKey + ":f", Channel: lockKey + ":r", Leases: lockKey + ":e", Claims: lockKey + ":w"}
}

// inspect reads the state of the lock stored at lockKey; key is the
// caller's key shown for it. ok is false when the lock is not held.
func inspect(ctx context.Context, rdb redis.UniversalClient, key, lockKey string) (lockRow, bool, error) {
	k := keysOf(lockKey)
	typ, err := rdb.Type(ctx, k.Lock).Result()
	if err != nil {
		return lockRow{}, false, err
	}
	var row lockRow
	switch typ {
	case "string":
		row, err = inspectExclusive(ctx, rdb, k)
	case "hash":
		row, err = inspectShared(ctx, rdb, k)
	default:
		return lockRow{}, false, nil
	}
	if err != nil {
		if errors.Is(err, redis.Nil) {
			return lockRow{}, false, nil // released meanwhile
		}
		return lockRow{}, false, err
	}
	row.Key, row.BackendKey = key, k.Lock
	row.Waiters = waiters(ctx, rdb, k.Channel)
	return row, true, nil
}

func inspectExclusive(ctx context.Context, rdb redis.UniversalClient, k core.Keys) (lockRow, error) {
	pipe := rdb.Pipeline()
	tok := pipe.Get(ctx, k.Lock)
	pttl := pipe.PTTL(ctx, k.Lock)
	fence := pipe.Get(ctx, k.Fence)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return lockRow{}, err
	}
	if err := tok.Err(); err != nil {
		return lockRow{}, err
	}
	// The holder's token carries no fence: it is the counter, which every
	// grant (acquire, hand-off) raises and only a force release raises
	// without a new holder.
	row := lockRow{Owner: ownerID(tok.Val()), TTLms: pttl.Val().Milliseconds()}
	row.FenceCounter, _ = strconv.ParseUint(fence.Val(), 10, 64)
	row.Fence = row.FenceCounter
	return row, nil
}

// inspectShared reads a key's shared or permit holders: the hash of
// token -> fence (with the mode tag in field "=") and each holder's lease
// end in server milliseconds.
func inspectShared(ctx context.Context, rdb redis.UniversalClient, k core.Keys) (lockRow, error) {
	pipe := rdb.Pipeline()
	fences := pipe.HGetAll(ctx, k.Lock)
	leases := pipe.ZRangeWithScores(ctx, k.Leases, 0, -1)
	now := pipe.Time(ctx)
	pttl := pipe.PTTL(ctx, k.Lock)
	counter := pipe.Get(ctx, k.Fence)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return lockRow{}, err
	}
	if err := fences.Err(); err != nil {
		return lockRow{}, err
	}
	nowMS := now.Val().UnixMilli()
	row := lockRow{TTLms: pttl.Val().Milliseconds(), Mode: describeMode(fences.Val()["="])}
	row.FenceCounter, _ = strconv.ParseUint(counter.Val(), 10, 64)
	for _, z := range leases.Val() {
		tok, _ := z.Member.(string)
		left := int64(z.Score) - nowMS
		f, ok := fences.Val()[tok]
		if !ok || left <= 0 {
			continue // lease ended; the next acquire or release drops it
		}
		fence, _ := strconv.ParseUint(f, 10, 64)
		row.Holders = append(row.Holders, holderRow{Owner: ownerID(tok), TTLms: left, Fence: fence})
		if fence >= row.Fence {
			row.Owner, row.Fence = ownerID(tok), fence
		}
	}
	if len(row.Holders) == 0 {
		return lockRow{}, redis.Nil
	}
	return row, nil
}

func describeMode(tag string) string {
	if tag == "s" {
		return "shared"
	}
	if n, ok := strings.CutPrefix(tag, "p"); ok {
		return "permits(" + n + ")"
	}
	return tag
}

// waiters counts subscribers of a release channel, plain and sharded.
func waiters(ctx context.Context, rdb redis.UniversalClient, channel string) int64 {
	var n int64
	if m, err := rdb.PubSubNumSub(ctx, channel).Result(); err == nil {
		n += m[channel]
	}
	if m, err := rdb.PubSubShardNumSub(ctx, channel).Result(); err == nil {
		n += m[channel]
	}
	return n
}

// listLocks returns the held locks whose caller's key matches pattern
// ("" matches all).
func listLocks(ctx context.Context, rdb redis.UniversalClient, prefix, pattern string) ([]lockRow, error) {
	keys, err := scanLocks(ctx, rdb, prefix)
	if err != nil {
		return nil, err
	}
	rows := []lockRow{}
	for _, bk := range keys {
		key, hashed, ok := callerKey(prefix, bk)
		if !ok || (pattern != "" && !globMatch(pattern, key)) {
			continue
		}
		row, held, err := inspect(ctx, rdb, key, bk)
		if err != nil {
			return nil, err
		}
		if held {
			row.Hashed = hashed
			rows = append(rows, row)
		}
	}
	return rows, nil
}

func globMatch(pattern, key string) bool {
	ok, err := path.Match(pattern, key)
	return err == nil && ok
}
