package etcdlock_test

import (
	"context"
	"flag"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/etcdlock"
	"github.com/fencedlock/fencedlock/internal/etcdtest"
)

// Run with:
//
//	go test ./core/etcdlock -run '^$' -bench . -benchtime 1x
//
// Every benchmark measures fencedlock and etcd's own concurrency.Mutex in
// the same run on the same cluster (etcd on tmpfs), so the ratios compare
// like with like on whatever machine runs them.

var window = flag.Duration("etcd.window", 2*time.Second, "measuring window per side of BenchmarkContended")

func benchCluster(b *testing.B, members int) *clientv3.Client {
	b.Helper()
	return etcdtest.StartCluster(b, members).Client(b)
}

func p50(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// BenchmarkUncontended: one goroutine locks and unlocks a free key,
// alternating between fencedlock (Acquire + Release, one transaction each)
// and concurrency.Mutex (Lock + Unlock), and reports both medians.
func BenchmarkUncontended(b *testing.B) {
	for _, members := range []int{1, 3} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			cli := benchCluster(b, members)
			locker, err := etcdlock.New(cli)
			if err != nil {
				b.Fatal(err)
			}
			defer locker.Close()
			sess, err := concurrency.NewSession(cli)
			if err != nil {
				b.Fatal(err)
			}
			defer sess.Close()
			mutex := concurrency.NewMutex(sess, "bench/mutex")
			ctx := context.Background()
			ours := func() time.Duration {
				s := time.Now()
				l, err := locker.Acquire(ctx, "bench-uncontended")
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Release(ctx); err != nil {
					b.Fatal(err)
				}
				return time.Since(s)
			}
			theirs := func() time.Duration {
				s := time.Now()
				if err := mutex.Lock(ctx); err != nil {
					b.Fatal(err)
				}
				if err := mutex.Unlock(ctx); err != nil {
					b.Fatal(err)
				}
				return time.Since(s)
			}
			n := max(b.N, 200)
			for range 50 { // warm up connections and code paths
				ours()
				theirs()
			}
			a, m := make([]time.Duration, 0, n), make([]time.Duration, 0, n)
			b.ResetTimer()
			for i := range n {
				if i%2 == 0 {
					a, m = append(a, ours()), append(m, theirs())
				} else {
					m, a = append(m, theirs()), append(a, ours())
				}
			}
			b.StopTimer()
			pa, pm := p50(a), p50(m)
			b.ReportMetric(us(pa), "p50-µs/fencedlock")
			b.ReportMetric(us(pm), "p50-µs/etcdmutex")
			b.ReportMetric(float64(pa)/float64(pm), "ratio")
		})
	}
}

// spin holds the lock for exactly d; time.Sleep rounds 200µs up to a
// millisecond or more on many kernels.
func spin(d time.Duration) {
	for s := time.Now(); time.Since(s) < d; {
	}
}

const (
	contenders = 32
	hold       = 200 * time.Microsecond
)

// contend runs contenders goroutines, each doing lock, hold, unlock in a
// loop for the window, and returns critical sections per second and the
// largest deviation of one goroutine's count from the mean, in percent.
func contend(b *testing.B, section func(i int)) (perSec, maxDev float64) {
	b.Helper()
	var stop atomic.Bool
	counts := make([]int, contenders)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range contenders {
		wg.Go(func() {
			for !stop.Load() {
				section(i)
				counts[i]++
			}
		})
	}
	time.Sleep(*window)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(start)
	total := 0
	for _, n := range counts {
		total += n
	}
	mean := float64(total) / contenders
	for _, n := range counts {
		maxDev = math.Max(maxDev, math.Abs(float64(n)-mean)/mean*100)
	}
	return float64(total) / elapsed.Seconds(), maxDev
}

// BenchmarkContended: 32 goroutines on one key, each holding it for 200µs.
// fencedlock runs as a service would, one Client shared by the goroutines
// (they queue locally; one of them at a time waits in etcd), and also with
// one Client per goroutine (every hand-over goes through etcd's queue, as
// between processes). concurrency.Mutex needs one session per goroutine.
// Reported: critical sections per second, ratios against the mutex, and
// fairness as the largest deviation of one goroutine's count from the mean.
func BenchmarkContended(b *testing.B) {
	for _, members := range []int{1, 3} {
		b.Run(fmt.Sprintf("members=%d", members), func(b *testing.B) {
			cli := benchCluster(b, members)
			ctx := context.Background()
			shared, err := etcdlock.New(cli)
			if err != nil {
				b.Fatal(err)
			}
			defer shared.Close()
			hb, err := etcdlock.NewBackend(cli)
			if err != nil {
				b.Fatal(err)
			}
			handoff := etcdlock.NewClient(hb, core.WithHandoffLimit(8))
			defer handoff.Close()
			own := make([]*core.Client, contenders)
			mutexes := make([]*concurrency.Mutex, contenders)
			for i := range contenders {
				if own[i], err = etcdlock.New(cli); err != nil {
					b.Fatal(err)
				}
				defer own[i].Close()
				sess, err := concurrency.NewSession(cli)
				if err != nil {
					b.Fatal(err)
				}
				defer sess.Close()
				mutexes[i] = concurrency.NewMutex(sess, "bench/contended-mutex")
			}
			lockSection := func(c *core.Client, key string) {
				l, err := c.Acquire(ctx, key)
				if err != nil {
					b.Error(err)
					return
				}
				spin(hold)
				if err := l.Release(ctx); err != nil {
					b.Error(err)
				}
			}
			var oursRate, handoffRate, crossRate, mutexRate, oursDev, handoffDev, crossDev, mutexDev float64
			b.ResetTimer()
			for range b.N {
				r, d := contend(b, func(int) { lockSection(shared, "bench-contended") })
				oursRate, oursDev = oursRate+r, max(oursDev, d)
				r, d = contend(b, func(int) { lockSection(handoff, "bench-contended-handoff") })
				handoffRate, handoffDev = handoffRate+r, max(handoffDev, d)
				r, d = contend(b, func(i int) { lockSection(own[i], "bench-contended-cross") })
				crossRate, crossDev = crossRate+r, max(crossDev, d)
				r, d = contend(b, func(i int) {
					m := mutexes[i]
					if err := m.Lock(ctx); err != nil {
						b.Error(err)
						return
					}
					spin(hold)
					if err := m.Unlock(ctx); err != nil {
						b.Error(err)
					}
				})
				mutexRate, mutexDev = mutexRate+r, max(mutexDev, d)
			}
			b.StopTimer()
			n := float64(b.N)
			b.ReportMetric(oursRate/n, "cs/s/fencedlock")
			b.ReportMetric(handoffRate/n, "cs/s/fencedlock-handoff")
			b.ReportMetric(crossRate/n, "cs/s/fencedlock-32clients")
			b.ReportMetric(mutexRate/n, "cs/s/etcdmutex")
			b.ReportMetric(oursRate/mutexRate, "ratio")
			b.ReportMetric(handoffRate/mutexRate, "ratio-handoff")
			b.ReportMetric(crossRate/mutexRate, "ratio-32clients")
			b.ReportMetric(oursDev, "maxdev-%/fencedlock")
			b.ReportMetric(handoffDev, "maxdev-%/fencedlock-handoff")
			b.ReportMetric(crossDev, "maxdev-%/fencedlock-32clients")
			b.ReportMetric(mutexDev, "maxdev-%/etcdmutex")
		})
	}
}
