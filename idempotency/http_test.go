package idempotency_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/idempotency"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// bank is a charge endpoint: every run of the handler is one charge.
type bank struct {
	delay   time.Duration
	charges atomic.Int64
}

func (b *bank) handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		time.Sleep(b.delay) // a slow payment provider; it does not watch the context
		n := b.charges.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"charge":%d,"amount":%q}`, n, body)
	})
}

// retry sends one charge with a short timeout until it gets an answer, and
// returns the successful answers and the number of attempts.
func retry(t *testing.T, url, key string, attempts int) (ok []reply, tries int) {
	t.Helper()
	c := ownClient(t, 100*time.Millisecond)
	for tries < attempts {
		tries++
		r := post(context.Background(), c, url, key, "42.00")
		if r.err == nil && r.status == http.StatusCreated {
			ok = append(ok, r)
			if len(ok) == 3 { // a few answers after the first success
				break
			}
			continue
		}
		time.Sleep(20 * time.Millisecond)
	}
	return ok, tries
}

func TestMiddleware_retryingClient_chargesOnce(t *testing.T) {
	fx := newFixture(t)
	b := &bank{delay: 300 * time.Millisecond}
	ts := serve(t, fx.client(), fx.store, b.handler())

	ok, tries := retry(t, ts.URL+"/charges", "charge-1", 40)
	ts.Close() // waits for the handler runs the client gave up on
	if tries < 3 {
		t.Fatalf("only %d attempts: the client never timed out", tries)
	}
	if len(ok) == 0 {
		t.Fatalf("no attempt out of %d succeeded", tries)
	}
	for _, r := range ok {
		if r.body != ok[0].body {
			t.Fatalf("answers differ: %q vs %q", r.body, ok[0].body)
		}
		if !r.replayed {
			t.Fatalf("answer %q not marked %s", r.body, idempotency.ReplayedHeader)
		}
	}
	if got := b.charges.Load(); got != 1 {
		t.Fatalf("charges = %d after %d attempts, want 1", got, tries)
	}
}

// The negative control: the same client and handler without the
// middleware charge once per attempt that reached the handler.
func TestMiddleware_retryingClient_withoutMiddlewareDoubleCharges(t *testing.T) {
	b := &bank{delay: 300 * time.Millisecond}
	mux := http.NewServeMux()
	mux.Handle("POST /charges", b.handler())
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)

	ok, tries := retry(t, ts.URL+"/charges", "charge-1", 6)
	ts.Close() // waits for the handler runs the client gave up on
	if got := b.charges.Load(); got < 2 {
		t.Fatalf("charges = %d after %d attempts (%d answered): the control did not double-charge", got, tries, len(ok))
	}
}

// concurrent sends n identical requests at once, spread over the servers.
func concurrent(servers []*httptest.Server, n int, key string) []reply {
	out := make([]reply, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		ts := servers[i%len(servers)]
		wg.Go(func() {
			<-start
			out[i] = post(context.Background(), ts.Client(), ts.URL+"/charges", key, "10.00")
		})
	}
	close(start)
	wg.Wait()
	return out
}

// gated is a charge handler that waits for the test to open the gate.
func gated(g *gate, runs *atomic.Int64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := runs.Add(1)
		g.entered <- struct{}{}
		<-g.release
		fmt.Fprintf(w, "charge %d", n)
	})
}

func TestMiddleware_concurrentDuplicates_waitForTheFirst(t *testing.T) {
	fx := newFixture(t)
	g := newGate()
	var runs atomic.Int64
	servers := []*httptest.Server{
		serve(t, fx.client(), fx.store, gated(g, &runs)),
		serve(t, fx.client(), fx.store, gated(g, &runs)),
	}
	done := make(chan []reply)
	go func() { done <- concurrent(servers, 8, "dup-1") }()
	g.wait(t)
	time.Sleep(100 * time.Millisecond) // the other seven queue behind it
	g.open()
	replies := <-done

	replayed := 0
	for _, r := range replies {
		if r.err != nil || r.status != http.StatusOK || r.body != replies[0].body {
			t.Fatalf("replies differ: %+v", replies)
		}
		if r.replayed {
			replayed++
		}
	}
	if runs.Load() != 1 || replayed != 7 {
		t.Fatalf("handler runs = %d, replayed = %d; want 1 and 7", runs.Load(), replayed)
	}
}

func TestMiddleware_concurrentDuplicates_noWaitAnswers409(t *testing.T) {
	fx := newFixture(t)
	g := newGate()
	var runs atomic.Int64
	servers := []*httptest.Server{
		serve(t, fx.client(), fx.store, gated(g, &runs), idempotency.WithWait(0)),
		serve(t, fx.client(), fx.store, gated(g, &runs), idempotency.WithWait(0)),
	}
	replies := make(chan reply, 8)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 8 {
		ts := servers[i%2]
		wg.Go(func() {
			<-start
			replies <- post(context.Background(), ts.Client(), ts.URL+"/charges", "dup-2", "10.00")
		})
	}
	close(start)
	g.wait(t)
	codes := map[int]int{}
	for range 7 { // the losers do not wait: answered while the winner is held
		select {
		case r := <-replies:
			codes[r.status]++
		case <-time.After(10 * time.Second):
			g.open()
			wg.Wait()
			t.Fatalf("losers not answered while the first runs: %v", codes)
		}
	}
	g.open()
	wg.Wait()
	codes[(<-replies).status]++
	if runs.Load() != 1 || codes[http.StatusOK] != 1 || codes[http.StatusConflict] != 7 {
		t.Fatalf("runs = %d, statuses = %v; want 1 run, 1×200 and 7×409", runs.Load(), codes)
	}
}

// quietServer serves h as POST /charges without logging handler panics.
func quietServer(t *testing.T, l core.Locker, s idempotency.Store, h http.Handler, opts ...idempotency.Option) *httptest.Server {
	mux := http.NewServeMux()
	mux.Handle("POST /charges", idempotency.Middleware(l, s, opts...)(h))
	ts := httptest.NewUnstartedServer(mux)
	ts.Config.ErrorLog = log.New(io.Discard, "", 0)
	ts.Start()
	t.Cleanup(ts.Close)
	return ts
}

func TestMiddleware_clientErrors(t *testing.T) {
	fx := newFixture(t)
	var runs atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		_, _ = io.WriteString(w, "ok")
	})
	ts := serve(t, fx.client(), fx.store, h, idempotency.WithMaxRequestBody(64))
	url := ts.URL + "/charges"
	ctx := context.Background()
	if r := post(ctx, ts.Client(), url, "k1", "a"); r.status != http.StatusOK {
		t.Fatalf("first: %+v", r)
	}
	cases := []struct {
		name, url, key, body string
		want                 int
	}{
		{"other body", url, "k1", "b", http.StatusUnprocessableEntity},
		{"other query", url + "?x=1", "k1", "a", http.StatusUnprocessableEntity},
		{"missing key", url, "", "a", http.StatusBadRequest},
		{"oversized key", url, strings.Repeat("k", idempotency.MaxKeyLen+1), "a", http.StatusBadRequest},
		{"non-ASCII", url, "k\u00e9", "a", http.StatusBadRequest},
		{"unbalanced quote", url, `"k1`, "a", http.StatusBadRequest},
		{"body too large", url, "k2", strings.Repeat("x", 65), http.StatusRequestEntityTooLarge},
		{"quoted key is the same key", url, `"k1"`, "a", http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := post(ctx, ts.Client(), c.url, c.key, c.body)
			if r.err != nil || r.status != c.want {
				t.Fatalf("got %d %q (%v), want %d", r.status, r.body, r.err, c.want)
			}
		})
	}
	if runs.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", runs.Load())
	}
}

