package ginmw_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/ginmw"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/gin-gonic/gin"
)

func TestAcceptFence(t *testing.T) {
	var got box[*core.FenceToken]
	e := gin.New()
	e.POST("/reserve", ginmw.AcceptFence(), func(c *gin.Context) {
		if ft, ok := core.FenceFromContext(c.Request.Context()); ok {
			got.set(&ft)
		}
	})
	for _, tc := range []struct {
		name   string
		values []string
		status int
		want   *core.FenceToken
	}{
		{"absent", nil, 200, nil},
		{"valid", []string{"42;owner=ab;key=coupon%3A7"}, 200, &core.FenceToken{Fence: 42, Owner: "ab", Key: "coupon:7"}},
		{"malformed", []string{"x"}, 400, nil},
		{"repeated", []string{"1;key=a", "2;key=a"}, 400, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got.set(nil)
			r := httptest.NewRequest("POST", "/reserve", nil)
			for _, v := range tc.values {
				r.Header.Add(ginmw.FenceHeader, v)
			}
			rec := httptest.NewRecorder()
			e.ServeHTTP(rec, r)
			g := got.get()
			if rec.Code != tc.status || (g == nil) != (tc.want == nil) || (g != nil && *g != *tc.want) {
				t.Fatalf("got %d %+v %s; want %d %+v", rec.Code, g, rec.Body, tc.status, tc.want)
			}
		})
	}
}

// A gin handler's lock fence reaches a gin downstream through
// httpmw.Transport and AcceptFence.
func TestLock_fenceForwardedEndToEnd(t *testing.T) {
	c := newMemoryClient(t)
	down := gin.New()
	down.POST("/reserve", ginmw.AcceptFence(), func(g *gin.Context) {
		ft, _ := core.FenceFromContext(g.Request.Context())
		g.String(200, ft.String())
	})
	tsDown := serve(t, down)
	client := &http.Client{Transport: httpmw.Transport(tsDown.Client().Transport)}
	defer client.CloseIdleConnections()

	var sent, received box[string]
	up := gin.New()
	up.POST("/orders/:id", ginmw.Lock(c, ginmw.Template("order:{id}")), func(g *gin.Context) {
		l, _ := core.FromContext(g.Request.Context())
		sent.set(l.FenceToken().String())
		req, _ := http.NewRequestWithContext(g.Request.Context(), "POST", tsDown.URL+"/reserve", nil)
		resp, err := client.Do(req)
		if err != nil {
			g.Status(502)
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		received.set(string(b))
	})
	tsUp := serve(t, up)
	if r := do(t, tsUp.Client(), "POST", tsUp.URL+"/orders/7"); r.status != 200 || sent.get() == "" || received.get() != sent.get() {
		t.Fatalf("got %d; sent %q, downstream saw %q", r.status, sent.get(), received.get())
	}
}
