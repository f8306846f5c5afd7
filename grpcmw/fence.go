package grpcmw

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fencedlock/fencedlock/core"
)

// FenceMetadataKey is the metadata key that carries a lock's fence to
// another service, in the form of core.FenceToken.String:
//
//	fence-token: <fence>;owner=<owner id>;key=<URL-escaped key>
//
// for example "fence-token: 42;owner=9f86d081884c7d65;key=order%3A7". The
// fence is a decimal uint64 > 0; the owner id is derived from (never equal
// to) the secret owner token, so it cannot release the lock. It is the
// same value httpmw sends in its Fence-Token header.
const FenceMetadataKey = "fence-token"

// UnaryClientInterceptor returns a client interceptor that adds
// FenceMetadataKey to outgoing calls whose context carries a fence
// (core.FenceFromContext: the innermost lock held, such as the one a
// grpcmw or httpmw handler runs under, or a fence received through
// UnaryAcceptFence), so the called service can guard its own writes with
// it. Make outgoing calls with the handler's context. A call whose
// outgoing metadata already has the key keeps it.
//
// The metadata contains the lock key: forward it only to services you
// trust with it.
func UnaryClientInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		return invoker(withOutgoingFence(ctx), method, req, reply, cc, opts...)
	}
}

// StreamClientInterceptor is UnaryClientInterceptor for streams: the fence
// in the context that opens the stream travels in its headers.
func StreamClientInterceptor() grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		return streamer(withOutgoingFence(ctx), desc, cc, method, opts...)
	}
}

func withOutgoingFence(ctx context.Context) context.Context {
	t, ok := core.FenceFromContext(ctx)
	if !ok || len(metadata.ValueFromOutgoingContext(ctx, FenceMetadataKey)) > 0 {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, FenceMetadataKey, t.String())
}

// FenceFromIncoming reads the fence an upstream service forwarded in the
// incoming metadata of ctx (FenceMetadataKey). ok is false when there is
// none; err (matching core.ErrInvalidFence) when it is malformed or
// repeated. The token is NOT verified: anyone who can call the service can
// send any fence. Prefer UnaryAcceptSignedFence / StreamAcceptSignedFence,
// which verify a signed token before it enters the context; pass an
// unsigned token to core.ContextWithFence only from callers you trust.
func FenceFromIncoming(ctx context.Context) (t core.FenceToken, ok bool, err error) {
	vals := metadata.ValueFromIncomingContext(ctx, FenceMetadataKey)
	switch len(vals) {
	case 0:
		return core.FenceToken{}, false, nil
	case 1:
	default:
		return core.FenceToken{}, false, fmt.Errorf("%w: repeated %s metadata", core.ErrInvalidFence, FenceMetadataKey)
	}
	t, err = core.ParseFenceToken(vals[0])
	if err != nil {
		return core.FenceToken{}, false, err
	}
	return t, true, nil
}

// UnaryAcceptFence returns a server interceptor for the receiving side of
// UnaryClientInterceptor: it puts the forwarded fence into the handler's
// context (core.ContextWithFence), where core.FenceFromContext, and so
// sqlguard, find it. Calls without the metadata pass unchanged; a
// malformed or repeated value ends the call InvalidArgument. A lock the
// handler holds itself takes precedence in core.FenceFromContext.
//
// A fence is trusted as sent: a caller that can set the metadata can make
// guarded writes look newer than they are and fence out legitimate holders.
//
// Deprecated: use UnaryAcceptSignedFence, or UnaryAcceptUnsignedFence where
// trusting every caller is intended; UnaryAcceptFence is
// UnaryAcceptUnsignedFence.
func UnaryAcceptFence() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := acceptFence(ctx)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamAcceptFence is UnaryAcceptFence for streams: the stream's context
// carries the fence from its headers.
//
// Deprecated: use StreamAcceptSignedFence, or StreamAcceptUnsignedFence.
func StreamAcceptFence() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := acceptFence(ss.Context())
		if err != nil {
			return err
		}
		if ctx == ss.Context() {
			return handler(srv, ss)
		}
		return handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	}
}

func acceptFence(ctx context.Context) (context.Context, error) {
	t, ok, err := FenceFromIncoming(ctx)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "invalid "+FenceMetadataKey+" metadata")
	}
	if !ok {
		return ctx, nil
	}
	return core.ContextWithFence(ctx, t), nil
}
