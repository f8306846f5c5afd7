package etcdtest

import "time"

// Defaults live here so every helper in the package agrees on them.
const (
	// defaultStartTimeout bounds how long Start waits for every member to
	// report healthy (which needs an elected leader). Generous for a loaded
	// two-core CI runner under the race detector.
	defaultStartTimeout = 15 * time.Second

	// defaultHeartbeat and defaultElection are tighter than etcd's 100ms /
	// 1s so that a killed leader is replaced within about a second, yet loose
	// enough that a busy runner does not hold spurious elections.
	defaultHeartbeat = 50 * time.Millisecond
	defaultElection  = 500 * time.Millisecond

	// portAttempts is how many fresh port sets Start tries before giving up;
	// only a port race with another process makes a second try necessary.
	portAttempts = 5

	// outputTail is how much etcd output is kept per member for failure
	// messages.
	outputTail = 8 << 10

	// shmRoot holds data directories when it exists: on tmpfs an fsync is
	// nearly free, so tests and benchmarks measure the lock, not the disk.
	shmRoot = "/dev/shm"
)

// Option configures the members started by Start or StartCluster.
type Option func(*config)

type config struct {
	args         []string
	startTimeout time.Duration
	heartbeat    time.Duration
	election     time.Duration
	onDisk       bool
}

func newConfig(opts []Option) config {
	c := config{
		startTimeout: defaultStartTimeout,
		heartbeat:    defaultHeartbeat,
		election:     defaultElection,
	}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// WithArgs appends etcd command-line arguments after the defaults, so they
// win: WithArgs("--max-txn-ops", "16").
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// WithStartTimeout overrides how long to wait for members to report
// healthy, on the first start and on every Restart.
func WithStartTimeout(d time.Duration) Option {
	if d <= 0 {
		panic("etcdtest: WithStartTimeout needs a positive duration")
	}
	return func(c *config) { c.startTimeout = d }
}

// WithTiming sets the Raft heartbeat interval and election timeout (defaults
// 50ms and 500ms). etcd's minimum lease TTL is 1.5 election timeouts rounded
// up to whole seconds.
func WithTiming(heartbeat, election time.Duration) Option {
	if heartbeat <= 0 || election < 5*heartbeat {
		panic("etcdtest: WithTiming needs heartbeat > 0 and election >= 5*heartbeat")
	}
	return func(c *config) { c.heartbeat, c.election = heartbeat, election }
}

// WithDiskData keeps data directories on disk (the test's TempDir) instead
// of tmpfs, for tests that care about real fsync latency.
func WithDiskData() Option { return func(c *config) { c.onDisk = true } }
