//go:build linux

package reliability_test

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
)

// The lock family's witnesses live in the run's redis-server, under a
// prefix of their own (the audit looks at the lock prefix only). Each is a
// Lua script, so every check is one atomic step on the server's clock.

// rwScript is a two-part register with a fence guard. A write is two calls,
// one per half ("a", then "b"), with a pause between, so a reader that
// overlaps a writer can see a write in progress (a != b). The guard
// (ARGV[5] = 1) keeps the highest fence seen (max, raised by readers and
// writers, with its owner) and the highest writer fence (wmax): a half is
// written only under a fence above max, or equal to it from the same
// holder; a read is refused under a fence below wmax (a writer took the
// key after this reader's hold began, so that hold is over). Readers raise
// max, so a writer that lost its lock is refused after any later hold,
// shared ones included: that is what a reader's fence is for here.
var rwScript = redis.NewScript(`
local op, f, own, v, fenced = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], ARGV[5] == '1'
local max = tonumber(redis.call('HGET', KEYS[1], 'max') or '0')
local wmax = tonumber(redis.call('HGET', KEYS[1], 'wmax') or '0')
local ow = redis.call('HGET', KEYS[1], 'ow') or ''
if op == 'read' then
  if fenced and f < wmax then return {0, '0', '0'} end
  if fenced and f > max then redis.call('HSET', KEYS[1], 'max', ARGV[2], 'ow', own) end
  return {1, redis.call('HGET', KEYS[1], 'a') or '0', redis.call('HGET', KEYS[1], 'b') or '0'}
end
if fenced then
  if not (f > max or (f == max and own == ow)) then return {0, '0', '0'} end
  redis.call('HSET', KEYS[1], 'max', ARGV[2], 'wmax', ARGV[2], 'ow', own)
end
redis.call('HSET', KEYS[1], op, v)
return {1, '0', '0'}
`)

// permitScript is the permit witness: a sorted set of the holders inside,
// each scored with the end of its permit's validity as Client promised it
// (Lock.Deadline, wall-clock µs; lock and witness share the machine's
// clock). Every call first drops the holders whose promise has ended at
// the server's TIME, so the count is of holders whose permit is still
// valid at that instant. "enter" adds the caller, "touch" renews its end
// (refused if it was dropped: it slept past its lease), "leave" removes it.
// It returns {accepted, holders inside}.
//
// Why not the suite's read-pause-write counter: that witness makes a mutex
// violation visible as a lost update, because one holder alone may be
// inside. A semaphore admits n holders at once, and n legitimate holders
// doing read-pause-write on one counter lose each other's updates with the
// semaphore working perfectly. So the count is atomic (one script) and the
// pause is inside the hold, between checks, where it widens the window for
// a surplus holder to be counted.
var permitScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local op, own, till = ARGV[1], ARGV[2], tonumber(ARGV[3])
if op == 'leave' then
  redis.call('ZREM', KEYS[1], own)
  return {1, redis.call('ZCARD', KEYS[1])}
end
if (op == 'touch' and not redis.call('ZSCORE', KEYS[1], own)) or till <= now then
  return {0, redis.call('ZCARD', KEYS[1])}
