package core

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// ErrUnsafeServer is matched by the error CheckServer returns when a Redis
// server is configured in a way that can grant one lock to two holders.
var ErrUnsafeServer = errors.New("core: redis configuration can break mutual exclusion")

// ServerWarning is one setting CheckServer found unsafe for locks.
type ServerWarning struct {
	Addr    string // the server, as the client dials it
	Setting string // "maxmemory-policy"
	Value   string // "allkeys-lru"
	Reason  string
}

// ServerCheckError lists what CheckServer found. It matches ErrUnsafeServer.
type ServerCheckError struct {
	Warnings []ServerWarning
}

func (e *ServerCheckError) Error() string {
	var b strings.Builder
	b.WriteString(ErrUnsafeServer.Error())
	for i, w := range e.Warnings {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s %s=%s: %s", w.Addr, w.Setting, w.Value, w.Reason)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrUnsafeServer) true.
func (e *ServerCheckError) Is(target error) bool { return target == ErrUnsafeServer }

// evictingPolicies can remove a held lock key under memory pressure. Lock
// keys always carry a TTL, so the volatile-* policies evict them too, and
// volatile-ttl evicts them first (leases are the shortest TTLs around).
var evictingPolicies = map[string]bool{
	"allkeys-lru": true, "allkeys-lfu": true, "allkeys-random": true,
	"volatile-lru": true, "volatile-lfu": true, "volatile-random": true, "volatile-ttl": true,
}

// CheckServer inspects the Redis servers behind rdb (every shard of a
// Cluster or Ring) for settings that silently break mutual exclusion, and
// returns an error matching ErrUnsafeServer that lists them; nil means none
// was found. Call it once at start-up and log the result.
//
// Today it checks eviction: with maxmemory set and a maxmemory-policy other
// than noeviction, Redis deletes keys when memory runs short, and a deleted
// lock key is granted again while its holder still works. With noeviction
// Redis refuses new locks instead (Acquire fails with ErrUnavailable), which
// is the safe failure.
//
// It reads INFO memory, so an ACL user needs +info; without it the returned
// error does not match ErrUnsafeServer: the check could not run.
func CheckServer(ctx context.Context, rdb redis.UniversalClient) error {
	if rdb == nil {
		return errors.New("core: CheckServer with a nil redis client")
	}
	var (
		mu    sync.Mutex // shards are checked concurrently
		warns []ServerWarning
		errs  []error
	)
	check := func(ctx context.Context, addr string, c redis.Cmdable) {
		info, err := c.Info(ctx, "memory").Result()
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("core: CheckServer %s: %w", addr, err))
			return
		}
		warns = append(warns, memoryWarnings(addr, info)...)
	}
	type sharded interface {
		ForEachShard(ctx context.Context, fn func(ctx context.Context, c *redis.Client) error) error
	}
	if s, ok := rdb.(sharded); ok {
		err := s.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
			check(ctx, c.Options().Addr, c)
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("core: CheckServer: %w", err))
		}
	} else {
		addr := "redis"
		if c, ok := rdb.(*redis.Client); ok {
			addr = c.Options().Addr
		}
		check(ctx, addr, rdb)
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if len(warns) > 0 {
		return &ServerCheckError{Warnings: warns}
	}
	return nil
}

// memoryWarnings reads the INFO memory section of one server.
func memoryWarnings(addr, info string) []ServerWarning {
	var (
		maxmemory int64
		policy    string
	)
	sc := bufio.NewScanner(strings.NewReader(info))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		switch k {
		case "maxmemory":
			maxmemory, _ = strconv.ParseInt(v, 10, 64)
		case "maxmemory_policy":
			policy = v
		}
	}
	if maxmemory > 0 && evictingPolicies[policy] {
		return []ServerWarning{{
			Addr: addr, Setting: "maxmemory-policy", Value: policy,
			Reason: "with maxmemory " + strconv.FormatInt(maxmemory, 10) +
				" Redis evicts keys under memory pressure, and an evicted lock key is granted to a second holder; use noeviction (or a Redis of its own for locks)",
		}}
	}
	return nil
}
