package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// globals are the connection flags every command accepts, before or after
// its name.
type globals struct {
	redis   string
	etcd    string
	master  string
	prefix  string
	timeout time.Duration
}

func newGlobals() *globals {
	return &globals{redis: "127.0.0.1:6379", prefix: core.DefaultPrefix, timeout: 3 * time.Second}
}

// flagSet returns a FlagSet with the global flags bound to g. Values set
// before the command name become the defaults after it.
func (g *globals) flagSet(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.StringVar(&g.redis, "redis", g.redis, "Redis address, redis:// URL, or comma-separated list")
	fs.StringVar(&g.etcd, "etcd", g.etcd, "etcd endpoints (host:port, comma-separated): inspect etcdlock locks instead of Redis")
	fs.StringVar(&g.master, "master", g.master, "Sentinel master name")
	fs.StringVar(&g.prefix, "prefix", g.prefix, "key prefix")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "per-command timeout")
	return fs
}

func flagErr(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return errHelp
	}
	return fmt.Errorf("%w: %v", errInput, err)
}
