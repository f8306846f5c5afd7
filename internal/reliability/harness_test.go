//go:build linux

package reliability_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/fencedlock/fencedlock/internal/redistest"
)

// spec is one run: a Redis deployment, N worker processes contending on
// Keys, and an injector that breaks things while they work.
type spec struct {
	Workers  int
	Keys     []string
	Topology string // "" one server, "sentinel" (redistest.StartSentinel), "redlock" (5 servers)
	Server   []redistest.Option
	Proxies  bool                         // a parent-side proxy per worker (per worker and node for Redlock)
	MinRun   time.Duration                // a longer fault window than the suite's default, if needed
	Worker   workerConfig                 // template; ID, Redis, DB, MaxRun and Seed are filled in
	Tweak    func(i int, w *workerConfig) // per-worker changes to the template
	DB       string                       // "" for lockStore (PostgreSQL, else SQLite)
	Limit    int                          // the permit witness's bound (the n holders are held to)
	// Inject runs on the test goroutine until r.ctx ends and must heal
	// whatever it broke before it returns.
	Inject func(r *run)
}

// run is a spec being executed.
type run struct {
	t        *testing.T
	spec     spec
	srv      *redistest.Server        // the single server
	sg       *redistest.SentinelGroup // or the Sentinel group
	nodes    []*redistest.Server      // or the Redlock nodes
	down     map[int]bool             // Redlock nodes the injector has killed
	rdb      *redis.Client            // the parent's own connection (single server, Sentinel)
	audited  []*redis.Client          // every server the audit looks at
	proxies  []*redistest.Proxy       // per worker
	nodeProx [][]*redistest.Proxy     // per worker and Redlock node
	procs    []*proc
	dbc      dbConfig
	db       *sql.DB
	ctx      context.Context // the fault-injection window
	acqs     chan event      // fresh acquisitions, for timing faults

	faults atomic.Int64
	mu     sync.Mutex
	events []event
	notes  []string
}

type proc struct {
	id      int
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	out     *tail // stderr and non-event stdout, for failure messages
	done    chan struct{}
	waitErr error
	seen    chan struct{} // closed at the first event
	once    sync.Once
	paused  atomic.Bool
}

