package locktest_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
)

// Test a handler's contention path without Redis.
func Example() {
	store := locktest.NewStore()
	a, b := store.Client(), store.Client() // two "processes" sharing one fake Redis
	defer a.Close()
	defer b.Close()

	ctx := context.Background()
	l, _ := a.Acquire(ctx, "order:7")
	_, err := b.TryAcquire(ctx, "order:7")
	fmt.Println("held elsewhere:", errors.Is(err, core.ErrNotAcquired))

	store.Expire(core.DefaultPrefix, "order:7") // the lease runs out behind the holder's back
	fmt.Println("release after expiry:", errors.Is(l.Release(ctx), core.ErrNotHeld))

	store.SetDown(true)
	_, err = b.TryAcquire(ctx, "order:8")
	fmt.Println("backend down:", errors.Is(err, core.ErrUnavailable))
	// Output:
	// held elsewhere: true
	// release after expiry: true
	// backend down: true
}
