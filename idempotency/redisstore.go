package idempotency

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
)

// DefaultRedisPrefix starts every record key of a RedisStore.
const DefaultRedisPrefix = "idem:"

var (
	//go:embed claim.lua
	claimSrc    string
	claimScript = redis.NewScript(claimSrc)

	//go:embed put.lua
	putSrc    string
	putScript = redis.NewScript(putSrc)
)

// RedisStore keeps answers in Redis: one hash per key (fence and record),
// named with the lock key's hash tag so that on a Cluster it lives in the
// slot of the lock itself. Writes go through Lua scripts that compare
// fences: an attempt whose fence is lower than the one recorded writes
// nothing.
type RedisStore struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewRedisStore returns a store on rdb (any topology). prefix starts the
// record keys ("" means DefaultRedisPrefix) and must not contain '{' or
// '}'.
func NewRedisStore(rdb redis.UniversalClient, prefix string) *RedisStore {
	if rdb == nil {
		panic("idempotency: NewRedisStore with a nil client")
	}
	if prefix == "" {
		prefix = DefaultRedisPrefix
	}
	for _, c := range prefix {
		if c == '{' || c == '}' {
			panic("idempotency: NewRedisStore prefix must not contain '{' or '}'")
		}
	}
	return &RedisStore{rdb: rdb, prefix: prefix}
}

// RecordKey is the Redis key holding key's record: the prefix and the hash
// tag of the lock on key.
func (s *RedisStore) RecordKey(key string) string {
	return s.prefix + "{" + core.KeysFor("", key).Tag + "}"
}

// Lookup implements Store: one HGET.
func (s *RedisStore) Lookup(ctx context.Context, key string) (*Record, error) {
	b, err := s.rdb.HGet(ctx, s.RecordKey(key), "rec").Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return nil, ErrNotFound
	case err != nil:
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return DecodeRecord(b)
}

// Begin implements Store: one script records the claim or returns the
// stored answer. A claim without an answer is kept for DefaultRetention,
// so that it keeps refusing older holders after an attempt that stored
// nothing.
func (s *RedisStore) Begin(ctx context.Context, key string, lock *core.Lock) (Attempt, error) {
	if lock == nil {
		return nil, fmt.Errorf("%w: Begin without a lock", ErrMisconfigured)
	}
	rk := s.RecordKey(key)
	fence := strconv.FormatUint(lock.Fence(), 10)
	v, err := claimScript.Run(ctx, s.rdb, []string{rk}, fence, DefaultRetention.Milliseconds()).Slice()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	a := &redisAttempt{s: s, key: rk, fence: fence}
	if len(v) == 0 {
		return nil, fmt.Errorf("%w: claim script answered nothing", ErrUnavailable)
	}
	switch code, _ := v[0].(int64); code {
	case 0:
		return a, nil
	case 1:
		b, _ := v[1].(string)
		rec, err := DecodeRecord([]byte(b))
		if err != nil {
			return nil, err
		}
		a.existing = rec
		return a, nil
	default:
		return nil, ErrStaleFence
	}
}

type redisAttempt struct {
	s        *RedisStore
	key      string
	fence    string
	existing *Record
}

func (a *redisAttempt) Existing() *Record { return a.existing }

func (a *redisAttempt) Context(parent context.Context) context.Context { return parent }

// Commit runs the fenced put script.
func (a *redisAttempt) Commit(ctx context.Context, rec *Record, retention time.Duration) error {
	if strconv.FormatUint(rec.Fence, 10) != a.fence {
		return fmt.Errorf("%w: record fence differs from the attempt's", ErrMisconfigured)
	}
	return a.s.put(ctx, a.key, rec, retention)
}

// Abort leaves the claim in place: it keeps refusing older holders until a
// newer attempt stores an answer or the retention ends.
func (a *redisAttempt) Abort(context.Context) error { return nil }

func (s *RedisStore) put(ctx context.Context, rk string, rec *Record, retention time.Duration) error {
	ms := retention.Milliseconds()
	if ms <= 0 {
		ms = 1
	}
	n, err := putScript.Run(ctx, s.rdb, []string{rk}, strconv.FormatUint(rec.Fence, 10), rec.Encode(), ms).Int()
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case n == 0:
		return ErrStaleFence
	}
	return nil
}
