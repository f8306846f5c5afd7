package ginmw_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/ginmw"
	"github.com/gin-gonic/gin"
)

func ginContext(params gin.Params, rawQuery string, header ...string) *gin.Context {
	c, _ := gin.CreateTestContext(httptest.NewRecorder())
	c.Request = httptest.NewRequest("GET", "/?"+rawQuery, nil)
	for i := 0; i+1 < len(header); i += 2 {
		c.Request.Header.Set(header[i], header[i+1])
	}
	c.Params = params
	return c
}

func TestKeyFuncs(t *testing.T) {
	ps := gin.Params{{Key: "from", Value: "a"}, {Key: "to", Value: "b"}, {Key: "empty", Value: ""}}
	c := ginContext(ps, "k=q1&k=q2", "X-Tenant", "acme")
	for _, tc := range []struct {
		name string
		fn   ginmw.KeyFunc
		want string
		err  error
	}{
		{"param", ginmw.Param("from"), "a", nil},
		{"param missing", ginmw.Param("id"), "", ginmw.ErrMisconfigured},
		{"param empty", ginmw.Param("empty"), "", core.ErrInvalidKey},
		{"template", ginmw.Template("transfer:{from}->{to}"), "transfer:a->b", nil},
		{"template missing", ginmw.Template("x:{id}"), "", ginmw.ErrMisconfigured},
		{"template empty value", ginmw.Template("x:{empty}"), "", core.ErrInvalidKey},
		{"header", ginmw.Header("X-Tenant"), "acme", nil},
		{"header missing", ginmw.Header("X-Other"), "", core.ErrInvalidKey},
		{"query", ginmw.Query("k"), "q1", nil},
		{"query missing", ginmw.Query("z"), "", core.ErrInvalidKey},
		{"prefix", ginmw.Prefix("tenant:", ginmw.Header("X-Tenant")), "tenant:acme", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.fn(c)
			if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// FuzzParamKey: Param, Template and the middleware on arbitrary route
// parameters never panic, never lock "", and reject exactly what
// core.ValidateKey rejects (400).
func FuzzParamKey(f *testing.F) {
	for _, s := range []string{"42", "", "\x00", "{x}", "\xff", "é", strings.Repeat("a", core.MaxKeyLen+1)} {
		f.Add(s)
	}
	c := newMemoryClient(f)
	var seen box[string]
	e := gin.New()
	e.POST("/coupons/:id/claim", ginmw.Lock(c, ginmw.Template("coupon:{id}")), func(g *gin.Context) {
		if l, ok := core.FromContext(g.Request.Context()); ok {
			seen.set(l.Key())
		}
	})
	param, tmpl := ginmw.Param("id"), ginmw.Template("coupon:{id}")
	f.Fuzz(func(t *testing.T, v string) {
		g := ginContext(gin.Params{{Key: "id", Value: v}}, "")
		for _, tc := range []struct {
			fn   ginmw.KeyFunc
			want string
		}{{param, v}, {tmpl, "coupon:" + v}} {
			got, err := tc.fn(g)
			valid := v != "" && core.ValidateKey(tc.want) == nil
			if valid && (err != nil || got != tc.want) || !valid && (got != "" || !errors.Is(err, core.ErrInvalidKey)) {
				t.Fatalf("key(%q) = %q, %v; want %q (valid %v)", v, got, err, tc.want, valid)
			}
		}
		seen.set("")
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/", nil)
		req.URL.Path, req.URL.RawPath = "/coupons/"+v+"/claim", "/coupons/"+url.PathEscape(v)+"/claim"
		e.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			if k := seen.get(); k == "" || core.ValidateKey(k) != nil {
				t.Fatalf("path %q: handler ran with key %q", req.URL.RawPath, k)
			}
		case http.StatusBadRequest, http.StatusNotFound, http.StatusMovedPermanently, http.StatusTemporaryRedirect:
		default:
			t.Fatalf("path %q: status %d", req.URL.RawPath, rec.Code)
		}
	})
}
