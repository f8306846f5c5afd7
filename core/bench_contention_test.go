package core_test

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bsm/redislock"
	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/go-redsync/redsync/v4"
	"github.com/go-redsync/redsync/v4/redis/goredis/v9"
	"github.com/redis/go-redis/v9"
)

// BenchmarkContention measures the deployment shape: one key, several
// Clients (each an instance with its own connection pool), a 200 µs hold,
// against the peers on the same redis-server in the same run: raw SET NX PX
// polling every 1 ms, bsm/redislock (linear 1 ms retry) and redsync (1 ms
// retry delay). It reports critical sections per second, wait p50/p99,
// commands per critical section sent by the client and executed by the
// server (INFO commandstats, Lua's inner calls included), the critical
// sections of the least and most served instance as a spread around the
// mean, and in the "ratio" entry fencedlock against the best peer.
//
//	taskset -c 0 env FENCEDLOCK_BENCH_PIN=1 go test -run '^$' -bench 'BenchmarkContention' -benchtime 4000x -count 5 ./core/
//
// FENCEDLOCK_BENCH_PIN=1 moves the redis-server to CPU 1, so that client
// and server do not share a CPU.
func BenchmarkContention(b *testing.B) {
	for _, sc := range []struct {
		name         string
		clients, per int
	}{{"1x32", 1, 32}, {"8x4", 8, 4}} {
		b.Run(sc.name, func(b *testing.B) {
			srv := startBenchRedis(b)
			best := map[string]float64{}
			for _, c := range contenders() {
				b.Run(c.name, func(b *testing.B) {
					best[c.name] = runInstances(b, srv, sc.clients, sc.per, c)
				})
			}
			b.Run("ratio", func(b *testing.B) {
				peer := max(best["polling-1ms"], best["redislock"], best["redsync"])
				if peer > 0 {
					b.ReportMetric(best["fencedlock"]/peer, "x-best-peer")
					b.ReportMetric(best["fencedlock-noqueue"]/peer, "noqueue-x-best-peer")
				}
			})
		})
	}
}

// startBenchRedis starts a redis-server, on CPU 1 when FENCEDLOCK_BENCH_PIN
// is set.
func startBenchRedis(b *testing.B) *redistest.Server {
	srv := redistest.Start(b)
	if os.Getenv("FENCEDLOCK_BENCH_PIN") == "" {
		return srv
	}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	info, err := rdb.Info(context.Background(), "server").Result()
	if err != nil {
		b.Fatal(err)
	}
	_, rest, _ := strings.Cut(info, "process_id:")
	pid := strings.TrimSpace(strings.SplitN(rest, "\n", 2)[0])
	if out, err := exec.Command("taskset", "-pc", "1", pid).CombinedOutput(); err != nil {
		b.Fatalf("taskset: %v: %s", err, out)
	}
	return srv
}

// contender is one lock implementation: newInstance builds the lock of one
// instance over its own Redis client; lock takes key and returns unlock.
type contender struct {
	name        string
	newInstance func(rdb *redis.Client) (lock func(ctx context.Context, key string) (func() error, error), close func())
}

