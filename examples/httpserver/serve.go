package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// serve runs h on addr until ctx ends (main: SIGINT or SIGTERM).
func serve(ctx context.Context, addr string, h http.Handler, s *shop) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return serveOn(ctx, ln, h, s)
}

// serveOn serves h on ln until ctx ends, restocking coupons 1 and 2 every
// second so a load test keeps exercising the lock rather than the "sold
// out" path, then shuts down gracefully.
func serveOn(ctx context.Context, ln net.Listener, h http.Handler, s *shop) error {
	s.restockAll(ctx) // before the first request, which would find no stock
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	fmt.Printf("serving on %s (Ctrl-C to stop)\n  curl -i -X POST %s/coupons/1/claim\n  debug page: %s/debug/locks\n", base, base, base)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			s.restockAll(ctx)
		case err := <-served:
			return err
		case <-ctx.Done():
			return shutdown(ctx, srv, served)
		}
	}
}

// restockAll refills coupons 1 and 2; a failure (Redis down) is printed
// and retried at the next tick.
func (s *shop) restockAll(ctx context.Context) {
	for _, id := range []string{"1", "2"} {
		if err := s.restock(ctx, id); err != nil && ctx.Err() == nil {
			fmt.Println("restock:", err)
		}
	}
}
