package guard_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

func TestLogger_refusalsAnOperatorMustSee(t *testing.T) {
	cases := []struct {
		res  guard.Result
		want string // "" : nothing logged
	}{
		{guard.Result{Outcome: guard.Misconfigured, Err: fmt.Errorf("x: %w", core.ErrModeMismatch)}, "level=ERROR msg=\"httpmw: lock mode conflicts"},
		{guard.Result{Outcome: guard.Misconfigured, Err: errors.New("no id")}, "level=ERROR msg=\"httpmw: cannot derive the lock key\""},
		{guard.Result{Outcome: guard.Lost, Err: core.ErrLost}, "level=WARN msg=\"httpmw: lock lost while the handler ran\""},
		{guard.Result{Outcome: guard.Contended, Err: core.ErrNotAcquired}, ""},
		{guard.Result{Outcome: guard.Unavailable, Err: core.ErrUnavailable}, ""},
	}
	for _, c := range cases {
		var buf bytes.Buffer
		g := guard.Logger{L: slog.New(slog.NewTextHandler(&buf, nil)), Pkg: "httpmw"}
		g.Refused(context.Background(), "POST /pay", c.res)
		out := buf.String()
		if c.want == "" {
			if out != "" {
				t.Errorf("%v: logged %q, want nothing", c.res.Outcome, out)
			}
			continue
		}
		if !strings.Contains(out, c.want) || !strings.Contains(out, `lock="POST /pay"`) || !strings.Contains(out, "error=") {
			t.Errorf("%v: logged %q, want %q with the lock name and the error", c.res.Outcome, out, c.want)
		}
	}
}

func TestLogger_releaseFailedAndLevel(t *testing.T) {
	var buf bytes.Buffer
	g := guard.Logger{L: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError})), Pkg: "grpcmw"}
	g.ReleaseFailed(context.Background(), "/svc/M", errors.New("down"))
	if buf.Len() != 0 {
		t.Fatalf("a warning passed an error-level handler: %q", buf.String())
	}
	g.L = slog.New(slog.NewTextHandler(&buf, nil))
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a finished request still gets its record
	g.ReleaseFailed(ctx, "/svc/M", errors.New("down"))
	if out := buf.String(); !strings.Contains(out, `msg="grpcmw: release failed; the lease expires on its own" lock=/svc/M error=down`) {
		t.Fatalf("logged %q", out)
	}
}