// execute runs s for d and returns what the checkers found.
func execute(t *testing.T, s spec, d time.Duration) *outcome {
	t.Helper()
	r := &run{t: t, spec: s, acqs: make(chan event, 256), down: map[int]bool{}}
	t0 := time.Now()
	var phases []string
	phase := func(name string) {
		phases = append(phases, fmt.Sprintf("%s %v", name, time.Since(t0).Round(100*time.Millisecond)))
	}
	defer func() { t.Logf("timeline: %s", strings.Join(phases, ", ")) }()
	d = max(d, s.MinRun)
	direct := func(addr string) *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: 5, MinRetryBackoff: 20 * time.Millisecond})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	switch s.Topology {
	case "":
		r.srv = redistest.Start(t, s.Server...)
		r.rdb = direct(r.srv.Addr())
		r.audited = []*redis.Client{r.rdb}
	case "sentinel":
		r.sg = redistest.StartSentinel(t, s.Server...)
		r.sg.WaitDiscovered(20 * time.Second)
		r.rdb = r.sg.Client(t, &redis.FailoverOptions{MaxRetries: 10, MinRetryBackoff: 50 * time.Millisecond})
		r.audited = []*redis.Client{r.rdb}
	case "redlock":
		r.nodes = redistest.StartN(t, 5, s.Server...)
		for _, n := range r.nodes {
			r.audited = append(r.audited, direct(n.Addr()))
		}
	default:
		t.Fatalf("unknown topology %q", s.Topology)
	}
	if s.DB == "" {
		r.dbc, r.db = lockStore(t)
		setReportInfo("", r.dbc.Name)
	} else {
		var ok bool
		if r.dbc, r.db, ok = openDB(t, s.DB); !ok {
			t.Skipf("%s unreachable", s.DB)
		}
	}
	newTables(t, &r.dbc, r.db, s.Keys)
	if s.Proxies {
		for range s.Workers {
			if r.nodes == nil {
				r.proxies = append(r.proxies, redistest.NewProxy(t, r.srv.Addr()))
				continue
			}
			var ps []*redistest.Proxy
			for _, n := range r.nodes {
				ps = append(ps, redistest.NewProxy(t, n.Addr()))
			}
			r.nodeProx = append(r.nodeProx, ps)
		}
	}
	if r.rdb != nil {
		// A failover client starts its sentinel watcher on first use;
		// start it now, so it is not taken for a goroutine of the run.
		if err := r.rdb.Ping(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// Everything the run starts from here on must be gone when it ends.
	base := goleak.IgnoreCurrent()

	phase("servers up")
	for i := range s.Workers {
		r.spawn(i, d)
	}
	for _, p := range r.procs {
		select {
		case <-p.seen:
		case <-p.done:
			t.Fatalf("worker %d exited before its first event: %v\n%s", p.id, p.waitErr, p.out)
		case <-time.After(30 * time.Second):
			t.Fatalf("worker %d sent nothing for 30s\n%s", p.id, p.out)
		}
	}
	phase("workers up")
	ctx, cancel := context.WithTimeout(context.Background(), d)
	r.ctx = ctx
	if s.Inject != nil {
		s.Inject(r)
	} else {
		<-ctx.Done()
	}
	cancel()
	phase("faults over")
	r.heal()
	r.stop()
	phase("workers exited")

	o := r.audit()
	// A restarted redis-server is a new process with its own reaper and
	// output copier; the Server owns them and ends them at cleanup.
	if err := goleak.Find(base,
		goleak.IgnoreAnyFunction("github.com/fencedlock/fencedlock/internal/redistest.(*Server).launch.func1"),
		goleak.IgnoreAnyFunction("os/exec.(*Cmd).writerDescriptor.func1")); err != nil {
		t.Errorf("goroutines left behind by the run: %v", err)
	}
	phase("audited")
	r.check(o)
	phase("checked")
	return o
}

func (r *run) spawn(i int, d time.Duration) {
	cfg := r.spec.Worker
	cfg.ID = i
	cfg.Keys = r.spec.Keys
	switch {
	case r.sg != nil:
		cfg.Sentinels = r.sg.SentinelAddrs()
	case r.nodes != nil:
		for j, n := range r.nodes {
			if r.nodeProx != nil {
				cfg.Redlock = append(cfg.Redlock, r.nodeProx[i][j].Addr())
			} else {
				cfg.Redlock = append(cfg.Redlock, n.Addr())
			}
		}
	case r.proxies != nil:
		cfg.Redis = r.proxies[i].Addr()
	default:
		cfg.Redis = r.srv.Addr()
	}
	cfg.DB = r.dbc
	cfg.MaxRun = d + time.Minute
	cfg.Seed = uint64(time.Now().UnixNano())
	if r.spec.Tweak != nil {
		r.spec.Tweak(i, &cfg)
	}
	raw, err := json.Marshal(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestWorker$", "-test.count=1",
		"-test.timeout="+(cfg.MaxRun+time.Minute).String())
	cmd.Env = append(os.Environ(), workerEnv+"="+string(raw))
	// If the test binary dies, so do its workers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p := &proc{id: i, cmd: cmd, out: &tail{max: 16 << 10}, done: make(chan struct{}), seen: make(chan struct{})}
	cmd.Stderr = p.out
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		r.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		r.t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("start worker: %v", err)
	}
	r.procs = append(r.procs, p)
	// Owned by the run: stop waits for done.
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, eventPrefix) {
				fmt.Fprintln(p.out, line)
				continue
			}
			var e event
			if err := json.Unmarshal([]byte(line[len(eventPrefix):]), &e); err != nil {
				fmt.Fprintf(p.out, "bad event %q: %v\n", line, err)
				continue
			}
			p.once.Do(func() { close(p.seen) })
			r.add(e)
		}
		_, _ = io.Copy(io.Discard, stdout)
		p.waitErr = cmd.Wait()
	}()
}

func (r *run) add(e event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	switch {
	case e.K == "acq" && e.Res == "ok":
		select {
		case r.acqs <- e:
		default: // nobody is waiting for one right now
		}
	case e.K == "fault":
		r.faults.Add(1)
	}
}

