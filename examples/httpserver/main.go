// Command httpserver guards a net/http route with httpmw: claims of one
// coupon run one at a time across every instance of the service.
//
// It starts the server on 127.0.0.1:0, fires bursts of concurrent claims,
// prints what the clients got and exits:
//
//   - POST /coupons/{id}/claim fails fast: one claim of a burst wins, the
//     others get 409 Conflict with Retry-After.
//   - POST /queued/coupons/{id}/claim waits up to 10s for the lock: the
//     burst is served one by one and the stock never goes below zero.
//
// With -listen it serves instead, until Ctrl-C, so a real load generator
// can be pointed at it; the coupons are restocked every second and the debug
// page of package lockdebug is at /debug/locks.
//
// Usage:
//
//	go run ./examples/httpserver                      # embedded Redis (miniredis)
//	go run ./examples/httpserver -redis 127.0.0.1:6379
//	go run ./examples/httpserver -listen 127.0.0.1:8080
//
// then, from another shell:
//
//	curl -i -X POST http://127.0.0.1:8080/coupons/1/claim
//	wrk -t2 -c50 -d10s -s <(echo 'wrk.method="POST"') http://127.0.0.1:8080/coupons/1/claim
//	hey -n 2000 -c 50 -m POST http://127.0.0.1:8080/queued/coupons/2/claim
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
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/fencedlock/fencedlock/lockdebug"
	"github.com/fencedlock/fencedlock/otel/oteldemo"
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
		log.Fatal("httpserver: ", err)
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
	ns := fmt.Sprintf("httpserver:%d:", time.Now().UnixNano())
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

// routes mounts the two claim routes and the debug page. The middleware is
// mounted per route, after routing: it reads {id} and names the lock after
// the pattern.
func routes(locker *core.Client, shop *shop) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("POST /coupons/{id}/claim",
		httpmw.Lock(locker, httpmw.Template("coupon:{id}"), httpmw.WithTTL(5*time.Second), httpmw.WithExpectedHold(time.Second))(http.HandlerFunc(shop.claim)))
	mux.Handle("POST /queued/coupons/{id}/claim",
		httpmw.Lock(locker, httpmw.Template("coupon:{id}"), httpmw.WithTTL(5*time.Second), httpmw.WithExpectedHold(time.Second), httpmw.WithWait(10*time.Second))(http.HandlerFunc(shop.claim)))
	mux.Handle("GET /debug/locks", lockdebug.Handler(locker))
	return mux
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
		counts, retryAfter := fire(client, base+b.path, n)
		left, err := shop.remaining(ctx, b.coupon)
		if err != nil {
			return nil, err
		}
		fmt.Printf("\n%s: %d concurrent POST %s (each claim holds the lock %v)\n", b.name, n, b.path, shop.hold)
		printCounts(counts, retryAfter)
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

func (s *shop) claim(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context() // carries the lock; cancelled if it is lost
	id := r.PathValue("id")
	n, err := s.remaining(ctx, id)
	if errors.Is(err, redis.Nil) {
		http.Error(w, "no such coupon", http.StatusNotFound)
		return
	}
	if err != nil {
		http.Error(w, "stock unavailable", http.StatusServiceUnavailable)
		return
	}
	if n <= 0 {
		http.Error(w, "sold out", http.StatusGone)
		return
	}
	select {
	case <-time.After(s.hold): // the window in which a second claim would read the same n
	case <-ctx.Done():
		return // lock lost or client gone: write nothing, the middleware answers
	}
	if err := s.rdb.Set(ctx, s.key(id), n-1, time.Hour).Err(); err != nil {
		http.Error(w, "stock unavailable", http.StatusServiceUnavailable)
		return
	}
	l, _ := core.FromContext(ctx)
	fmt.Fprintf(w, "coupon %s claimed, %d left (fence %d)\n", id, n-1, l.Fence())
}

// fire sends n POSTs to url at once and counts the statuses.
func fire(c *http.Client, url string, n int) (counts map[string]int, retryAfter string) {
	var mu sync.Mutex
	counts = map[string]int{}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			status, ra := post(c, url)
			mu.Lock()
			defer mu.Unlock()
			counts[status]++
			if ra != "" {
				retryAfter = ra
			}
		})
	}
	close(start)
	wg.Wait()
	return counts, retryAfter
}

func post(c *http.Client, url string) (status, retryAfter string) {
	resp, err := c.Post(url, "", nil)
	if err != nil {
		return "error: " + err.Error(), ""
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Status, resp.Header.Get("Retry-After")
}

func printCounts(counts map[string]int, retryAfter string) {
	statuses := make([]string, 0, len(counts))
	for s := range counts {
		statuses = append(statuses, s)
	}
	sort.Strings(statuses)
	for _, s := range statuses {
		extra := ""
		if s == "409 Conflict" && retryAfter != "" {
			secs, _ := strconv.Atoi(retryAfter)
			extra = fmt.Sprintf("  (Retry-After: %ds)", secs)
		}
		fmt.Printf("  %-14s x%d%s\n", s, counts[s], extra)
	}
}
