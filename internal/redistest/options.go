package redistest

import "time"

// Defaults live here so every helper in the package agrees on them.
const (
	// defaultStartTimeout bounds how long Start waits for PING to answer.
	// Generous enough for a loaded CI runner replaying a small AOF.
	defaultStartTimeout = 5 * time.Second

	// portAttempts is how many fresh ports Start tries before giving up;
	// only a port race with another process makes a second try necessary.
	portAttempts = 5

	// outputTail is how much redis-server output is kept for failure messages.
	outputTail = 4 << 10
)

// Option configures a server started by Start or StartN.
type Option func(*config)

type config struct {
	args         []string
	startTimeout time.Duration
	// confFile, when set, is passed first (redis-server reads a config file
	// only as its first argument); Sentinel needs one it can rewrite.
	confFile string
}

func newConfig(opts []Option) config {
	c := config{startTimeout: defaultStartTimeout}
	for _, o := range opts {
		o(&c)
	}
	return c
}

// WithArgs appends redis-server command-line arguments after the defaults, so
// they win: WithArgs("--appendonly", "yes", "--appendfsync", "always") turns on
// durable AOF for tests that restart a server and expect the data back.
func WithArgs(args ...string) Option {
	return func(c *config) { c.args = append(c.args, args...) }
}

// WithStartTimeout overrides how long to wait for the server to answer PING,
// on the first start and on every Restart.
func WithStartTimeout(d time.Duration) Option {
	if d <= 0 {
		panic("redistest: WithStartTimeout needs a positive duration")
	}
	return func(c *config) { c.startTimeout = d }
}
