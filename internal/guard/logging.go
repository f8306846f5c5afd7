package guard

import (
	"context"
	"log/slog"
)

// Logger is where an adapter reports what no response shows. Records carry
// the lock name, never the key.
type Logger struct {
	L   *slog.Logger // nil: slog.Default() at log time
	Pkg string       // the adapter's name, the records' prefix
}

func (g Logger) log(ctx context.Context, level slog.Level, msg, name string, err error) {
	lg := g.L
	if lg == nil {
		lg = slog.Default()
	}
	if !lg.Enabled(ctx, level) {
		return
	}
	lg.LogAttrs(context.WithoutCancel(ctx), level, g.Pkg+": "+msg, slog.String("lock", name), slog.Any("error", err))
}

// Refused logs a refusal an operator must act on: a key the route cannot
// derive or a mode the key's holders or the backend reject (errors), a
// lock lost while the handler ran (a warning). Contention is routine and
// outages are summarised by OutageLog, so neither is logged here.
func (g Logger) Refused(ctx context.Context, name string, res Result) {
	switch {
	case res.Outcome == Misconfigured && IsModeError(res.Err):
		g.log(ctx, slog.LevelError, "lock mode conflicts with the key's holders or the backend (configuration error)", name, res.Err)
	case res.Outcome == Misconfigured:
		g.log(ctx, slog.LevelError, "cannot derive the lock key", name, res.Err)
	case res.Outcome == Lost:
		g.log(ctx, slog.LevelWarn, "lock lost while the handler ran", name, res.Err)
	}
}

// ReleaseFailed logs a release that did not reach the backend.
func (g Logger) ReleaseFailed(ctx context.Context, name string, err error) {
	g.log(ctx, slog.LevelWarn, "release failed; the lease expires on its own", name, err)
}
