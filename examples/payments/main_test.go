package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/fencedlock/fencedlock/idempotency"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The example's claim: the retrying client charges once per attempt that
// reached the handler without the middleware, and once with it.
func TestPayments(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	locker := core.New(rdb)
	t.Cleanup(func() { _ = locker.Close() })
	store := idempotency.NewRedisStore(rdb, "")
	c := client{timeout: 50 * time.Millisecond, attempts: 6}

	without, err := run(c, 150*time.Millisecond, "without", func(h http.Handler) http.Handler { return h })
	if err != nil {
		t.Fatal(err)
	}
	with, err := run(c, 150*time.Millisecond, "with", httpmw.Idempotent(locker, store))
	if err != nil {
		t.Fatal(err)
	}
	if without < 2 || with != 1 {
		t.Fatalf("charges without = %d, with = %d; want >= 2 and 1", without, with)
	}
}
