package redistest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// MasterName is the name the sentinels of a SentinelGroup monitor.
const MasterName = "fencedlock"

// SentinelGroup is one master, one replica and three sentinels, each its
// own process on a free port. The replica reaches the master through Link,
// a Proxy, so a test can hold back replication (Link.Block) and then crash
// the master (Master.Kill) with writes the replica never saw.
type SentinelGroup struct {
	tb        testing.TB
	Master    *Server
	Replica   *Server
	Link      *Proxy // the replication link, replica -> master
	Sentinels []*Server
}

// StartSentinel starts a group with fast failure detection (down after
// 500ms) and waits until the replica is in sync. opts apply to the master
// and the replica. Call WaitDiscovered before a test that needs a failover.
func StartSentinel(tb testing.TB, opts ...Option) *SentinelGroup {
	tb.Helper()
	g := &SentinelGroup{tb: tb}
	// No 5s wait for more replicas before a first (diskless) sync, on
	// either server: the replica may become the master.
	opts = append(append([]Option(nil), opts...), WithArgs("--repl-diskless-sync-delay", "0"))
	g.Master = Start(tb, opts...)
	g.Link = NewProxy(tb, g.Master.Addr())
	_, linkPort, _ := net.SplitHostPort(g.Link.Addr())
	ro := append(append([]Option(nil), opts...), WithArgs("--replicaof", "127.0.0.1", linkPort))
	g.Replica = Start(tb, ro...)
	g.waitInfo(g.Replica, "replication", "master_link_status:up", 10*time.Second)
	// The master counts a replica (for WAIT, so for WithReplicaAck) only
	// from its first REPLCONF ACK.
	g.waitOnline(10 * time.Second)

	// failover-timeout is long on purpose: a sentinel "fixes" a replica
	// whose master address is not the monitored one (ours goes through
	// Link) once that long has passed, and would connect it around the
	// proxy. A first failover does not wait for it; only a retry after a
	// failed election would (2x).
	for range 3 {
		dir := tb.TempDir()
		conf := filepath.Join(dir, "sentinel.conf")
		text := fmt.Sprintf(`sentinel monitor %[1]s 127.0.0.1 %[2]d 2
sentinel down-after-milliseconds %[1]s 500
sentinel failover-timeout %[1]s 30000
sentinel parallel-syncs %[1]s 1
`, MasterName, g.Master.Port())
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			tb.Fatal(err)
		}
		s := Start(tb, WithArgs("--sentinel"), func(c *config) { c.confFile = conf })
		g.Sentinels = append(g.Sentinels, s)
	}
	// Even then the master streams nothing to the replica (a GETACK
	// included) until that first ACK, sent on the replica's one-second
	// cron: a WAIT after any propagated write (the sentinels' hellos count)
	// waited up to a second, longer than the suites' short TTLs, so an
	// acquire with WithReplicaAck came back after its lease
	// (core.ErrLateGrant). Wait for a WAIT that returns at once.
	g.waitAcks(10 * time.Second)
	return g
}

// SentinelAddrs lists the sentinels' addresses.
func (g *SentinelGroup) SentinelAddrs() []string {
	addrs := make([]string, len(g.Sentinels))
	for i, s := range g.Sentinels {
		addrs[i] = s.Addr()
	}
	return addrs
}

