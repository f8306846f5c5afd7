package ginmw

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/idempotency"
)

// Idempotent returns a handler that makes the rest of the chain idempotent
// per Idempotency-Key, scoped by the route template (c.FullPath()): the
// first request with a key runs under the fenced lock for it and its answer
// is stored; duplicates get the stored answer (Idempotent-Replayed: true),
// a different request under the same key 422.
//
//	r.POST("/charges", ginmw.Idempotent(locker, store), charge)
//
// The chain's response is buffered until it is stored. See package
// idempotency for the options and the status codes.
func Idempotent(l core.Locker, s idempotency.Store, opts ...idempotency.Option) gin.HandlerFunc {
	route := idempotency.WithRoute(func(r *http.Request) string {
		v, _ := r.Context().Value(routeKey{}).(string)
		return v
	})
	mw := idempotency.Middleware(l, s, append(append([]idempotency.Option(nil), opts...), route)...)
	return func(c *gin.Context) {
		path := c.FullPath()
		if path == "" { // no route matched: nothing to guard
			c.Next()
			return
		}
		orig := c.Writer
		// Deferred, so a recovering middleware outside (gin.Recovery)
		// answers a panic on the real writer.
		defer func() { c.Writer = orig }()
		next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			c.Request, c.Writer = r, &bufferedWriter{ResponseWriter: orig, w: w}
			c.Next()
		})
		r := c.Request.WithContext(context.WithValue(c.Request.Context(), routeKey{}, path))
		mw(next).ServeHTTP(orig, r)
		c.Abort()
	}
}

type routeKey struct{}

// bufferedWriter is the gin.ResponseWriter the chain writes to: the
// middleware's buffer, with gin's bookkeeping kept here.
type bufferedWriter struct {
	gin.ResponseWriter // the real one, for CloseNotify and Pusher
	w                  http.ResponseWriter
	status, size       int
}

func (b *bufferedWriter) Header() http.Header { return b.w.Header() }

func (b *bufferedWriter) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
		b.w.WriteHeader(code)
	}
}

func (b *bufferedWriter) WriteHeaderNow() {
	if b.status == 0 {
		b.WriteHeader(http.StatusOK)
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	b.WriteHeaderNow()
	n, err := b.w.Write(p)
	b.size += n
	return n, err
}

func (b *bufferedWriter) WriteString(s string) (int, error) { return b.Write([]byte(s)) }

func (b *bufferedWriter) Status() int {
	if b.status == 0 {
		return http.StatusOK
	}
	return b.status
}

func (b *bufferedWriter) Size() int {
	if b.status == 0 {
		return -1
	}
	return b.size
}

func (b *bufferedWriter) Written() bool { return b.status != 0 }

// Flush is a no-op: the answer is sent whole, once stored.
func (b *bufferedWriter) Flush() {}

func (b *bufferedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return nil, nil, errors.New("ginmw: Hijack on an idempotent route")
}
