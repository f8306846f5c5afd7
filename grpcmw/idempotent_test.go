package grpcmw_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
	"github.com/fencedlock/fencedlock/idempotency"
)

func withKey(key string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), "idempotency-key", key)
}

// idemServers starts two service instances (two lock clients) behind
// UnaryIdempotent on one store; runs counts handler runs.
func idemServers(t *testing.T) (clients []testpb.CounterClient, runs *atomic.Int64) {
	b := redisBackend(t)
	store := idempotency.NewRedisStore(b.rdb, "")
	svc := newService()
	runs = new(atomic.Int64)
	svc.hook = func(_ context.Context, _ string, req *testpb.IncrRequest) error {
		runs.Add(1)
		switch req.GetCounterId() {
		case "missing":
			return status.Error(codes.NotFound, "no such counter")
		case "broken":
			return status.Error(codes.Internal, "disk on fire")
		}
		return nil
	}
	for range 2 {
		it := grpcmw.UnaryIdempotent(b.client(), store, idempotency.WithMethods(mIncr))
		clients = append(clients, serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(it)).client())
	}
	return clients, runs
}

// 8 concurrent duplicates over two instances: one run, eight equal answers.
func TestUnaryIdempotent_concurrentDuplicates(t *testing.T) {
	clients, runs := idemServers(t)
	values := make([]int64, 8)
	replayed := make([]bool, 8)
	var wg sync.WaitGroup
	for i := range values {
		wg.Go(func() {
			var hdr metadata.MD
			r, err := clients[i%2].Incr(withKey("c1"), &testpb.IncrRequest{CounterId: "a", HoldMs: 100}, grpc.Header(&hdr))
			if err != nil {
				t.Errorf("call %d: %v", i, err)
				return
			}
			values[i], replayed[i] = r.GetValue(), len(hdr.Get(grpcmw.ReplayedMetadata)) == 1
		})
	}
	wg.Wait()
	n := 0
	for i := range values {
		if values[i] != values[0] {
			t.Fatalf("answers differ: %v", values)
		}
		if replayed[i] {
			n++
		}
	}
	if runs.Load() != 1 || n != 7 {
		t.Fatalf("runs = %d, replayed = %d; want 1 and 7", runs.Load(), n)
	}
}

func TestUnaryIdempotent_answers(t *testing.T) {
	clients, runs := idemServers(t)
	if _, err := clients[0].Incr(withKey("c1"), &testpb.IncrRequest{CounterId: "a"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, key, counter string
		want               codes.Code
		runs               int64 // handler runs this call adds
	}{
		{"other request", "c1", "b", codes.FailedPrecondition, 0},
		{"no key", "", "a", codes.InvalidArgument, 0},
		{"oversized key", strings.Repeat("k", idempotency.MaxKeyLen+1), "a", codes.InvalidArgument, 0},
		{"client error", "c2", "missing", codes.NotFound, 1},
		{"client error replayed", "c2", "missing", codes.NotFound, 0},
		{"server error", "c3", "broken", codes.Internal, 1},
		{"server error not stored", "c3", "broken", codes.Internal, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			if c.key != "" {
				ctx = withKey(c.key)
			}
			before := runs.Load()
			_, err := clients[1].Incr(ctx, &testpb.IncrRequest{CounterId: c.counter})
			if got := status.Code(err); got != c.want || runs.Load()-before != c.runs {
				t.Fatalf("code %v after %d runs; want %v after %d", got, runs.Load()-before, c.want, c.runs)
			}
		})
	}
	// Methods outside WithMethods pass through.
	if _, err := clients[0].Transfer(context.Background(), &testpb.TransferRequest{From: "x", To: "y"}); err != nil {
		t.Fatalf("unguarded method: %v", err)
	}
}
