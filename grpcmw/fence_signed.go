package grpcmw

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fencedlock/fencedlock/core"
)

// FenceVerifier checks a signed fence-token value and returns the fence it
// carries; *fencesign.Verifier implements it.
type FenceVerifier interface {
	Verify(token string) (core.FenceToken, error)
}

// FenceSigner signs a fence for FenceMetadataKey; *fencesign.Signer
// implements it.
type FenceSigner interface {
	Sign(t core.FenceToken) (string, error)
}

// UnaryAcceptSignedFence returns a server interceptor that verifies
// FenceMetadataKey with v (see fencesign) and only then puts the fence into
// the handler's context, where sqlguard finds it. Calls without the
// metadata pass unchanged; repeated values end the call InvalidArgument; a
// token v refuses (unsigned, forged, tampered, expired, wrong key) ends it
// Unauthenticated before the handler runs, so no fence of it is recorded.
//
//	grpc.NewServer(grpc.ChainUnaryInterceptor(grpcmw.UnaryAcceptSignedFence(verifier)))
func UnaryAcceptSignedFence(v FenceVerifier) grpc.UnaryServerInterceptor {
	if v == nil {
		panic("grpcmw: UnaryAcceptSignedFence with a nil FenceVerifier")
	}
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := acceptSignedFence(ctx, v)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamAcceptSignedFence is UnaryAcceptSignedFence for streams.
func StreamAcceptSignedFence(v FenceVerifier) grpc.StreamServerInterceptor {
	if v == nil {
		panic("grpcmw: StreamAcceptSignedFence with a nil FenceVerifier")
	}
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := acceptSignedFence(ss.Context(), v)
		if err != nil {
			return err
		}
		if ctx == ss.Context() {
			return handler(srv, ss)
		}
		return handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	}
}

func acceptSignedFence(ctx context.Context, v FenceVerifier) (context.Context, error) {
	vals := metadata.ValueFromIncomingContext(ctx, FenceMetadataKey)
	switch len(vals) {
	case 0:
		return ctx, nil
	case 1:
	default:
		return nil, status.Error(codes.InvalidArgument, "repeated "+FenceMetadataKey+" metadata")
	}
	t, err := v.Verify(vals[0])
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "untrusted "+FenceMetadataKey+" metadata")
	}
	return core.ContextWithFence(ctx, t), nil
}

// UnaryAcceptUnsignedFence trusts FenceMetadataKey as sent (it is
// UnaryAcceptFence). Its name is the configuration: use it only where every
// caller is trusted to send honest fences, UnaryAcceptSignedFence elsewhere.
func UnaryAcceptUnsignedFence() grpc.UnaryServerInterceptor { return UnaryAcceptFence() }

// StreamAcceptUnsignedFence is UnaryAcceptUnsignedFence for streams.
func StreamAcceptUnsignedFence() grpc.StreamServerInterceptor { return StreamAcceptFence() }

// UnarySigningClientInterceptor is UnaryClientInterceptor with the fence
// signed by s, for services that install UnaryAcceptSignedFence. A call
// whose outgoing metadata already has the key keeps it; when signing fails
// the call is not made and ends Internal.
func UnarySigningClientInterceptor(s FenceSigner) grpc.UnaryClientInterceptor {
	if s == nil {
		panic("grpcmw: UnarySigningClientInterceptor with a nil FenceSigner")
	}
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, err := withSignedFence(ctx, s)
		if err != nil {
			return err
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// StreamSigningClientInterceptor is UnarySigningClientInterceptor for streams.
func StreamSigningClientInterceptor(s FenceSigner) grpc.StreamClientInterceptor {
	if s == nil {
		panic("grpcmw: StreamSigningClientInterceptor with a nil FenceSigner")
	}
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		ctx, err := withSignedFence(ctx, s)
		if err != nil {
			return nil, err
		}
		return streamer(ctx, desc, cc, method, opts...)
	}
}

func withSignedFence(ctx context.Context, s FenceSigner) (context.Context, error) {
	t, ok := core.FenceFromContext(ctx)
	if !ok || len(metadata.ValueFromOutgoingContext(ctx, FenceMetadataKey)) > 0 {
		return ctx, nil
	}
	v, err := s.Sign(t)
	if err != nil {
		return nil, status.Error(codes.Internal, "grpcmw: signing the fence failed")
	}
	return metadata.AppendToOutgoingContext(ctx, FenceMetadataKey, v), nil
}