func TestMiddleware_twoKeyHeaders_400(t *testing.T) {
	fx := newFixture(t)
	ts := serve(t, fx.client(), fx.store, http.NotFoundHandler())
	req, _ := http.NewRequest("POST", ts.URL+"/charges", nil)
	req.Header.Add("Idempotency-Key", "a")
	req.Header.Add("Idempotency-Key", "b")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("status %d, want 400", resp.StatusCode)
	}
}

func TestMiddleware_panic_nothingStoredRetryRuns(t *testing.T) {
	fx := newFixture(t)
	var runs atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if runs.Add(1) == 1 {
			_, _ = io.WriteString(w, "half an answer")
			panic("charge failed")
		}
		_, _ = io.WriteString(w, "charged")
	})
	ts := quietServer(t, fx.client(), fx.store, h)
	ctx := context.Background()
	if r := post(ctx, ts.Client(), ts.URL+"/charges", "p1", "x"); r.err == nil {
		t.Fatalf("panicking handler answered %d %q", r.status, r.body)
	}
	r := post(ctx, ts.Client(), ts.URL+"/charges", "p1", "x")
	if r.status != http.StatusOK || r.body != "charged" || r.replayed || runs.Load() != 2 {
		t.Fatalf("retry: %+v after %d runs; want a fresh 200 from a second run", r, runs.Load())
	}
	if r := post(ctx, ts.Client(), ts.URL+"/charges", "p1", "x"); !r.replayed || r.body != "charged" {
		t.Fatalf("third: %+v, want the stored answer", r)
	}
}

