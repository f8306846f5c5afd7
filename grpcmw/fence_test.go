package grpcmw_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
)

// downstream starts service B: it accepts forwarded fences and reports in
// its replies the fence it found in its context.
func downstream(t *testing.T, tr string) *endpoint {
	return serve(t, tr, newService(),
		grpc.ChainUnaryInterceptor(grpcmw.UnaryAcceptFence()),
		grpc.ChainStreamInterceptor(grpcmw.StreamAcceptFence()))
}

func TestFence_forwardedBetweenServices(t *testing.T) {
	b := redisBackend(t)
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			// B is called by A through a connection with the client interceptors.
			bConn := downstream(t, tr).client(
				grpc.WithChainUnaryInterceptor(grpcmw.UnaryClientInterceptor()),
				grpc.WithChainStreamInterceptor(grpcmw.StreamClientInterceptor()))

			type seen struct{ unary, stream *testpb.IncrReply }
			seenc := make(chan seen, 1)
			a := newService()
			a.hook = func(ctx context.Context, _ string, req *testpb.IncrRequest) error {
				var s seen
				var err error
				if s.unary, err = bConn.Incr(ctx, &testpb.IncrRequest{CounterId: "downstream"}); err != nil {
					return err
				}
				st, err := bConn.Sum(ctx)
				if err != nil {
					return err
				}
				if err := st.Send(&testpb.IncrRequest{CounterId: "downstream"}); err != nil {
					return err
				}
				if s.stream, err = st.CloseAndRecv(); err != nil {
					return err
				}
				seenc <- s
				return nil
			}
			aClient := serve(t, tr, a, grpc.ChainUnaryInterceptor(
				grpcmw.UnaryServerInterceptor(b.client(), grpcmw.Template("order:{counter_id}")))).client()

			r, err := aClient.Incr(context.Background(), &testpb.IncrRequest{CounterId: "7"})
			if err != nil {
				t.Fatal(err)
			}
			s := recv(t, seenc, "downstream replies")
			for name, got := range map[string]*testpb.IncrReply{"unary": s.unary, "stream": s.stream} {
				if got.GetSeenFence() != r.GetFence() || got.GetSeenKey() != "order:7" {
					t.Errorf("%s: B saw fence %d key %q, want A's lock: fence %d key order:7",
						name, got.GetSeenFence(), got.GetSeenKey(), r.GetFence())
				}
				if got.GetFence() != 0 {
					t.Errorf("%s: B holds a lock of its own", name)
				}
			}
		})
	}
}

func TestFence_notForwardedWithoutALock(t *testing.T) {
	c := downstream(t, "bufconn").client(grpc.WithChainUnaryInterceptor(grpcmw.UnaryClientInterceptor()))
	r, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetSeenFence() != 0 {
		t.Errorf("B saw fence %d from a caller without a lock", r.GetSeenFence())
	}
}

func TestFence_forwardsAReceivedFenceOn(t *testing.T) {
	// A fence received through AcceptFence travels on to the next service.
	ctx := core.ContextWithFence(context.Background(), core.FenceToken{Key: "k", Fence: 9, Owner: "o"})
	c := downstream(t, "bufconn").client(grpc.WithChainUnaryInterceptor(grpcmw.UnaryClientInterceptor()))
	r, err := c.Incr(ctx, &testpb.IncrRequest{CounterId: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetSeenFence() != 9 || r.GetSeenKey() != "k" {
		t.Errorf("B saw %d %q", r.GetSeenFence(), r.GetSeenKey())
	}
	// Metadata set by the caller wins.
	ctx = metadata.AppendToOutgoingContext(ctx, grpcmw.FenceMetadataKey, core.FenceToken{Key: "mine", Fence: 3}.String())
	if r, err = c.Incr(ctx, &testpb.IncrRequest{CounterId: "x"}); err != nil {
		t.Fatal(err)
	}
	if r.GetSeenFence() != 3 || r.GetSeenKey() != "mine" {
		t.Errorf("B saw %d %q, want the caller's own metadata", r.GetSeenFence(), r.GetSeenKey())
	}
}

func TestAcceptFence_rejectsBadMetadata(t *testing.T) {
	e := downstream(t, "bufconn")
	c := e.client()
	for name, vals := range map[string][]string{
		"malformed": {"not-a-fence"},
		"zero":      {"0;key=k"},
		"repeated":  {"1;key=k", "2;key=k"},
	} {
		t.Run(name, func(t *testing.T) {
			md := metadata.MD{grpcmw.FenceMetadataKey: vals}
			ctx := metadata.NewOutgoingContext(context.Background(), md)
			_, err := c.Incr(ctx, &testpb.IncrRequest{CounterId: "x"})
			st := wantCode(t, err, codes.InvalidArgument)
			if strings.Contains(st.Message(), vals[0]) {
				t.Errorf("message %q echoes the metadata", st.Message())
			}
			s, err := c.Watch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Recv(); err == io.EOF || err == nil {
				t.Fatalf("stream with bad fence metadata: %v", err)
			} else {
				wantCode(t, err, codes.InvalidArgument)
			}
		})
	}
}

func TestFenceFromIncoming(t *testing.T) {
	want := core.FenceToken{Key: "order:7", Fence: 42, Owner: "abc"}
	in := func(vals ...string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.MD{grpcmw.FenceMetadataKey: vals})
	}
	if got, ok, err := grpcmw.FenceFromIncoming(in(want.String())); !ok || err != nil || got != want {
		t.Errorf("got %+v, %v, %v; want %+v", got, ok, err, want)
	}
	if _, ok, err := grpcmw.FenceFromIncoming(context.Background()); ok || err != nil {
		t.Errorf("no metadata: %v, %v", ok, err)
	}
	for _, bad := range [][]string{{"x"}, {want.String(), want.String()}} {
		if _, ok, err := grpcmw.FenceFromIncoming(in(bad...)); ok || !errors.Is(err, core.ErrInvalidFence) {
			t.Errorf("%q: %v, %v; want core.ErrInvalidFence", bad, ok, err)
		}
	}
}
