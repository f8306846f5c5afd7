//go:build linux

package reliability_test

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/fencedlock/fencedlock/sqlguard"
)

// workerConfig is what the parent hands a worker process (JSON in
// workerEnv). The zero value of every protection flag is "off", so each
// scenario spells out what it protects with.
type workerConfig struct {
	ID    int
	Redis string // address to dial: the server, or the parent's proxy for this worker
	// Other topologies (instead of Redis).
	Sentinels  []string      // a Sentinel group: a failover client for redistest.MasterName
	Redlock    []string      // Redlock nodes, one client each
	ReplicaAck int           // core.WithReplicaAck(ReplicaAck, AckTimeout)
	AckTimeout time.Duration //
	Prefix     string
	Keys       []string
	TTL        time.Duration
	Auto       bool          // watchdog (WithAutoRefresh)
	Every      time.Duration // its interval (0: the default, a tenth of the TTL)
	Wait       time.Duration // bound on each Acquire

	// What a holder does with the lock: Steps increments of the witness
	// (or as many as fit in Hold, or, with UntilDeadline, as many as fit
	// before the lease is believed over, after which it lets the lease run
	// out instead of releasing). Gap separates each step's read and write.
	Steps         int
	Hold          time.Duration
	UntilDeadline bool
	Gap           time.Duration
	Think         time.Duration // a random pause of up to Think between acquisitions

	// Protections. A negative control switches one of them off.
	Fence         bool // writes go through sqlguard (else: autocommit read, then write)
	WatchLoss     bool // stop at the loss notice; SQL runs under lock.Context (else: deaf, works on)
	NaiveDeadline bool // time the lease from the reply, not from the send (with UntilDeadline)
	NaiveRelease  bool // release with DEL, without comparing the owner token

	// The lock family (family_worker_test.go): "" is the mutex with the
	// SQL witness; "rw" and "permits" hold shared, exclusive or permit
	// locks and work on a witness in Redis.
	Family        string
	ReadProb      float64 // rw: the share of acquisitions that read (Shared)
	WritersShared bool    // rw control: writers take Shared() too
	Permits       int     // permits: Permits(n)

	// Faults a worker injects itself.
	SleepProb  float64       // a step sleeps SleepFor, ignoring the loss notice (a simulated pause)
	SleepFor   time.Duration //
	ResetProb  float64       // a script call has its connection reset after reaching Redis
	ResetDelay time.Duration // one-way delay that makes the reset land between request and reply

	DB     dbConfig
	MaxRun time.Duration // safety net; the parent normally ends a worker by closing stdin
	Seed   uint64
}

// event is one line of a worker's history. Times are mono() readings.
type event struct {
	K    string `json:"k"` // ready, acq, end, step, fault
	W    int    `json:"w"`
	Seq  int    `json:"seq"` // the worker's acquisition number (ties end and steps to acq)
	Key  string `json:"key,omitempty"`
	C    int64  `json:"c"` // invocation
	R    int64  `json:"r"` // response
	F    uint64 `json:"f,omitempty"`
	Res  string `json:"res,omitempty"`
	Read int64  `json:"read"`
	Note string `json:"note,omitempty"`
	// The lock family: the hold's mode ("" exclusive, "s" shared, "p<n>"),
	// its role in the rw register (r, w), a read's second half, a write's value.
	Mode  string `json:"m,omitempty"`
	Role  string `json:"role,omitempty"`
	Read2 int64  `json:"read2,omitempty"`
	Val   int64  `json:"val,omitempty"`
}

// eventPrefix marks history lines on a worker's stdout; everything else
// there (the testing package's own output) is ignored.
const eventPrefix = "EV "

