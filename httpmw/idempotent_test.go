package httpmw_test

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/fencedlock/fencedlock/idempotency"
)

func TestIdempotent_replays(t *testing.T) {
	fx := redisFixture(t)
	var runs atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		w.Header().Set("Location", "/charges/"+r.PathValue("order"))
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, "charged")
	})
	mux := http.NewServeMux()
	mux.Handle("POST /orders/{order}/charge", httpmw.Idempotent(fx.client(), idempotency.NewRedisStore(fx.rdb, ""))(h))
	ts := serve(t, mux)
	var got []string
	for range 2 {
		req, _ := http.NewRequest("POST", ts.URL+"/orders/7/charge", strings.NewReader("1.00"))
		req.Header.Set("Idempotency-Key", "h1")
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got = append(got, resp.Status+" "+resp.Header.Get("Location")+" "+string(b)+" "+resp.Header.Get("Idempotent-Replayed"))
	}
	if runs.Load() != 1 || got[0] != "201 Created /charges/7 charged " || got[1] != "201 Created /charges/7 charged true" {
		t.Fatalf("runs %d, answers %q", runs.Load(), got)
	}
}
