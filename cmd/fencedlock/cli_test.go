package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// runCLI runs one command line in-process, as main would.
func runCLI(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	c := &cli{stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code = c.run(ctx, args)
	if strings.Contains(errb.String(), "goroutine ") || strings.Contains(errb.String(), "panic") {
		t.Errorf("stderr looks like a stack trace:\n%s", errb.String())
	}
	return code, out.String(), errb.String()
}

func newLocker(t *testing.T, srv *redistest.Server, opts ...core.Option) *core.Client {
	t.Helper()
	c := core.New(srv.Client(t), opts...)
	t.Cleanup(func() { c.Close() })
	return c
}

func acquire(t *testing.T, c *core.Client, key string, opts ...core.Option) *core.Lock {
	t.Helper()
	l, err := c.Acquire(context.Background(), key, opts...)
	if err != nil {
		t.Fatalf("acquire %q: %v", key, err)
	}
	t.Cleanup(func() { l.Release(context.Background()) })
	return l
}

func TestLs_json_listsHeldLocksWithOwnerAndFence(t *testing.T) {
	srv := redistest.Start(t)
	c := newLocker(t, srv)
	keys := []string{"coupon:42", "odd {key} 100% #1", strings.Repeat("long", 40)}
	locks := map[string]*core.Lock{}
	for _, k := range keys {
		locks[k] = acquire(t, c, k, core.WithTTL(30*time.Second))
	}
	code, out, errOut := runCLI(t, "", "-redis", srv.Addr(), "ls", "-json")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %s", code, errOut)
	}
	var rows []lockRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("ls -json is not a JSON array: %v\n%s", err, out)
	}
	if len(rows) != len(keys) {
		t.Fatalf("got %d rows, want %d:\n%s", len(rows), len(keys), out)
	}
	byKey := map[string]lockRow{}
	for _, r := range rows {
		byKey[r.Key] = r
	}
	for _, k := range keys[:2] {
		r, ok := byKey[k]
		if !ok {
			t.Fatalf("key %q missing (unescaping broken?):\n%s", k, out)
		}
		checkRow(t, r, locks[k])
	}
	long := core.KeysFor(core.DefaultPrefix, keys[2])
	r := byKey["#"+strings.TrimPrefix(long.Tag, "#")]
	if !r.Hashed || r.BackendKey != long.Lock {
		t.Fatalf("hashed key row = %+v, want backend key %s", r, long.Lock)
	}
	checkRow(t, r, locks[keys[2]])
}

func checkRow(t *testing.T, r lockRow, l *core.Lock) {
	t.Helper()
	if r.Owner != l.Owner() || r.Fence != l.Fence() {
		t.Errorf("%q: owner %s fence %d, want %s %d", r.Key, r.Owner, r.Fence, l.Owner(), l.Fence())
	}
	if r.TTLms <= 25_000 || r.TTLms > 30_000 {
		t.Errorf("%q: ttl_ms %d, want about 30000", r.Key, r.TTLms)
	}
}

func TestLs_patternAndPrefix(t *testing.T) {
	srv := redistest.Start(t)
	c := newLocker(t, srv)
	acquire(t, c, "coupon:1")
	acquire(t, c, "order:1")
	acquire(t, c, "coupon:2", core.WithPrefix("other:"))
	code, out, _ := runCLI(t, "", "-redis", srv.Addr(), "ls", "coupon:*")
	if code != exitOK || !strings.Contains(out, "coupon:1") || strings.Contains(out, "order:1") || strings.Contains(out, "coupon:2") {
		t.Fatalf("ls coupon:* (exit %d):\n%s", code, out)
	}
	code, out, _ = runCLI(t, "", "ls", "-redis", srv.Addr(), "-prefix", "other:", "-json")
	if code != exitOK || !strings.Contains(out, `"key": "coupon:2"`) || strings.Contains(out, "coupon:1") {
		t.Fatalf("ls -prefix other: (exit %d):\n%s", code, out)
	}
}

