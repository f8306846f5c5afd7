package etcdtest_test

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/fencedlock/fencedlock/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestStart_putGet(t *testing.T) {
	c := etcdtest.Start(t)
	if n := len(c.Members()); n != 1 {
		t.Fatalf("members = %d", n)
	}
	if ep := c.Endpoints()[0]; !strings.HasPrefix(ep, "http://127.0.0.1:") {
		t.Fatalf("endpoint %q", ep)
	}
	cli := c.Client(t)
	ctx := ctxT(t, 5*time.Second)
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get = %v, %v", resp, err)
	}
	if l := c.Leader(); l != c.Members()[0] {
		t.Fatalf("leader = %s", l.Name())
	}
}

// TestStartCluster_leaderKill kills the leader of three members: the other
// two elect a new one, writes still commit, and the old leader rejoins with
// its data after Restart.
func TestStartCluster_leaderKill(t *testing.T) {
	c := etcdtest.StartCluster(t, 3)
	cli := c.Client(t)
	ctx := ctxT(t, 20*time.Second)
	if _, err := cli.Put(ctx, "before", "1"); err != nil {
		t.Fatal(err)
	}
	old := c.Leader()
	old.Kill()
	if old.Running() {
		t.Fatal("killed member still running")
	}
	nl := c.Leader()
	if nl == old {
		t.Fatal("the killed member is still the leader")
	}
	for {
		_, err := cli.Put(ctx, "after", "2")
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no write after the leader died: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	old.Restart()
	c.WaitHealthy()
	one, err := clientv3.New(clientv3.Config{Endpoints: []string{old.Endpoint()}, DialTimeout: 2 * time.Second, Logger: c.ClientConfig().Logger})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	resp, err := one.Get(ctx, "after") // linearizable: served once caught up
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("restarted member: %v, %v", resp, err)
	}
}

func TestMember_stopCont(t *testing.T) {
	c := etcdtest.Start(t)
	cfg := c.ClientConfig()
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	m := c.Members()[0]
	m.Stop()
	time.Sleep(50 * time.Millisecond) // let every thread take the signal
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	_, err = cli.Put(ctx, "k", "v")
	cancel()
	m.Cont()
	if err == nil {
		t.Fatal("a frozen member answered")
	}
	if _, err := cli.Put(ctxT(t, 5*time.Second), "k", "v"); err != nil {
		t.Fatalf("after Cont: %v", err)
	}
}
