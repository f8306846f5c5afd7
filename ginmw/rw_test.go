package ginmw_test

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/ginmw"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
)

// noKeepAlive leaves no idle connection (and its goroutines) behind.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// parked signals its entry with the method, then waits for release.
func parked(seen chan<- string, release <-chan struct{}) gin.HandlerFunc {
	return func(c *gin.Context) {
		seen <- c.Request.Method
		<-release
		c.Status(http.StatusOK)
	}
}

// docEngines starts n engines, each with its own core.Client on one
// redis-server, guarding /docs/:id with mw.
func docEngines(t *testing.T, n int, mw func(*core.Client) gin.HandlerFunc, h gin.HandlerFunc) []string {
	t.Helper()
	srv := redistest.Start(t)
	var urls []string
	for range n {
		c := core.New(srv.Client(t))
		t.Cleanup(func() { _ = c.Close() })
		e := newEngine()
		g := mw(c)
		e.GET("/docs/:id", g, h)
		e.PUT("/docs/:id", g, h)
		e.POST("/docs/:id", g, h)
		urls = append(urls, serve(t, e).URL)
	}
	return urls
}

func inFlight(t *testing.T, method, url string) <-chan reply {
	ch := make(chan reply, 1)
	go func() { ch <- do(t, noKeepAlive, method, url) }()
	return ch
}

func entered(t *testing.T, seen <-chan string) string {
	t.Helper()
	select {
	case m := <-seen:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no request reached the handler within 5s")
		return ""
	}
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
	seen, release := make(chan string, 8), make(chan struct{})
	rw := func(c *core.Client) gin.HandlerFunc {
		return ginmw.LockRW(c, ginmw.Template("doc:{id}"), ginmw.WithWait(10*time.Second))
	}
	urls := docEngines(t, 2, rw, parked(seen, release))
	r1 := inFlight(t, "GET", urls[0]+"/docs/1")
	r2 := inFlight(t, "GET", urls[1]+"/docs/1")
	entered(t, seen) // both readers inside at once: impossible if they serialize
	entered(t, seen)
	w := inFlight(t, "PUT", urls[1]+"/docs/1")
	noEntry(t, seen, 300*time.Millisecond, "writer while two readers held the key")
	close(release)
	for _, ch := range []<-chan reply{r1, r2, w} {
		if r := <-ch; r.err != nil || r.status != http.StatusOK {
			t.Fatalf("request: %+v", r)
		}
	}
	if m := entered(t, seen); m != "PUT" {
		t.Fatalf("%s entered; want the PUT after the readers", m)
	}
}

func TestLockRW_readerWaitsForWriter(t *testing.T) {
	seen, release := make(chan string, 8), make(chan struct{})
	rw := func(c *core.Client) gin.HandlerFunc {
		return ginmw.LockRW(c, ginmw.Template("doc:{id}"), ginmw.WithWait(150*time.Millisecond))
	}
	urls := docEngines(t, 2, rw, parked(seen, release))
	w := inFlight(t, "PUT", urls[0]+"/docs/1")
	entered(t, seen)
	r := do(t, noKeepAlive, "GET", urls[1]+"/docs/1")
	close(release)
	if r.status != http.StatusConflict || r.retryAfter == "" {
		t.Fatalf("GET during a PUT = %d (Retry-After %q); want 409 after the wait", r.status, r.retryAfter)
	}
	if r := <-w; r.status != http.StatusOK {
		t.Fatalf("writer: %+v", r)
	}
}

func TestLimit_twoInThirdGets429(t *testing.T) {
	seen, release := make(chan string, 8), make(chan struct{})
	limit := func(c *core.Client) gin.HandlerFunc {
		return ginmw.Limit(c, ginmw.Template("doc:{id}"), 2, ginmw.WithWait(100*time.Millisecond))
	}
	urls := docEngines(t, 2, limit, parked(seen, release))
	r1 := inFlight(t, "POST", urls[0]+"/docs/1")
	r2 := inFlight(t, "POST", urls[1]+"/docs/1")
	entered(t, seen) // two permits in use at once
	entered(t, seen)
	third := do(t, noKeepAlive, "POST", urls[0]+"/docs/1")
	close(release)
	if third.status != http.StatusTooManyRequests || third.retryAfter == "" || !strings.Contains(third.body, `"limited"`) {
		t.Fatalf("third = %d %s (Retry-After %q); want 429 limited with Retry-After", third.status, third.body, third.retryAfter)
	}
	for _, ch := range []<-chan reply{r1, r2} {
		if r := <-ch; r.status != http.StatusOK {
			t.Fatalf("admitted request: %+v", r)
		}
	}
	if len(seen) != 0 {
		t.Fatal("the refused request reached the handler")
	}
}

func TestLimit_modeMismatchIs500(t *testing.T) {
	srv := redistest.Start(t)
	c := core.New(srv.Client(t))
	t.Cleanup(func() { _ = c.Close() })
	var logs syncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	seen, release := make(chan string, 8), make(chan struct{})
	e := newEngine()
	e.POST("/a/:id", ginmw.Limit(c, ginmw.Template("job:{id}"), 2), parked(seen, release))
	e.POST("/b/:id", ginmw.Limit(c, ginmw.Template("job:{id}"), 3, ginmw.WithLogger(log)), parked(seen, release))
	e.GET("/c/:id", ginmw.LockRW(c, ginmw.Template("job:{id}"), ginmw.WithLogger(log)), parked(seen, release))
	url := serve(t, e).URL
	held := inFlight(t, "POST", url+"/a/1")
	entered(t, seen)
	b := do(t, noKeepAlive, "POST", url+"/b/1")
	cr := do(t, noKeepAlive, "GET", url+"/c/1")
	close(release)
	<-held
	for _, r := range []reply{b, cr} {
		if r.status != http.StatusInternalServerError || r.retryAfter != "" {
			t.Fatalf("against Limit(2) holders = %d %s (Retry-After %q); want 500", r.status, r.body, r.retryAfter)
		}
	}
	if s := logs.String(); strings.Count(s, "configuration error") != 2 {
		t.Fatalf("log %q does not report both configuration errors", s)
	}
}

func TestLockRW_unsupportedBackendIs500(t *testing.T) {
	srv := redistest.Start(t)
	c := core.NewRedlock([]redis.UniversalClient{srv.Client(t), srv.Client(t), srv.Client(t)})
	t.Cleanup(func() { _ = c.Close() })
	e := newEngine()
	e.GET("/docs/:id", ginmw.LockRW(c, ginmw.Template("doc:{id}"), ginmw.WithLogger(slog.New(slog.DiscardHandler))),
		func(c *gin.Context) { t.Error("handler ran") })
	if r := do(t, noKeepAlive, "GET", serve(t, e).URL+"/docs/1"); r.status != http.StatusInternalServerError {
		t.Fatalf("LockRW GET on Redlock = %d; want 500", r.status)
	}
}
