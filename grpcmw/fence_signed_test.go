package grpcmw_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/fencesign"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
)

var signKey = fencesign.Key{ID: "k1", Secret: bytes.Repeat([]byte{7}, 32)}

func signWith(t *testing.T, k fencesign.Key, ft core.FenceToken, opts ...fencesign.Option) string {
	t.Helper()
	s, err := fencesign.NewSigner(k, opts...)
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.Sign(ft)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// signedDownstream is service B accepting only signed fences.
func signedDownstream(t *testing.T) *endpoint {
	e, _ := signedDownstreamService(t)
	return e
}

// signedDownstreamService is signedDownstream with the service, whose
// witness counts the messages its handlers processed.
func signedDownstreamService(t *testing.T) (*endpoint, *service) {
	v, err := fencesign.NewVerifier([]fencesign.Key{signKey})
	if err != nil {
		t.Fatal(err)
	}
	svc := newService()
	return serve(t, "bufconn", svc,
		grpc.ChainUnaryInterceptor(grpcmw.UnaryAcceptSignedFence(v)),
		grpc.ChainStreamInterceptor(grpcmw.StreamAcceptSignedFence(v))), svc
}

func TestSignedFence_forwarded(t *testing.T) {
	s, err := fencesign.NewSigner(signKey)
	if err != nil {
		t.Fatal(err)
	}
	c := signedDownstream(t).client(grpc.WithChainUnaryInterceptor(grpcmw.UnarySigningClientInterceptor(s)))
	ctx := core.ContextWithFence(context.Background(), core.FenceToken{Key: "order:7", Fence: 9, Owner: "o"})
	r, err := c.Incr(ctx, &testpb.IncrRequest{CounterId: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if r.GetSeenFence() != 9 || r.GetSeenKey() != "order:7" {
		t.Errorf("B saw %d %q", r.GetSeenFence(), r.GetSeenKey())
	}
	// The unsigning client interceptor's metadata is refused.
	plain := signedDownstream(t).client(grpc.WithChainUnaryInterceptor(grpcmw.UnaryClientInterceptor()))
	_, err = plain.Incr(ctx, &testpb.IncrRequest{CounterId: "x"})
	wantCode(t, err, codes.Unauthenticated)
}

func TestSignedFence_refused(t *testing.T) {
	ft := core.FenceToken{Key: "order:7", Fence: 42, Owner: "o"}
	good := signWith(t, signKey, ft)
	huge := core.FenceToken{Key: ft.Key, Fence: 1 << 60, Owner: ft.Owner}
	old := func() time.Time { return time.Now().Add(-time.Hour) }
	e, svc := signedDownstreamService(t)
	c := e.client()
	for name, tok := range map[string]string{
		"unsigned":              ft.String(),
		"forged":                huge.String() + ";kid=k1;exp=9999999999;sig=" + strings.Repeat("A", 43),
		"tampered":              huge.String() + good[strings.Index(good, ";kid="):],
		"replayed after expiry": signWith(t, signKey, ft, fencesign.WithClock(old)),
		"wrong key":             signWith(t, fencesign.Key{ID: "k1", Secret: bytes.Repeat([]byte{8}, 32)}, ft),
		"unknown key id":        signWith(t, fencesign.Key{ID: "k2", Secret: signKey.Secret}, ft),
		"garbage":               "x;sig=%%%",
	} {
		t.Run(name, func(t *testing.T) {
			ctx := metadata.NewOutgoingContext(context.Background(), metadata.MD{grpcmw.FenceMetadataKey: {tok}})
			r, err := c.Incr(ctx, &testpb.IncrRequest{CounterId: "x"})
			wantCode(t, err, codes.Unauthenticated)
			if r != nil {
				t.Fatalf("a reply came back: %v", r)
			}
			s, err := c.Watch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// Watch's handler greets first: a reply here means it ran.
			if g, err := s.Recv(); err == io.EOF || err == nil {
				t.Fatalf("stream: %v %v", g, err)
			} else {
				wantCode(t, err, codes.Unauthenticated)
			}
			if n := svc.w.count.Load(); n != 0 {
				t.Fatalf("the handlers processed %d messages under an untrusted fence", n)
			}
		})
	}
	// The same service runs its handler for a signed fence: the counter
	// above can move.
	ctx := metadata.NewOutgoingContext(context.Background(), metadata.MD{grpcmw.FenceMetadataKey: {good}})
	r, err := c.Incr(ctx, &testpb.IncrRequest{CounterId: "x"})
	if err != nil || r.GetSeenFence() != ft.Fence || svc.w.count.Load() != 1 {
		t.Fatalf("signed fence: %v, saw %d, count %d", err, r.GetSeenFence(), svc.w.count.Load())
	}
}
