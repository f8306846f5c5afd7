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

// TestWithExpectedHold: before the route has observed a hold, a 409's
// Retry-After comes from the declared expected hold, not from the holder's
// 10 s lease (the control, without the option).
func TestWithExpectedHold(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []httpmw.Option
		want string
	}{
		{"declared 2s", []httpmw.Option{httpmw.WithExpectedHold(2 * time.Second)}, "2"},
		{"control: none", nil, "10"},
	} {
		t.Run(c.name, func(t *testing.T) {
			fx := redisFixture(t)
			holder := fx.client()
			l, err := holder.Acquire(context.Background(), "doc:1", core.WithTTL(10*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Release(context.Background())
			h := httpmw.Lock(fx.client(), httpmw.Template("doc:{id}"), append(c.opts, httpmw.WithWait(0))...)(
				http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { t.Error("ran unlocked") }))
			mux := http.NewServeMux()
			mux.Handle("PUT /docs/{id}", h)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest("PUT", "/docs/1", nil))
			if rec.Code != http.StatusConflict || rec.Header().Get("Retry-After") != c.want {
				t.Fatalf("got %d Retry-After %q, want 409 and %s", rec.Code, rec.Header().Get("Retry-After"), c.want)
			}
		})
	}
}
