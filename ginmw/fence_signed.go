package ginmw

import (
	"net/http"

	"github.com/gin-gonic/gin"

	"github.com/fencedlock/fencedlock/core"
)

// FenceVerifier checks a signed Fence-Token value and returns the fence it
// carries; *fencesign.Verifier implements it.
type FenceVerifier interface {
	Verify(token string) (core.FenceToken, error)
}

// AcceptSignedFence verifies FenceHeader with v (see fencesign) and only
// then puts the fence into c.Request's context, where sqlguard finds it.
// Requests without the header pass unchanged; a repeated header aborts with
// 400 and {"error":"invalid_fence"}; a token v refuses (unsigned, forged,
// tampered, expired, wrong key) aborts with 401 and
// {"error":"untrusted_fence"}, so no fence of it is ever recorded. The
// sending side signs with httpmw.SignedTransport.
func AcceptSignedFence(v FenceVerifier) gin.HandlerFunc {
	if v == nil {
		panic("ginmw: AcceptSignedFence with a nil FenceVerifier")
	}
	return func(c *gin.Context) {
		vals := c.Request.Header.Values(FenceHeader)
		switch len(vals) {
		case 0:
			c.Next()
			return
		case 1:
		default:
			c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "invalid_fence", "message": "repeated " + FenceHeader + " header"})
			return
		}
		t, err := v.Verify(vals[0])
		if err != nil {
			c.AbortWithStatusJSON(http.StatusUnauthorized, gin.H{"error": "untrusted_fence", "message": "untrusted " + FenceHeader + " header"})
			return
		}
		c.Request = c.Request.WithContext(core.ContextWithFence(c.Request.Context(), t))
		c.Next()
	}
}

// AcceptUnsignedFence trusts FenceHeader as sent. Its name is the
// configuration: use it only where every client that can reach the route
// is trusted to send honest fences, and AcceptSignedFence everywhere else.
func AcceptUnsignedFence() gin.HandlerFunc { return acceptUnsigned() }
