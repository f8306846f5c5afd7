package httpmw

import (
	"fmt"
	"net/http"

	"github.com/fencedlock/fencedlock/core"
)

// FenceVerifier checks a signed Fence-Token value and returns the fence it
// carries; *fencesign.Verifier implements it. Any error means "do not
// trust this fence".
type FenceVerifier interface {
	Verify(token string) (core.FenceToken, error)
}

// FenceSigner signs a fence for FenceHeader; *fencesign.Signer implements it.
type FenceSigner interface {
	Sign(t core.FenceToken) (string, error)
}

// AcceptSignedFence is middleware for the receiving side of
// SignedTransport: it verifies FenceHeader with v and only then puts the
// fence into the request context (core.ContextWithFence), where sqlguard
// finds it. A request without the header passes unchanged; a repeated header
// is 400; a token v refuses (unsigned, forged, tampered, expired, signed
// with an unknown or wrong key) is 401 Unauthorized and the handler does
// not run, so no fence of it is ever recorded.
//
//	mux.Handle("POST /reserve", httpmw.AcceptSignedFence(verifier)(reserve))
func AcceptSignedFence(v FenceVerifier) func(http.Handler) http.Handler {
	if v == nil {
		panic("httpmw: AcceptSignedFence with a nil FenceVerifier")
	}
	return func(next http.Handler) http.Handler {
		if next == nil {
			panic("httpmw: AcceptSignedFence middleware applied to a nil http.Handler")
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			vals := r.Header.Values(FenceHeader)
			switch len(vals) {
			case 0:
				next.ServeHTTP(w, r)
				return
			case 1:
			default:
				http.Error(w, "repeated "+FenceHeader+" header", http.StatusBadRequest)
				return
			}
			t, err := v.Verify(vals[0])
			if err != nil {
				http.Error(w, "untrusted "+FenceHeader+" header", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r.WithContext(core.ContextWithFence(r.Context(), t)))
		})
	}
}

// AcceptUnsignedFence trusts FenceHeader as sent (see AcceptFence). Its
// name is the configuration: use it only where every client that can reach
// the route is trusted to send honest fences, and AcceptSignedFence
// everywhere else.
func AcceptUnsignedFence(next http.Handler) http.Handler {
	if next == nil {
		panic("httpmw: AcceptUnsignedFence with a nil http.Handler")
	}
	return acceptUnsigned(next)
}

// SignedTransport is Transport with the fence signed by s, for services
// that mount AcceptSignedFence. A request that already has the header keeps
// it. When signing fails the request is not sent and RoundTrip returns the
// error. next nil means http.DefaultTransport.
func SignedTransport(next http.RoundTripper, s FenceSigner) http.RoundTripper {
	if s == nil {
		panic("httpmw: SignedTransport with a nil FenceSigner")
	}
	if next == nil {
		next = http.DefaultTransport
	}
	return &signedTransport{next: next, s: s}
}

type signedTransport struct {
	next http.RoundTripper
	s    FenceSigner
}

func (t *signedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ft, ok := core.FenceFromContext(req.Context())
	if !ok || len(req.Header.Values(FenceHeader)) > 0 {
		return t.next.RoundTrip(req)
	}
	v, err := t.s.Sign(ft)
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close() // a RoundTripper closes the body, even on error
		}
		return nil, fmt.Errorf("httpmw: signing the fence: %w", err)
	}
	r2 := *req
	r2.Header = req.Header.Clone()
	if r2.Header == nil {
		r2.Header = make(http.Header, 1)
	}
	r2.Header.Set(FenceHeader, v)
	return t.next.RoundTrip(&r2)
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach next.
func (t *signedTransport) CloseIdleConnections() {
	if c, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