func TestMiddleware_serverError(t *testing.T) {
	for _, store5xx := range []bool{false, true} {
		t.Run(fmt.Sprint("store5xx=", store5xx), func(t *testing.T) {
			fx := newFixture(t)
			var runs atomic.Int64
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				runs.Add(1)
				http.Error(w, "provider down", http.StatusBadGateway)
			})
			var opts []idempotency.Option
			if store5xx {
				opts = append(opts, idempotency.WithStoreServerErrors())
			}
			ts := serve(t, fx.client(), fx.store, h, opts...)
			for range 2 {
				post(context.Background(), ts.Client(), ts.URL+"/charges", "e1", "x")
			}
			want := int64(2)
			if store5xx {
				want = 1
			}
			if runs.Load() != want {
				t.Fatalf("handler runs = %d, want %d", runs.Load(), want)
			}
		})
	}
}

func TestMiddleware_scopes(t *testing.T) {
	fx := newFixture(t)
	var runs atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "run %d", runs.Add(1))
	})
	tenant := idempotency.WithTenant(func(r *http.Request) string { return r.Header.Get("X-Tenant") })
	mw := idempotency.Middleware(fx.client(), fx.store, tenant)
	mux := http.NewServeMux()
	mux.Handle("POST /charges", mw(h))
	mux.Handle("POST /refunds", mw(h))
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	send := func(path, tenant string) string {
		req, _ := http.NewRequest("POST", ts.URL+path, strings.NewReader("x"))
		req.Header.Set("Idempotency-Key", "same")
		req.Header.Set("X-Tenant", tenant)
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	got := []string{send("/charges", "a"), send("/charges", "b"), send("/refunds", "a"), send("/charges", "a")}
	want := []string{"run 1", "run 2", "run 3", "run 1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("answers %q, want %q", got, want)
	}
}

func TestMiddleware_optionalKey(t *testing.T) {
	fx := newFixture(t)
	var runs atomic.Int64
	h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { runs.Add(1) })
	ts := serve(t, fx.client(), fx.store, h, idempotency.WithOptionalKey())
	for range 2 {
		post(context.Background(), ts.Client(), ts.URL+"/charges", "", "x")
	}
	if runs.Load() != 2 {
		t.Fatalf("runs = %d, want 2 (no key, no idempotency)", runs.Load())
	}
}

// A first holder whose lock connection is partitioned past its lease
// finishes after a retry on another instance answered: its late store write
// is refused by the fence and the stored answer stays the retry's.
func TestMiddleware_staleHolder_lateWriteRefused(t *testing.T) {
	fx := newFixture(t)
	proxy := redistest.NewProxy(t, fx.srv.Addr())
	staleRDB := redisClient(t, proxy.Addr())
	staleLocker := core.New(staleRDB)
	t.Cleanup(func() { _ = staleLocker.Close() })
	var logs syncBuffer
	opts := []idempotency.Option{
		idempotency.WithTTL(300 * time.Millisecond), idempotency.WithAutoRefresh(),
		idempotency.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
	}

	g := newGate()
	stale := serve(t, staleLocker, fx.store, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.entered <- struct{}{}
		<-g.release
		_, _ = io.WriteString(w, "stale answer")
	}), opts...)
	fresh := serve(t, fx.client(), fx.store, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "retry answer")
	}), opts...)

	staleReply := make(chan reply, 1)
	go func() { staleReply <- post(context.Background(), stale.Client(), stale.URL+"/charges", "s1", "x") }()
	g.wait(t)
	proxy.Block() // renewals cannot reach Redis: the lease runs out
	time.Sleep(500 * time.Millisecond)

	r := post(context.Background(), fresh.Client(), fresh.URL+"/charges", "s1", "x")
	if r.status != http.StatusOK || r.body != "retry answer" {
		t.Fatalf("retry: %+v", r)
	}
	proxy.Unblock()
	g.open() // the stale holder resumes and tries to store its answer
	if sr := <-staleReply; sr.status != http.StatusConflict {
		t.Fatalf("stale holder answered %d %q, want 409", sr.status, sr.body)
	}
	if !strings.Contains(logs.String(), "stale fence") {
		t.Fatalf("the refusal was not the store's fence check; logs: %s", logs.String())
	}
	rec, err := fx.store.Lookup(context.Background(), idempotency.Scope{Route: "POST /charges", Key: "s1"}.LockKey())
	if err != nil || string(rec.Body) != "retry answer" {
		t.Fatalf("stored answer %v, %v; want the retry's", rec, err)
	}
	if r := post(context.Background(), fresh.Client(), fresh.URL+"/charges", "s1", "x"); !r.replayed || r.body != "retry answer" {
		t.Fatalf("replay after the stale write: %+v", r)
	}
}

