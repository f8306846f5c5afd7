package main

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/reflection"
)

// serve runs srv on addr until ctx ends (main: SIGINT or SIGTERM).
func serve(ctx context.Context, addr string, srv *grpc.Server) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return serveOn(ctx, lis, srv)
}

// serveOn runs srv on lis, with server reflection for grpcurl and ghz,
// until ctx ends, then stops gracefully.
func serveOn(ctx context.Context, lis net.Listener, srv *grpc.Server) error {
	reflection.Register(srv)
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
