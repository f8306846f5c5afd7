package grpcmw_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
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

// Transfer reports the locks its handler runs under.
func (counterServer) Transfer(ctx context.Context, _ *testpb.TransferRequest) (*testpb.IncrReply, error) {
	var keys []string
	for _, l := range core.LocksFromContext(ctx) {
		keys = append(keys, l.Key())
	}
	slices.Sort(keys)
	return &testpb.IncrReply{Value: int64(len(keys)), SeenKey: strings.Join(keys, " ")}, nil
}

// bufconnClient serves srv on an in-memory listener and returns a client
// of it, and a function that stops both.
func bufconnClient(srv *grpc.Server) (testpb.CounterClient, func()) {
	testpb.RegisterCounterServer(srv, counterServer{})
	lis := bufconn.Listen(1 << 16)
	go func() { _ = srv.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		panic(err)
	}
	return testpb.NewCounterClient(cc), func() { _ = cc.Close(); srv.Stop() }
}

func ExampleUnaryServerInterceptorKeys() {
	mr, err := miniredis.Run() // a real Redis in production
	if err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	locker := core.New(rdb)
	defer locker.Close()

	// A transfer holds both accounts: all or none, in one order for every
	// caller, so opposite transfers cannot deadlock.
	client, stop := bufconnClient(grpc.NewServer(grpc.ChainUnaryInterceptor(
		grpcmw.UnaryServerInterceptorKeys(locker,
			grpcmw.Keys(grpcmw.Template("account:{from}"), grpcmw.Template("account:{to}")),
			grpcmw.WithMethods("/fencedlock.grpcmw.test.Counter/Transfer"), grpcmw.WithWait(100*time.Millisecond)),
	)))
	defer stop()
	ctx := context.Background()

	r, err := client.Transfer(ctx, &testpb.TransferRequest{From: "alice", To: "bob"})
	fmt.Println(status.Code(err), r.GetValue(), "locks:", r.GetSeenKey())
	r, err = client.Transfer(ctx, &testpb.TransferRequest{From: "carol", To: "carol"})
	fmt.Println(status.Code(err), r.GetValue(), "lock:", r.GetSeenKey())

	// Another instance holds bob's account: the transfer waits its 100ms,
	// then ends Aborted, and alice's account is not left locked.
	other := core.New(rdb)
	defer other.Close()
	held, err := other.TryAcquire(ctx, "account:bob", core.WithTTL(5*time.Second))
	if err != nil {
		panic(err)
	}
	defer held.Release(ctx)
	_, err = client.Transfer(ctx, &testpb.TransferRequest{From: "alice", To: "bob"})
	fmt.Println(status.Code(err))
	alice, err := other.TryAcquire(ctx, "account:alice")
	fmt.Println("alice free:", err == nil)
	if err == nil {
		_ = alice.Release(ctx)
	}

	// An empty field is the caller's mistake, never a lock on "".
	_, err = client.Transfer(ctx, &testpb.TransferRequest{To: "bob"})
	fmt.Println(status.Code(err))
	// Output:
	// OK 2 locks: account:alice account:bob
	// OK 1 lock: account:carol
	// Aborted
	// alice free: true
	// InvalidArgument
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
