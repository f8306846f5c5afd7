package ginmw_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/ginmw"
	"github.com/fencedlock/fencedlock/internal/redistest"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
)

type roundTrips struct{ n atomic.Int64 }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { h.n.Add(1); return next(ctx, cmd) }
}

func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error { h.n.Add(1); return next(ctx, cmds) }
}

// BenchmarkLock_distinctKeys measures ginmw's overhead over a bare gin
// handler on uncontended keys against a real redis-server.
func BenchmarkLock_distinctKeys(b *testing.B) {
	srv := redistest.Start(b)
	rdb := srv.Client(b)
	rt := &roundTrips{}
	rdb.AddHook(rt)
	locker := core.New(rdb)
	b.Cleanup(func() { _ = locker.Close() })
	rs := make([]*http.Request, 4096)
	for i := range rs {
		rs[i] = httptest.NewRequest("POST", fmt.Sprintf("/coupons/%d/claim", i), nil)
	}
	for _, bc := range []struct {
		name     string
		handlers []gin.HandlerFunc
	}{
		{"bare", nil},
		{"redis", []gin.HandlerFunc{ginmw.Lock(locker, ginmw.Template("coupon:{id}"))}},
	} {
		e := gin.New()
		e.POST("/coupons/:id/claim", append(bc.handlers, func(c *gin.Context) { c.Status(http.StatusNoContent) })...)
		b.Run(bc.name, func(b *testing.B) {
			w := httptest.NewRecorder()
			e.ServeHTTP(w, rs[0]) // loads the scripts
			rt.n.Store(0)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				w := httptest.NewRecorder()
				e.ServeHTTP(w, rs[i%len(rs)])
				if w.Code != http.StatusNoContent {
					b.Fatalf("status %d", w.Code)
				}
				i++
			}
			b.ReportMetric(float64(rt.n.Load())/float64(i), "roundtrips/op")
		})
	}
}
