package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// serve runs the routes on addr until SIGINT or SIGTERM, restocking coupons
// 1 and 2 every second so a load test keeps exercising the lock rather than
// the "sold out" path.
func serve(ctx context.Context, addr string, h http.Handler, s *shop) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()
	fmt.Printf("serving on %s (Ctrl-C to stop)\n  curl -i -X POST %s/coupons/1/claim\n  debug page: %s/debug/locks\n", base, base, base)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for _, id := range []string{"1", "2"} {
			if err := s.restock(ctx, id); err != nil && ctx.Err() == nil {
				fmt.Println("restock:", err)
			}
		}
		select {
		case <-tick.C:
			continue
		case err := <-served:
			return err
		case <-ctx.Done():
		}
		break
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		return err
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
