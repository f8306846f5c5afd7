package httpmw_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
)

// fenceRecorder is a downstream handler that reports the fence it received.
func fenceRecorder(got *box[*core.FenceToken]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ft, ok := core.FenceFromContext(r.Context()); ok {
			got.set(&ft)
		}
	})
}

func TestTransport_forwardsFenceEndToEnd(t *testing.T) {
	forEachBackend(t, func(t *testing.T, fx *fixture) {
		// C <- B <- A: A holds the lock and calls B, which calls C.
		var atB, atC box[*core.FenceToken]
		tsC := serve(t, httpmw.AcceptFence(fenceRecorder(&atC)))
		clientC := &http.Client{Transport: httpmw.Transport(tsC.Client().Transport)}
		tsB := serve(t, httpmw.AcceptFence(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fenceRecorder(&atB).ServeHTTP(w, r)
			req, _ := http.NewRequestWithContext(r.Context(), "PUT", tsC.URL, nil)
			resp, err := clientC.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
		})))
		clientB := &http.Client{Transport: httpmw.Transport(tsB.Client().Transport)}

		var held box[*core.FenceToken]
		mw := httpmw.Lock(fx.client(), httpmw.Template("coupon:{id}"))
		tsA := serve(t, route("POST /coupons/{id}/claim", mw, func(w http.ResponseWriter, r *http.Request) {
			l, _ := core.FromContext(r.Context())
			ft := l.FenceToken()
			held.set(&ft)
			req, _ := http.NewRequestWithContext(r.Context(), "PUT", tsB.URL, nil)
			resp, err := clientB.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if req.Header.Get(httpmw.FenceHeader) != "" {
				t.Error("Transport modified the caller's request")
			}
		}))
		if r := do(t, tsA.Client(), "POST", tsA.URL+"/coupons/1/claim"); r.status != 200 {
			t.Fatalf("got %d", r.status)
		}
		want := held.get()
		for name, got := range map[string]*core.FenceToken{"B": atB.get(), "C": atC.get()} {
			if want == nil || got == nil || *got != *want || want.Fence == 0 || want.Key != "coupon:1" {
				t.Fatalf("fence at %s = %+v; want %+v", name, got, want)
			}
		}
		clientB.CloseIdleConnections()
		clientC.CloseIdleConnections()
	})
}

func TestTransport_withoutFence(t *testing.T) {
	var hdr box[[]string]
	ts := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hdr.set(r.Header.Values(httpmw.FenceHeader)) }))
	c := &http.Client{Transport: httpmw.Transport(ts.Client().Transport)}
	defer c.CloseIdleConnections()

	if r := do(t, c, "GET", ts.URL); r.status != 200 || len(hdr.get()) != 0 {
		t.Fatalf("got %d, header %q; want no Fence-Token without a lock", r.status, hdr.get())
	}
	// A header set by the caller is kept as it is.
	ctx := core.ContextWithFence(context.Background(), core.FenceToken{Key: "k", Fence: 9})
	if r := doCtx(ctx, t, c, "GET", ts.URL, httpmw.FenceHeader, "5;key=x"); r.status != 200 || len(hdr.get()) != 1 || hdr.get()[0] != "5;key=x" {
		t.Fatalf("header %q; want the caller's own", hdr.get())
	}
	if r := doCtx(ctx, t, c, "GET", ts.URL); r.status != 200 || len(hdr.get()) != 1 || hdr.get()[0] != "9;key=k" {
		t.Fatalf("header %q; want 9;key=k", hdr.get())
	}
}

func TestAcceptFence(t *testing.T) {
	var got box[*core.FenceToken]
	h := httpmw.AcceptFence(fenceRecorder(&got))
	for _, tc := range []struct {
		name   string
		values []string
		status int
		want   *core.FenceToken
	}{
		{"absent", nil, 200, nil},
		{"full", []string{"42;owner=9f86d081884c7d65;key=coupon%3A7"}, 200, &core.FenceToken{Fence: 42, Owner: "9f86d081884c7d65", Key: "coupon:7"}},
		{"empty", []string{""}, 400, nil},
		{"not a number", []string{"x;key=a"}, 400, nil},
		{"zero fence", []string{"0;key=a"}, 400, nil},
		{"no key", []string{"3"}, 400, nil},
		{"bad escaping", []string{"3;key=%zz"}, 400, nil},
		{"control character in key", []string{"3;key=a%00"}, 400, nil},
		{"repeated", []string{"3;key=a", "4;key=a"}, 400, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got.set(nil)
			r := httptest.NewRequest("POST", "/", nil)
			for _, v := range tc.values {
				r.Header.Add(httpmw.FenceHeader, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, r)
			g := got.get()
			if rec.Code != tc.status || (g == nil) != (tc.want == nil) || (g != nil && *g != *tc.want) {
				t.Fatalf("got %d %+v; want %d %+v", rec.Code, g, tc.status, tc.want)
			}
		})
	}
}
