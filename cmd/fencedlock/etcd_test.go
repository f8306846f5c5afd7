package main

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/etcdlock"
	"github.com/fencedlock/fencedlock/internal/etcdtest"
)

// On etcd: ls shows the holder (owner, fence = create revision) and the
// queued waiter; release --force evicts the holder, which is told at its
// next renewal, and the waiter is granted with a higher fence.
func TestEtcd_lsAndForceRelease(t *testing.T) {
	cl := etcdtest.Start(t)
	ep := strings.Join(cl.Endpoints(), ",")
	newC := func() *core.Client {
		c, err := etcdlock.New(cl.Client(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	l := acquire(t, newC(), "coupon:7", core.WithTTL(2*time.Second), core.WithAutoRefresh(100*time.Millisecond))
	waiter := newC()
	got := make(chan *core.Lock, 1)
	go func() {
		w, _ := waiter.Acquire(context.Background(), "coupon:7", core.WithWait(20*time.Second))
		got <- w
	}()
	var rows []lockRow
	waitFor(t, func() bool {
		_, out, _ := runCLI(t, "", "-etcd", ep, "ls", "-json")
		return json.Unmarshal([]byte(out), &rows) == nil && len(rows) == 1 && rows[0].Waiters == 1
	})
	if r := rows[0]; r.Key != "coupon:7" || r.Owner != l.Owner() || r.Fence != l.Fence() || r.TTLms != 2000 {
		t.Fatalf("row %+v, want owner %s fence %d", r, l.Owner(), l.Fence())
	}
	code, out, errOut := runCLI(t, "", "-etcd", ep, "watch", "-interval", "100ms", "-n", "2")
	if code != exitOK || !strings.Contains(out, "coupon:7") || !strings.Contains(out, l.Owner()) ||
		!strings.Contains(out, "etcd at "+ep) {
		t.Fatalf("watch on etcd: exit %d, %q %s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "", "-etcd", ep, "release", "--force", "-yes", "coupon:7")
	if code != exitOK || !strings.Contains(out, "evicted owner "+l.Owner()) {
		t.Fatalf("exit %d, %s %s", code, out, errOut)
	}
	select {
	case <-l.Done():
	case <-time.After(2 * time.Second):
		t.Fatal("evicted holder not told")
	}
	if !errors.Is(l.Err(), core.ErrLost) {
		t.Fatalf("Err = %v", l.Err())
	}
	w := <-got
	if w == nil || w.Fence() <= l.Fence() {
		t.Fatalf("waiter got %v", w)
	}
	w.Release(context.Background())
	if code, _, errOut := runCLI(t, "", "-etcd", ep, "show", "coupon:7"); code != exitInput || !strings.Contains(errOut, "no lock is held") {
		t.Fatalf("show after release: exit %d %s", code, errOut)
	}
}

func TestEtcd_unreachable_exit2(t *testing.T) {
	code, _, errOut := runCLI(t, "", "-etcd", "127.0.0.1:1", "-timeout", "500ms", "ls")
	if code != exitUnreachable || !strings.Contains(errOut, "cannot reach etcd at 127.0.0.1:1") {
		t.Fatalf("exit %d, %q", code, errOut)
	}
}
