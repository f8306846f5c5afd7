package grpcmw_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
)

// counterServer reports the fence of the lock its handler runs under.
type counterServer struct {
	testpb.UnimplementedCounterServer
}

func (counterServer) Incr(ctx context.Context, _ *testpb.IncrRequest) (*testpb.IncrReply, error) {
	l, _ := core.FromContext(ctx)
	return &testpb.IncrReply{Fence: l.Fence()}, nil
}

func ExampleUnaryServerInterceptor() {
	mr, err := miniredis.Run() // a real Redis in production
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	locker := core.New(rdb)
	defer locker.Close()

	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(
		grpcmw.UnaryServerInterceptor(locker, grpcmw.Template("counter:{counter_id}"),
			grpcmw.WithMethods("/fencedlock.grpcmw.test.Counter/Incr")),
	))
	testpb.RegisterCounterServer(srv, counterServer{})
	lis := bufconn.Listen(1 << 16)
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		panic(err)
	}
	defer cc.Close()
	client := testpb.NewCounterClient(cc)
	ctx := context.Background()

	// Another instance of the service holds counter:7 for 5s.
	other := core.New(rdb)
	defer other.Close()
	held, err := other.TryAcquire(ctx, "counter:7", core.WithTTL(5*time.Second))
	if err != nil {
		panic(err)
	}

	_, err = client.Incr(ctx, &testpb.IncrRequest{CounterId: "7"})
	retry, _ := grpcmw.RetryDelay(err)
	fmt.Println(status.Code(err), status.Convert(err).Message())
	fmt.Println("retry within 5s:", retry > 0 && retry <= 5*time.Second)

	_ = held.Release(ctx)
	r, err := client.Incr(ctx, &testpb.IncrRequest{CounterId: "7"})
	fmt.Println(status.Code(err), "fence above the previous holder's:", r.GetFence() > held.Fence())
	// Output:
	// Aborted resource is locked by another request
	// retry within 5s: true
	// OK fence above the previous holder's: true
}
