package core_test

import (
	"context"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/backendtest"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func redisHarness(t *testing.T, rdb *redis.Client) backendtest.Harness {
	return backendtest.Harness{
		NewClient: func(t testing.TB, opts ...core.Option) *core.Client {
			return core.New(rdb, opts...)
		},
		DeleteKey: func(t testing.TB, key string) {
			if err := rdb.Del(context.Background(), key).Err(); err != nil {
				t.Fatal(err)
			}
		},
		Exists: func(t testing.TB, key string) bool {
			n, err := rdb.Exists(context.Background(), key).Result()
			if err != nil {
				t.Fatal(err)
			}
			return n == 1
		},
	}
}

func TestSuite_redis(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	backendtest.Run(t, redisHarness(t, rdb))
}

func TestSuite_miniredis(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { rdb.Close() })
	h := redisHarness(t, rdb)
	h.Advance = mr.FastForward
	h.Sections = 600 // miniredis serialises everything; keep the unit run fast
	backendtest.Run(t, h)
}

func TestSuite_locktest(t *testing.T) {
	s := locktest.NewStore()
	backendtest.Run(t, backendtest.Harness{
		NewClient: func(t testing.TB, opts ...core.Option) *core.Client { return s.Client(opts...) },
		DeleteKey: func(t testing.TB, key string) { s.DeleteRaw(key) },
		Sections:  1000,
	})
	_ = time.Second
}
