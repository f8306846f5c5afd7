package httpmw_test

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// noKeepAlive leaves no idle connection (and its goroutines) behind.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// parked is a handler that signals its entry with the method and waits
// until the test lets it go.
func parked(g *gate, seen chan<- string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r.Method
		g.entered <- struct{}{}
		<-g.release
	})
}

// docServers mounts one LockRW (or Limit) route per core.Client, so the
// requests below come from different "service instances".
func docServers(t *testing.T, fx *fixture, n int, mw func(c *fixture) func(http.Handler) http.Handler, h http.Handler) []string {
	t.Helper()
	var urls []string
	for range n {
		mux := http.NewServeMux()
		guarded := mw(fx)(h)
		mux.Handle("GET /docs/{id}", guarded)
		mux.Handle("PUT /docs/{id}", guarded)
		mux.Handle("POST /docs/{id}", guarded)
		urls = append(urls, serve(t, mux).URL)
	}
	return urls
}

// inFlight sends method to url in the background and returns its reply.
func inFlight(t *testing.T, method, url string) <-chan reply {
	ch := make(chan reply, 1)
	go func() { ch <- do(t, noKeepAlive, method, url) }()
	return ch
}

func noEntry(t *testing.T, seen <-chan string, d time.Duration, why string) {
	t.Helper()
	select {
	case m := <-seen:
		t.Fatalf("%s: a %s reached the handler", why, m)
	case <-time.After(d):
	}
}

func TestLockRW_readersOverlapWriterExcludes(t *testing.T) {
	fx := redisFixture(t)
	g, seen := newGate(), make(chan string, 8)
	rw := func(fx *fixture) func(http.Handler) http.Handler {
		return httpmw.LockRW(fx.client(), httpmw.Template("doc:{id}"), httpmw.WithWait(10*time.Second))
	}
	urls := docServers(t, fx, 2, rw, parked(g, seen))
	defer func() {
		select {
		case <-g.release:
		default:
			close(g.release)
		}
	}()

	// Two GETs from two instances are inside the handler at once: the
	// second entry cannot happen if readers serialize.
	r1 := inFlight(t, "GET", urls[0]+"/docs/1")
	r2 := inFlight(t, "GET", urls[1]+"/docs/1")
	g.wait(t)
	g.wait(t)
	<-seen
	<-seen

	// A PUT waits while the readers are in.
	w := inFlight(t, "PUT", urls[1]+"/docs/1")
	noEntry(t, seen, 300*time.Millisecond, "writer while two readers held the key")
	// A GET arriving behind the waiting writer waits too (writer preference).
	r3 := inFlight(t, "GET", urls[0]+"/docs/1")
	noEntry(t, seen, 200*time.Millisecond, "reader behind a waiting writer")

	close(g.release)
	for _, ch := range []<-chan reply{r1, r2} {
		if r := <-ch; r.err != nil || r.status != http.StatusOK {
			t.Fatalf("reader: %+v", r)
		}
	}
	// The writer then runs alone: the queued reader enters only after it.
	if first := <-seen; first != "PUT" {
		t.Fatalf("after the readers, %s entered first; want the waiting PUT", first)
	}
	if r := <-w; r.status != http.StatusOK {
		t.Fatalf("writer: %+v", r)
	}
	if r := <-r3; r.status != http.StatusOK {
		t.Fatalf("late reader: %+v", r)
	}
}

func TestLockRW_writerFailsFastWhileRead(t *testing.T) {
	fx := redisFixture(t)
	g, seen := newGate(), make(chan string, 8)
	rw := func(fx *fixture) func(http.Handler) http.Handler {
		return httpmw.LockRW(fx.client(), httpmw.Template("doc:{id}"))
	}
	urls := docServers(t, fx, 2, rw, parked(g, seen))
	r1 := inFlight(t, "GET", urls[0]+"/docs/7")
	g.wait(t)
	put := do(t, noKeepAlive, "PUT", urls[1]+"/docs/7")
	post := do(t, noKeepAlive, "POST", urls[1]+"/docs/7")
	close(g.release)
	if r := <-r1; r.status != http.StatusOK {
		t.Fatalf("reader: %+v", r)
	}
	for _, r := range []reply{put, post} {
		if r.status != http.StatusConflict || r.retryAfter == "" {
			t.Fatalf("writer during a read = %d (Retry-After %q); want 409 with Retry-After", r.status, r.retryAfter)
		}
	}
	if fx.held("doc:7") {
		t.Fatal("key still held after the requests")
	}
}

func TestLimit_twoInThirdGets429(t *testing.T) {
	fx := redisFixture(t)
	g, seen := newGate(), make(chan string, 8)
	limit := func(fx *fixture) func(http.Handler) http.Handler {
		return httpmw.Limit(fx.client(), httpmw.Template("doc:{id}"), 2, httpmw.WithWait(200*time.Millisecond))
	}
	urls := docServers(t, fx, 2, limit, parked(g, seen))
	r1 := inFlight(t, "POST", urls[0]+"/docs/1")
	r2 := inFlight(t, "POST", urls[1]+"/docs/1")
	g.wait(t) // both permits in use at once: the limit admits 2, not 1
	g.wait(t)
	start := time.Now()
	third := do(t, noKeepAlive, "POST", urls[0]+"/docs/1")
	if third.status != http.StatusTooManyRequests || third.retryAfter == "" {
		t.Fatalf("third = %d %q (Retry-After %q); want 429 with Retry-After", third.status, third.body, third.retryAfter)
	}
	if waited := time.Since(start); waited < 150*time.Millisecond {
		t.Fatalf("third refused after %v; want it to wait about 200ms for a permit", waited)
	}
	// Another key has its own permits.
	other := inFlight(t, "POST", urls[1]+"/docs/2")
	g.wait(t)
	close(g.release)
	for _, ch := range []<-chan reply{r1, r2, other} {
		if r := <-ch; r.status != http.StatusOK {
			t.Fatalf("admitted request: %+v", r)
		}
	}
	if got := len(seen); got != 3 {
		t.Fatalf("%d requests reached the handler; want 3", got)
	}
}

