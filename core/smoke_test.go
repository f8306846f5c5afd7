package core_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/fencedlock/fencedlock/core"
	"github.com/redis/go-redis/v9"
)

func TestSmoke(t *testing.T) {
	for _, name := range []string{"mini"} {
		t.Run(name, func(t *testing.T) {
			addr := "127.0.0.1:6379"
			if name == "mini" {
				mr := miniredis.RunT(t)
				addr = mr.Addr()
			}
			rdb := redis.NewClient(&redis.Options{Addr: addr})
			defer rdb.Close()
			c := core.New(rdb, core.WithTTL(time.Second), core.WithPrefix("smoke:"))
			defer c.Close()
			ctx := context.Background()
			l, err := c.Acquire(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			t.Log("fence", l.Fence())
			_, err = c.TryAcquire(ctx, "k")
			if !errors.Is(err, core.ErrNotAcquired) {
				t.Fatal(err)
			}
			c2 := core.New(rdb, core.WithTTL(time.Second), core.WithPrefix("smoke:"))
			defer c2.Close()
			go func() { time.Sleep(50 * time.Millisecond); l.Release(ctx) }()
			st := time.Now()
			l2, err := c2.Acquire(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			t.Log("waited", time.Since(st), l2.Fence())
			if l2.Fence() <= l.Fence() {
				t.Fatal("fence")
			}
			l2.Release(ctx)
			var wg sync.WaitGroup
			n := 0
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := 0; j < 50; j++ {
						l, err := c.Acquire(ctx, "w")
						if err != nil {
							t.Error(err)
							return
						}
						v := n
						time.Sleep(10 * time.Microsecond)
						n = v + 1
						if err := l.Release(ctx); err != nil {
							t.Error(err)
						}
					}
				}()
			}
			wg.Wait()
			if n != 400 {
				t.Fatal(n)
			}
		})
	}
}
