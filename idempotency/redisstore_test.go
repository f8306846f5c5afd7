package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/idempotency"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// script runs one of the package's Lua files as it is on disk, so the
// fence rules are checked at the script level, apart from the Go code.
func script(t *testing.T, name string) *redis.Script {
	t.Helper()
	src, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return redis.NewScript(string(src))
}

func TestPutScript_refusesLowerFence(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	put := script(t, "put.lua")
	const key = "idem:{k}"
	steps := []struct {
		fence, rec string
		want       int
	}{
		{"10", "first", 1},
		{"9", "older", 0},   // a stale holder: refused
		{"10", "again", 1},  // the same acquisition writing again
		{"100", "newer", 1}, // "100" > "10" although it sorts lower as text
		{"99", "older", 0},
	}
	for _, s := range steps {
		n, err := put.Run(ctx, fx.rdb, []string{key}, s.fence, s.rec, 60000).Int()
		if err != nil || n != s.want {
			t.Fatalf("put fence %s = %d, %v; want %d", s.fence, n, err, s.want)
		}
	}
	got, _ := fx.rdb.HGetAll(ctx, key).Result()
	if got["rec"] != "newer" || got["fence"] != "100" {
		t.Fatalf("stored %v, want the fence-100 record", got)
	}
	if ttl := fx.rdb.PTTL(ctx, key).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("PTTL %v, want the retention", ttl)
	}
}

func TestClaimScript(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	claim, put := script(t, "claim.lua"), script(t, "put.lua")
	const key = "idem:{c}"
	run := func(fence string) []any {
		v, err := claim.Run(ctx, fx.rdb, []string{key}, fence, 60000).Slice()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if v := run("5"); v[0] != int64(0) {
		t.Fatalf("fresh claim = %v, want {0}", v)
	}
	if v := run("4"); v[0] != int64(2) || v[1] != "5" {
		t.Fatalf("older claim = %v, want {2, 5}", v)
	}
	if n, _ := put.Run(ctx, fx.rdb, []string{key}, "4", "stale", 60000).Int(); n != 0 {
		t.Fatal("put under an older fence than the claim was accepted")
	}
	if v := run("6"); v[0] != int64(0) {
		t.Fatalf("newer claim = %v, want {0}", v)
	}
	if n, _ := put.Run(ctx, fx.rdb, []string{key}, "5", "stale", 60000).Int(); n != 0 {
		t.Fatal("the first claimer's put after a newer claim was accepted")
	}
	if n, _ := put.Run(ctx, fx.rdb, []string{key}, "6", "answer", 60000).Int(); n != 1 {
		t.Fatal("the newest claimer's put was refused")
	}
	if v := run("7"); v[0] != int64(1) || v[1] != "answer" {
		t.Fatalf("claim after an answer = %v, want {1, answer}", v)
	}
}

func TestRedisStore_fencedAttempts(t *testing.T) {
	fx := newFixture(t)
	ctx := context.Background()
	locker := fx.client(core.WithTTL(time.Second))
	const key = "idem:store"

	old, err := locker.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	oldAtt, err := fx.store.Begin(ctx, key, old)
	if err != nil || oldAtt.Existing() != nil {
		t.Fatalf("Begin = %v, %v", oldAtt, err)
	}
	_ = old.Release(ctx) // stands for a lease that ran out

	lk, err := locker.Acquire(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Release(ctx)
	att, err := fx.store.Begin(ctx, key, lk)
	if err != nil {
		t.Fatal(err)
	}
	if err := oldAtt.Commit(ctx, &idempotency.Record{Fence: old.Fence(), Status: 200, Body: []byte("old")}, time.Hour); !errors.Is(err, idempotency.ErrStaleFence) {
		t.Fatalf("old holder's Commit = %v, want ErrStaleFence", err)
	}
	if _, err := fx.store.Begin(ctx, key, old); !errors.Is(err, idempotency.ErrStaleFence) {
		t.Fatalf("old holder's Begin = %v, want ErrStaleFence", err)
	}
	rec := &idempotency.Record{Fence: lk.Fence(), Status: 201, Body: []byte("new")}
	if err := att.Commit(ctx, rec, time.Hour); err != nil {
		t.Fatal(err)
	}
	got, err := fx.store.Lookup(ctx, key)
	if err != nil || string(got.Body) != "new" || got.Status != 201 {
		t.Fatalf("Lookup = %+v, %v", got, err)
	}
	if _, err := fx.store.Lookup(ctx, "idem:none"); !errors.Is(err, idempotency.ErrNotFound) {
		t.Fatalf("Lookup of nothing = %v, want ErrNotFound", err)
	}
	if rk := fx.store.RecordKey(key); !strings.Contains(rk, "{"+core.KeysFor("", key).Tag+"}") {
		t.Fatalf("record key %q does not share the lock's hash tag", rk)
	}
}

func TestRedisStore_unavailable(t *testing.T) {
	fx := newFixture(t)
	rdb := redisClient(t, fx.srv.Addr())
	s := idempotency.NewRedisStore(rdb, "")
	fx.srv.Kill()
	if _, err := s.Lookup(context.Background(), "idem:x"); !errors.Is(err, idempotency.ErrUnavailable) {
		t.Fatalf("Lookup on a dead server = %v, want ErrUnavailable", err)
	}
}

// On a Redis Cluster the record lives in the lock's slot (one hash tag),
// and the protocol runs end to end through a ClusterClient.
func TestRedisStore_cluster_recordInLockSlot(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	cc := cl.Client(t)
	locker := core.New(cc)
	t.Cleanup(func() { _ = locker.Close() })
	store := idempotency.NewRedisStore(cc, "")
	var runs atomic.Int64
	ts := serve(t, locker, store, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "run %d", runs.Add(1))
	}))
	ctx := context.Background()
	slots := map[int64]bool{}
	for i := range 12 {
		key := fmt.Sprint("order-", i)
		first := post(ctx, ts.Client(), ts.URL+"/charges", key, "x")
		again := post(ctx, ts.Client(), ts.URL+"/charges", key, "x")
		if first.status != http.StatusOK || !again.replayed || again.body != first.body {
			t.Fatalf("key %s: first %+v, again %+v", key, first, again)
		}
		lk := idempotency.Scope{Route: "POST /charges", Key: key}.LockKey()
		recSlot := cc.ClusterKeySlot(ctx, store.RecordKey(lk)).Val()
		lockSlot := cc.ClusterKeySlot(ctx, core.KeysFor("", lk).Lock).Val()
		if recSlot != lockSlot {
			t.Fatalf("key %s: record in slot %d, lock in slot %d", key, recSlot, lockSlot)
		}
		slots[recSlot] = true
	}
	if runs.Load() != 12 || len(slots) < 2 {
		t.Fatalf("runs = %d over %d slots; want 12 over several", runs.Load(), len(slots))
	}
}
