package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// The pinned promise: force-release evicts a live holder, which learns of it
// at its next renewal (Done closes, Err is ErrLost), and the fence counter
// is raised so the evicted fence is stale for every later holder.
func TestReleaseForce_evictsLiveHolderAndRaisesFence(t *testing.T) {
	srv := redistest.Start(t)
	c := newLocker(t, srv)
	l := acquire(t, c, "coupon:42", core.WithTTL(2*time.Second), core.WithAutoRefresh(100*time.Millisecond))
	oldFence := l.Fence()
	_, out, _ := runCLI(t, "", "-redis", srv.Addr(), "show", "coupon:42")
	if !strings.Contains(out, fmt.Sprintf("fence counter: %d", oldFence)) {
		t.Fatalf("show does not print the fence counter %d:\n%s", oldFence, out)
	}

	code, out, errOut := runCLI(t, "", "-redis", srv.Addr(), "release", "--force", "-yes", "coupon:42")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	if !strings.Contains(out, "evicted owner "+l.Owner()) {
		t.Errorf("output does not name the evicted owner %s:\n%s", l.Owner(), out)
	}
	select {
	case <-l.Done():
	case <-time.After(time.Second): // a few renewals, far less than the 2 s TTL
		t.Fatal("holder was not told: Done still open after its renewals")
	}
	if !errors.Is(l.Err(), core.ErrLost) || !errors.Is(l.Err(), core.ErrOwnerChanged) {
		t.Fatalf("Err = %v, want ErrLost with ErrOwnerChanged", l.Err())
	}
	fence, err := srv.Client(t).Get(context.Background(), core.KeysFor(core.DefaultPrefix, "coupon:42").Fence).Uint64()
	if err != nil || fence != oldFence+1 {
		t.Fatalf("fence counter = %d (%v), want raised to %d", fence, err, oldFence+1)
	}
	next := acquire(t, newLocker(t, srv), "coupon:42")
	if next.Fence() <= fence {
		t.Fatalf("next holder's fence %d not above the raised counter %d", next.Fence(), fence)
	}
}

// A waiter blocked on the evicted lock is woken by the release notice, long
// before the holder's lease would have run out.
func TestReleaseForce_wakesWaiters(t *testing.T) {
	srv := redistest.Start(t)
	l := acquire(t, newLocker(t, srv), "hot", core.WithTTL(time.Minute))
	waiter := newLocker(t, srv)
	got := make(chan *core.Lock, 1)
	go func() {
		w, _ := waiter.Acquire(context.Background(), "hot", core.WithWait(30*time.Second))
		got <- w
	}()
	waitFor(t, func() bool {
		_, out, _ := runCLI(t, "", "-redis", srv.Addr(), "show", "-json", "hot")
		return strings.Contains(out, `"waiters": 1`)
	})
	start := time.Now()
	if code, _, errOut := runCLI(t, "", "-redis", srv.Addr(), "release", "--force", "-yes", "hot"); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	select {
	case w := <-got:
		if w == nil || w.Fence() <= l.Fence()+1 {
			t.Fatalf("waiter got %v", w)
		}
		w.Release(context.Background())
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("waiter woke after %v: notice not delivered", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter never got the lock")
	}
}

// Negative controls: without --force, or when the operator does not confirm,
// nothing changes and the holder keeps its lock.
func TestReleaseForce_refusedLeavesHolder(t *testing.T) {
	srv := redistest.Start(t)
	l := acquire(t, newLocker(t, srv), "k", core.WithTTL(time.Minute))
	for _, tc := range []struct {
		stdin string
		args  []string
		msg   string
	}{
		{"", []string{"release", "k"}, "needs --force"},
		{"n\n", []string{"release", "--force", "k"}, "not confirmed"},
		{"", []string{"release", "--force", "k"}, "not confirmed"},
		{"", []string{"release", "--force", "-yes", "other"}, `no lock is held on key "other"`},
	} {
		args := append([]string{"-redis", srv.Addr()}, tc.args...)
		code, _, errOut := runCLI(t, tc.stdin, args...)
		if code != exitInput || !strings.Contains(errOut, tc.msg) {
			t.Errorf("%q: exit %d, stderr %q", tc.args, code, errOut)
		}
	}
	if err := l.Refresh(context.Background(), time.Minute); err != nil {
		t.Fatalf("holder lost its lock after refused releases: %v", err)
	}
	code, out, _ := runCLI(t, "y\n", "-redis", srv.Addr(), "release", "--force", "k")
	if code != exitOK || !strings.Contains(out, l.Owner()) {
		t.Fatalf("confirmed release: exit %d, %q", code, out)
	}
	if err := l.Refresh(context.Background(), time.Minute); !errors.Is(err, core.ErrNotHeld) && !errors.Is(err, core.ErrLost) {
		t.Fatalf("Refresh after force release = %v, want not held", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCallerKey_roundTripsCoreEscaping(t *testing.T) {
	for _, k := range []string{"coupon:42", "a{b}c", "100%", "#tag", "%7B", "ünï"} {
		got, hashed, ok := callerKey("lock:", core.KeysFor("lock:", k).Lock)
		if !ok || hashed || got != k {
			t.Errorf("%q -> %q %v %v", k, got, hashed, ok)
		}
	}
	for _, bk := range []string{"lock:{a}:f", "lock:{a}:r", "other:{a}", "lock:a", "lock:{}"} {
		if _, _, ok := callerKey("lock:", bk); ok {
			t.Errorf("%q taken for a lock key", bk)
		}
	}
}
