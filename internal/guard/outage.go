package guard

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultOutageSummaryEvery is how often, during an outage, an adapter
// writes one summary line instead of one line per failed request.
const DefaultOutageSummaryEvery = 10 * time.Second

// OutageEvent says which record, if any, a request's outcome calls for.
type OutageEvent int

const (
	OutageQuiet     OutageEvent = iota // nothing to log
	OutageFirst                        // the first failure of an outage
	OutageSummary                      // failures counted since the last record
	OutageRecovered                    // the backend answered again
)

// OutageReport is what OutageLog.Observe decided.
type OutageReport struct {
	Event    OutageEvent
	Failures int           // failures since the previous record (Summary, Recovered)
	Window   time.Duration // the time those failures span
	Total    int           // failures since the outage began
	Down     time.Duration // how long the outage has lasted
	FailOpen bool          // this request ran unlocked (WithFailOpen)
}

// OutageLog turns a stream of request outcomes into few log records while
// the backend is unreachable: the first failure, then at most one summary
// per interval with the count, then one line when the backend answers. It
// starts no goroutine: a summary is due at the first failure after the
// interval. One OutageLog serves one middleware; it is safe for concurrent
// use and costs one atomic load per request while the backend is up.
type OutageLog struct {
	interval time.Duration
	now      func() time.Time
	down     atomic.Bool

	mu       sync.Mutex
	since    time.Time // first failure of the current outage
	last     time.Time // last record written
	failures int       // since last
	total    int       // since since
}

// NewOutageLog returns an OutageLog summarising every interval (<= 0:
// DefaultOutageSummaryEvery); now is the clock (nil: time.Now).
func NewOutageLog(interval time.Duration, now func() time.Time) *OutageLog {
	if interval <= 0 {
		interval = DefaultOutageSummaryEvery
	}
	if now == nil {
		now = time.Now
	}
	return &OutageLog{interval: interval, now: now}
}

// Observe records one acquisition outcome. Unavailable and FailedOpen are
// failures; Acquired and Contended mean the backend answered; the others
// (bad keys, timeouts, cancellations) say nothing about the backend.
func (o *OutageLog) Observe(res Result) OutageReport {
	switch res.Outcome {
	case Unavailable, FailedOpen:
		r := o.failure()
		r.FailOpen = res.Outcome == FailedOpen
		return r
	case Acquired, Contended:
		if !o.down.Load() {
			return OutageReport{}
		}
		return o.answered()
	}
	return OutageReport{}
}

func (o *OutageLog) failure() OutageReport {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	if !o.down.Load() {
		o.down.Store(true)
		o.since, o.last, o.failures, o.total = now, now, 0, 1
		return OutageReport{Event: OutageFirst, Total: 1}
	}
	o.failures++
	o.total++
	if now.Sub(o.last) < o.interval {
		return OutageReport{}
	}
	r := OutageReport{Event: OutageSummary, Failures: o.failures, Window: now.Sub(o.last), Total: o.total, Down: now.Sub(o.since)}
	o.last, o.failures = now, 0
	return r
}

func (o *OutageLog) answered() OutageReport {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.down.Load() { // another request reported the recovery
		return OutageReport{}
	}
	now := o.now()
	o.down.Store(false)
	return OutageReport{Event: OutageRecovered, Failures: o.failures, Window: now.Sub(o.last), Total: o.total, Down: now.Sub(o.since)}
}

// Log writes r's record, if any, to lg (nil: slog.Default()) with the
// adapter's package name as message prefix. name is the lock name; err
// the failure of this request (omitted from the recovery line).
func (r OutageReport) Log(ctx context.Context, lg *slog.Logger, pkg, name string, err error) {
	if r.Event == OutageQuiet {
		return
	}
	if lg == nil {
		lg = slog.Default()
	}
	ctx = context.WithoutCancel(ctx)
	mode := "answering 503 / Unavailable"
	if r.FailOpen {
		mode = "running unlocked (WithFailOpen)"
	}
	switch r.Event {
	case OutageFirst:
		lg.LogAttrs(ctx, slog.LevelWarn, pkg+": lock backend unavailable; "+mode+"; further failures are summarised",
			slog.String("lock", name), slog.Any("error", err))
	case OutageSummary:
		lg.LogAttrs(ctx, slog.LevelWarn, pkg+": lock backend still unavailable",
			slog.String("lock", name), slog.Int("failures", r.Failures), slog.Duration("window", r.Window),
			slog.Int("total", r.Total), slog.Duration("down", r.Down), slog.Any("error", err))
	case OutageRecovered:
		lg.LogAttrs(ctx, slog.LevelInfo, pkg+": lock backend answering again",
			slog.String("lock", name), slog.Int("failures", r.Failures), slog.Int("total", r.Total),
			slog.Duration("down", r.Down))
	}
}
