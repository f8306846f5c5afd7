package httpmw_test

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

func logLines(s *syncBuffer) []string { return strings.Split(strings.TrimSpace(s.String()), "\n") }

// With Redis down, 50 concurrent clients hammering a route for a second
// produce one log line (the first failure), not one per request; the first
// request after Redis is back logs the recovery with the count.
func TestLock_outage_logsFirstFailureThenRecovery(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { rdb.Close() })
	locker := core.New(rdb)
	t.Cleanup(func() { locker.Close() })
	var logs syncBuffer
	mw := httpmw.Lock(locker, httpmw.PathValue("id"), httpmw.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	mux := http.NewServeMux()
	mux.Handle("POST /orders/{id}", mw(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})))
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)

	srv.Kill()
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	stop := time.Now().Add(time.Second)
	for c := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if code := postStatus(t, hs.URL+"/orders/"+string(rune('a'+c%26))); code == http.StatusServiceUnavailable {
					mu.Lock()
					refused++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if refused < 100 {
		t.Fatalf("only %d requests refused: the outage was not exercised", refused)
	}
	if l := logLines(&logs); len(l) != 1 || !strings.Contains(l[0], "lock backend unavailable") {
		t.Fatalf("%d refused requests gave %d log lines, want 1:\n%s", refused, len(l), strings.Join(l, "\n"))
	}

	srv.Restart()
	waitUntil(t, func() bool { return postStatus(t, hs.URL+"/orders/z") == http.StatusOK })
	l := logLines(&logs)
	if len(l) != 2 || !strings.Contains(l[1], "answering again") || !strings.Contains(l[1], "total=") {
		t.Fatalf("want the recovery line after the outage:\n%s", strings.Join(l, "\n"))
	}
	t.Logf("%d refused requests, %d log lines", refused, len(l))
}

func postStatus(t *testing.T, url string) int {
	resp, err := http.Post(url, "text/plain", nil)
	if err != nil {
		t.Error(err)
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fastFailOptions are the go-redis settings docs/operators.md recommends for
// a fail-closed answer in well under a second when Redis is unreachable: no
// command retries (go-redis retries 3 times with backoff by default) and one
// dial attempt (v9 retries a failed dial 5 times, 100 ms apart).
func fastFailOptions(addr string) *redis.Options {
	return &redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: 250 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond}
}

func firstRefusal(t *testing.T, opt *redis.Options) (time.Duration, http.Header) {
	t.Helper()
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	locker := core.New(rdb)
	defer locker.Close()
	mw := httpmw.Lock(locker, httpmw.PathValue("id"), httpmw.WithLogger(slog.New(slog.DiscardHandler)))
	mux := http.NewServeMux()
	mux.Handle("POST /orders/{id}", mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	rec := httptest.NewRecorder()
	start := time.Now()
	mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/orders/1", nil))
	d := time.Since(start)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503", rec.Code)
	}
	return d, rec.Header()
}

// With Redis down, the recommended client settings answer the first 503 in
// well under the ~1.7 s the go-redis defaults take, and the 503 says when to
// come back.
func TestLock_outage_fastFailClosedWithRetryAfter(t *testing.T) {
	srv := redistest.Start(t)
	addr := srv.Addr()
	srv.Kill()
	fast, hdr := firstRefusal(t, fastFailOptions(addr))
	slow, _ := firstRefusal(t, &redis.Options{Addr: addr})
	t.Logf("first 503: %v with the recommended settings, %v with go-redis defaults", fast, slow)
	if fast > 500*time.Millisecond {
		t.Fatalf("first 503 took %v with fast-fail settings, want < 500ms", fast)
	}
	if ra := hdr.Get("Retry-After"); ra != "2" && ra != "3" {
		t.Fatalf("503 Retry-After %q, want about 2 s", ra)
	}
}
