// Command ginserver guards a gin route with ginmw: claims of one coupon run
// one at a time across every instance of the service.
//
// It starts the server on 127.0.0.1:0, fires bursts of concurrent claims,
// prints what the clients got and exits:
//
//   - POST /coupons/:id/claim fails fast: one claim of a burst wins, the
//     others get 409 Conflict with Retry-After and a small JSON body.
//   - POST /queued/coupons/:id/claim waits up to 10s for the lock: the
//     burst is served one by one and the stock never goes below zero.
//
// With -listen it serves instead, until Ctrl-C, so a real load generator
// can be pointed at it; the coupons are restocked every second and the debug
// page of package lockdebug is at /debug/locks.
//
// Usage:
//
//	go run ./examples/ginserver                      # embedded Redis (miniredis)
//	go run ./examples/ginserver -redis 127.0.0.1:6379
//	go run ./examples/ginserver -listen 127.0.0.1:8080
//
// then, from another shell:
//
//	curl -i -X POST http://127.0.0.1:8080/coupons/1/claim
//	wrk -t2 -c50 -d10s -s <(echo 'wrk.method="POST"') http://127.0.0.1:8080/coupons/1/claim
//	curl -s 'http://127.0.0.1:8080/debug/locks?format=json'
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/ginmw"
	"github.com/fencedlock/fencedlock/lockdebug"
	"github.com/fencedlock/fencedlock/otel/oteldemo"
	"github.com/gin-gonic/gin"
	"github.com/redis/go-redis/v9"
)

const stock = 10

func main() {
	var cfg config
	flag.StringVar(&cfg.redis, "redis", "", "Redis address (host:port); empty runs an embedded miniredis")
	flag.IntVar(&cfg.burst, "burst", 20, "concurrent claims per burst")
	flag.DurationVar(&cfg.hold, "hold", 100*time.Millisecond, "how long each claim works while holding the lock")
	otelMode := flag.String("otel", "off", "telemetry: off, or stdout to print spans and metrics")
	flag.StringVar(&cfg.listen, "listen", "", "serve on this address until interrupted, instead of firing bursts")
	flag.Parse()
	tel, err := oteldemo.Setup(*otelMode, os.Stdout)
	if err != nil {
		log.Fatal(err)
	}
	cfg.obs = tel.Observer()
	err = run(cfg)
	tel.Shutdown(context.Background()) // prints the metrics at exit
	if err != nil {
		log.Fatal("ginserver: ", err)
	}
}

// config is one run's flags.
type config struct {
	redis, listen string
	burst         int
	hold          time.Duration
	obs           core.Observer
}

func run(cfg config) error {
	rdb, closeRedis, err := openRedis(cfg.redis)
	if err != nil {
		return err
	}
	defer closeRedis()
	// A run-specific namespace, so a shared real Redis is left alone.
	ns := fmt.Sprintf("ginserver:%d:", time.Now().UnixNano())
	locker := core.New(rdb, core.WithPrefix(ns+"lock:"), core.WithObserver(cfg.obs))
	defer locker.Close()
	shop := &shop{rdb: rdb, ns: ns, hold: cfg.hold}
	mux := routes(locker, shop)
	if cfg.listen != "" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return serve(ctx, cfg.listen, mux, shop)
	}
	return demo(context.Background(), mux, shop, cfg.burst)
}

// openRedis connects to addr, or to an embedded miniredis when addr is
// empty, with the fail-fast settings of docs/operators.md: with Redis down
// the routes answer 503 in milliseconds instead of after go-redis's
// retries (about 1.7 s).
func openRedis(addr string) (*redis.Client, func(), error) {
	stopMini := func() {}
	if addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return nil, nil, err
		}
		addr, stopMini = mr.Addr(), mr.Close
		fmt.Println("redis: embedded miniredis at", addr)
	} else {
		fmt.Println("redis:", addr)
	}
	rdb := redis.NewClient(&redis.Options{
		Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: 250 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond,
	})
	return rdb, func() { rdb.Close(); stopMini() }, nil
}

// routes mounts the two claim routes and the debug page. gin.Recovery
// runs before the lock, so a panicking claim still releases it.
func routes(locker *core.Client, shop *shop) *gin.Engine {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(gin.Recovery())
	r.POST("/coupons/:id/claim",
		ginmw.Lock(locker, ginmw.Template("coupon:{id}"), ginmw.WithTTL(5*time.Second), ginmw.WithExpectedHold(time.Second)), shop.claim)
	r.POST("/queued/coupons/:id/claim",
		ginmw.Lock(locker, ginmw.Template("coupon:{id}"), ginmw.WithTTL(5*time.Second), ginmw.WithExpectedHold(time.Second), ginmw.WithWait(10*time.Second)), shop.claim)
	r.GET("/debug/locks", gin.WrapH(lockdebug.Handler(locker)))
	return r
}

// burst is one round of the demo and what its outcome must look like.
type burst struct {
	name, path, coupon string
	check              func(map[string]int) bool
}

