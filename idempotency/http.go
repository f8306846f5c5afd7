package idempotency

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

// Middleware returns net/http middleware that makes a route idempotent per
// Idempotency-Key (see the package documentation for the protocol and the
// status codes). httpmw.Idempotent is this function; mount it per route,
// after routing, so r.Pattern names the scope:
//
//	mux.Handle("POST /charges", httpmw.Idempotent(locker, store)(charge))
func Middleware(locker core.Locker, store Store, opts ...Option) func(http.Handler) http.Handler {
	e := NewEngine(locker, store, opts...)
	return func(next http.Handler) http.Handler {
		if next == nil {
			panic("idempotency: middleware applied to a nil http.Handler")
		}
		return &httpHandler{e: e, next: next}
	}
}

type httpHandler struct {
	e    *Engine
	next http.Handler
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	cfg := &h.e.cfg
	vs := r.Header.Values(cfg.header)
	if len(vs) == 0 && cfg.optional {
		h.next.ServeHTTP(w, r)
		return
	}
	req, r, err := h.request(r, vs)
	if err != nil {
		writeError(w, err)
		return
	}
	var rec *recorder
	ans, err := h.e.Run(r.Context(), req, func(ctx context.Context) Result {
		rec = newRecorder(w, cfg.maxBody)
		h.next.ServeHTTP(rec, r.WithContext(ctx))
		return rec.result(cfg.storeHeaders)
	})
	switch {
	case err != nil:
		writeError(w, err)
	case ans.Replayed:
		writeRecord(w, ans.Record, true)
	case ans.Record != nil:
		rec.flush() // the handler's own answer, with all its headers
	}
}

// request derives the scope and fingerprint; it reads the body (bounded)
// and gives the handler a copy.
func (h *httpHandler) request(r *http.Request, vs []string) (Request, *http.Request, error) {
	cfg := &h.e.cfg
	if len(vs) == 0 {
		return Request{}, r, ErrMissingKey
	}
	if len(vs) > 1 {
		return Request{}, r, ErrInvalidKey
	}
	key, err := ParseKey(vs[0])
	if err != nil {
		return Request{}, r, err
	}
	route := cfg.route(r)
	if route == "" {
		return Request{}, r, ErrMisconfigured
	}
	body, err := readBody(r, cfg.maxRequestBody)
	if err != nil {
		return Request{}, r, err
	}
	r2 := r.WithContext(r.Context()) // a shallow copy: only Body changes
	r2.Body = io.NopCloser(bytes.NewReader(body))
	scope := Scope{Route: route, Key: key, Tenant: h.e.Tenant(r.Context())}
	if cfg.tenant != nil {
		scope.Tenant = cfg.tenant(r)
	}
	return Request{
		Scope:       scope,
		Fingerprint: NewFingerprint(r.Method, r.URL.RequestURI(), body),
		Name:        route,
	}, r2, nil
}

func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, ErrRequestTooLarge
	}
	return b, nil
}

// StatusCode is the HTTP status for an error of Engine.Run or of reading
// the key, per draft-ietf-httpapi-idempotency-key-header where it has one.
func StatusCode(err error) int {
	switch {
	case errors.Is(err, ErrMissingKey), errors.Is(err, ErrInvalidKey):
		return http.StatusBadRequest
	case errors.Is(err, ErrMismatch):
		return http.StatusUnprocessableEntity
	case errors.Is(err, ErrInProgress), errors.Is(err, ErrStaleFence):
		return http.StatusConflict
	case errors.Is(err, ErrRequestTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return guard.StatusClientClosedRequest
	case errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// message is a short client-safe text for err's status.
func message(err error) string {
	switch {
	case errors.Is(err, ErrMissingKey):
		return "missing Idempotency-Key header"
	case errors.Is(err, ErrInvalidKey):
		return "invalid Idempotency-Key header"
	case errors.Is(err, ErrMismatch):
		return "Idempotency-Key already used for a different request"
	case errors.Is(err, ErrInProgress):
		return "a request with this Idempotency-Key is being processed"
	case errors.Is(err, ErrStaleFence):
		return "request superseded by a newer attempt with this Idempotency-Key"
	}
	return http.StatusText(StatusCode(err))
}

func writeError(w http.ResponseWriter, err error) {
	var ip *InProgressError
	if errors.As(err, &ip) {
		w.Header().Set("Retry-After", strconv.Itoa(guard.RetryAfterSeconds(ip.RetryAfter)))
	}
	http.Error(w, message(err), StatusCode(err))
}

// writeRecord sends a stored answer.
func writeRecord(w http.ResponseWriter, rec *Record, replayed bool) {
	hdr := w.Header()
	for k, vs := range rec.Header {
		hdr[k] = append([]string(nil), vs...)
	}
	if replayed {
		hdr.Set(ReplayedHeader, "true")
	}
	hdr.Set("Content-Length", strconv.Itoa(len(rec.Body)))
	w.WriteHeader(rec.Status)
	_, _ = w.Write(rec.Body)
}
