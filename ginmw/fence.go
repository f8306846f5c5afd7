package ginmw

import (
	"net/http"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
	"github.com/gin-gonic/gin"
)

// FenceHeader is the request header that carries a lock's fence from
// another service, in the form of core.FenceToken.String:
//
//	Fence-Token: <fence>;owner=<owner id>;key=<URL-escaped key>
//
// The calling side adds it with httpmw.Transport.
const FenceHeader = guard.FenceHeader

// AcceptFence parses FenceHeader into c.Request's context
// (core.ContextWithFence), where core.FenceFromContext, and so sqlguard,
// find it. Requests without the header pass unchanged; a malformed or
// repeated header aborts with 400 and {"error":"invalid_fence"}.
//
// A fence is trusted as sent: a client that can set the header can fence
// out legitimate lock holders.
//
// Deprecated: use AcceptSignedFence, or AcceptUnsignedFence where trusting
// every caller is intended; AcceptFence is AcceptUnsignedFence.
func AcceptFence() gin.HandlerFunc { return acceptUnsigned() }

func acceptUnsigned() gin.HandlerFunc {
	return func(c *gin.Context) {
		vals := c.Request.Header.Values(FenceHeader)
		if len(vals) == 0 {
			c.Next()
			return
		}
		var t core.FenceToken
		var err error
		if len(vals) == 1 {
			t, err = core.ParseFenceToken(vals[0])
		}
		if len(vals) > 1 || err != nil {
			c.AbortWithStatusJSON(http.StatusBadRequest, gin.H{"error": "invalid_fence", "message": "invalid " + FenceHeader + " header"})
			return
		}
		c.Request = c.Request.WithContext(core.ContextWithFence(c.Request.Context(), t))
		c.Next()
	}
}
