package main

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/examples/grpcserver/orderpb"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func server(t *testing.T) (*redistest.Server, *ledger, *grpc.Server) {
	t.Helper()
	rs := redistest.Start(t)
	rdb, _, closeRedis, err := openRedis(rs.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeRedis)
	locker := core.New(rdb)
	t.Cleanup(func() { locker.Close() })
	db := &ledger{paid: map[string]int{}}
	return rs, db, newServer(locker, db)
}

// The default mode: every order charged exactly once.
func TestDemo(t *testing.T) {
	_, db, srv := server(t)
	if err := demo(srv, db, 4, "test"); err != nil {
		t.Fatal(err)
	}
}

// Serve mode is reachable the way grpcurl reaches it: reflection lists
// the Orders service; of two concurrent Pay calls for one order one is
// charged and the other ends Aborted with a RetryInfo delay; with Redis
// down Pay ends Unavailable at once; cancelling stops the server.
func TestServe_reflectionAndPay(t *testing.T) {
	rs, db, srv := server(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveOn(ctx, lis, srv) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	if got := listServices(t, cc); !slices.Contains(got, "fencedlock.example.orders.Orders") {
		t.Fatalf("reflection lists %v, want fencedlock.example.orders.Orders", got)
	}

	client := orderpb.NewOrdersClient(cc)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = client.Pay(context.Background(), &orderpb.PayRequest{OrderId: "7", AmountCents: 100})
		})
	}
	wg.Wait()
	ok, aborted := 0, 0
	for _, err := range errs {
		switch d, hasDelay := grpcmw.RetryDelay(err); {
		case err == nil:
			ok++
		case status.Code(err) == codes.Aborted && hasDelay && d > 0:
			aborted++
		default:
			t.Errorf("Pay: %v", err)
		}
	}
	if ok != 1 || aborted != 1 || db.charges("7") != 1 {
		t.Fatalf("two concurrent Pay calls: %d ok, %d aborted, %d charges; want 1, 1, 1", ok, aborted, db.charges("7"))
	}

	rs.Kill()
	start := time.Now()
	_, err = client.Pay(context.Background(), &orderpb.PayRequest{OrderId: "8"})
	took := time.Since(start)
	if status.Code(err) != codes.Unavailable || took > 500*time.Millisecond {
		t.Fatalf("with Redis down: %v after %v, want Unavailable in well under a second", err, took)
	}
	d, _ := grpcmw.RetryDelay(err)
	t.Logf("first Unavailable with Redis down after %v, RetryInfo %v", took, d)
}

func listServices(t *testing.T, cc *grpc.ClientConn) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}
	if err := stream.Send(req); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.CloseSend()
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	return names
}
