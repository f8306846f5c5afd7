package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
)

// serve runs srv on addr, with server reflection for grpcurl and ghz, until
// SIGINT or SIGTERM, then stops gracefully.
func serve(addr string, srv *grpc.Server) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reflection.Register(srv)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	a := lis.Addr().String()
	fmt.Printf("serving Orders on %s with reflection (Ctrl-C to stop)\n  grpcurl -plaintext %s list\n", a, a)
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	srv.GracefulStop()
	return <-served
}
