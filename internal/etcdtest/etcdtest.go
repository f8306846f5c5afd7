// Package etcdtest starts real etcd processes for integration tests: a single
// member, or a cluster of n members, each on free loopback ports with a
// private data directory, and lets a test kill, freeze and restart members
// and find the leader.
//
// The etcd backend's guarantees (linearizable acquisition, fences that
// survive a leader failover, leases that end on the server) only mean
// something against the real server, so its tests use Start and
// StartCluster. When the etcd binary is missing the tests skip; set
// FENCEDLOCK_REQUIRE_ETCD=1 (as CI does) to make that a failure, so a broken
// CI image cannot turn the integration suite into a silent no-op. Debian and
// Ubuntu ship the server as the etcd-server package (binary /usr/bin/etcd).
package etcdtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	binary     = "etcd"
	requireEnv = "FENCEDLOCK_REQUIRE_ETCD"
	missingMsg = "etcdtest: etcd not found on PATH; install it (Debian: apt-get install etcd-server) to run the etcd integration tests"
)

// errAddrInUse means another process won the race for a port we picked.
var errAddrInUse = errors.New("etcdtest: port already in use")

// clusterSeq makes cluster tokens unique within the test binary.
var clusterSeq atomic.Int64

// Available reports whether Start can run etcd here, for tests that want to
// choose rather than skip.
func Available() bool {
	if !supported {
		return false
	}
	_, err := exec.LookPath(binary)
	return err == nil
}

// Cluster is a set of etcd members owned by a test. Members keep their
// ports and data directories across Kill and Restart. Methods that can fail
// call Fatal on the testing.TB given to Start, so call them from that
// test's goroutine.
type Cluster struct {
	tb      testing.TB
	bin     string
	cfg     config
	root    string
	members []*Member
}

// Member is one etcd process of a Cluster.
type Member struct {
	c          *Cluster
	name       string
	dir        string
	clientPort int
	peerPort   int
	initial    string // --initial-cluster
	token      string
	out        *tail
	mark       string // header written before the latest launch

	mu       sync.Mutex
	proc     *process // nil while the member is not running
	reported bool     // output already shown in a failure message
}

// process is one run of etcd; done is closed once it has been reaped.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs a single-member etcd cluster, waits until it is healthy and
// kills it when the test ends. It skips the test when etcd is not installed
// (see the package doc for FENCEDLOCK_REQUIRE_ETCD).
func Start(tb testing.TB, opts ...Option) *Cluster {
	tb.Helper()
	return StartCluster(tb, 1, opts...)
}

// StartCluster runs an n-member cluster (3 tolerates one failed member),
// waits until every member reports healthy, and kills them when the test
// ends.
func StartCluster(tb testing.TB, n int, opts ...Option) *Cluster {
	tb.Helper()
	if n < 1 {
		panic("etcdtest: StartCluster needs n >= 1")
	}
	bin := lookup(tb)
	c := &Cluster{tb: tb, bin: bin, cfg: newConfig(opts)}
	c.root = c.dataRoot()
	// Registered after the data root's removal, so it runs first: the
	// processes are gone before their directories are removed.
	tb.Cleanup(c.cleanup)

	var err error
	for attempt := range portAttempts {
		if err = c.bootstrap(n, attempt); !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		c.fatal(err)
	}
	return c
}

// dataRoot returns a directory removed when the test ends: on tmpfs when it
// exists (fsync there is nearly free), in the test's TempDir otherwise.
func (c *Cluster) dataRoot() string {
	if !c.cfg.onDisk {
		if fi, err := os.Stat(shmRoot); err == nil && fi.IsDir() {
			if dir, err := os.MkdirTemp(shmRoot, "etcdtest-"); err == nil {
				c.tb.Cleanup(func() { _ = os.RemoveAll(dir) })
				return dir
			}
		}
	}
	return c.tb.TempDir()
}

// bootstrap picks ports, starts every member of a new cluster and waits for
// all of them. On error nothing is left running.
func (c *Cluster) bootstrap(n, attempt int) error {
	ports, err := freePorts(2 * n)
	if err != nil {
		return err
	}
	token := fmt.Sprintf("etcdtest-%d-%d", os.Getpid(), clusterSeq.Add(1))
	c.members = make([]*Member, n)
	var initial []string
	for i := range c.members {
		m := &Member{
			c:          c,
			name:       "m" + strconv.Itoa(i),
			dir:        filepath.Join(c.root, fmt.Sprintf("try%d", attempt), "m"+strconv.Itoa(i)),
			clientPort: ports[2*i],
			peerPort:   ports[2*i+1],
			token:      token,
			out:        &tail{max: outputTail},
		}
		initial = append(initial, m.name+"="+m.peerURL())
		c.members[i] = m
	}
	for _, m := range c.members {
		m.initial = strings.Join(initial, ",")
		if err := os.MkdirAll(m.dir, 0o700); err != nil {
			return fmt.Errorf("etcdtest: %w", err)
		}
	}
	for _, m := range c.members {
		if err := m.launch(); err != nil {
			c.killAll()
			return err
		}
	}
	if err := c.waitHealthy(c.members); err != nil {
		c.killAll()
		return err
	}
	return nil
}

