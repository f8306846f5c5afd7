package core_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Topology benchmarks on real redis-server processes, each twice: direct,
// and with every server behind the project's test proxy adding 0.5 ms each
// way (all servers share this machine's CPUs, so undelayed a fan-out
// measures CPU scheduling, not a network):
//
//	go test -run '^$' -bench 'Redlock|Sharded' -benchtime 3s ./core/

// benchDelays are the simulated one-way network delays.
var benchDelays = []time.Duration{0, 500 * time.Microsecond}

func delayName(d time.Duration) string {
	if d == 0 {
		return "direct"
	}
	return "delay=" + d.String()
}

// benchAddrs returns the servers' addresses, behind a delaying proxy each
// when delay is set.
func benchAddrs(b *testing.B, servers []*redistest.Server, delay time.Duration) []string {
	addrs := make([]string, len(servers))
	for i, s := range servers {
		addrs[i] = s.Addr()
		if delay > 0 {
			p := redistest.NewProxy(b, s.Addr())
			p.Delay(delay)
			addrs[i] = p.Addr()
		}
	}
	return addrs
}

func benchClient(b *testing.B, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 128})
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// BenchmarkRedlock_vsSingle times uncontended acquire+release on one
// server and on a Redlock set of five, alternating in the same loop so
// both see the same machine load, and reports both medians and their
// ratio (target: at most 1.5). For scale it also times what the machine
// allows: one PING against five PINGs in parallel until three answered.
// With every server on the same few cores the fan-out waits for three
// processes to be scheduled, which no client can avoid; on separate
// hosts the nodes answer in parallel.
func BenchmarkRedlock_vsSingle(b *testing.B) {
	servers := redistest.StartN(b, 6)
	for _, d := range benchDelays {
		b.Run(delayName(d), func(b *testing.B) { redlockVsSingle(b, benchAddrs(b, servers, d)) })
	}
}

func redlockVsSingle(b *testing.B, addrs []string) {
	one := benchClient(b, addrs[0])
	single := core.New(one)
	defer single.Close()
	nodes := make([]redis.UniversalClient, 5)
	raw := make([]*redis.Client, 5)
	for i, a := range addrs[1:] {
		raw[i] = benchClient(b, a)
		nodes[i] = raw[i]
	}
	rl := core.NewRedlock(nodes)
	defer rl.Close()
	ctx := context.Background()
	once := func(c *core.Client, k string) time.Duration {
		t0 := time.Now()
		l, err := c.Acquire(ctx, k)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
		return time.Since(t0)
	}
	answers := make(chan struct{}, len(raw))
	var ts, tr, ps, pf []time.Duration
	i := 0
	for b.Loop() {
		k := "rl:" + strconv.Itoa(i&1023)
		i++
		ts = append(ts, once(single, k))
		tr = append(tr, once(rl, k))

		t0 := time.Now()
		_ = one.Ping(ctx).Err()
		ps = append(ps, time.Since(t0))
		t0 = time.Now()
		for _, c := range raw {
			go func() { _ = c.Ping(ctx).Err(); answers <- struct{}{} }()
		}
		for range 3 {
			<-answers
		}
		pf = append(pf, time.Since(t0))
		for range len(raw) - 3 {
			<-answers
		}
	}
	p50 := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	s, r := p50(ts), p50(tr)
	b.ReportMetric(float64(s.Microseconds()), "single-p50-µs")
	b.ReportMetric(float64(r.Microseconds()), "redlock5-p50-µs")
	b.ReportMetric(float64(r)/float64(s), "redlock/single")
	b.ReportMetric(float64(p50(pf))/float64(p50(ps)), "ping-3of5/ping-1")
}

// BenchmarkSharded_contention runs 4 Clients x 16 goroutines acquiring
// and releasing random keys among 1 000, over 1, 2 and 4 shards, and
// reports lock cycles per second.
func BenchmarkSharded_contention(b *testing.B) {
	servers := redistest.StartN(b, 4)
	for _, d := range benchDelays {
		b.Run(delayName(d), func(b *testing.B) { shardedContention(b, benchAddrs(b, servers, d)) })
	}
}

func shardedContention(b *testing.B, addrs []string) {
	shards := make([]redis.UniversalClient, len(addrs))
	for i, a := range addrs {
		shards[i] = benchClient(b, a)
	}
	ctx := context.Background()
	for _, n := range []int{1, 2, 4} {
		b.Run("shards="+strconv.Itoa(n), func(b *testing.B) {
			clients := make([]*core.Client, 4)
			for i := range clients {
				clients[i] = core.NewSharded(shards[:n], core.WithTTL(5*time.Second))
				defer clients[i].Close()
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for g := range 64 {
				wg.Go(func() {
					c := clients[g%4]
					rng := rand.New(rand.NewPCG(uint64(g), 7))
					for next.Add(1) <= int64(b.N) {
						l, err := c.Acquire(ctx, "hot:"+strconv.Itoa(rng.IntN(1000)))
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
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "locks/s")
		})
	}
}
