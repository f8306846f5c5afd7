package lockdebug_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/fencedlock/fencedlock/lockdebug"
)

// fixture is a real Client on a real redis-server holding one lock, with a
// second goroutine of the same Client waiting for it.
type fixture struct {
	client *core.Client
	lock   *core.Lock
	srv    *httptest.Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	rs := redistest.Start(t)
	c := core.New(rs.Client(t))
	t.Cleanup(func() { c.Close() })
	l, err := c.Acquire(context.Background(), "coupon:<42>", core.WithName("POST /coupons/{id}"),
		core.WithTTL(5*time.Second), core.WithAutoRefresh(200*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if w, err := c.Acquire(ctx, "coupon:<42>", core.WithWait(time.Minute)); err == nil {
			w.Release(context.Background())
		}
	}()
	t.Cleanup(func() { cancel(); <-done; l.Release(context.Background()) })
	waitUntil(t, func() bool { return len(c.Snapshot().Waiting) == 1 })
	srv := httptest.NewServer(lockdebug.Handler(c, lockdebug.WithRefresh(time.Second)))
	t.Cleanup(srv.Close)
	return &fixture{client: c, lock: l, srv: srv}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func get(t *testing.T, url, accept string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestHandler_json_reportsHeldAndWaiting(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct{ url, accept string }{{f.srv.URL + "?format=json", ""}, {f.srv.URL, "application/json"}} {
		resp, body := get(t, tc.url, tc.accept)
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("content type %q", ct)
		}
		var doc lockdebug.Document
		if err := json.Unmarshal([]byte(body), &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Backend == "" || len(doc.Held) != 1 || len(doc.Waiting) != 1 {
			t.Fatalf("document: %s", body)
		}
		h := doc.Held[0]
		if h.Key != "coupon:<42>" || h.Name != "POST /coupons/{id}" || h.Fence != f.lock.Fence() ||
			h.Owner != f.lock.Owner() || !h.AutoRefresh || h.TTLMS != 5000 || h.RemainingMS <= 0 {
			t.Fatalf("held: %+v", h)
		}
		w := doc.Waiting[0]
		if w.BackendKey != core.KeysFor(core.DefaultPrefix, "coupon:<42>").Lock || w.Waiters < 1 || !w.Held {
			t.Fatalf("waiting: %+v", w)
		}
	}
}

func TestHandler_html_escapesKeysAndRefreshes(t *testing.T) {
	f := newFixture(t)
	resp, body := get(t, f.srv.URL, "text/html")
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{`content="1"`, `id="held"`, "coupon:&lt;42&gt;", f.lock.Owner()} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "coupon:<42>") {
		t.Error("key not HTML-escaped")
	}
}

func TestHandler_rejectsWrites(t *testing.T) {
	f := newFixture(t)
	resp, err := http.Post(f.srv.URL, "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", resp.StatusCode)
	}
}

func TestHandler_emptyClient(t *testing.T) {
	rs := redistest.Start(t)
	c := core.New(rs.Client(t))
	defer c.Close()
	rec := httptest.NewRecorder()
	lockdebug.Handler(c).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/?format=json", nil))
	if !strings.Contains(rec.Body.String(), `"held": []`) || !strings.Contains(rec.Body.String(), `"waiting": []`) {
		t.Fatalf("empty lists should be []: %s", rec.Body.String())
	}
}

func TestHandler_badConfigPanics(t *testing.T) {
	for name, f := range map[string]func(){
		"nil":     func() { lockdebug.Handler(nil) },
		"refresh": func() { lockdebug.WithRefresh(10 * time.Millisecond) },
	} {
		func() {
			defer func() {
				if r := recover(); r == nil || !strings.HasPrefix(r.(string), "lockdebug: ") {
					t.Errorf("%s: recover() = %v", name, r)
				}
			}()
			f()
		}()
	}
}
