package httpmw_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
)

func routed(pattern string, values ...string) *http.Request {
	r := httptest.NewRequest("POST", "/", nil)
	r.Pattern = pattern
	for i := 0; i+1 < len(values); i += 2 {
		r.SetPathValue(values[i], values[i+1])
	}
	return r
}

func TestKeyFuncs(t *testing.T) {
	const pattern = "POST /transfer/{from}/{to}"
	withHeader := httptest.NewRequest("GET", "/?k=q1&k=q2", nil)
	withHeader.Header.Set("X-Tenant", "acme")
	for _, tc := range []struct {
		name string
		fn   httpmw.KeyFunc
		r    *http.Request
		want string
		err  error
	}{
		{"path value", httpmw.PathValue("from"), routed(pattern, "from", "a", "to", "b"), "a", nil},
		{"path value set by another router", httpmw.PathValue("id"), routed("", "id", "7"), "7", nil},
		{"path value rest wildcard", httpmw.PathValue("rest"), routed("GET /f/{rest...}", "rest", "x/y"), "x/y", nil},
		{"empty rest wildcard", httpmw.PathValue("rest"), routed("GET /f/{rest...}"), "", core.ErrInvalidKey},
		{"not routed", httpmw.PathValue("from"), routed(""), "", httpmw.ErrMisconfigured},
		{"wildcard missing", httpmw.PathValue("id"), routed(pattern, "from", "a", "to", "b"), "", httpmw.ErrMisconfigured},
		{"control character", httpmw.PathValue("from"), routed(pattern, "from", "a\x00", "to", "b"), "", core.ErrInvalidKey},
		{"template", httpmw.Template("transfer:{from}->{to}"), routed(pattern, "from", "a", "to", "b"), "transfer:a->b", nil},
		{"template braces in value", httpmw.Template("c:{from}"), routed(pattern, "from", "{x}", "to", "b"), "c:{x}", nil},
		{"template not routed", httpmw.Template("c:{from}"), routed(""), "", httpmw.ErrMisconfigured},
		{"template too long", httpmw.Template("c:{from}"), routed(pattern, "from", strings.Repeat("x", core.MaxKeyLen-1), "to", "b"), "", core.ErrInvalidKey},
		{"header", httpmw.Header("x-tenant"), withHeader, "acme", nil},
		{"header missing", httpmw.Header("X-Other"), withHeader, "", core.ErrInvalidKey},
		{"query first value", httpmw.Query("k"), withHeader, "q1", nil},
		{"query missing", httpmw.Query("other"), withHeader, "", core.ErrInvalidKey},
		{"prefix", httpmw.Prefix("tenant:", httpmw.Header("X-Tenant")), withHeader, "tenant:acme", nil},
		{"prefix of custom empty key", httpmw.Prefix("p:", func(*http.Request) (string, error) { return "", nil }), withHeader, "", core.ErrInvalidKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.fn(tc.r)
			if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
				t.Fatalf("got %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
			if err != nil && strings.Contains(err.Error(), "\x00") {
				t.Fatalf("error repeats the raw value: %q", err)
			}
		})
	}
}

// FuzzPathValueKey checks the key functions and the middleware on arbitrary
// path values: they never panic, never lock "", and reject exactly the
// values core.ValidateKey rejects, with core.ErrInvalidKey (400).
func FuzzPathValueKey(f *testing.F) {
	for _, s := range []string{"42", "", " ", "\x00", "a\nb", "{x}", "%7B", "\xff", "é", "..", "a/b",
		strings.Repeat("a", core.MaxKeyLen-len("coupon:")), strings.Repeat("a", core.MaxKeyLen+1)} {
		f.Add(s)
	}
	c := newMemoryClient()
	f.Cleanup(func() { _ = c.Close() })
	const pattern = "POST /coupons/{id}/claim"
	fns := map[string]struct {
		fn     httpmw.KeyFunc
		expect func(v string) string
	}{
		"PathValue":   {httpmw.PathValue("id"), func(v string) string { return v }},
		"Template":    {httpmw.Template("coupon:{id}"), func(v string) string { return "coupon:" + v }},
		"Template2":   {httpmw.Template("{id}/{id}"), func(v string) string { return v + "/" + v }},
		"Prefix":      {httpmw.Prefix("p:", httpmw.PathValue("id")), func(v string) string { return "p:" + v }},
		"Header":      {httpmw.Header("X-Key"), func(v string) string { return v }},
		"Query":       {httpmw.Query("k"), func(v string) string { return v }},
		"PathValueNP": {httpmw.PathValue("id"), func(v string) string { return v }}, // unrouted request
	}
	var seen box[string]
	mux := http.NewServeMux()
	mux.Handle(pattern, httpmw.Lock(c, httpmw.Template("coupon:{id}"))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		l, ok := core.FromContext(r.Context())
		if !ok {
			w.WriteHeader(http.StatusTeapot)
			return
		}
		seen.set(l.Key())
	})))

	f.Fuzz(func(t *testing.T, v string) {
		for name, tc := range fns {
			r := routed(pattern, "id", v)
			if name == "PathValueNP" {
				r.Pattern = ""
			}
			r.Header.Set("X-Key", v)
			r.URL.RawQuery = "k=" + url.QueryEscape(v)
			got, err := tc.fn(r)
			want := tc.expect(v)
			valid := v != "" && core.ValidateKey(want) == nil
			switch {
			case name == "PathValueNP" && v == "":
				if !errors.Is(err, httpmw.ErrMisconfigured) {
					t.Fatalf("%s(%q): %v; want ErrMisconfigured", name, v, err)
				}
			case valid && (err != nil || got != want):
				t.Fatalf("%s(%q) = %q, %v; want %q", name, v, got, err, want)
			case !valid && (err == nil || got != "" || !errors.Is(err, core.ErrInvalidKey)):
				t.Fatalf("%s(%q) = %q, %v; want core.ErrInvalidKey", name, v, got, err)
			}
		}

		// Through a real ServeMux: the value travels escaped in the path.
		seen.set("")
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/", nil)
		req.URL.Path, req.URL.RawPath = "/coupons/"+v+"/claim", "/coupons/"+url.PathEscape(v)+"/claim"
		mux.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK:
			if k := seen.get(); k == "" || core.ValidateKey(k) != nil {
				t.Fatalf("path %q: handler ran with key %q", req.URL.RawPath, k)
			}
		case http.StatusBadRequest, http.StatusNotFound, http.StatusMovedPermanently, http.StatusTemporaryRedirect:
		default:
			t.Fatalf("path %q: status %d", req.URL.RawPath, rec.Code)
		}
		if rec.Code == http.StatusBadRequest && strings.Contains(rec.Body.String(), "coupon") {
			t.Fatalf("body echoes the key: %q", rec.Body.String())
		}
	})
}
