package ginmw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/ginmw"
)

// As in httpmw: short observed holds shorten the 409 hint from the 10 s
// lease to 1 s, and WithMaxRetryAfter caps it.
func TestLock_retryAfter_followsObservedHolds(t *testing.T) {
	gin.SetMode(gin.TestMode)
	c := newMemoryClient(t)
	retryAfter := func(opts ...ginmw.Option) (short, long string) {
		r := gin.New()
		r.POST("/r/:id", ginmw.Lock(c, ginmw.Param("id"), append([]ginmw.Option{ginmw.WithTTL(10 * time.Second), ginmw.WithLogger(discard())}, opts...)...),
			func(*gin.Context) { time.Sleep(time.Millisecond) })
		refused := func() string {
			other, err := c.Acquire(context.Background(), "busy", core.WithTTL(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer other.Release(context.Background())
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/r/busy", nil))
			if rec.Code != http.StatusConflict {
				t.Fatalf("status %d", rec.Code)
			}
			return rec.Header().Get("Retry-After")
		}
		long = refused()
		for range 20 {
			r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/r/free", nil))
		}
		return refused(), long
	}
	if short, long := retryAfter(); long != "10" || short != "1" {
		t.Fatalf("Retry-After before/after observed 1 ms holds: %q/%q, want 10/1", long, short)
	}
	if _, long := retryAfter(ginmw.WithMaxRetryAfter(3 * time.Second)); long != "3" {
		t.Fatalf("capped Retry-After %q, want 3", long)
	}
}