// Members returns the members in start order.
func (c *Cluster) Members() []*Member { return c.members }

// Endpoints returns every member's client URL, for clientv3.Config.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.members))
	for i, m := range c.members {
		eps[i] = m.Endpoint()
	}
	return eps
}

// ClientConfig returns a client configuration for every member with a
// silent logger and short dial timeout; tests adjust it before clientv3.New.
func (c *Cluster) ClientConfig() clientv3.Config {
	return clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 2 * time.Second,
		Logger:      zap.NewNop(),
	}
}

// Client returns a new etcd client for the cluster, closed when tb ends, so
// each test owns its connections and goleak stays quiet.
func (c *Cluster) Client(tb testing.TB) *clientv3.Client {
	tb.Helper()
	cli, err := clientv3.New(c.ClientConfig())
	if err != nil {
		tb.Fatalf("etcdtest: client: %v", err)
	}
	tb.Cleanup(func() { _ = cli.Close() })
	return cli
}

// WaitHealthy waits until every running member reports healthy (it sees a
// leader and has no alarm).
func (c *Cluster) WaitHealthy() {
	c.tb.Helper()
	var running []*Member
	for _, m := range c.members {
		if m.Running() {
			running = append(running, m)
		}
	}
	if err := c.waitHealthy(running); err != nil {
		c.fatal(err)
	}
}

// Leader waits until exactly one running member says it is the leader and
// returns it.
func (c *Cluster) Leader() *Member {
	c.tb.Helper()
	deadline := time.Now().Add(c.cfg.startTimeout)
	for {
		var leaders []*Member
		for _, m := range c.members {
			if !m.Running() {
				continue
			}
			if body, err := httpGet(m.clientPort, "/metrics", 500*time.Millisecond); err == nil &&
				bytes.Contains(body, []byte("\netcd_server_is_leader 1\n")) {
				leaders = append(leaders, m)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		if time.Now().After(deadline) {
			c.fatal(fmt.Errorf("etcdtest: no single leader after %v (%d claim it)", c.cfg.startTimeout, len(leaders)))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Cluster) killAll() {
	for _, m := range c.members {
		m.Kill()
	}
}

// cleanup kills every member and shows their logs when the test failed,
// since they often say why (a rejected flag, a lost quorum).
func (c *Cluster) cleanup() {
	c.killAll()
	if !c.tb.Failed() {
		return
	}
	for _, m := range c.members {
		m.mu.Lock()
		reported := m.reported
		m.mu.Unlock()
		if !reported {
			c.tb.Logf("etcdtest: output of %s (%s):\n%s", m.name, m.Addr(), m.out.String())
		}
	}
}

func (c *Cluster) fatal(err error) {
	c.tb.Helper()
	var b strings.Builder
	for _, m := range c.members {
		m.mu.Lock()
		m.reported = true
		m.mu.Unlock()
		fmt.Fprintf(&b, "\n--- %s output (tail) ---\n%s", m.name, m.out.String())
	}
	c.tb.Fatalf("%v%s", err, b.String())
}

// kill SIGKILLs the process group and waits until the leader is reaped.
func (p *process) kill() {
	select {
	case <-p.done:
		return // already reaped; its pid may belong to someone else now
	default:
	}
	_ = signalGroup(p.cmd.Process.Pid, sigKill)
	<-p.done
}

// lookup finds etcd or ends the test: Skip normally, Fatal when the
// environment insists on integration tests.
func lookup(tb testing.TB) string {
	tb.Helper()
	msg := missingMsg
	bin, err := exec.LookPath(binary)
	if supported && err == nil {
		return bin
	}
	if !supported {
		msg = "etcdtest: real etcd tests run on Linux only"
	}
	if os.Getenv(requireEnv) == "1" {
		tb.Fatal(msg + " (" + requireEnv + "=1)")
	}
	tb.Skip(msg)
	return ""
}

// freePorts asks the kernel for n distinct unused ports. They are free only
// until someone else takes one, which waitHealthy detects and Start retries.
func freePorts(n int) ([]int, error) {
	lns := make([]net.Listener, 0, n)
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcdtest: find a free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// httpGet fetches path from a member's client port on a fresh connection
// and returns the body of a 200 response. Plain HTTP/1.0 keeps it free of
// chunked bodies, pooled connections and their goroutines.
func httpGet(port int, path string, timeout time.Duration) ([]byte, error) {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), timeout)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, err
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path); err != nil {
		return nil, err
	}
	r := bufio.NewReader(conn)
	status, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	_, body, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	if !strings.Contains(status, " 200 ") {
		return body, fmt.Errorf("etcdtest: GET %s: %s", path, strings.TrimSpace(status))
	}
	return body, nil
}

// tail keeps the last max bytes written to it; etcd writes its log here from
// the exec copy goroutine while tests may read it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
