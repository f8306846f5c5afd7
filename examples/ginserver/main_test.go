package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/fencedlock/fencedlock/lockdebug"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// app is the example's routes on a real redis-server.
func app(t *testing.T) (*redistest.Server, *shop, http.Handler) {
	t.Helper()
	rs := redistest.Start(t)
	rdb, closeRedis, err := openRedis(rs.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeRedis)
	locker := core.New(rdb, core.WithPrefix("t:lock:"))
	t.Cleanup(func() { locker.Close() })
	s := &shop{rdb: rdb, ns: "t:", hold: 100 * time.Millisecond}
	return rs, s, routes(locker, s)
}

// The default mode: the bursts come out as the lock promises.
func TestDemo(t *testing.T) {
	_, s, h := app(t)
	if err := demo(context.Background(), h, s, 20); err != nil {
		t.Fatal(err)
	}
}

// Serve mode is reachable by an outside client: a burst of claims gets one
// 200 and 409s with Retry-After, the debug page answers, a Redis outage
// answers 503 with Retry-After at once, and cancelling stops the server.
func TestServe_outsideClient(t *testing.T) {
	rs, s, h := app(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveOn(ctx, ln, h, s) }()
	base := "http://" + ln.Addr().String()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	// Closed before the server stops (cleanups run last-in first-out): a
	// connection dialled but never used would hold Shutdown for 5 s.
	t.Cleanup(client.CloseIdleConnections)
	waitServing(t, base)

	counts := claimBurst(t, base+"/coupons/1/claim", 10)
	if counts[http.StatusOK] != 1 || counts[http.StatusConflict] != 9 {
		t.Fatalf("burst of 10 claims: %v, want one 200 and nine 409", counts)
	}
	code, _, body := call(t, http.MethodGet, base+"/debug/locks?format=json")
	var doc lockdebug.Document
	if code != http.StatusOK || json.Unmarshal([]byte(body), &doc) != nil || doc.Backend == "" {
		t.Fatalf("debug page: %d %s", code, body)
	}

	if code, _, _ := call(t, http.MethodPost, base+"/coupons/404/claim"); code != http.StatusNotFound {
		t.Fatalf("unknown coupon: %d, want 404", code)
	}

	rs.Kill()
	start := time.Now()
	code, ra, _ := call(t, http.MethodPost, base+"/coupons/2/claim")
	took := time.Since(start)
	if code != http.StatusServiceUnavailable || ra == "" || took > 500*time.Millisecond {
		t.Fatalf("with Redis down: %d, Retry-After %q after %v; want 503 with Retry-After in well under a second", code, ra, took)
	}
	t.Logf("first 503 with Redis down after %v, Retry-After: %s", took, ra)
}

// client is the test's outside client.
var client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}

// claimBurst sends n concurrent claims to url and counts the statuses; a
// 409 must carry Retry-After.
func claimBurst(t *testing.T, url string, n int) map[int]int {
	counts := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			code, ra, b := call(t, http.MethodPost, url)
			if code != http.StatusOK && code != http.StatusConflict {
				t.Logf("claim: %d %s", code, b)
			}
			mu.Lock()
			defer mu.Unlock()
			counts[code]++
			if code == http.StatusConflict && ra == "" {
				t.Error("409 without Retry-After")
			}
		})
	}
	wg.Wait()
	return counts
}

func waitServing(t *testing.T, base string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if code, _, _ := call(t, http.MethodGet, base+"/debug/locks"); code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("server not answering")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func call(t *testing.T, method, url string) (code int, retryAfter, body string) {
	req, _ := http.NewRequest(method, url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(b)
}
