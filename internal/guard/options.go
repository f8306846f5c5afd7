package guard

import (
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// The adapters' policy options (WithTTL, WithWait, ...) are validated and
// applied here once; httpmw, ginmw and grpcmw only wrap them in their own
// Option types and doc comments. pkg is the adapter's name, used as the
// prefix of the panic a construction mistake raises.

// SetTTL sets Policy.TTL; d must be positive.
func SetTTL(pkg string, d time.Duration) func(*Policy) {
	if d <= 0 {
		panic(pkg + ": WithTTL needs a positive duration")
	}
	return func(p *Policy) { p.TTL = d }
}

// SetWait sets Policy.Wait; d must not be negative (0: fail fast).
func SetWait(pkg string, d time.Duration) func(*Policy) {
	if d < 0 {
		panic(pkg + ": WithWait needs a duration >= 0")
	}
	return func(p *Policy) { p.Wait = d }
}

// SetAutoRefresh turns renewal on, with at most one positive interval.
func SetAutoRefresh(pkg string, interval []time.Duration) func(*Policy) {
	if len(interval) > 1 {
		panic(pkg + ": WithAutoRefresh takes at most one interval")
	}
	var every time.Duration
	if len(interval) == 1 {
		if every = interval[0]; every <= 0 {
			panic(pkg + ": WithAutoRefresh needs a positive interval")
		}
	}
	return func(p *Policy) { p.AutoRefresh, p.RefreshEvery = true, every }
}

// SetMaxHold sets Policy.MaxHold; d must be positive.
func SetMaxHold(pkg string, d time.Duration) func(*Policy) {
	if d <= 0 {
		panic(pkg + ": WithMaxHold needs a positive duration")
	}
	return func(p *Policy) { p.MaxHold = d }
}

// SetFailOpen sets Policy.FailOpen.
func SetFailOpen() func(*Policy) { return func(p *Policy) { p.FailOpen = true } }

// SetName sets Policy.Name.
func SetName(name string) func(*Policy) { return func(p *Policy) { p.Name = name } }

// SetReleaseTimeout sets Policy.ReleaseTimeout; d must be positive.
func SetReleaseTimeout(pkg string, d time.Duration) func(*Policy) {
	if d <= 0 {
		panic(pkg + ": WithReleaseTimeout needs a positive duration")
	}
	return func(p *Policy) { p.ReleaseTimeout = d }
}

// AddLockOptions appends core options; none may be nil.
func AddLockOptions(pkg string, opts []core.Option) func(*Policy) {
	for _, o := range opts {
		if o == nil {
			panic(pkg + ": WithLockOptions with a nil core.Option")
		}
	}
	return func(p *Policy) { p.Options = append(p.Options, opts...) }
}
