package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
)

// benchConfig is one bench run: workers contend for one key, each holding
// it for hold, for duration per variant.
type benchConfig struct {
	workers  int
	duration time.Duration
	hold     time.Duration
	csv      string
}

// benchResult is one variant's outcome.
type benchResult struct {
	name  string
	waits []time.Duration // sorted
	cs    int
	took  time.Duration
}

var pollUnlock = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

func (c *cli) bench(ctx context.Context, g *globals, args []string) error {
	cfg := benchConfig{}
	s, _, err := c.open(ctx, g, "bench", args, func(f fsFlags) {
		f.IntVar(&cfg.workers, "workers", 8, "goroutines contending for one key, each with its own Client")
		f.DurationVar(&cfg.duration, "duration", 3*time.Second, "how long each variant runs")
		f.DurationVar(&cfg.hold, "hold", 200*time.Microsecond, "critical section length")
		f.StringVar(&cfg.csv, "csv", "", "also write every wait as CSV (variant,wait_us) to this file")
	})
	if err != nil {
		return err
	}
	defer s.close()
	if s.etcd != nil {
		return fmt.Errorf("%w: bench runs against Redis only", errInput)
	}
	if cfg.workers < 1 || cfg.duration <= 0 || cfg.hold < 0 {
		return fmt.Errorf("%w: bench needs -workers >= 1 and a positive -duration", errInput)
	}
	key := g.prefix + "bench:" + randHex()
	fmt.Fprintf(c.stdout, "bench: %d workers, one key, %v critical sections, %v per variant, Redis %s\n",
		cfg.workers, cfg.hold, cfg.duration, g.redis)
	results := []benchResult{
		runVariant(ctx, "fencedlock", cfg, fencedWorker(s.rdb, key)),
		runVariant(ctx, "polling-1ms", cfg, pollWorker(s.rdb, key+":poll")),
	}
	for _, r := range results {
		if r.cs == 0 {
			return &unreachableError{addr: describeAddr(g), err: errors.New("no critical section completed")}
		}
	}
	writeBenchTable(c.stdout, results)
	if cfg.csv != "" {
		return writeBenchCSV(cfg.csv, results)
	}
	return nil
}

func randHex() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// worker runs critical sections until ctx ends and returns its waits.
type worker func(ctx context.Context, hold time.Duration) []time.Duration

func runVariant(ctx context.Context, name string, cfg benchConfig, w worker) benchResult {
	ctx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	var mu sync.Mutex
	var wg sync.WaitGroup
	r := benchResult{name: name}
	start := time.Now()
	for range cfg.workers {
		wg.Go(func() {
			waits := w(ctx, cfg.hold)
			mu.Lock()
			r.waits = append(r.waits, waits...)
			mu.Unlock()
		})
	}
	wg.Wait()
	r.took = time.Since(start)
	r.cs = len(r.waits)
	slices.Sort(r.waits)
	return r
}

// fencedWorker waits with core's queue and release notices; each worker has
// its own Client, as separate processes would.
func fencedWorker(rdb redis.UniversalClient, key string) worker {
	return func(ctx context.Context, hold time.Duration) []time.Duration {
		c := core.New(rdb)
		defer c.Close()
		var waits []time.Duration
		for ctx.Err() == nil {
			t0 := time.Now()
			l, err := c.Acquire(ctx, key, core.WithWait(10*time.Second), core.WithTTL(5*time.Second))
			if err != nil {
				continue
			}
			waits = append(waits, time.Since(t0))
			time.Sleep(hold)
			_ = l.Release(context.WithoutCancel(ctx))
		}
		return waits
	}
}

// pollWorker is the baseline: SET NX PX, retried every millisecond.
func pollWorker(rdb redis.UniversalClient, key string) worker {
	return func(ctx context.Context, hold time.Duration) []time.Duration {
		tok := randHex()
		var waits []time.Duration
		for ctx.Err() == nil {
			t0 := time.Now()
			for ctx.Err() == nil {
				ok, err := rdb.SetNX(ctx, key, tok, 5*time.Second).Result()
				if err == nil && ok {
					waits = append(waits, time.Since(t0))
					time.Sleep(hold)
					_ = pollUnlock.Run(context.WithoutCancel(ctx), rdb, []string{key}, tok).Err()
					break
				}
				time.Sleep(time.Millisecond)
			}
		}
		return waits
	}
}

func pct(w []time.Duration, p float64) time.Duration { return w[int(float64(len(w)-1)*p)] }

func writeBenchTable(out io.Writer, rs []benchResult) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "variant\tcs/s\twait p50\tp90\tp99\tmax\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%.0f\t%v\t%v\t%v\t%v\t\n", r.name, float64(r.cs)/r.took.Seconds(),
			pct(r.waits, .5).Round(time.Microsecond), pct(r.waits, .9).Round(time.Microsecond),
			pct(r.waits, .99).Round(time.Microsecond), r.waits[len(r.waits)-1].Round(time.Microsecond))
	}
	tw.Flush()
}

func writeBenchCSV(path string, rs []benchResult) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("%w: -csv: %v", errInput, err)
	}
	fmt.Fprintln(f, "variant,wait_us")
	for _, r := range rs {
		for _, w := range r.waits {
			fmt.Fprintf(f, "%s,%d\n", r.name, w.Microseconds())
		}
	}
	return f.Close()
}
