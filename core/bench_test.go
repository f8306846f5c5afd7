package core_test

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Benchmarks run against a real redis-server started on a free port:
//
//	go test -run '^$' -bench . -benchtime 2s ./core/

// rttCounter is a go-redis hook counting round trips (a command or a
// pipeline) and commands sent by the client.
type rttCounter struct{ rtts, cmds atomic.Int64 }

func (h *rttCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *rttCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.rtts.Add(1)
		h.cmds.Add(1)
		return next(ctx, cmd)
	}
}
func (h *rttCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.rtts.Add(1)
		h.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func benchRedis(b *testing.B) (*redistest.Server, *redis.Client, *rttCounter) {
	srv := startBenchRedis(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 128})
	b.Cleanup(func() { rdb.Close() })
	h := &rttCounter{}
	rdb.AddHook(h)
	return srv, rdb, h
}

// serverCalls sums INFO commandstats calls: commands executed by the
// server, including those run inside Lua scripts.
func serverCalls(b *testing.B, addr string) int64 { return serverStat(b, addr, ":calls=") }

// serverUsec sums INFO commandstats usec: the server's CPU time in
// commands (a script's includes the commands it runs).
func serverUsec(b *testing.B, addr string) int64 { return serverStat(b, addr, ",usec=") }

func serverStat(b *testing.B, addr, field string) int64 {
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	defer rdb.Close()
	s, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for _, line := range strings.Split(s, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), field)
		if !ok || strings.HasPrefix(name, "cmdstat_info") {
			continue
		}
		n, _ := strconv.ParseInt(strings.SplitN(rest, ",", 2)[0], 10, 64)
		total += n
	}
	return total
}

const unlockSrc = `if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`

var rawUnlock = redis.NewScript(unlockSrc)

// BenchmarkUncontended compares acquire+release with the raw pair a
// hand-rolled lock sends: SET NX PX plus a Lua compare-and-delete.
func BenchmarkUncontended(b *testing.B) {
	_, rdb, h := benchRedis(b)
	ctx := context.Background()
	b.Run("fencedlock", func(b *testing.B) {
		c := core.New(rdb)
		defer c.Close()
		h.rtts.Store(0)
		i := 0
		for b.Loop() {
			i++
			l, err := c.Acquire(ctx, "u:"+strconv.Itoa(i&1023))
			if err != nil {
				b.Fatal(err)
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(h.rtts.Load())/float64(b.N), "roundtrips/op")
	})
	b.Run("raw-setnx-lua-del", func(b *testing.B) {
		h.rtts.Store(0)
		i := 0
		_ = rawUnlock.Load(ctx, rdb).Err()
		for b.Loop() {
			i++
			k := "raw:" + strconv.Itoa(i&1023)
			ok, err := rdb.SetNX(ctx, k, "tok", 10*time.Second).Result()
			if err != nil || !ok {
				b.Fatal(err, ok)
			}
			if err := rawUnlock.Run(ctx, rdb, []string{k}, "tok").Err(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(h.rtts.Load())/float64(b.N), "roundtrips/op")
	})
}

// BenchmarkPrivateKeys runs 64 goroutines, each on its own key.
func BenchmarkPrivateKeys(b *testing.B) {
	_, rdb, _ := benchRedis(b)
	ctx := context.Background()
	b.Run("fencedlock", func(b *testing.B) {
		c := core.New(rdb)
		defer c.Close()
		var id atomic.Int64
		b.SetParallelism(32) // 2 cores x 32 = 64 goroutines
		b.RunParallel(func(pb *testing.PB) {
			k := "p:" + strconv.FormatInt(id.Add(1), 10)
			for pb.Next() {
				l, err := c.Acquire(ctx, k)
				if err != nil {
					b.Error(err)
					return
				}
				if err := l.Release(ctx); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("raw-setnx-lua-del", func(b *testing.B) {
		var id atomic.Int64
		_ = rawUnlock.Load(ctx, rdb).Err()
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			k := "rp:" + strconv.FormatInt(id.Add(1), 10)
			for pb.Next() {
				ok, err := rdb.SetNX(ctx, k, "tok", 10*time.Second).Result()
				if err != nil || !ok {
					b.Error(err, ok)
					return
				}
				if err := rawUnlock.Run(ctx, rdb, []string{k}, "tok").Err(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkWatchdog holds 1 000 auto-refreshed locks (TTL 1s, so a renewal
// falls due every 100ms for each) and reports the watchdog's round trips
// and renewals per second. One iteration is one renewal interval.
func BenchmarkWatchdog(b *testing.B) {
	_, rdb, h := benchRedis(b)
	ctx := context.Background()
	const n = 1000
	c := core.New(rdb, core.WithTTL(time.Second), core.WithAutoRefresh())
	defer c.Close()
	locks := make([]*core.Lock, 0, n)
	for i := range n {
		l, err := c.Acquire(ctx, "wd:"+strconv.Itoa(i))
		if err != nil {
			b.Fatal(err)
		}
		locks = append(locks, l)
	}
	h.rtts.Store(0)
	h.cmds.Store(0)
	start := time.Now()
	for b.Loop() {
		time.Sleep(100 * time.Millisecond)
	}
	elapsed := time.Since(start).Seconds()
	rt, cmds := h.rtts.Load(), h.cmds.Load()
	for _, l := range locks {
		if l.Err() != nil {
			b.Fatal("lost:", l.Err())
		}
		_ = l.Release(ctx)
	}
	b.ReportMetric(float64(rt)/elapsed, "roundtrips/s")
	b.ReportMetric(float64(cmds)/elapsed, "renewals/s")
}
