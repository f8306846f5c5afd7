// Command coupon is the race this kit exists for: ten coupons, several
// service instances, each claim reads the remaining count, pauses briefly
// (a database call, a GC pause) and writes the count back. Without a lock
// two instances read the same count and both issue a coupon; with one, the
// tenth coupon is the last.
//
//	go run ./examples/coupon                      # embedded Redis (miniredis)
//	go run ./examples/coupon -redis 127.0.0.1:6379
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/otel/oteldemo"
	"github.com/redis/go-redis/v9"
)

const coupons = 10

func main() {
	addr := flag.String("redis", "", "Redis address (host:port); empty runs an embedded miniredis")
	instances := flag.Int("instances", 8, "simulated service instances, each with its own Redis client")
	claims := flag.Int("claims", 5, "claims attempted by each instance")
	pause := flag.Duration("pause", 2*time.Millisecond, "pause between reading and writing the count")
	otelMode := flag.String("otel", "off", "telemetry: off, or stdout to print spans and metrics")
	flag.Parse()
	tel, err := oteldemo.Setup(*otelMode, os.Stdout)
	if err != nil {
		log.Fatal(err)
	}
	if *instances < 1 || *claims < 1 {
		log.Fatal("coupon: -instances and -claims must be at least 1")
	}

	if *addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			log.Fatal(err)
		}
		defer mr.Close()
		*addr = mr.Addr()
		fmt.Println("redis: embedded miniredis at", *addr)
	} else {
		fmt.Println("redis:", *addr)
	}
	run := &race{addr: *addr, instances: *instances, claims: *claims, pause: *pause, obs: tel.Observer()}
	ctx := context.Background()

	without, err := run.once(ctx, false)
	if err != nil {
		log.Fatal(err)
	}
	with, err := run.once(ctx, true)
	if err != nil {
		log.Fatal(err)
	}

	if err := tel.Shutdown(ctx); err != nil { // prints the metrics with -otel stdout
		log.Print(err)
	}
	fmt.Printf("\n%d instances x %d claims, %d coupons, %v between read and write\n", *instances, *claims, coupons, *pause)
	fmt.Printf("%-22s %10s\n", "acquire latency p50", with.p(50))
	fmt.Printf("%-22s %10s\n", "acquire latency p99", with.p(99))
	fmt.Printf("%-22s %10d of %d\n", "contended acquires", with.contended.Load(), len(with.latencies))
	fmt.Printf("%-22s %10d\n", "last fence", with.lastFence.Load())
	fmt.Println()
	fmt.Printf("without lock: issued=%d over=%d\n", without.issued.Load(), max(0, without.issued.Load()-coupons))
	fmt.Printf("with lock: issued=%d over=%d\n", with.issued.Load(), max(0, with.issued.Load()-coupons))
	if with.issued.Load() != coupons {
		os.Exit(1)
	}
}

type race struct {
	addr      string
	instances int
	claims    int
	pause     time.Duration
	obs       core.Observer
}

type result struct {
	issued    atomic.Int64
	contended atomic.Int64
	lastFence atomic.Uint64
	mu        sync.Mutex
	latencies []time.Duration
}

func (r *result) p(q int) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	return s[(len(s)-1)*q/100].Round(time.Microsecond)
}

// counter counts contended acquisitions through core's observer hooks.
type counter struct {
	core.Observer // the -otel one, or a no-op
	res           *result
}

func (c counter) AcquireEnd(ctx context.Context, e core.AcquireEndEvent) any {
	if e.Contended {
		c.res.contended.Add(1)
	}
	return c.Observer.AcquireEnd(ctx, e)
}

func (r *race) once(ctx context.Context, locked bool) (*result, error) {
	res := &result{}
	setup := redis.NewClient(&redis.Options{Addr: r.addr})
	defer setup.Close()
	if err := setup.Set(ctx, "coupons:remaining", coupons, 0).Err(); err != nil {
		return nil, fmt.Errorf("coupon: cannot reach redis: %w", err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, r.instances)
	for range r.instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each instance is its own "process": its own connection pool
			// and its own lock client.
			rdb := redis.NewClient(&redis.Options{Addr: r.addr})
			defer rdb.Close()
			locker := core.New(rdb, core.WithTTL(5*time.Second), core.WithObserver(counter{Observer: r.obs, res: res}))
			defer locker.Close()
			for range r.claims {
				if err := r.claim(ctx, rdb, locker, locked, res); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return res, errors.Join(slices.Collect(chanSeq(errs))...)
}

func (r *race) claim(ctx context.Context, rdb *redis.Client, locker *core.Client, locked bool, res *result) error {
	if locked {
		start := time.Now()
		l, err := locker.Acquire(ctx, "coupon:stock", core.WithWait(10*time.Second))
		if err != nil {
			return err
		}
		res.mu.Lock()
		res.latencies = append(res.latencies, time.Since(start))
		res.mu.Unlock()
		res.lastFence.Store(l.Fence())
		defer l.Release(context.WithoutCancel(ctx))
	}
	s, err := rdb.Get(ctx, "coupons:remaining").Result()
	if err != nil {
		return err
	}
	n, _ := strconv.Atoi(s)
	if n <= 0 {
		return nil // sold out
	}
	time.Sleep(r.pause) // the window in which another instance reads the same n
	if err := rdb.Set(ctx, "coupons:remaining", n-1, 0).Err(); err != nil {
		return err
	}
	res.issued.Add(1)
	return nil
}

func chanSeq(ch <-chan error) func(func(error) bool) {
	return func(yield func(error) bool) {
		for e := range ch {
			if !yield(e) {
				return
			}
		}
	}
}