// TestWorker is the body of a worker process. The parent starts the test
// binary again with -test.run=^TestWorker$ and the configuration in
// workerEnv; a normal test run skips it.
func TestWorker(t *testing.T) {
	raw := os.Getenv(workerEnv)
	if raw == "" {
		t.Skip("reliability: runs only inside a worker process started by the suite")
	}
	var cfg workerConfig
	if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
		t.Fatalf("worker config: %v", err)
	}
	w := newWorker(t, cfg)
	w.run()
	w.close()
}

type worker struct {
	t      *testing.T
	cfg    workerConfig
	rng    *rand.Rand
	rdb    *redis.Client   // the single Redis or the failover client (nil for Redlock)
	nodes  []*redis.Client // Redlock nodes
	client *core.Client
	db     *sql.DB
	hook   *resetHook

	sel, upd string

	ctx    context.Context // ends when the parent closes stdin
	cancel context.CancelFunc
	bg     sync.WaitGroup

	outMu sync.Mutex
	out   *bufio.Writer

	// The current hold's kind, stamped on its acq and end events, and
	// whether it has entered the permit witness.
	mode, role string
	entered    bool
	stepN      int // rw writes so far, for unique values
}

func newWorker(t *testing.T, cfg workerConfig) *worker {
	w := &worker{t: t, cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, uint64(cfg.ID))), out: bufio.NewWriter(os.Stdout)}
	addr := cfg.Redis
	var proxy *redistest.Proxy
	if cfg.ResetProb > 0 {
		// The worker's own proxy, so it can reset its connections at the
		// moment a command has reached Redis and its reply has not come back.
		proxy = redistest.NewProxy(t, addr)
		addr = proxy.Addr()
	}
	opts := func(addr string) *redis.Options {
		return &redis.Options{
			Addr:                  addr,
			DialTimeout:           250 * time.Millisecond,
			ReadTimeout:           250 * time.Millisecond,
			WriteTimeout:          250 * time.Millisecond,
			ContextTimeoutEnabled: true,
			PoolSize:              8,
			MinRetryBackoff:       2 * time.Millisecond,
			MaxRetryBackoff:       20 * time.Millisecond,
		}
	}
	var ropts []core.Option
	if cfg.ReplicaAck > 0 {
		ropts = append(ropts, core.WithReplicaAck(cfg.ReplicaAck, cfg.AckTimeout))
	}
	switch {
	case len(cfg.Redlock) > 0:
		var nodes []redis.UniversalClient
		for _, a := range cfg.Redlock {
			c := redis.NewClient(opts(a))
			w.nodes = append(w.nodes, c)
			nodes = append(nodes, c)
		}
		// A node timeout that a loaded, race-instrumented CI runner can
		// meet (the default is a tenth of the TTL, at least 50 ms).
		w.client = core.NewWithBackend(core.NewRedlockBackend(nodes, core.WithNodeTimeout(200*time.Millisecond)),
			core.WithPrefix(cfg.Prefix))
	case len(cfg.Sentinels) > 0:
		o := opts("")
		w.rdb = redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: redistest.MasterName, SentinelAddrs: cfg.Sentinels,
			DialTimeout: o.DialTimeout, ReadTimeout: o.ReadTimeout, WriteTimeout: o.WriteTimeout,
			ContextTimeoutEnabled: true, PoolSize: o.PoolSize,
			MinRetryBackoff: o.MinRetryBackoff, MaxRetryBackoff: o.MaxRetryBackoff,
		})
		w.client = core.NewWithBackend(core.NewRedisBackend(w.rdb, ropts...), core.WithPrefix(cfg.Prefix))
	default:
		w.rdb = redis.NewClient(opts(addr))
		if proxy != nil {
			w.hook = &resetHook{w: w, p: proxy, prob: cfg.ResetProb, delay: cfg.ResetDelay}
			w.rdb.AddHook(w.hook)
		}
		w.client = core.NewWithBackend(core.NewRedisBackend(w.rdb, ropts...), core.WithPrefix(cfg.Prefix))
	}
	db, err := sql.Open(cfg.DB.Driver, cfg.DB.DSN)
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	db.SetMaxOpenConns(4)
	w.db = db
	w.sel = "SELECT value FROM " + cfg.DB.Witness + " WHERE resource = " + ph(cfg.DB.Dialect, 1)
	w.upd = "UPDATE " + cfg.DB.Witness + " SET value = " + ph(cfg.DB.Dialect, 1) + " WHERE resource = " + ph(cfg.DB.Dialect, 2)

	w.ctx, w.cancel = context.WithTimeout(context.Background(), cfg.MaxRun)
	w.bg.Go(func() {
		// The parent ends a run by closing stdin.
		_, _ = io.Copy(io.Discard, os.Stdin)
		w.cancel()
	})
	return w
}

