package ginmw

import (
	"fmt"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
	"github.com/gin-gonic/gin"
)

// KeyFunc derives a lock key from a request. An error, or an invalid key
// (core.ValidateKey), answers 400 without taking a lock, except errors
// matching ErrMisconfigured (500). Any function of this shape will do; the
// ready-made ones validate what they return.
type KeyFunc func(c *gin.Context) (string, error)

// ErrMisconfigured is matched (errors.Is) by key-function errors that are
// the server's fault: Param or Template naming a parameter the route does
// not have. The middleware answers 500 and logs it.
var ErrMisconfigured error = misconfigured{}

type misconfigured struct{}

func (misconfigured) Error() string        { return "ginmw: middleware misconfigured" }
func (misconfigured) Is(target error) bool { return target == guard.ErrMisconfigured }

// Param uses the route parameter name (c.Param; :id or *path in the route)
// as the key. Prefer Template, which namespaces the key ("coupon:{id}"),
// unless the value is unique across routes.
func Param(name string) KeyFunc {
	if name == "" {
		panic("ginmw: Param with an empty name")
	}
	return func(c *gin.Context) (string, error) {
		v, err := param(c, name)
		if err != nil {
			return "", err
		}
		return validated(v)
	}
}

func param(c *gin.Context, name string) (string, error) {
	v, ok := c.Params.Get(name)
	if !ok {
		return "", fmt.Errorf("%w: route %q has no parameter %q", ErrMisconfigured, c.FullPath(), name)
	}
	if v == "" {
		return "", fmt.Errorf("%w: empty route parameter", core.ErrInvalidKey)
	}
	return v, nil
}

// Template builds the key from route parameters: Template("coupon:{id}")
// on "/coupons/:id/claim" locks "coupon:42" for /coupons/42/claim. Each
// {name} must be a parameter of the route; braces cannot be escaped. A
// malformed template panics.
func Template(tmpl string) KeyFunc {
	t, err := guard.ParseTemplate(tmpl)
	if err != nil {
		panic("ginmw: Template: " + err.Error())
	}
	return func(c *gin.Context) (string, error) {
		return t.Expand(func(name string) (string, error) { return param(c, name) })
	}
}

// Header uses the request header name as the key. A missing or empty
// header is a bad request.
func Header(name string) KeyFunc {
	if name == "" {
		panic("ginmw: Header with an empty name")
	}
	return func(c *gin.Context) (string, error) {
		v := c.GetHeader(name)
		if v == "" {
			return "", fmt.Errorf("%w: missing header", core.ErrInvalidKey)
		}
		return validated(v)
	}
}

// Query uses the URL query parameter name as the key. A missing or empty
// parameter is a bad request.
func Query(name string) KeyFunc {
	if name == "" {
		panic("ginmw: Query with an empty name")
	}
	return func(c *gin.Context) (string, error) {
		v := c.Query(name)
		if v == "" {
			return "", fmt.Errorf("%w: missing query parameter", core.ErrInvalidKey)
		}
		return validated(v)
	}
}

// Prefix namespaces another key function: Prefix("tenant:", Header("X-Tenant")).
func Prefix(prefix string, key KeyFunc) KeyFunc {
	if key == nil {
		panic("ginmw: Prefix with a nil KeyFunc")
	}
	if prefix != "" {
		if err := core.ValidateKey(prefix); err != nil {
			panic("ginmw: Prefix: " + err.Error())
		}
	}
	return func(c *gin.Context) (string, error) {
		k, err := key(c)
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
