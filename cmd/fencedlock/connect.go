package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// connect builds a client for g.redis and checks that it answers. The
// client fails fast: one dial attempt per command, no command retries,
// short timeouts, so an unreachable server is reported in about the
// -timeout, not after go-redis's retries. A single address that turns out
// to be a Cluster node is reopened as a Cluster client, so ls sees every
// master and show follows MOVED.
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
	c, ok := rdb.(*redis.Client)
	if !ok || g.master != "" || !clusterEnabled(pctx, c) {
		return rdb, nil
	}
	cc := redis.NewClusterClient(clusterOptions(c.Options(), g))
	rdb.Close()
	if err := cc.Ping(pctx).Err(); err != nil {
		cc.Close()
		return nil, &unreachableError{addr: describeAddr(g), err: err}
	}
	return cc, nil
}

// clusterEnabled reports whether c is a Redis Cluster node.
func clusterEnabled(ctx context.Context, c *redis.Client) bool {
	info, err := c.Info(ctx, "cluster").Result()
	return err == nil && strings.Contains(info, "cluster_enabled:1")
}

func clusterOptions(o *redis.Options, g *globals) *redis.ClusterOptions {
	return &redis.ClusterOptions{
		Addrs: []string{o.Addr}, Username: o.Username, Password: o.Password, TLSConfig: o.TLSConfig,
		MaxRetries: -1, DialerRetries: 1, DialTimeout: g.timeout, ReadTimeout: g.timeout, WriteTimeout: g.timeout,
		PoolSize: 4, MaxRedirects: 3,
	}
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
		opt.MaxRetries, opt.DialerRetries = -1, 1
		opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = g.timeout, g.timeout, g.timeout
		return redis.NewClient(opt), nil
	}
	addrs := strings.Split(g.redis, ",")
	for _, a := range addrs {
		if !strings.Contains(a, ":") {
			return nil, fmt.Errorf("%w: -redis %q: want host:port", errInput, a)
		}
	}
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:         addrs,
		MasterName:    g.master,
		MaxRetries:    -1, // no retries: report the failure at once
		DialerRetries: 1,  // one dial attempt (v9 tries 5 times by default)
		DialTimeout:   g.timeout,
		ReadTimeout:   g.timeout,
		WriteTimeout:  g.timeout,
		PoolSize:      4,
		MinIdleConns:  0,
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