func (w *worker) close() {
	w.cancel()
	if err := w.client.Close(); err != nil {
		w.t.Errorf("client close: %v", err)
	}
	if w.hook != nil {
		w.hook.wg.Wait()
	}
	if w.rdb != nil {
		_ = w.rdb.Close()
	}
	for _, c := range w.nodes {
		_ = c.Close()
	}
	_ = w.db.Close()
	w.outMu.Lock()
	_ = w.out.Flush()
	w.outMu.Unlock()
	// The stdin reader ends when the parent closes the pipe, which it does
	// before waiting for us; a worker that hit MaxRun waits here for it.
	w.bg.Wait()
}

func (w *worker) emit(e event) {
	e.W = w.cfg.ID
	if e.K == "acq" || e.K == "end" {
		e.Mode, e.Role = w.mode, w.role
	}
	b, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	w.outMu.Lock()
	defer w.outMu.Unlock()
	_, _ = w.out.WriteString(eventPrefix)
	_, _ = w.out.Write(b)
	_ = w.out.WriteByte('\n')
	// Unbuffered in effect: the parent times faults from acquisitions.
	_ = w.out.Flush()
}

func (w *worker) stopping() bool { return w.ctx.Err() != nil }

func (w *worker) run() {
	w.emit(event{K: "ready", C: mono(), R: mono()})
	opts := []core.Option{core.WithTTL(w.cfg.TTL), core.WithWait(w.cfg.Wait)}
	if w.cfg.Auto {
		opts = append(opts, core.WithAutoRefresh(w.cfg.Every))
	}
	for seq := 1; !w.stopping(); seq++ {
		key := w.cfg.Keys[w.rng.IntN(len(w.cfg.Keys))]
		c := mono()
		l, err := w.client.Acquire(w.ctx, key, append(opts, w.familyOpts()...)...)
		r := mono()
		if err != nil {
			res := "err"
			if errors.Is(err, core.ErrNotAcquired) {
				res = "busy"
			}
			w.emit(event{K: "acq", Seq: seq, Key: key, C: c, R: r, Res: res, Note: short(err)})
			if res == "err" && !w.stopping() {
				time.Sleep(10 * time.Millisecond) // backend down: do not spin
			}
			continue
		}
		w.emit(event{K: "acq", Seq: seq, Key: key, C: c, R: r, F: l.Fence(), Res: "ok"})
		w.hold(seq, key, l, r)
		if w.cfg.Think > 0 {
			_ = sleepCtx(w.ctx, time.Duration(w.rng.Int64N(int64(w.cfg.Think))))
		}
	}
}