end
redis.call('ZADD', KEYS[1], till, own)
return {1, redis.call('ZCARD', KEYS[1])}
`)

// familyOpts picks the next hold's kind and returns its options.
func (w *worker) familyOpts() []core.Option {
	w.mode, w.role, w.entered = "", "", false
	switch w.cfg.Family {
	case "rw":
		w.role = "w"
		if w.rng.Float64() < w.cfg.ReadProb {
			w.role = "r"
		}
		if w.role == "r" || w.cfg.WritersShared {
			w.mode = "s"
			return []core.Option{core.Shared()}
		}
	case "permits":
		w.mode = fmt.Sprintf("p%d", w.cfg.Permits)
		return []core.Option{core.Permits(w.cfg.Permits)}
	}
	return nil
}

func (w *worker) owner(seq int) string { return fmt.Sprintf("w%d#%d", w.cfg.ID, seq) }

// familyStep is one step of a family hold: a read or a two-part write of
// the rw register, or a check of the permit witness followed by the pause.
func (w *worker) familyStep(ctx context.Context, seq int, key string, l *core.Lock, pause func(int)) {
	switch {
	case w.cfg.Family == "permits":
		w.permitStep(ctx, seq, key, l, pause)
	case w.role == "r":
		e := event{K: "read", Seq: seq, Key: key, F: l.Fence(), C: mono()}
		pause(0)
		e.Res, e.Read, e.Read2 = w.rwCall(ctx, key, "read", seq, l, 0)
		e.R = mono()
		w.emit(e)
		_ = sleepCtx(ctx, w.cfg.Gap)
	default:
		w.rwWrite(ctx, seq, key, l, pause)
	}
}

// rwWrite writes a value unique to this step in two halves, Gap apart.
// Res is ok (both halves), partial (the first only: the second was
// refused), stale (nothing), unknown1 or unknown2 (the first or second
// half's call failed: it may or may not have landed).
func (w *worker) rwWrite(ctx context.Context, seq int, key string, l *core.Lock, pause func(int)) {
	w.stepN++
	v := int64(w.cfg.ID+1)*1_000_000_000 + int64(seq)*1_000 + int64(w.stepN%1000)
	e := event{K: "write", Seq: seq, Key: key, F: l.Fence(), Val: v, C: mono()}
	defer func() { e.R = mono(); w.emit(e) }()
	pause(0)
	if ctx.Err() != nil {
		e.Res = "abort" // nothing sent
		return
	}
	switch res, _, _ := w.rwCall(ctx, key, "a", seq, l, v); res {
	case "ok":
	case "stale":
		e.Res = "stale"
		return
	default:
		e.Res = "unknown1"
		return
	}
	pause(1)
	_ = sleepCtx(context.Background(), w.cfg.Gap) // the write in progress
	if ctx.Err() != nil {
		e.Res = "partial" // abandoned at the loss notice, half written
		return
	}
	switch res, _, _ := w.rwCall(ctx, key, "b", seq, l, v); res {
	case "ok":
		e.Res = "ok"
	case "stale":
		e.Res = "partial"
	default:
		e.Res = "unknown2"
	}
}

func (w *worker) rwCall(ctx context.Context, key, op string, seq int, l *core.Lock, v int64) (string, int64, int64) {
	fenced := "0"
	if w.cfg.Fence {
		fenced = "1"
	}
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	out, err := rwScript.Run(cctx, w.rdb, []string{"wit:rw:" + key},
		op, l.Fence(), w.owner(seq), v, fenced).Int64Slice()
	switch {
	case err != nil:
		return "unknown", -1, -1
	case out[0] == 0:
		return "stale", -1, -1
	}
	return "ok", out[1], out[2]
}

// permitStep enters the witness (first step) or renews this holder's
// entry, records the count, and pauses inside the hold.
func (w *worker) permitStep(ctx context.Context, seq int, key string, l *core.Lock, pause func(int)) {
	op := "touch"
	if !w.entered {
		op = "enter"
	}
	e := event{K: "count", Seq: seq, Key: key, F: l.Fence(), Note: op, C: mono()}
	pause(0)
	ok, n, err := w.permitCall(ctx, key, op, seq, l)
	e.R = mono()
	switch {
	case err != nil:
		e.Res = "unknown"
	case ok:
		e.Res, e.Read = "ok", n
		w.entered = true
	default:
		e.Res = "stale"
	}
	w.emit(e)
	pause(1)
	_ = sleepCtx(ctx, w.cfg.Gap)
}

func (w *worker) permitCall(ctx context.Context, key, op string, seq int, l *core.Lock) (bool, int64, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	out, err := permitScript.Run(cctx, w.rdb, []string{"wit:p:" + key},
		op, w.owner(seq), l.Deadline().UnixMicro()).Int64Slice()
	if err != nil {
		return false, 0, err
	}
	return out[0] == 1, out[1], nil
}

// leave takes a permit holder out of the witness before it releases. It
// must not fail: an entry left behind would be counted beside the holder's
// successor until its validity ends.
func (w *worker) leave(seq int, key string, l *core.Lock) {
	if w.cfg.Family != "permits" || !w.entered {
		return
	}
	var err error
	for range 5 {
		if _, _, err = w.permitCall(context.Background(), key, "leave", seq, l); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.t.Errorf("permit witness: leave: %v", err)
}