func contenders() []contender {
	fenced := func(opts ...core.Option) func(rdb *redis.Client) (func(context.Context, string) (func() error, error), func()) {
		return func(rdb *redis.Client) (func(context.Context, string) (func() error, error), func()) {
			c := core.New(rdb, append([]core.Option{core.WithTTL(5 * time.Second)}, opts...)...)
			return func(ctx context.Context, key string) (func() error, error) {
				l, err := c.Acquire(ctx, key)
				if err != nil {
					return nil, err
				}
				return func() error { return l.Release(ctx) }, nil
			}, func() { _ = c.Close() }
		}
	}
	return []contender{
		{"fencedlock", fenced()},
		{"fencedlock-noqueue", fenced(core.WithStoreQueue(false))},
		{"polling-1ms", func(rdb *redis.Client) (func(context.Context, string) (func() error, error), func()) {
			var seq atomic.Int64
			return func(ctx context.Context, key string) (func() error, error) {
				tok := strconv.FormatInt(seq.Add(1), 10) + fmt.Sprintf("-%p", rdb)
				for {
					ok, err := rdb.SetNX(ctx, key, tok, 5*time.Second).Result()
					if err != nil {
						return nil, err
					}
					if ok {
						return func() error { return rawUnlock.Run(ctx, rdb, []string{key}, tok).Err() }, nil
					}
					time.Sleep(time.Millisecond)
				}
			}, func() {}
		}},
		{"redislock", func(rdb *redis.Client) (func(context.Context, string) (func() error, error), func()) {
			c := redislock.New(rdb)
			opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Millisecond)}
			return func(ctx context.Context, key string) (func() error, error) {
				l, err := c.Obtain(ctx, key, 5*time.Second, opt)
				if err != nil {
					return nil, err
				}
				return func() error { return l.Release(ctx) }, nil
			}, func() {}
		}},
		{"redsync", func(rdb *redis.Client) (func(context.Context, string) (func() error, error), func()) {
			rs := redsync.New(goredis.NewPool(rdb))
			return func(ctx context.Context, key string) (func() error, error) {
				m := rs.NewMutex(key, redsync.WithExpiry(5*time.Second), redsync.WithTries(math.MaxInt32), redsync.WithRetryDelay(time.Millisecond))
				if err := m.LockContext(ctx); err != nil {
					return nil, err
				}
				return func() error { _, err := m.UnlockContext(ctx); return err }, nil
			}, func() {}
		}},
	}
}

// runInstances runs b.N critical sections over clients × per goroutines on
// one key and returns the critical sections per second.
func runInstances(b *testing.B, srv *redistest.Server, clients, per int, c contender) float64 {
	ctx := context.Background()
	h := &rttCounter{}
	key := fmt.Sprintf("inst-%s-%d", c.name, b.N)
	locks := make([]func(context.Context, string) (func() error, error), clients)
	for i := range clients {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 4 * per})
		rdb.AddHook(h)
		lock, closeFn := c.newInstance(rdb)
		b.Cleanup(func() { closeFn(); _ = rdb.Close() })
		locks[i] = lock
	}
	before := serverCalls(b, srv.Addr())
	var next atomic.Int64
	served := make([]atomic.Int64, clients)
	var mu sync.Mutex
	var waits []time.Duration
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i := range clients * per {
		inst := i % clients
		wg.Go(func() {
			var local []time.Duration
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				unlock, err := locks[inst](ctx, key)
				if err != nil {
					b.Error(err)
					return
				}
				local = append(local, time.Since(t0))
				served[inst].Add(1)
				spin(200 * time.Microsecond)
				if err := unlock(); err != nil {
					b.Error(err)
					return
				}
			}
			mu.Lock()
			waits = append(waits, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	after := serverCalls(b, srv.Addr())
	n := float64(b.N)
	slices.Sort(waits)
	if len(waits) > 0 {
		b.ReportMetric(float64(waits[len(waits)/2].Microseconds())/1000, "wait-p50-ms")
		b.ReportMetric(float64(waits[len(waits)*99/100].Microseconds())/1000, "wait-p99-ms")
	}
	b.ReportMetric(float64(h.cmds.Load())/n, "client-cmds/cs")
	b.ReportMetric(float64(after-before-1)/n, "server-cmds/cs")
	reportSpread(b, served)
	cs := n / elapsed.Seconds()
	b.ReportMetric(cs, "cs/s")
	return cs
}

// reportSpread reports the least and most served instances' distance from
// the mean, in percent.
func reportSpread(b *testing.B, served []atomic.Int64) {
	if len(served) < 2 {
		return
	}
	var sum, lo, hi int64 = 0, math.MaxInt64, 0
	for i := range served {
		v := served[i].Load()
		sum += v
		lo, hi = min(lo, v), max(hi, v)
	}
	mean := float64(sum) / float64(len(served))
	if mean > 0 {
		b.ReportMetric((float64(lo)-mean)/mean*100, "min-vs-mean-%")
		b.ReportMetric((float64(hi)-mean)/mean*100, "max-vs-mean-%")
	}
}

// spin holds the critical section busy for d: a sleep would round up to
// the timer's resolution.
func spin(d time.Duration) {
	for t0 := time.Now(); time.Since(t0) < d; {
	}
}