// Client returns a new go-redis failover client for the group, closed when
// tb ends. opts, when given, is the starting point (MasterName and
// SentinelAddrs are filled in).
func (g *SentinelGroup) Client(tb testing.TB, opts ...*redis.FailoverOptions) *redis.Client {
	tb.Helper()
	o := &redis.FailoverOptions{}
	if len(opts) > 0 && opts[0] != nil {
		c := *opts[0]
		o = &c
	}
	o.MasterName = MasterName
	o.SentinelAddrs = g.SentinelAddrs()
	c := redis.NewFailoverClient(o)
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// WaitDiscovered waits until every sentinel knows the replica and the
// other sentinels: before that, a failover cannot happen.
func (g *SentinelGroup) WaitDiscovered(timeout time.Duration) {
	g.tb.Helper()
	deadline := time.Now().Add(timeout)
	for _, s := range g.Sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr()})
		for {
			m, err := sc.Master(context.Background(), MasterName).Result()
			if err == nil && m["num-slaves"] == "1" && m["num-other-sentinels"] == strconv.Itoa(len(g.Sentinels)-1) {
				break
			}
			if time.Now().After(deadline) {
				_ = sc.Close()
				g.tb.Fatalf("redistest: sentinel %s has not discovered the group after %v: %v %v", s.Addr(), timeout, m, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		_ = sc.Close()
	}
}

// WaitFailover waits until every sentinel names the replica as the master
// (a client may ask any of them) and the replica reports role:master.
func (g *SentinelGroup) WaitFailover(timeout time.Duration) {
	g.tb.Helper()
	deadline := time.Now().Add(timeout)
	want := g.Replica.Addr()
	for {
		agree := 0
		for _, s := range g.Sentinels {
			sc := redis.NewSentinelClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1})
			addr, err := sc.GetMasterAddrByName(context.Background(), MasterName).Result()
			_ = sc.Close()
			if err == nil && len(addr) == 2 && net.JoinHostPort(addr[0], addr[1]) == want {
				agree++
			}
		}
		if agree == len(g.Sentinels) {
			info, err := command(want, time.Second, "INFO", "replication")
			if err == nil && strings.Contains(info, "role:master\r\n") {
				return
			}
		}
		if time.Now().After(deadline) {
			g.tb.Fatalf("redistest: no failover to %s after %v", want, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// WaitSynced waits until the replica has applied everything the master
// wrote so far (WAIT on the master).
func (g *SentinelGroup) WaitSynced(timeout time.Duration) {
	g.tb.Helper()
	n, err := command(g.Master.Addr(), timeout+time.Second, "WAIT", "1", strconv.FormatInt(timeout.Milliseconds(), 10))
	if err != nil || n != "1" {
		g.tb.Fatalf("redistest: replica not in sync after %v: %q %v", timeout, n, err)
	}
}

func (g *SentinelGroup) waitInfo(s *Server, section, want string, timeout time.Duration) {
	g.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		info, err := command(s.Addr(), time.Second, "INFO", section)
		if err == nil && strings.Contains(info, want+"\r\n") {
			return
		}
		if time.Now().After(deadline) {
			g.tb.Fatalf("redistest: %s: no %q after %v: %v", s.Addr(), want, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitOnline waits until the master lists the replica as online.
func (g *SentinelGroup) waitOnline(timeout time.Duration) {
	g.tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		info, err := command(g.Master.Addr(), time.Second, "INFO", "replication")
		if err == nil && strings.Contains(info, "connected_slaves:1\r\n") && strings.Contains(info, ",state=online,") {
			return
		}
		if time.Now().After(deadline) {
			g.tb.Fatalf("redistest: %s: replica not online after %v: %v", g.Master.Addr(), timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitAcks waits until a write is acknowledged by the replica at once.
// WAIT counts from the connection's replication offset as of its last
// command, so the write and the WAIT go on one connection.
func (g *SentinelGroup) waitAcks(timeout time.Duration) {
	g.tb.Helper()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: g.Master.Addr()})
	defer rdb.Close()
	cn := rdb.Conn()
	defer cn.Close()
	for deadline := time.Now().Add(timeout); ; {
		start := time.Now()
		err := cn.Set(ctx, "redistest:probe", "1", 0).Err()
		var n int64
		if err == nil {
			n, err = cn.Do(ctx, "WAIT", 1, 1000).Int64()
		}
		if err == nil && n == 1 && time.Since(start) < 100*time.Millisecond {
			_ = cn.Del(ctx, "redistest:probe").Err()
			return
		}
		if time.Now().After(deadline) {
			g.tb.Fatalf("redistest: %s: WAIT for the replica still slow or short after %v: %d %v", g.Master.Addr(), timeout, n, err)
		}
	}
}
