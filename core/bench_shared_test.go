package core_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// Benchmarks of the lock family, each with its reference in the same run:
//
//	go test -run '^$' -bench 'BenchmarkShared|BenchmarkPermits' -benchtime 2s ./core/
//
// BenchmarkSharedRatio is the figure to read for the cost of a shared
// hold: it alternates the two kinds within one loop.

// BenchmarkSharedUncontended: shared acquire+release against exclusive
// acquire+release, fresh keys, one Client; both must be 2 round trips.
func BenchmarkSharedUncontended(b *testing.B) {
	_, rdb, h := benchRedis(b)
	ctx := context.Background()
	for _, mode := range []struct {
		name string
		opts []core.Option
	}{{"exclusive", nil}, {"shared", []core.Option{core.Shared()}}} {
		b.Run(mode.name, func(b *testing.B) {
			c := core.New(rdb)
			defer c.Close()
			h.rtts.Store(0)
			i := 0
			for b.Loop() {
				i++
				l, err := c.Acquire(ctx, mode.name+":"+strconv.Itoa(i&1023), mode.opts...)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(h.rtts.Load())/float64(b.N), "roundtrips/op")
		})
	}
}

// BenchmarkSharedRatio interleaves the two pairs of BenchmarkSharedUncontended
// (one exclusive, one shared, per iteration, each timed on its own), so that
// the machine's drift during the run weighs on both alike; it reports the
// ratio of their total times.
func BenchmarkSharedRatio(b *testing.B) {
	_, rdb, _ := benchRedis(b)
	ctx := context.Background()
	c := core.New(rdb)
	defer c.Close()
	var spent [2]time.Duration
	pair := func(kind int, key string, opts ...core.Option) {
		start := time.Now()
		l, err := c.Acquire(ctx, key, opts...)
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
		spent[kind] += time.Since(start)
	}
	i := 0
	for b.Loop() {
		i++
		n := strconv.Itoa(i & 1023)
		pair(0, "exclusive:"+n)
		pair(1, "shared:"+n, core.Shared())
	}
	b.ReportMetric(float64(spent[0].Microseconds())/float64(b.N), "exclusive-µs")
	b.ReportMetric(float64(spent[1].Microseconds())/float64(b.N), "shared-µs")
	b.ReportMetric(float64(spent[1])/float64(spent[0]), "shared/exclusive")
}

// BenchmarkSharedReaders: 32 goroutines over 4 Clients (instances), each
// holding for 200µs: readers of ONE key, against exclusive holds on private
// keys (the no-contention ceiling). Readers must not serialize.
func BenchmarkSharedReaders(b *testing.B) {
	srv, rdb, _ := benchRedis(b)
	run := func(b *testing.B, key func(g int) string, opts ...core.Option) {
		cs := make([]*core.Client, 4)
		for i := range cs {
			cs[i] = core.New(rdb)
			defer cs[i].Close()
		}
		var left atomic.Int64
		left.Store(int64(b.N))
		var wg sync.WaitGroup
		usec := serverUsec(b, srv.Addr())
		start := time.Now()
		for g := range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c, k := cs[g%4], key(g)
				for left.Add(-1) >= 0 {
					l, err := c.Acquire(context.Background(), k, opts...)
					if err != nil {
						b.Error(err)
						return
					}
					time.Sleep(200 * time.Microsecond)
					if err := l.Release(context.Background()); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "cs/s")
		b.ReportMetric(float64(serverUsec(b, srv.Addr())-usec)/float64(b.N), "server-µs/op")
	}
	b.Run("shared-one-key", func(b *testing.B) {
		run(b, func(int) string { return "doc" }, core.Shared())
	})
	b.Run("exclusive-private-keys", func(b *testing.B) {
		run(b, func(g int) string { return "own:" + strconv.Itoa(g) })
	})
}

// BenchmarkPermits: Permits(8) on one key, 32 goroutines over 4 Clients,
// 200µs holds; reports the mean number of permits in use, sampled every
// 100µs, against the limit of 8.
func BenchmarkPermits(b *testing.B) {
	_, rdb, _ := benchRedis(b)
	cs := make([]*core.Client, 4)
	for i := range cs {
		cs[i] = core.New(rdb)
		defer cs[i].Close()
	}
	var left, inUse, samples, sum atomic.Int64
	left.Store(int64(b.N))
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		t := time.NewTicker(100 * time.Microsecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				sum.Add(inUse.Load())
				samples.Add(1)
			}
		}
	}()
	var wg sync.WaitGroup
	start := time.Now()
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for left.Add(-1) >= 0 {
				l, err := cs[g%4].Acquire(context.Background(), "sem", core.Permits(8))
				if err != nil {
					b.Error(err)
					return
				}
				// held from Acquire's return to Release's return: the
				// permit's life in Redis, give or take one reply's flight
				inUse.Add(1)
				time.Sleep(200 * time.Microsecond)
				err = l.Release(context.Background())
				inUse.Add(-1)
				if err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	sampler.Wait()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cs/s")
	if n := samples.Load(); n > 0 {
		b.ReportMetric(float64(sum.Load())/float64(n), "permits-in-use")
	}
}