func (r *run) note(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// nextAcq waits for an acquisition made in the last maxAge, skipping older
// ones queued meanwhile. ok is false when the window closed.
func (r *run) nextAcq(maxAge time.Duration) (event, bool) {
	for {
		select {
		case e := <-r.acqs:
			if mono()-e.R <= int64(maxAge) {
				return e, true
			}
		case <-r.ctx.Done():
			return event{}, false
		}
	}
}

func (r *run) drainAcqs() {
	for {
		select {
		case <-r.acqs:
		default:
			return
		}
	}
}

// sleep waits d or until the window closes; it reports whether d passed.
func (r *run) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.ctx.Done():
		return false
	}
}

func (p *proc) stop() {
	if p.paused.CompareAndSwap(false, true) {
		_ = p.cmd.Process.Signal(syscall.SIGSTOP)
	}
}

func (p *proc) cont() {
	if p.paused.CompareAndSwap(true, false) {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
	}
}

// heal undoes every fault the injector may have left behind.
func (r *run) heal() {
	for _, p := range r.procs {
		p.cont()
	}
	for _, p := range r.proxies {
		p.Delay(0)
		p.Unblock()
	}
	for _, ps := range r.nodeProx {
		for _, p := range ps {
			p.Delay(0)
			p.Unblock()
		}
	}
	for i := range r.down {
		r.nodes[i].Restart()
		delete(r.down, i)
	}
}

// stop ends the workers (closing stdin) and waits for them.
func (r *run) stop() {
	for _, p := range r.procs {
		_ = p.stdin.Close()
	}
	deadline := time.After(60 * time.Second)
	for _, p := range r.procs {
		select {
		case <-p.done:
		case <-deadline:
			_ = p.cmd.Process.Kill()
			<-p.done
			r.t.Errorf("worker %d did not stop within 60s\n%s", p.id, p.out)
		}
		if p.waitErr != nil {
			r.t.Errorf("worker %d: %v\n%s", p.id, p.waitErr, p.out)
		}
	}
}

// audit looks for what a clean run must not leave behind: lock keys that
// outlive their lease, keys without a TTL, subscriptions of exited clients.
func (r *run) audit() *outcome {
	o := &outcome{}
	for _, c := range r.audited {
		o.LeftoverAtStop += r.auditServer(c)
	}
	return o
}

// auditServer audits one server and returns the lock keys it held when the
// workers had exited.
func (r *run) auditServer(c *redis.Client) int {
	ctx := context.Background()
	prefix := r.spec.Worker.Prefix
	scan := func() (locks, persistent []string) {
		it := c.Scan(ctx, 0, globEscape(prefix)+"*", 1000).Iterator()
		for it.Next(ctx) {
			k := it.Val()
			if !strings.HasSuffix(k, ":f") {
				locks = append(locks, k)
			}
			if ttl, err := c.PTTL(ctx, k).Result(); err == nil && ttl == -1 {
				persistent = append(persistent, k)
			}
		}
		if err := it.Err(); err != nil {
			r.t.Errorf("audit: SCAN: %v", err)
		}
		return locks, persistent
	}
	locks, persistent := scan()
	atStop := len(locks)
	if len(persistent) > 0 {
		r.t.Errorf("audit: keys without a TTL under %q: %v", prefix, persistent)
	}
	// A lock lost to a fault stays in Redis until its lease ends; nothing
	// may stay longer.
	until := time.Now().Add(r.spec.Worker.TTL + 2*time.Second)
	for len(locks) > 0 && time.Now().Before(until) {
		time.Sleep(50 * time.Millisecond)
		locks, _ = scan()
	}
	if len(locks) > 0 {
		r.t.Errorf("audit: lock keys outlived their lease: %v", locks)
	}
	for _, cmd := range []string{"CHANNELS", "SHARDCHANNELS"} {
		chans, err := c.Do(ctx, "PUBSUB", cmd, globEscape(prefix)+"*").StringSlice()
		if err != nil {
			r.t.Errorf("audit: PUBSUB %s: %v", cmd, err)
		}
		if len(chans) > 0 {
			r.t.Errorf("audit: subscriptions left after every client exited: %v", chans)
		}
	}
	return atStop
}

// globEscape escapes SCAN/PUBSUB pattern characters in a literal prefix.
func globEscape(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[]\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// snapshot returns the recorded events in a stable order.
func (r *run) snapshot() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs := append([]event(nil), r.events...)
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].C < evs[j].C })
	return evs
}

// tail keeps the last max bytes written to it.
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
