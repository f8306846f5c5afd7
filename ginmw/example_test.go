package ginmw_test

import (
	"fmt"
	"io"
	"net/http/httptest"

	"github.com/alicebob/miniredis/v2"
	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/ginmw"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
)

// A second claim of the same coupon while the first is being handled gets
// 409 Conflict with a small JSON body and Retry-After.
func ExampleLock() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	locker := core.New(rdb)
	defer locker.Close()

	inside, finish := make(chan struct{}), make(chan struct{})
	r := gin.New()
	r.Use(gin.Recovery())
	r.POST("/coupons/:id/claim", ginmw.Lock(locker, ginmw.Template("coupon:{id}")), func(c *gin.Context) {
		close(inside)
		<-finish // hold the lock until the second request has been answered
		c.JSON(200, gin.H{"claimed": c.Param("id")})
	})
	srv := httptest.NewServer(r)
	defer srv.Close()

	first := make(chan string)
	go func() {
		resp, err := srv.Client().Post(srv.URL+"/coupons/42/claim", "", nil)
		if err != nil {
			panic(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		first <- resp.Status + " " + string(body)
	}()
	<-inside
	resp, err := srv.Client().Post(srv.URL+"/coupons/42/claim", "", nil)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println("second:", resp.Status, "Retry-After:", resp.Header.Get("Retry-After"), string(body))
	close(finish)
	fmt.Println("first:", <-first)
	// Output:
	// second: 409 Conflict Retry-After: 10 {"error":"contended","message":"resource is locked by another request"}
	// first: 200 OK {"claimed":"42"}
}
