package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// connect builds a client for g.redis and checks that it answers. The
// client fails fast: one dial attempt per command, short timeouts, so an
// unreachable server is reported in about the -timeout, not after retries.
func connect(ctx context.Context, g *globals) (redis.UniversalClient, error) {
	rdb, err := newClient(g)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, g.timeout)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, &unreachableError{addr: describeAddr(g), err: err}
	}
	return rdb, nil
}

func newClient(g *globals) (redis.UniversalClient, error) {
	if g.redis == "" {
		return nil, fmt.Errorf("%w: -redis is empty", errInput)
	}
	if strings.HasPrefix(g.redis, "redis://") || strings.HasPrefix(g.redis, "rediss://") {
		opt, err := redis.ParseURL(g.redis)
		if err != nil {
			return nil, fmt.Errorf("%w: -redis: %v", errInput, err)
		}
		opt.MaxRetries = -1
		opt.DialTimeout = g.timeout
		return redis.NewClient(opt), nil
	}
	addrs := strings.Split(g.redis, ",")
	for _, a := range addrs {
		if !strings.Contains(a, ":") {
			return nil, fmt.Errorf("%w: -redis %q: want host:port", errInput, a)
		}
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:        addrs,
		MasterName:   g.master,
		MaxRetries:   -1, // no retries: report the failure at once
		DialTimeout:  g.timeout,
		ReadTimeout:  g.timeout,
		WriteTimeout: g.timeout,
		PoolSize:     4,
		MinIdleConns: 0,
		// A cluster client must not retry redirects forever against dead nodes.
		MaxRedirects:    3,
		ConnMaxIdleTime: time.Minute,
	}), nil
}

// describeAddr names the target for error messages without the password a
// URL may carry.
func describeAddr(g *globals) string {
	if opt, err := redis.ParseURL(g.redis); err == nil && strings.Contains(g.redis, "://") {
		return "Redis at " + opt.Addr
	}
	if g.master != "" {
		return fmt.Sprintf("Redis Sentinel %s (master %q)", g.redis, g.master)
	}
	return "Redis at " + g.redis
}

// backendErr turns a failed Redis command into an unreachable error unless
// it is a reply error (the server answered).
func backendErr(g *globals, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := err.(redis.Error); ok {
		return fmt.Errorf("fencedlock: Redis at %s refused: %v", g.redis, err)
	}
	return &unreachableError{addr: describeAddr(g), err: err}
}