// hold does the work of one acquisition and ends it, recording the end of
// the tenure the lock promised: its release, or its validity deadline
// (Lock.Deadline) when it was lost. Only a holder with NaiveDeadline
// records the (later) end it computes itself.
func (w *worker) hold(seq int, key string, l *core.Lock, acqRet int64) {
	var lostAt atomic.Int64
	watched := make(chan struct{})
	w.bg.Go(func() {
		defer close(watched)
		<-l.Done()
		if l.Err() != nil {
			lostAt.Store(mono())
		}
	})
	lctx, cancel := l.Context(context.Background())
	defer cancel()
	stepCtx := context.Background()
	if w.cfg.WatchLoss {
		stepCtx = lctx
	}
	naiveDl := acqRet + int64(w.cfg.TTL)
	valid := func() bool {
		switch {
		case w.cfg.NaiveDeadline:
			return mono() < naiveDl
		case w.cfg.WatchLoss:
			return lctx.Err() == nil
		}
		return true
	}
	holdEnd := acqRet + int64(w.cfg.Hold)
	for n := 0; valid() && !w.stopping(); n++ {
		if !w.cfg.UntilDeadline && ((w.cfg.Hold > 0 && mono() >= holdEnd) || (w.cfg.Hold == 0 && n >= w.cfg.Steps)) {
			break
		}
		w.step(stepCtx, seq, key, l)
	}

	switch {
	case w.cfg.UntilDeadline && w.cfg.NaiveDeadline:
		// Let the lease run out at the moment this holder (wrongly) thinks it does.
		if d := naiveDl - mono(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		w.emit(event{K: "end", Seq: seq, Key: key, C: naiveDl, R: mono(), F: l.Fence(), Res: "expired"})
		<-watched
		return
	case w.cfg.UntilDeadline && !w.stopping():
		<-watched
		lo := lostAt.Load()
		if lo == 0 {
			lo = mono()
		}
		w.emit(event{K: "end", Seq: seq, Key: key, C: min(monoOf(l.Deadline()), lo), R: lo, F: l.Fence(), Res: "expired"})
		return
	}
	if l.Err() != nil {
		// Lost (a holder deaf to the notice may have worked on past it;
		// what it wrote then is the storage's business, the fence's).
		<-watched
		lo := lostAt.Load()
		w.emit(event{K: "end", Seq: seq, Key: key, C: min(monoOf(l.Deadline()), lo), R: lo, F: l.Fence(), Res: "lost"})
		return
	}
	// The permit witness counts this holder until it leaves; leave before
	// the permit is given back, or a successor would be counted beside it.
	w.leave(seq, key, l)
	dl := monoOf(l.Deadline())
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	c := mono()
	var err error
	if w.cfg.NaiveRelease {
		err = naiveRelease(rctx, w.rdb, core.KeysFor(w.cfg.Prefix, key))
		_ = l.Release(rctx) // local clean-up; the token no longer matches anything
	} else {
		err = l.Release(rctx)
	}
	r := mono()
	res := "ok"
	switch {
	case errors.Is(err, core.ErrNotHeld):
		res = "notheld"
	case err != nil:
		res = "err"
	}
	// The lock promised exclusivity until its deadline at most.
	start := min(c, dl)
	w.emit(event{K: "end", Seq: seq, Key: key, C: start, R: r, F: l.Fence(), Res: res, Note: short(err)})
	<-watched
}

// naiveReleaseScript is the classic unsafe release: delete whatever holds
// the key. A retry after an ambiguous reply deletes the next holder's lock.
var naiveReleaseScript = redis.NewScript(`redis.call('DEL', KEYS[1]) return redis.call('PUBLISH', KEYS[2], '1')`)

func naiveRelease(ctx context.Context, rdb *redis.Client, keys core.Keys) error {
	return naiveReleaseScript.Run(ctx, rdb, []string{keys.Lock, keys.Channel}).Err()
}

// step is one non-atomic increment of the witness row for key: read, wait
// Gap, write read+1. With Fence it runs in a sqlguard transaction that
// first records the lock's fence; without, it trusts the lock alone.
func (w *worker) step(ctx context.Context, seq int, key string, l *core.Lock) {
	e := event{K: "step", Seq: seq, Key: key, F: l.Fence(), Read: -1, C: mono()}
	sleepAt := -1 // where a simulated pause lands: 0 before the transaction, 1 between read and write
	if w.cfg.SleepProb > 0 && w.rng.Float64() < w.cfg.SleepProb {
		sleepAt = w.rng.IntN(2)
	}
	pause := func(at int) {
		if sleepAt == at {
			w.emit(event{K: "fault", Seq: seq, Key: key, C: mono(), R: mono(), Note: "sleep"})
			time.Sleep(w.cfg.SleepFor) // deliberately deaf to the loss notice
		}
	}
	switch {
	case w.cfg.Family != "":
		w.familyStep(ctx, seq, key, l, pause)
		return
	case w.cfg.Fence:
		e.Res, e.Read = w.fencedStep(ctx, l, key, pause)
	default:
		e.Res, e.Read = w.plainStep(ctx, key, pause)
	}
	e.R = mono()
	w.emit(e)
}

// fencedStep returns ok, stale, abort (nothing committed) or unknown
// (the commit's outcome is not known), and the value read (-1 if none).
func (w *worker) fencedStep(ctx context.Context, l *core.Lock, key string, pause func(int)) (string, int64) {
	pause(0)
	tx, err := sqlguard.BeginTx(ctx, w.db, nil, sqlguard.WithLock(l),
		sqlguard.WithTable(w.cfg.DB.FenceTable), sqlguard.WithDialect(w.cfg.DB.Dialect))
	if errors.Is(err, sqlguard.ErrStaleFence) {
		return "stale", -1
	}
	if err != nil {
		return "abort", -1
	}
	var v int64
	if err := tx.QueryRowContext(ctx, w.sel, key).Scan(&v); err != nil {
		_ = tx.Rollback()
		return "abort", -1
	}
	pause(1)
	if sleepCtx(ctx, w.cfg.Gap) != nil {
		_ = tx.Rollback()
		return "abort", v
	}
	if _, err := tx.ExecContext(ctx, w.upd, v+1, key); err != nil {
		_ = tx.Rollback()
		return "abort", v
	}
	if err := tx.Commit(); err != nil {
		if errors.Is(err, sql.ErrTxDone) {
			return "abort", v
		}
		return "unknown", v
	}
	return "ok", v
}

// plainStep is the same increment without a fence or a transaction.
func (w *worker) plainStep(ctx context.Context, key string, pause func(int)) (string, int64) {
	pause(0)
	var v int64
	if err := w.db.QueryRowContext(ctx, w.sel, key).Scan(&v); err != nil {
		return "abort", -1
	}
	pause(1)
	if sleepCtx(ctx, w.cfg.Gap) != nil {
		return "abort", v
	}
	if ctx.Err() != nil {
		return "abort", v
	}
	if _, err := w.db.ExecContext(ctx, w.upd, v+1, key); err != nil {
		return "unknown", v
	}
	return "ok", v
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func short(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	if len(s) > 160 {
		s = s[:160]
	}
	return s
}

// resetHook makes replies ambiguous: for a random script call it delays the
// worker's proxy by d each way and resets every connection at 1.5 d, when
// the command has reached Redis (at d) and the reply is still held (until
// 2 d). go-redis then retries the command on a new connection, as it does
// for any network error, which is exactly what a lock's scripts must
// survive.
type resetHook struct {
	w     *worker
	p     *redistest.Proxy
	prob  float64
	delay time.Duration
	busy  atomic.Bool
	wg    sync.WaitGroup
}

func (h *resetHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *resetHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *resetHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if n := cmd.Name(); (n == "evalsha" || n == "eval") && rand.Float64() < h.prob && h.busy.CompareAndSwap(false, true) {
			h.p.Delay(h.delay)
			start := mono()
			h.wg.Go(func() {
				time.Sleep(h.delay * 3 / 2)
				h.p.Delay(0)
				h.p.ResetAll()
				h.w.emit(event{K: "fault", C: start, R: mono(), Note: "reset"})
				h.busy.Store(false)
			})
		}
		return next(ctx, cmd)
	}
}
