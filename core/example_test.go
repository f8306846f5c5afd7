package core_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/fencedlock/fencedlock/core"
	"github.com/redis/go-redis/v9"
)

// The README's quick start, kept in step with it.
func Example() {
	mr, _ := miniredis.Run() // any Redis: redis.NewClient, a Sentinel or Cluster client
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	locker := core.New(rdb, core.WithTTL(10*time.Second))
	defer locker.Close()

	ctx := context.Background()
	lock, err := locker.Acquire(ctx, "coupon:42", core.WithWait(2*time.Second), core.WithAutoRefresh())
	if err != nil {
		panic(err) // errors.Is(err, core.ErrNotAcquired) when someone else kept it
	}
	defer lock.Release(context.WithoutCancel(ctx))

	// Work under the lock. Stop if it is lost; hand the fence to storage.
	ctx, cancel := lock.Context(ctx)
	defer cancel()
	fmt.Println("holding", lock.Key(), "fence > 0:", lock.Fence() > 0)

	_, err = locker.TryAcquire(ctx, "coupon:42")
	fmt.Println("second acquire:", errors.Is(err, core.ErrNotAcquired))
	// Output:
	// holding coupon:42 fence > 0: true
	// second acquire: true
}
