package httpmw_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/redis/go-redis/v9"
)

// A second claim of the same coupon while the first is being handled gets
// 409 Conflict, with Retry-After from the holder's remaining lease.
func ExampleLock() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	locker := core.New(rdb) // one per process, shared by every route
	defer locker.Close()

	inside, finish := make(chan struct{}), make(chan struct{})
	claim := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(inside)
		<-finish // hold the lock until the second request has been answered
		fmt.Fprintln(w, "claimed")
	})
	mux := http.NewServeMux()
	mux.Handle("POST /coupons/{id}/claim", httpmw.Lock(locker, httpmw.Template("coupon:{id}"))(claim))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	first := make(chan string)
	go func() {
		resp, err := srv.Client().Post(srv.URL+"/coupons/42/claim", "", nil)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		first <- resp.Status
	}()
	<-inside
	resp, err := srv.Client().Post(srv.URL+"/coupons/42/claim", "", nil)
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("second: %s, Retry-After: %s, body: %s", resp.Status, resp.Header.Get("Retry-After"), body)
	close(finish)
	fmt.Println("first:", <-first)
	// Output:
	// second: 409 Conflict, Retry-After: 10, body: resource is locked by another request
	// first: 200 OK
}

// Transfers lock both accounts, in sorted order, so that opposite
// transfers cannot deadlock.
func ExampleLockKeys() {
	var locker core.Locker // core.New(rdb) in a real program
	var transfer http.Handler
	mux := http.NewServeMux()
	mux.Handle("POST /transfer/{from}/{to}", httpmw.LockKeys(locker, []httpmw.KeyFunc{
		httpmw.Template("account:{from}"),
		httpmw.Template("account:{to}"),
	}, httpmw.WithWait(2*time.Second))(transfer))
}

// The calling service forwards its lock's fence; the called service reads
// it into the request context, where sqlguard finds it.
func ExampleTransport() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	locker := core.New(rdb)
	defer locker.Close()

	// Downstream: AcceptFence puts the Fence-Token header into the context.
	inventory := httptest.NewServer(httpmw.AcceptFence(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ft, _ := core.FenceFromContext(r.Context())
		fmt.Printf("inventory: key=%s fence>0=%v\n", ft.Key, ft.Fence > 0)
	})))
	defer inventory.Close()
	client := &http.Client{Transport: httpmw.Transport(inventory.Client().Transport)}
	defer client.CloseIdleConnections()

	// Upstream: the outgoing request is built with the handler's context.
	mux := http.NewServeMux()
	mux.Handle("POST /orders/{id}", httpmw.Lock(locker, httpmw.Template("order:{id}"))(
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			req, _ := http.NewRequestWithContext(r.Context(), "POST", inventory.URL+"/reserve", nil)
			resp, err := client.Do(req)
			if err != nil {
				http.Error(w, "inventory unavailable", http.StatusBadGateway)
				return
			}
			resp.Body.Close()
		})))
	orders := httptest.NewServer(mux)
	defer orders.Close()

	resp, err := orders.Client().Post(orders.URL+"/orders/7", "", nil)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println("orders:", resp.Status)
	// Output:
	// inventory: key=order:7 fence>0=true
	// orders: 200 OK
}

// Two readers of one document run at once under LockRW; a writer arriving
// meanwhile fails fast with 409.
func ExampleLockRW() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	locker := core.New(rdb)
	defer locker.Close()

	readers, finish := make(chan struct{}, 2), make(chan struct{})
	doc := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			readers <- struct{}{}
			<-finish
		}
	})
	rw := httpmw.LockRW(locker, httpmw.Template("doc:{id}"))
	mux := http.NewServeMux()
	mux.Handle("GET /docs/{id}", rw(doc))
	mux.Handle("PUT /docs/{id}", rw(doc))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	done := make(chan string, 2)
	for range 2 {
		go func() {
			resp, err := srv.Client().Get(srv.URL + "/docs/1")
			if err != nil {
				panic(err)
			}
			resp.Body.Close()
			done <- resp.Status
		}()
	}
	<-readers
	<-readers // both GETs are inside the handler together
	req, _ := http.NewRequest(http.MethodPut, srv.URL+"/docs/1", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println("PUT while reading:", resp.Status)
	close(finish)
	fmt.Println("GET:", <-done)
	fmt.Println("GET:", <-done)
	// Output:
	// PUT while reading: 409 Conflict
	// GET: 200 OK
	// GET: 200 OK
}

// Limit(…, 2) admits two concurrent requests per tenant; a third gets 429
// Too Many Requests with Retry-After.
func ExampleLimit() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	locker := core.New(rdb)
	defer locker.Close()

	inside, finish := make(chan struct{}, 2), make(chan struct{})
	report := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside <- struct{}{}
		<-finish
	})
	mux := http.NewServeMux()
	mux.Handle("POST /reports", httpmw.Limit(locker, httpmw.Header("X-Tenant"), 2)(report))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	post := func() *http.Response {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/reports", nil)
		req.Header.Set("X-Tenant", "acme")
		resp, err := srv.Client().Do(req)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		return resp
	}
	done := make(chan string, 2)
	for range 2 {
		go func() { done <- post().Status }()
	}
	<-inside
	<-inside
	third := post()
	fmt.Printf("third: %s, Retry-After set: %v\n", third.Status, third.Header.Get("Retry-After") != "")
	close(finish)
	fmt.Println(<-done)
	fmt.Println(<-done)
	// Output:
	// third: 429 Too Many Requests, Retry-After set: true
	// 200 OK
	// 200 OK
}