func TestLs_countsWaitersOnTheReleaseChannel(t *testing.T) {
	srv := redistest.Start(t)
	holder := acquire(t, newLocker(t, srv), "busy")
	waiter := newLocker(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := waiter.Acquire(ctx, "busy", core.WithWait(time.Minute))
		done <- err
	}()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, out, _ := runCLI(t, "", "-redis", srv.Addr(), "show", "-json", "busy")
		var r showRow
		json.Unmarshal([]byte(out), &r)
		if r.Waiters == 1 && r.Owner == holder.Owner() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiter never seen on the release channel:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestShow_unknownKey_exit1(t *testing.T) {
	srv := redistest.Start(t)
	code, out, errOut := runCLI(t, "", "-redis", srv.Addr(), "show", "nobody:holds:this")
	if code != exitInput || out != "" || !strings.Contains(errOut, `no lock is held on key "nobody:holds:this"`) {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestBadInput_exit1(t *testing.T) {
	srv := redistest.Start(t)
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"-redis", srv.Addr(), "show"},
		{"-redis", srv.Addr(), "show", "a", "b"},
		{"-redis", srv.Addr(), "show", "bad\x00key"},
		{"-redis", srv.Addr(), "ls", "-nosuchflag"},
		{"-redis", "nocolon", "ls"},
		{"-redis", "redis://[::1", "ls"},
	} {
		if code, _, errOut := runCLI(t, "", args...); code != exitInput || !strings.HasPrefix(lastLine(errOut), "fencedlock: ") && len(args) > 0 {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
	}
	if code, _, errOut := runCLI(t, "", "-h"); code != exitOK || !strings.Contains(errOut, "release --force") {
		t.Errorf("-h: exit %d, %q", code, errOut)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestUnreachableRedis_exit2NamesAddress(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr()
	srv.Kill()
	for _, args := range [][]string{
		{"-redis", addr, "ls"},
		{"-redis", addr, "show", "k"},
		{"-redis", "redis://" + addr + "/0", "release", "--force", "-yes", "k"},
	} {
		start := time.Now()
		code, _, errOut := runCLI(t, "", args...)
		if code != exitUnreachable || !strings.Contains(errOut, "cannot reach Redis at "+addr) {
			t.Errorf("%q: exit %d, stderr %q", args, code, errOut)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%q: took %v to report an unreachable server", args, d)
		}
	}
}

func TestBench_printsTableAndCSV(t *testing.T) {
	srv := redistest.Start(t)
	csv := t.TempDir() + "/waits.csv"
	code, out, errOut := runCLI(t, "", "-redis", srv.Addr(), "bench", "-workers", "3", "-duration", "300ms", "-csv", csv)
	if code != exitOK || !strings.Contains(out, "fencedlock") || !strings.Contains(out, "polling-1ms") || !strings.Contains(out, "p99") {
		t.Fatalf("exit %d, stdout %s, stderr %s", code, out, errOut)
	}
	b, err := os.ReadFile(csv)
	if err != nil || !strings.HasPrefix(string(b), "variant,wait_us\n") || !strings.Contains(string(b), "\npolling-1ms,") {
		t.Fatalf("csv: %v\n%.200s", err, b)
	}
	if n, _ := srv.Client(t).DBSize(context.Background()).Result(); n > 2 {
		t.Errorf("bench left %d keys behind", n)
	}
}

func TestWatch_showsHotKeyWithGrantRate(t *testing.T) {
	srv := redistest.Start(t)
	c := newLocker(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { // a busy key: re-acquired continuously
		defer close(done)
		for ctx.Err() == nil {
			if l, err := c.Acquire(ctx, "hot:1", core.WithWait(time.Second)); err == nil {
				time.Sleep(20 * time.Millisecond) // held most of the time, ~45 grants/s
				l.Release(context.Background())
			}
		}
	}()
	defer func() { cancel(); <-done }()
	acquire(t, c, "cold:1")
	code, out, errOut := runCLI(t, "", "-redis", srv.Addr(), "watch", "-interval", "200ms", "-n", "5")
	if code != exitOK || !strings.Contains(out, "cold:1") || !strings.Contains(out, "GRANTS/S") {
		t.Fatalf("exit %d, stderr %s, out %q", code, errOut, out)
	}
	// After the first frame the busy key shows a grant rate (fence
	// increments per second) well above zero.
	for _, frame := range strings.Split(out, "\x1b[H\x1b[2J")[2:] {
		for _, line := range strings.Split(frame, "\n") {
			if f := strings.Fields(line); len(f) == 6 && f[0] == "hot:1" && f[4] != "0.0" {
				return
			}
		}
	}
	t.Fatalf("busy key never shown with a grant rate:\n%s", out)
}
