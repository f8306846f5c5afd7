package redistest

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// Cluster is a Redis Cluster of masters without replicas, each a Server
// with its own port, cluster bus port and data directory.
type Cluster struct {
	tb      testing.TB
	Servers []*Server
	buses   []int
	moved   map[int]int // slot -> server index, where MoveSlot put it
}

// StartCluster starts masters servers in cluster mode, splits the hash
// slots evenly among them, joins them and waits until every node reports
// cluster_state:ok. Servers are killed when the test ends. The cluster
// configuration lives in each server's directory (nodes.conf), so a
// restarted node comes back empty but still a member.
func StartCluster(tb testing.TB, masters int, opts ...Option) *Cluster {
	tb.Helper()
	if masters < 1 {
		panic("redistest: StartCluster needs at least one master")
	}
	c := &Cluster{tb: tb}
	for range masters {
		// The bus port is chosen explicitly: the default (port+10000) may
		// be taken or out of range.
		bus, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		o := append(append([]Option(nil), opts...), WithArgs(
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-port", strconv.Itoa(bus),
			"--cluster-node-timeout", "2000",
		))
		c.Servers = append(c.Servers, Start(tb, o...))
		c.buses = append(c.buses, bus)
	}
	timeout := c.Servers[0].cfg.startTimeout
	for i, s := range c.Servers {
		// The same split as owner: slot*masters/clusterSlots.
		lo := (i*clusterSlots + masters - 1) / masters
		hi := ((i+1)*clusterSlots+masters-1)/masters - 1
		// Distinct epochs up front spare the nodes a collision round.
		c.must(s.Addr(), timeout, "CLUSTER", "SET-CONFIG-EPOCH", strconv.Itoa(i+1))
		c.must(s.Addr(), timeout, "CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi))
	}
	for i, s := range c.Servers[1:] {
		c.must(c.Servers[0].Addr(), timeout, "CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(s.Port()), strconv.Itoa(c.buses[i+1]))
	}
	c.WaitOK(10 * time.Second)
	return c
}

func (c *Cluster) must(addr string, timeout time.Duration, args ...string) string {
	c.tb.Helper()
	out, err := command(addr, timeout, args...)
	if err != nil {
		c.tb.Fatalf("redistest: %s on %s: %v", strings.Join(args, " "), addr, err)
	}
	return out
}

// WaitOK waits until every running node sees all slots served and all
// nodes known.
func (c *Cluster) WaitOK(timeout time.Duration) {
	c.tb.Helper()
	deadline := time.Now().Add(timeout)
	want := []string{
		"cluster_state:ok",
		"cluster_slots_ok:" + strconv.Itoa(clusterSlots),
		"cluster_known_nodes:" + strconv.Itoa(len(c.Servers)),
	}
	for {
		var missing string
		for _, s := range c.Servers {
			info, err := command(s.Addr(), time.Second, "CLUSTER", "INFO")
			if err != nil {
				missing = fmt.Sprintf("%s: %v", s.Addr(), err)
				break
			}
			for _, w := range want {
				if !strings.Contains(info, w+"\r\n") {
					missing = s.Addr() + " lacks " + w
				}
			}
			if missing != "" {
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			c.tb.Fatalf("redistest: cluster not ready after %v: %s", timeout, missing)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Addrs lists the nodes' addresses.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Servers))
	for i, s := range c.Servers {
		addrs[i] = s.Addr()
	}
	return addrs
}

// Client returns a new cluster client, closed when tb ends.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// owner returns the index of the server that serves slot.
func (c *Cluster) owner(slot int) int {
	if i, ok := c.moved[slot]; ok {
		return i
	}
	return slot * len(c.Servers) / clusterSlots
}

// Owner returns the server that serves slot.
func (c *Cluster) Owner(slot int) *Server { return c.Servers[c.owner(slot)] }

// MoveSlot hands an empty slot to the server at index to, the way a
// resharding tool does once the keys are gone (IMPORTING, MIGRATING, then
// NODE on every member). Clients subscribed to shard channels of the slot
// are unsubscribed by the old owner.
func (c *Cluster) MoveSlot(slot, to int) {
	c.tb.Helper()
	from := c.owner(slot)
	if from == to {
		return
	}
	timeout := c.Servers[0].cfg.startTimeout
	src, dst := c.Servers[from].Addr(), c.Servers[to].Addr()
	if n := c.must(src, timeout, "CLUSTER", "COUNTKEYSINSLOT", strconv.Itoa(slot)); n != "0" {
		c.tb.Fatalf("redistest: MoveSlot: slot %d holds %s keys", slot, n)
	}
	srcID := c.must(src, timeout, "CLUSTER", "MYID")
	dstID := c.must(dst, timeout, "CLUSTER", "MYID")
	sl := strconv.Itoa(slot)
	c.must(dst, timeout, "CLUSTER", "SETSLOT", sl, "IMPORTING", srcID)
	c.must(src, timeout, "CLUSTER", "SETSLOT", sl, "MIGRATING", dstID)
	c.must(dst, timeout, "CLUSTER", "SETSLOT", sl, "NODE", dstID)
	c.must(src, timeout, "CLUSTER", "SETSLOT", sl, "NODE", dstID)
	for i, s := range c.Servers {
		if i != from && i != to {
			c.must(s.Addr(), timeout, "CLUSTER", "SETSLOT", sl, "NODE", dstID)
		}
	}
	if c.moved == nil {
		c.moved = make(map[int]int)
	}
	c.moved[slot] = to
}