func redisClient(t *testing.T, addr string) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: addr, ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// syncBuffer is a bytes.Buffer safe for a logger on server goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// ownClient is an HTTP client with its own connection pool, closed when the
// test ends, so no keep-alive goroutine outlives it.
func ownClient(t *testing.T, timeout time.Duration) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: timeout}
}

// An answer above WithMaxBody is sent whole but not stored: a retry runs
// the handler again.
func TestMiddleware_largeAnswer_sentNotStored(t *testing.T) {
	fx := newFixture(t)
	var runs atomic.Int64
	big := strings.Repeat("y", 100)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		w.Header().Set("X-Run", "1")
		_, _ = io.WriteString(w, big[:40])
		_, _ = io.WriteString(w, big[40:])
	})
	ts := serve(t, fx.client(), fx.store, h, idempotency.WithMaxBody(64))
	for range 2 {
		if r := post(context.Background(), ts.Client(), ts.URL+"/charges", "big", "x"); r.status != http.StatusOK || r.body != big || r.replayed {
			t.Fatalf("large answer: %+v", r)
		}
	}
	if runs.Load() != 2 {
		t.Fatalf("runs = %d, want 2 (not stored)", runs.Load())
	}
}

// A handler that gives up when its client goes away (it returns without an
// answer, or with a client-error status) stores nothing: the retry runs it
// again and gets a fresh answer.
func TestMiddleware_clientGone_failureNotStored(t *testing.T) {
	for _, name := range []string{"no answer", "499"} {
		t.Run(name, func(t *testing.T) {
			fx := newFixture(t)
			var runs atomic.Int64
			gaveUp := make(chan struct{}, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if runs.Add(1) > 1 {
					w.WriteHeader(http.StatusCreated)
					_, _ = io.WriteString(w, "charged")
					return
				}
				<-r.Context().Done() // the provider call is abandoned with the client
				if name == "499" {
					w.WriteHeader(499)
				}
				gaveUp <- struct{}{}
			})
			ts := serve(t, fx.client(), fx.store, h)
			if r := post(context.Background(), ownClient(t, 100*time.Millisecond), ts.URL+"/charges", "g1", "x"); r.err == nil {
				t.Fatalf("first attempt answered %+v before the client gave up", r)
			}
			<-gaveUp
			var r reply
			for range 50 { // the first attempt releases the lock after it returns
				if r = post(context.Background(), ts.Client(), ts.URL+"/charges", "g1", "x"); r.status != http.StatusConflict {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if r.status != http.StatusCreated || r.body != "charged" || r.replayed || runs.Load() != 2 {
				t.Fatalf("retry: %+v after %d runs; want a fresh 201 from a second run", r, runs.Load())
			}
		})
	}
}

// What is stored: the status, the selected headers (default Content-Type
// and Location) and the body, kept for the retention (default 24h).
func TestMiddleware_storedAnswer_headersAndRetention(t *testing.T) {
	cases := []struct {
		name      string
		opts      []idempotency.Option
		kept      []string
		dropped   []string
		retention time.Duration
	}{
		{"defaults", nil, []string{"Content-Type", "Location"}, []string{"X-Trace"}, 24 * time.Hour},
		{"configured", []idempotency.Option{idempotency.WithStoredHeaders("x-trace"), idempotency.WithRetention(time.Hour)},
			[]string{"X-Trace"}, []string{"Content-Type", "Location"}, time.Hour},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fx := newFixture(t)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Location", "/charges/ch_1")
				w.Header().Set("X-Trace", "t-1")
				w.WriteHeader(http.StatusAccepted)
				_, _ = io.WriteString(w, `{"id":"ch_1"}`)
			})
			ts := serve(t, fx.client(), fx.store, h, c.opts...)
			send := func() *http.Response { return sendAccepted(t, ts, "h1") }
			if first := send(); first.Header.Get("X-Trace") != "t-1" || first.Header.Get(idempotency.ReplayedHeader) != "" {
				t.Fatalf("first answer lacks the handler's headers or is marked replayed: %v", first.Header)
			}
			again := send()
			if again.Header.Get(idempotency.ReplayedHeader) != "true" {
				t.Fatal("second answer not replayed")
			}
			sent := map[string]string{"Content-Type": "application/json", "Location": "/charges/ch_1", "X-Trace": "t-1"}
			for _, k := range c.kept {
				if again.Header.Get(k) != sent[k] {
					t.Errorf("replay lacks %s: %v", k, again.Header)
				}
			}
			for _, k := range c.dropped {
				if again.Header.Get(k) == sent[k] { // net/http sniffs a Content-Type of its own
					t.Errorf("replay carries %s, which is not stored: %v", k, again.Header)
				}
			}
			key := fx.store.RecordKey(idempotency.Scope{Route: "POST /charges", Key: "h1"}.LockKey())
			if ttl := fx.rdb.PTTL(context.Background(), key).Val(); ttl <= c.retention-time.Minute || ttl > c.retention {
				t.Fatalf("record TTL %v, want the retention %v", ttl, c.retention)
			}
		})
	}
}

