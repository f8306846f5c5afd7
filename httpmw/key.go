package httpmw

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

// KeyFunc derives a lock key from a request. An error, or an invalid key
// (core.ValidateKey), answers 400 without taking a lock, except errors
// matching ErrMisconfigured (500). Any function of this shape will do; the
// ready-made ones validate what they return.
type KeyFunc func(r *http.Request) (string, error)

// ErrMisconfigured is matched (errors.Is) by key-function errors that are
// the server's fault: PathValue or Template on a request that was not
// routed by a ServeMux pattern, or whose pattern lacks the wildcard. The
// middleware answers 500 and logs it. Custom key functions may wrap it too.
var ErrMisconfigured error = misconfigured{}

type misconfigured struct{}

func (misconfigured) Error() string        { return "httpmw: middleware misconfigured" }
func (misconfigured) Is(target error) bool { return target == guard.ErrMisconfigured }

// PathValue uses the path value name (r.PathValue, Go 1.22 patterns such as
// "POST /coupons/{id}/claim") as the key. Prefer Template, which namespaces
// the key ("coupon:{id}"), unless the value is unique across routes.
func PathValue(name string) KeyFunc {
	if name == "" {
		panic("httpmw: PathValue with an empty name")
	}
	return func(r *http.Request) (string, error) {
		v, err := pathValue(r, name)
		if err != nil {
			return "", err
		}
		return validated(v)
	}
}

// pathValue reads a path value and tells a misconfiguration (no pattern, or
// a pattern without that wildcard) from an empty value.
func pathValue(r *http.Request, name string) (string, error) {
	if v := r.PathValue(name); v != "" {
		return v, nil
	}
	if r.Pattern == "" {
		return "", fmt.Errorf("%w: path value %q on a request not routed by a ServeMux pattern: mount the middleware on the route, mux.Handle(pattern, httpmw.Lock(...)(h)), not around the mux", ErrMisconfigured, name)
	}
	if !strings.Contains(r.Pattern, "{"+name+"}") && !strings.Contains(r.Pattern, "{"+name+"...}") {
		return "", fmt.Errorf("%w: route %q has no wildcard {%s}", ErrMisconfigured, r.Pattern, name)
	}
	return "", fmt.Errorf("%w: empty path value", core.ErrInvalidKey)
}

// Template builds the key from path values: Template("coupon:{id}") on
// "POST /coupons/{id}/claim" locks "coupon:42" for /coupons/42/claim. Each
// {name} must be a wildcard of the route; braces cannot be escaped. A
// malformed template panics.
func Template(tmpl string) KeyFunc {
	t, err := guard.ParseTemplate(tmpl)
	if err != nil {
		panic("httpmw: Template: " + err.Error())
	}
	return func(r *http.Request) (string, error) {
		return t.Expand(func(name string) (string, error) { return pathValue(r, name) })
	}
}

// Header uses the first value of the request header name as the key. A
// missing or empty header is a bad request.
func Header(name string) KeyFunc {
	if name == "" {
		panic("httpmw: Header with an empty name")
	}
	name = http.CanonicalHeaderKey(name)
	return func(r *http.Request) (string, error) {
		v := r.Header.Get(name)
		if v == "" {
			return "", fmt.Errorf("%w: missing header", core.ErrInvalidKey)
		}
		return validated(v)
	}
}

// Query uses the first value of the URL query parameter name as the key. A
// missing or empty parameter is a bad request.
func Query(name string) KeyFunc {
	if name == "" {
		panic("httpmw: Query with an empty name")
	}
	return func(r *http.Request) (string, error) {
		v := r.URL.Query().Get(name)
		if v == "" {
			return "", fmt.Errorf("%w: missing query parameter", core.ErrInvalidKey)
		}
		return validated(v)
	}
}

// Prefix namespaces another key function: Prefix("tenant:", Header("X-Tenant")).
func Prefix(prefix string, key KeyFunc) KeyFunc {
	if key == nil {
		panic("httpmw: Prefix with a nil KeyFunc")
	}
	if prefix != "" {
		if err := core.ValidateKey(prefix); err != nil {
			panic("httpmw: Prefix: " + err.Error())
		}
	}
	return func(r *http.Request) (string, error) {
		k, err := key(r)
		if err != nil {
			return "", err
		}
		if k == "" {
			return "", fmt.Errorf("%w: empty", core.ErrInvalidKey)
		}
		return validated(prefix + k)
	}
}

func validated(k string) (string, error) {
	if err := core.ValidateKey(k); err != nil {
		return "", err
	}
	return k, nil
}
