package httpmw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
)

// A route whose holds take milliseconds tells refused clients to come back
// in 1 s, not after the 10 s lease; WithMaxRetryAfter caps a long hint.
func TestLock_retryAfter_followsObservedHolds(t *testing.T) {
	c := newMemoryClient()
	t.Cleanup(func() { _ = c.Close() })
	retryAfter := func(opts ...httpmw.Option) (short, long string) {
		mw := httpmw.Lock(c, httpmw.PathValue("id"), append([]httpmw.Option{httpmw.WithTTL(10 * time.Second), httpmw.WithLogger(discard())}, opts...)...)
		mux := http.NewServeMux()
		mux.Handle("POST /r/{id}", mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { time.Sleep(time.Millisecond) })))
		refused := func() string {
			other, err := c.Acquire(context.Background(), "busy", core.WithTTL(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer other.Release(context.Background())
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/r/busy", nil))
			if rec.Code != http.StatusConflict {
				t.Fatalf("status %d", rec.Code)
			}
			return rec.Header().Get("Retry-After")
		}
		long = refused() // nothing observed yet: the holder's lease
		for range 20 {
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/r/free", nil))
		}
		return refused(), long
	}
	if short, long := retryAfter(); long != "10" || short != "1" {
		t.Fatalf("Retry-After before/after observed 1 ms holds: %q/%q, want 10/1", long, short)
	}
	if _, long := retryAfter(httpmw.WithMaxRetryAfter(3 * time.Second)); long != "3" {
		t.Fatalf("capped Retry-After %q, want 3", long)
	}
}