// The negative control of the concurrent-duplicate tests: without the
// middleware the eight duplicates are eight charges.
func TestMiddleware_concurrentDuplicates_withoutMiddlewareRunEach(t *testing.T) {
	g := newGate()
	var runs atomic.Int64
	var servers []*httptest.Server
	for range 2 {
		mux := http.NewServeMux()
		mux.Handle("POST /charges", gated(g, &runs))
		ts := httptest.NewServer(mux)
		t.Cleanup(ts.Close)
		servers = append(servers, ts)
	}
	done := make(chan []reply)
	go func() { done <- concurrent(servers, 8, "dup-3") }()
	for range 8 {
		g.wait(t) // every duplicate reaches the handler
	}
	g.open()
	<-done
	if runs.Load() != 8 {
		t.Fatalf("handler runs = %d without the middleware, want 8", runs.Load())
	}
}

// A duplicate waits up to WithWait for the running attempt, then answers
// 409 with a Retry-After from the running attempt's lease.
func TestMiddleware_duplicate_waitBoundThen409(t *testing.T) {
	fx := newFixture(t)
	g := newGate()
	defer g.open()
	var runs atomic.Int64
	ts := serve(t, fx.client(), fx.store, gated(g, &runs), idempotency.WithWait(150*time.Millisecond), idempotency.WithTTL(5*time.Second))
	first := make(chan reply, 1)
	go func() { first <- post(context.Background(), ts.Client(), ts.URL+"/charges", "w1", "x") }()
	g.wait(t)

	start := time.Now()
	req, _ := http.NewRequest("POST", ts.URL+"/charges", strings.NewReader("x"))
	req.Header.Set("Idempotency-Key", "w1")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waited := time.Since(start)
	if resp.StatusCode != http.StatusConflict || waited < 150*time.Millisecond {
		t.Fatalf("duplicate: %d after %v; want 409 after the 150ms wait", resp.StatusCode, waited)
	}
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "0" {
		t.Fatalf("Retry-After %q, want the running attempt's remaining lease", ra)
	}
	g.open()
	if r := <-first; r.status != http.StatusOK || runs.Load() != 1 {
		t.Fatalf("first: %+v after %d runs", r, runs.Load())
	}
}

// sendAccepted posts key to ts and checks the 202 answer of
// TestMiddleware_storedAnswer_headersAndRetention.
func sendAccepted(t *testing.T, ts *httptest.Server, key string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("POST", ts.URL+"/charges", strings.NewReader("x"))
	req.Header.Set("Idempotency-Key", key)
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || string(b) != `{"id":"ch_1"}` {
		t.Fatalf("answer %d %q", resp.StatusCode, b)
	}
	return resp
}
