package etcdlock_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/backendtest"
	"github.com/fencedlock/fencedlock/core/etcdlock"
	"github.com/fencedlock/fencedlock/internal/etcdtest"
)

// etcdHarness runs the behaviour suite on a cluster. The suite names the
// Redis-style lock key; on etcd that key is the queue prefix's stem.
func etcdHarness(t *testing.T, c *etcdtest.Cluster) backendtest.Harness {
	cli := c.Client(t)
	return backendtest.Harness{
		NewClient: func(t testing.TB, opts ...core.Option) *core.Client {
			lc, err := etcdlock.New(cli, opts...)
			if err != nil {
				t.Fatal(err)
			}
			return lc
		},
		DeleteKey: func(t testing.TB, key string) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := cli.Delete(ctx, key+"/", clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
		},
		// An expired lock's entry is deleted by the Backend that held it,
		// one round trip after its TTL (Redis drops the key at the TTL
		// itself), so a key that still exists gets a moment to go.
		Exists: func(t testing.TB, key string) bool {
			deadline := time.Now().Add(500 * time.Millisecond)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := cli.Get(ctx, key+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
				cancel()
				if err != nil {
					t.Fatal(err)
				}
				if resp.Count == 0 {
					return false
				}
				if time.Now().After(deadline) {
					return true
				}
				time.Sleep(10 * time.Millisecond)
			}
		},
	}
}

// The witness runs fewer critical sections than on Redis: every hand-over
// between the suite's four clients is two Raft writes and a watch event.
func TestSuite_etcd(t *testing.T) {
	h := etcdHarness(t, etcdtest.Start(t))
	h.Sections = 1000
	backendtest.Run(t, h)
}

func TestSuite_etcdCluster(t *testing.T) {
	h := etcdHarness(t, etcdtest.StartCluster(t, 3))
	h.Sections = 500
	backendtest.Run(t, h)
}
