package httpmw

import (
	"net/http"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/idempotency"
)

// Idempotent is a middleware that makes a route idempotent per
// Idempotency-Key: the first request with a key runs under the fenced lock
// for it and its answer is stored; duplicates get the stored answer
// (Idempotent-Replayed: true), a different request under the same key 422.
// Mount it per route, after routing, so r.Pattern scopes the key:
//
//	store := idempotency.NewRedisStore(rdb, "")
//	mux.Handle("POST /charges", httpmw.Idempotent(locker, store)(charge))
//
// See package idempotency for the options and the status codes.
func Idempotent(l core.Locker, s idempotency.Store, opts ...idempotency.Option) func(http.Handler) http.Handler {
	return idempotency.Middleware(l, s, opts...)
}
