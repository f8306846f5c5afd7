// Command payments is the retry that charges twice: a client whose request
// times out sends it again, while the slow payment provider behind the
// first one is still working. Without idempotency each attempt that reached
// the handler is a charge; with httpmw.Idempotent and the same
// Idempotency-Key on every attempt the handler runs once and every answer
// is the first one.
//
//	go run ./examples/payments                      # embedded Redis (miniredis)
//	go run ./examples/payments -redis 127.0.0.1:6379
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
	"strings"
	"sync/atomic"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/httpmw"
	"github.com/fencedlock/fencedlock/idempotency"
)

func main() {
	addr := flag.String("redis", "", "Redis address (host:port); empty runs an embedded miniredis")
	provider := flag.Duration("provider", 300*time.Millisecond, "how long the payment provider takes")
	timeout := flag.Duration("timeout", 100*time.Millisecond, "the client's timeout per attempt")
	attempts := flag.Int("attempts", 8, "attempts the client makes before it gives up")
	flag.Parse()
	if *attempts < 1 || *provider <= 0 || *timeout <= 0 {
		log.Fatal("payments: -attempts, -provider and -timeout must be positive")
	}
	if *addr == "" {
		mr, err := miniredis.Run()
		if err != nil {
			log.Fatal(err)
		}
		defer mr.Close()
		*addr = mr.Addr()
		fmt.Println("redis: embedded miniredis at", *addr)
	} else {
		fmt.Println("redis:", *addr)
	}
	rdb := redis.NewClient(&redis.Options{Addr: *addr})
	defer rdb.Close()
	locker := core.New(rdb)
	defer locker.Close()
	store := idempotency.NewRedisStore(rdb, "payments-idem:")
	c := client{timeout: *timeout, attempts: *attempts}

	without, err := run(c, *provider, "without idempotency", func(h http.Handler) http.Handler { return h })
	if err != nil {
		log.Fatal(err)
	}
	with, err := run(c, *provider, "with idempotency", httpmw.Idempotent(locker, store))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println()
	fmt.Printf("without idempotency: charges=%d\n", without)
	fmt.Printf("with idempotency: charges=%d\n", with)
	if with != 1 {
		os.Exit(1)
	}
}

// bank is the charge endpoint; every run of its handler is a charge.
type bank struct {
	provider time.Duration
	charges  atomic.Int64
}

func (b *bank) charge(w http.ResponseWriter, r *http.Request) {
	amount, _ := io.ReadAll(r.Body)
	time.Sleep(b.provider) // the provider does not stop when our client gives up
	n := b.charges.Add(1)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"charge":"ch_%d","amount":%q}`+"\n", n, amount)
}

// run serves the charge endpoint behind mw, lets the client pay once, and
// returns how many charges were made.
func run(c client, provider time.Duration, name string, mw func(http.Handler) http.Handler) (int64, error) {
	b := &bank{provider: provider}
	mux := http.NewServeMux()
	mux.Handle("POST /charges", mw(http.HandlerFunc(b.charge)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	fmt.Printf("\n%s:\n", name)
	c.pay("http://"+ln.Addr().String()+"/charges", "order-1001-payment")

	// Shutdown waits for the handler runs the client gave up on: their
	// charges count too.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return 0, err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return 0, err
	}
	return b.charges.Load(), nil
}

// client pays with a timeout per attempt and retries on timeouts, always
// with the same Idempotency-Key, as payment SDKs do.
type client struct {
	timeout  time.Duration
	attempts int
}

func (c client) pay(url, key string) {
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: c.timeout}
	for i := 1; i <= c.attempts; i++ {
		req, err := http.NewRequest("POST", url, strings.NewReader("49.90"))
		if err != nil {
			log.Fatal(err)
		}
		req.Header.Set("Idempotency-Key", key)
		resp, err := hc.Do(req)
		if err != nil {
			fmt.Printf("  attempt %d: no answer within %v, retrying\n", i, c.timeout)
			time.Sleep(c.timeout / 2)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusConflict {
			fmt.Printf("  attempt %d: %d, retrying\n", i, resp.StatusCode)
			time.Sleep(c.timeout / 2)
			continue
		}
		replayed := ""
		if resp.Header.Get(idempotency.ReplayedHeader) == "true" {
			replayed = " (replayed)"
		}
		fmt.Printf("  attempt %d: %d %s%s\n", i, resp.StatusCode, strings.TrimSpace(string(body)), replayed)
		return
	}
	fmt.Printf("  gave up after %d attempts\n", c.attempts)
}
