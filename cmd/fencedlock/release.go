package main

import (
	"context"
	_ "embed"
	"flag"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

//go:embed force_release.lua
var forceReleaseLua string

var forceReleaseScript = redis.NewScript(forceReleaseLua)

// fenceCounterMS is the lifetime of a counter the script has to re-create
// (core keeps counters 24 h after the last acquisition).
const fenceCounterMS = 24 * 60 * 60 * 1000

// fsFlags lets a command add its own flags to the shared FlagSet.
type fsFlags struct{ *flag.FlagSet }

// evicted is what release --force reports.
type evicted struct {
	Key      string `json:"key"`
	Owner    string `json:"owner"`    // the evicted holder's owner id
	Fence    uint64 `json:"fence"`    // the fence counter after the raise
	Notified int64  `json:"notified"` // release-channel subscribers told
}

func (c *cli) release(ctx context.Context, g *globals, args []string) error {
	var force, yes bool
	s, rest, err := c.open(ctx, g, "release", args, func(f fsFlags) {
		f.BoolVar(&force, "force", false, "required: evict the current holder")
		f.BoolVar(&yes, "yes", false, "do not ask for confirmation")
	})
	if err != nil {
		return err
	}
	defer s.close()
	key, err := oneKey("release", rest)
	if err != nil {
		return err
	}
	if !force {
		return fmt.Errorf("%w: release needs --force: it evicts a live holder", errInput)
	}
	row, err := s.held(ctx, key)
	if err != nil {
		return err
	}
	if !yes && !c.confirm(fmt.Sprintf("evict owner %s from %q (fence %d)? [y/N] ", row.Owner, key, row.Fence)) {
		return fmt.Errorf("%w: not confirmed; nothing changed", errInput)
	}
	ev, err := s.forceRelease(ctx, key, row.BackendKey)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "released %q: evicted owner %s; fence counter raised to %d; %d waiting connection(s) notified\n",
		ev.Key, ev.Owner, ev.Fence, ev.Notified)
	return nil
}

// forceRelease runs the script on the lock key and reports whom it evicted.
func (s *session) forceRelease(ctx context.Context, key, lockKey string) (evicted, error) {
	k := keysOf(lockKey)
	cctx, cancel := context.WithTimeout(ctx, s.g.timeout)
	defer cancel()
	if s.etcd != nil {
		ev, ok, err := etcdForceRelease(cctx, s.etcd, s.g.prefix, key)
		switch {
		case err != nil:
			return evicted{}, &unreachableError{addr: "etcd at " + s.g.etcd, err: err}
		case !ok:
			return evicted{}, fmt.Errorf("%w: no lock is held on key %q under prefix %q (released meanwhile)", errInput, key, s.g.prefix)
		}
		return ev, nil
	}
	keys := []string{k.Lock, k.Fence, k.Channel, k.Leases}
	res, err := forceReleaseScript.Run(cctx, s.rdb, keys, publishCmd(s.rdb), fenceCounterMS).Slice()
	if err != nil {
		return evicted{}, backendErr(s.g, err)
	}
	if len(res) != 4 {
		return evicted{}, fmt.Errorf("fencedlock: unexpected script reply %v", res)
	}
	if n, _ := res[0].(int64); n == 0 {
		return evicted{}, fmt.Errorf("%w: no lock is held on key %q under prefix %q (released meanwhile)", errInput, key, s.g.prefix)
	}
	tok, _ := res[1].(string)
	fence, _ := res[2].(int64)
	subs, _ := res[3].(int64)
	owners := make([]string, 0, 1)
	for _, t := range strings.Split(tok, ",") {
		owners = append(owners, ownerID(t))
	}
	return evicted{Key: key, Owner: strings.Join(owners, ","), Fence: uint64(fence), Notified: subs}, nil
}

// publishCmd matches core: shard channels on a Cluster (WithShardedPubSub
// is core's default there), plain channels elsewhere.
func publishCmd(rdb redis.UniversalClient) string {
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return "SPUBLISH"
	}
	return "PUBLISH"
}
