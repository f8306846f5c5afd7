package redistest_test

import (
	"strconv"
	"testing"

	"github.com/fencedlock/fencedlock/internal/redistest"
)

func TestStartCluster_servesEverySlot(t *testing.T) {
	cl := redistest.StartCluster(t, 3)
	cc := cl.Client(t)
	ctx := t.Context()
	owners := map[string]bool{}
	for i := range 30 {
		k := "k" + strconv.Itoa(i)
		if err := cc.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		slot, err := cc.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		owner := cl.Owner(int(slot))
		if n, err := owner.Client(t).Exists(ctx, k).Result(); err != nil || n != 1 {
			t.Fatalf("key %s (slot %d) not on its owner %s: %d %v", k, slot, owner.Addr(), n, err)
		}
		owners[owner.Addr()] = true
	}
	if len(owners) != 3 {
		t.Fatalf("keys landed on %d of 3 masters", len(owners))
	}
}
