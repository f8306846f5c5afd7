package core

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewSharded returns a Client that spreads keys over independent Redis
// deployments (shards) by rendezvous hashing on the key, so that many hot
// keys do not share one server. Each key lives on exactly one shard, with
// the same guarantees as New on that shard. Options set the defaults for
// every acquisition, as for New; Redis options apply to every shard. The
// Client does not close the shards.
//
// A shard's position in the slice is its identity: add shards at the end.
// Adding one moves about 1/(N+1) of the keys, all of them to the new shard;
// removing or reordering shards moves more. During a change, processes on
// the old and the new list disagree about where a moved key lives, and a
// lock held on its old shard does not stop a grant on the new one (see the
// README's topologies section). Use NewShardedBackend to name shards.
func NewSharded(shards []redis.UniversalClient, opts ...Option) *Client {
	cfg := defaultConfig()
	mustApply(&cfg, opts, scopesNew, "NewSharded")
	ss := make([]Shard, len(shards))
	for i, rdb := range shards {
		if rdb == nil {
			panic("core: NewSharded with a nil redis client")
		}
		ss[i] = Shard{Name: strconv.Itoa(i), Backend: newRedisBackend(rdb, cfg.redis)}
	}
	return newClient(NewShardedBackend(ss...), cfg)
}

// Shard is one member of a sharded backend.
type Shard struct {
	// Name identifies the shard in the hash: keys stay where they are as
	// long as their shard keeps its name, whatever the order of the list.
	Name    string
	Backend Backend
}

// NewShardedBackend returns the Backend behind NewSharded over named
// shards (any Backend: a Redis deployment, a Redlock set). It panics on an
// empty list, a nil backend, or an empty or repeated name. Close closes
// every shard's backend.
func NewShardedBackend(shards ...Shard) Backend {
	if len(shards) == 0 {
		panic("core: NewShardedBackend with no shards")
	}
	b := &shardedBackend{shards: make([]Shard, len(shards)), seeds: make([]uint64, len(shards))}
	seen := make(map[string]bool)
	for i, s := range shards {
		if s.Backend == nil || s.Name == "" || seen[s.Name] {
			panic("core: NewShardedBackend: every shard needs a backend and a unique, non-empty name")
		}
		seen[s.Name] = true
		b.shards[i] = s
		b.seeds[i] = fnv64(s.Name)
	}
	return b
}

type shardedBackend struct {
	shards []Shard
	seeds  []uint64 // hash of each shard's name
}

func (b *shardedBackend) Name() string { return "sharded" }

// rendezvous picks, for tag, the shard with the highest score: a shard
// that joins takes over exactly the keys it scores highest on, and the
// other keys stay where they were.
func rendezvous(seeds []uint64, tag string) int {
	h := fnv64(tag)
	best, bestScore := 0, uint64(0)
	for i, s := range seeds {
		if sc := mix64(h ^ mix64(s)); i == 0 || sc > bestScore {
			best, bestScore = i, sc
		}
	}
	return best
}

// fnv64 is 64-bit FNV-1a.
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is the SplitMix64 finalizer: FNV alone scores similar strings too
// alike for a fair spread.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// shardOf picks the shard of keys by their tag (the caller's key, escaped
// or hashed), not the prefix, so that a key maps to the same shard under
// every prefix.
func (b *shardedBackend) shardOf(keys Keys) int { return rendezvous(b.seeds, keys.Tag) }

func (b *shardedBackend) shard(keys Keys) Backend { return b.shards[b.shardOf(keys)].Backend }

func (b *shardedBackend) Acquire(ctx context.Context, h Hold, ttl time.Duration) (Grant, error) {
	return b.shard(h.Keys).Acquire(ctx, h, ttl)
}

func (b *shardedBackend) Handoff(ctx context.Context, from Hold, to string, ttl time.Duration) (Grant, error) {
	return b.shard(from.Keys).Handoff(ctx, from, to, ttl)
}

func (b *shardedBackend) Release(ctx context.Context, h Hold) (Released, error) {
	return b.shard(h.Keys).Release(ctx, h)
}

// Refresh sends each shard its part of the batch, all shards at once.
func (b *shardedBackend) Refresh(ctx context.Context, reqs []RefreshRequest) []error {
	errs := make([]error, len(reqs))
	parts := make(map[int][]int)
	for i, r := range reqs {
		s := b.shardOf(r.Keys)
		parts[s] = append(parts[s], i)
	}
	var wg sync.WaitGroup
	for s, idx := range parts {
		wg.Go(func() {
			sub := make([]RefreshRequest, len(idx))
			for j, i := range idx {
				sub[j] = reqs[i]
			}
			for j, err := range b.shards[s].Backend.Refresh(ctx, sub) {
				errs[idx[j]] = err
			}
		})
	}
	wg.Wait()
	return errs
}

func (b *shardedBackend) Subscribe(ctx context.Context, keys Keys, notify func()) (func(), error) {
	return b.shard(keys).Subscribe(ctx, keys, notify)
}

func (b *shardedBackend) Close() error {
	var errs []error
	for _, s := range b.shards {
		errs = append(errs, s.Backend.Close())
	}
	return errors.Join(errs...)
}