// demo serves h on a random loopback port, fires the bursts and reports;
// it fails when a burst did not come out as the lock promises.
func demo(ctx context.Context, h http.Handler, shop *shop, n int) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	fmt.Println("server:", base)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	failed, err := fireBursts(ctx, target{client, base, n}, shop, []burst{
		{"fail fast", "/coupons/1/claim", "1", func(c map[string]int) bool { return c["200 OK"] >= 1 && c["409 Conflict"] >= 1 }},
		{"queued (WithWait 10s)", "/queued/coupons/2/claim", "2", func(c map[string]int) bool { return c["200 OK"] == min(n, stock) }},
	})
	client.CloseIdleConnections()
	if serr := shutdown(ctx, srv, served); err == nil {
		err = serr
	}
	_ = shop.rdb.Del(ctx, shop.key("1"), shop.key("2")).Err()
	if err == nil && len(failed) > 0 {
		err = fmt.Errorf("unexpected outcome in: %v", failed)
	}
	return err
}

// target is where a burst goes: the client, the server's base URL and how
// many concurrent requests.
type target struct {
	client *http.Client
	base   string
	n      int
}

func fireBursts(ctx context.Context, t target, shop *shop, bursts []burst) (failed []string, err error) {
	client, base, n := t.client, t.base, t.n
	for _, b := range bursts {
		if err := shop.restock(ctx, b.coupon); err != nil {
			return nil, err
		}
		counts, sample := fire(client, base+b.path, n)
		left, err := shop.remaining(ctx, b.coupon)
		if err != nil {
			return nil, err
		}
		fmt.Printf("\n%s: %d concurrent POST %s (each claim holds the lock %v)\n", b.name, n, b.path, shop.hold)
		printCounts(counts, sample)
		fmt.Printf("  coupons left: %d of %d\n", left, stock)
		if !b.check(counts) || left < 0 {
			failed = append(failed, b.name)
		}
	}
	return failed, nil
}

// shutdown stops srv and waits for its Serve to return.
func shutdown(ctx context.Context, srv *http.Server, served <-chan error) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// shop keeps coupon stock in Redis and claims with a read-pause-write, the
// race the lock exists for.
type shop struct {
	rdb  *redis.Client
	ns   string
	hold time.Duration
}

func (s *shop) key(id string) string { return s.ns + "coupon:" + id + ":remaining" }

func (s *shop) restock(ctx context.Context, id string) error {
	return s.rdb.Set(ctx, s.key(id), stock, time.Hour).Err()
}

func (s *shop) remaining(ctx context.Context, id string) (int, error) {
	return s.rdb.Get(ctx, s.key(id)).Int()
}

func (s *shop) claim(c *gin.Context) {
	ctx := c.Request.Context() // carries the lock; cancelled if it is lost
	id := c.Param("id")
	n, err := s.remaining(ctx, id)
	if errors.Is(err, redis.Nil) {
		c.JSON(http.StatusNotFound, gin.H{"error": "no such coupon"})
		return
	}
	if err != nil {
		c.JSON(http.StatusServiceUnavailable, gin.H{"error": "stock unavailable"})
		return
	}
	if n <= 0 {
		c.JSON(http.StatusGone, gin.H{"error": "sold out"})
		return
	}
	select {
	case <-time.After(s.hold): // the window in which a second claim would read the same n
	case <-ctx.Done():
		return // lock lost or client gone: write nothing, the middleware answers
	}
	if err := s.rdb.Set(ctx, s.key(id), n-1, time.Hour).Err(); err != nil {
		c.JSON(http.StatusServiceUnavailable, gin.H{"error": "stock unavailable"})
		return
	}
	l, _ := core.FromContext(ctx)
	c.JSON(http.StatusOK, gin.H{"coupon": id, "left": n - 1, "fence": l.Fence()})
}

type sample struct{ retryAfter, body string }

// fire sends n POSTs to url at once, counts the statuses and keeps one 409
// response as a sample.
func fire(c *http.Client, url string, n int) (map[string]int, sample) {
	var mu sync.Mutex
	counts := map[string]int{}
	var conflict sample
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			status, s := post(c, url)
			mu.Lock()
			defer mu.Unlock()
			counts[status]++
			if status == "409 Conflict" {
				conflict = s
			}
		})
	}
	close(start)
	wg.Wait()
	return counts, conflict
}

func post(c *http.Client, url string) (string, sample) {
	resp, err := c.Post(url, "", nil)
	if err != nil {
		return "error: " + err.Error(), sample{}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.Status, sample{retryAfter: resp.Header.Get("Retry-After"), body: string(body)}
}

func printCounts(counts map[string]int, conflict sample) {
	statuses := make([]string, 0, len(counts))
	for s := range counts {
		statuses = append(statuses, s)
	}
	sort.Strings(statuses)
	for _, s := range statuses {
		fmt.Printf("  %-14s x%d\n", s, counts[s])
	}
	if conflict.body != "" {
		fmt.Printf("  a 409 response: Retry-After: %s, body %s\n", conflict.retryAfter, conflict.body)
	}
}
