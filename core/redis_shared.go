package core

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Shared and permit holds on Redis (acquire_shared.lua): the lock key is a
// hash of holder token -> fence with the mode tag in field "=", and
// Keys.Leases a sorted set of each holder's own lease end, so a holder that
// dies gives its share back when its own lease ends. Refresh and release
// use the same scripts as exclusive holds (they tell the kinds apart).

func (b *redisBackend) acquireShared(ctx context.Context, h Hold, ttl time.Duration) (Grant, error) {
	call := scriptCall{s: sharedScript, keys: []string{h.Keys.Lock, h.Keys.Fence, h.Keys.Leases, h.Keys.Claims},
		args: []any{h.Token, ms(ttl), fenceTTL(ttl), h.ModeTag(), h.Permits}}
	parse := func(c *redis.Cmd) (Grant, error) { return sharedGrant(ctx, c, h) }
	if b.ackReplicas > 0 {
		return b.grantAcked(ctx, h, call, parse)
	}
	return parse(call.s.Run(ctx, b.rdb, call.keys, call.args...))
}

// sharedGrant reads acquire_shared.lua's reply.
func sharedGrant(ctx context.Context, c *redis.Cmd, h Hold) (Grant, error) {
	res, err := c.Slice()
	if err != nil {
		return Grant{}, redisErr(ctx, err)
	}
	if len(res) < 2 {
		return Grant{}, Unavailable(fmt.Errorf("unexpected script reply %v", res))
	}
	code, _ := res[0].(int64)
	switch code {
	case -2:
		have, _ := res[1].(string)
		return Grant{}, &ModeError{Want: h.ModeTag(), Have: have}
	case 1:
		fence, _ := res[1].(int64)
		g := Grant{Acquired: true, Fence: uint64(fence), Free: -1}
		if len(res) > 2 {
			free, _ := res[2].(int64)
			g.Free = int(free)
		}
		return g, nil
	}
	wait, _ := res[1].(int64)
	return Grant{HolderTTL: time.Duration(max(wait, 0)) * time.Millisecond}, nil
}

// releaseArgs are release.lua's keys and arguments for h, of any kind.
func (b *redisBackend) releaseArgs(h Hold) ([]string, []any) {
	keys := []string{h.Keys.Lock, h.Keys.Channel, h.Keys.Fence}
	args := []any{h.Token, b.publishCmd()}
	fence, claimed := "", ""
	if h.Fence > 0 {
		fence = strconv.FormatUint(h.Fence, 10)
	}
	if h.Claimed {
		claimed = "1"
	}
	if h.Mode == Exclusive && b.queues() {
		// the queue: a release grants the lock to its head
		leaving := ""
		if h.InQueue {
			leaving = "1"
		}
		lease := h.GrantLease
		if lease <= 0 {
			lease = DefaultGrantLease
		}
		keys = append(keys, h.Keys.Leases, h.Keys.Claims, h.Keys.Queue)
		return keys, append(args, fence, claimed, ms(lease), fenceTTL(lease), leaving)
	}
	if h.Mode == Exclusive && !h.Claimed {
		if h.Fence > 0 {
			args = append(args, fence)
		}
		return keys, args
	}
	args = append(args, fence, claimed)
	if h.Mode != Exclusive {
		// ARGV[5..7] are the queue's; ARGV[8] the kind of hold
		kind := "p"
		if h.Mode == SharedMode {
			kind = "s"
		}
		args = append(args, "", "", "", kind)
	}
	return append(keys, h.Keys.Leases, h.Keys.Claims), args
}

// scriptCall is one script invocation: the script, its keys, its arguments.
type scriptCall struct {
	s    *redis.Script
	keys []string
	args []any
}
