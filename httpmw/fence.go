package httpmw

import (
	"net/http"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

// FenceHeader is the request header that carries a lock's fence to another
// service, in the form of core.FenceToken.String:
//
//	Fence-Token: <fence>;owner=<owner id>;key=<URL-escaped key>
//
// for example "Fence-Token: 42;owner=9f86d081884c7d65;key=coupon%3A7". The
// fence is a decimal uint64 > 0; the owner id is derived from (never equal
// to) the secret owner token, so it cannot release the lock.
const FenceHeader = guard.FenceHeader

// Transport returns a RoundTripper that adds FenceHeader to outgoing
// requests whose context carries a fence (core.FenceFromContext: the
// innermost lock held, or a fence received through AcceptFence), so the
// called service can guard its own writes with it. Build outgoing requests
// with the handler's context (http.NewRequestWithContext(r.Context(), ...)).
// A request that already has the header keeps it. next nil means
// http.DefaultTransport.
//
// The header contains the lock key: forward it only to services you trust
// with it.
func Transport(next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	return &fenceTransport{next: next}
}

type fenceTransport struct{ next http.RoundTripper }

func (t *fenceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ft, ok := core.FenceFromContext(req.Context())
	if !ok || len(req.Header.Values(FenceHeader)) > 0 {
		return t.next.RoundTrip(req)
	}
	// A RoundTripper must not modify the caller's request.
	r2 := *req
	r2.Header = req.Header.Clone()
	if r2.Header == nil {
		r2.Header = make(http.Header, 1)
	}
	r2.Header.Set(FenceHeader, ft.String())
	return t.next.RoundTrip(&r2)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach next.
func (t *fenceTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// AcceptFence is middleware for the receiving side of Transport: it parses
// FenceHeader into the request context (core.ContextWithFence), where
// core.FenceFromContext, and so sqlguard, find it. Requests without the
// header pass unchanged; a malformed or repeated header is answered 400.
//
// A fence is trusted as sent: a client that can set the header can make
// guarded writes look newer than they are and fence out legitimate holders.
//
// Deprecated: use AcceptSignedFence, or AcceptUnsignedFence where trusting
// every caller is intended; AcceptFence is AcceptUnsignedFence.
func AcceptFence(next http.Handler) http.Handler {
	if next == nil {
		panic("httpmw: AcceptFence with a nil http.Handler")
	}
	return acceptUnsigned(next)
}

func acceptUnsigned(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		vals := r.Header.Values(FenceHeader)
		if len(vals) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		if len(vals) > 1 {
			http.Error(w, "repeated "+FenceHeader+" header", http.StatusBadRequest)
			return
		}
		t, err := core.ParseFenceToken(vals[0])
		if err != nil {
			http.Error(w, "invalid "+FenceHeader+" header", http.StatusBadRequest)
			return
		}
		next.ServeHTTP(w, r.WithContext(core.ContextWithFence(r.Context(), t)))
	})
}