func TestLimit_permitFreedWithinWait(t *testing.T) {
	fx := redisFixture(t)
	g, seen := newGate(), make(chan string, 8)
	limit := func(fx *fixture) func(http.Handler) http.Handler {
		return httpmw.Limit(fx.client(), httpmw.Template("doc:{id}"), 1, httpmw.WithWait(5*time.Second))
	}
	urls := docServers(t, fx, 2, limit, parked(g, seen))
	r1 := inFlight(t, "POST", urls[0]+"/docs/1")
	g.wait(t)
	<-seen
	r2 := inFlight(t, "POST", urls[1]+"/docs/1")
	noEntry(t, seen, 200*time.Millisecond, "second request while Limit(1) was in use")
	close(g.release)
	for _, ch := range []<-chan reply{r1, r2} {
		if r := <-ch; r.status != http.StatusOK {
			t.Fatalf("request = %+v; want 200 once the permit is free", r)
		}
	}
}

func TestLimit_modeMismatchIs500(t *testing.T) {
	fx := redisFixture(t)
	g, seen := newGate(), make(chan string, 8)
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	c := fx.client()
	mux := http.NewServeMux()
	h := parked(g, seen)
	mux.Handle("POST /a/{id}", httpmw.Limit(c, httpmw.Template("job:{id}"), 2)(h))
	mux.Handle("POST /b/{id}", httpmw.Limit(c, httpmw.Template("job:{id}"), 3, httpmw.WithLogger(log))(h))
	mux.Handle("GET /c/{id}", httpmw.LockRW(c, httpmw.Template("job:{id}"), httpmw.WithLogger(log), httpmw.WithWait(time.Second))(h))
	url := serve(t, mux).URL
	held := inFlight(t, "POST", url+"/a/1")
	g.wait(t)
	for _, path := range []string{"/b/1", "/c/1"} {
		method := map[string]string{"/b/1": "POST", "/c/1": "GET"}[path]
		r := do(t, noKeepAlive, method, url+path)
		if r.status != http.StatusInternalServerError || r.retryAfter != "" {
			t.Fatalf("%s %s against Limit(2) holders = %d (Retry-After %q); want 500 without Retry-After", method, path, r.status, r.retryAfter)
		}
	}
	close(g.release)
	<-held
	if s := logs.String(); strings.Count(s, "configuration error") != 2 || !strings.Contains(s, "level=ERROR") {
		t.Fatalf("log %q does not report both configuration errors", s)
	}
	if len(seen) != 1 {
		t.Fatalf("%d requests reached the handler; want only the first", len(seen))
	}
}

func TestLockRW_unsupportedBackendIs500(t *testing.T) {
	srv := redistest.Start(t)
	// Redlock takes exclusive holds only.
	c := core.NewRedlock([]redis.UniversalClient{srv.Client(t), srv.Client(t), srv.Client(t)})
	t.Cleanup(func() { _ = c.Close() })
	var logs syncBuffer
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("handler ran") })
	mux := http.NewServeMux()
	mux.Handle("GET /docs/{id}", httpmw.LockRW(c, httpmw.Template("doc:{id}"), httpmw.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))(h))
	mux.Handle("POST /jobs/{id}", httpmw.Limit(c, httpmw.Template("job:{id}"), 2, httpmw.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))(h))
	url := serve(t, mux).URL
	for _, tc := range [][2]string{{"GET", "/docs/1"}, {"POST", "/jobs/1"}} {
		if r := do(t, noKeepAlive, tc[0], url+tc[1]); r.status != http.StatusInternalServerError {
			t.Fatalf("%s %s on etcd = %d; want 500", tc[0], tc[1], r.status)
		}
	}
	if !strings.Contains(logs.String(), "mode not supported") {
		t.Fatalf("log %q does not name the unsupported mode", logs.String())
	}
}

func TestLimit_panicsOnBadN(t *testing.T) {
	c := newMemoryClient()
	t.Cleanup(func() { _ = c.Close() })
	for _, n := range []int{0, -1, 1<<20 + 1} {
		func() {
			defer func() {
				if v := recover(); v == nil || !strings.HasPrefix(v.(string), "httpmw: the n of Limit") {
					t.Errorf("Limit(n=%d) panic = %v; want the httpmw Limit panic", n, v)
				}
			}()
			httpmw.Limit(c, httpmw.Template("x"), n)
		}()
	}
}

func TestLockRW_sharedHoldDoesNotStandInForExclusive(t *testing.T) {
	fx := redisFixture(t)
	c := fx.client()
	ran := false
	inner := httpmw.Lock(c, httpmw.Template("doc:{id}"), httpmw.WithLogger(slog.New(slog.DiscardHandler)))(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { ran = true }))
	mux := http.NewServeMux()
	mux.Handle("GET /docs/{id}", httpmw.LockRW(c, httpmw.Template("doc:{id}"))(inner))
	r := do(t, noKeepAlive, "GET", serve(t, mux).URL+"/docs/1")
	if r.status != http.StatusInternalServerError || ran {
		t.Fatalf("exclusive Lock inside a shared hold = %d (handler ran %v); want 500, not a silent reentrant pass", r.status, ran)
	}
}
