package ginmw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/ginmw"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/gin-gonic/gin"
)

// TestWithExpectedHold: before the route has observed a hold, a 409's
// Retry-After comes from the declared expected hold, not from the holder's
// 10 s lease (the control, without the option).
func TestWithExpectedHold(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []ginmw.Option
		want string
	}{
		{"declared 2s", []ginmw.Option{ginmw.WithExpectedHold(2 * time.Second)}, "2"},
		{"control: none", nil, "10"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := redistest.Start(t)
			holder, locker := core.New(srv.Client(t)), core.New(srv.Client(t))
			t.Cleanup(func() { _ = holder.Close(); _ = locker.Close() })
			l, err := holder.Acquire(context.Background(), "doc:1", core.WithTTL(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(context.Background())
			e := gin.New()
			e.PUT("/docs/:id", ginmw.Lock(locker, ginmw.Template("doc:{id}"), append(c.opts, ginmw.WithWait(0))...),
				func(*gin.Context) { t.Error("ran unlocked") })
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, httptest.NewRequest("PUT", "/docs/1", nil))
			if rec.Code != http.StatusConflict || rec.Header().Get("Retry-After") != c.want {
				t.Fatalf("got %d Retry-After %q, want 409 and %s", rec.Code, rec.Header().Get("Retry-After"), c.want)
			}
		})
	}
}
