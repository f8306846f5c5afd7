package main

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// Shared and permit holders: show lists each one; release --force evicts
// them all, and each learns of it at its next renewal.
func TestShared_showAndForceRelease(t *testing.T) {
	srv := redistest.Start(t)
	opts := []core.Option{core.Permits(3), core.WithTTL(2 * time.Second), core.WithAutoRefresh(100 * time.Millisecond)}
	a := acquire(t, newLocker(t, srv), "jobs", opts...)
	b := acquire(t, newLocker(t, srv), "jobs", opts...)

	code, out, errOut := runCLI(t, "", "-redis", srv.Addr(), "show", "-json", "jobs")
	if code != exitOK {
		t.Fatalf("show: exit %d, %s", code, errOut)
	}
	var row lockRow
	if err := json.Unmarshal([]byte(out), &row); err != nil {
		var rows []lockRow
		if err2 := json.Unmarshal([]byte(out), &rows); err2 != nil || len(rows) != 1 {
			t.Fatalf("show -json output %q: %v", out, err)
		}
		row = rows[0]
	}
	if row.Mode != "permits(3)" || len(row.Holders) != 2 || row.Fence != b.Fence() || row.Owner != b.Owner() {
		t.Fatalf("show = %+v; want permits(3), 2 holders, newest fence %d owner %s", row, b.Fence(), b.Owner())
	}
	for _, h := range row.Holders {
		if h.Owner == a.Token() || h.Owner == b.Token() || h.TTLms <= 0 {
			t.Fatalf("holder row %+v leaks a token or has no lease", h)
		}
	}
	if row.FenceCounter < b.Fence() {
		t.Fatalf("fence_counter %d below the newest holder's fence %d", row.FenceCounter, b.Fence())
	}
	code, out, errOut = runCLI(t, "", "-redis", srv.Addr(), "show", "jobs")
	for _, want := range []string{"fence counter: ", "mode:          permits(3), 2 holder(s)", a.Owner(), b.Owner(), row.BackendKey} {
		if code != exitOK || !strings.Contains(out, want) {
			t.Fatalf("show (text) lacks %q: exit %d, %s%s", want, code, out, errOut)
		}
	}

	code, out, errOut = runCLI(t, "", "-redis", srv.Addr(), "release", "--force", "-yes", "jobs")
	if code != exitOK {
		t.Fatalf("release: exit %d, %s", code, errOut)
	}
	if !strings.Contains(out, a.Owner()) || !strings.Contains(out, b.Owner()) {
		t.Fatalf("release output does not name both evicted owners:\n%s", out)
	}
	for _, l := range []*core.Lock{a, b} {
		select {
		case <-l.Done():
		case <-time.After(time.Second):
			t.Fatal("evicted permit holder not told")
		}
		if !errors.Is(l.Err(), core.ErrLost) {
			t.Fatalf("Err = %v; want ErrLost", l.Err())
		}
	}
	next := acquire(t, newLocker(t, srv), "jobs")
	if next.Fence() <= b.Fence()+1 {
		t.Fatalf("next fence %d not above the raised counter", next.Fence())
	}
}
