package grpcmw

import (
	"context"
	"errors"
	"net/http"
	"strings"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/idempotency"
)

// ReplayedMetadata is the response header a replayed answer carries.
const ReplayedMetadata = "idempotent-replayed"

// UnaryIdempotent returns an interceptor that makes unary methods
// idempotent per the "idempotency-key" metadata entry, scoped by the full
// method name (and WithContextTenant): the first call with a key runs under
// the fenced lock for it and its answer (the response message, or the
// status it failed with) is stored; duplicates get the stored answer with
// the idempotent-replayed: true header. Limit it with
// idempotency.WithMethods:
//
//	grpc.NewServer(grpc.ChainUnaryInterceptor(grpcmw.UnaryIdempotent(locker, store,
//		idempotency.WithMethods("/shop.Payments/Charge"))))
//
// Codes: missing or malformed key InvalidArgument; the key used for another
// request FailedPrecondition; a call with the key still running after the
// wait, or this call's lock lost to a newer one, Aborted; lock backend or
// store down Unavailable. Server faults (Unknown, Internal, Unavailable,
// DataLoss, ...) are not stored unless idempotency.WithStoreServerErrors.
func UnaryIdempotent(l core.Locker, s idempotency.Store, opts ...idempotency.Option) grpc.UnaryServerInterceptor {
	e := idempotency.NewEngine(l, s, opts...)
	md := strings.ToLower(e.KeyHeader())
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !e.Handles(info.FullMethod) {
			return handler(ctx, req)
		}
		vs := metadata.ValueFromIncomingContext(ctx, md)
		if len(vs) == 0 && e.KeyOptional() {
			return handler(ctx, req)
		}
		r, err := idemRequest(ctx, e, info.FullMethod, req, vs)
		if err != nil {
			return nil, idemStatus(err)
		}
		var resp any
		var herr error
		ans, err := e.Run(ctx, r, func(ctx context.Context) idempotency.Result {
			resp, herr = handler(ctx, req)
			return idemResult(resp, herr)
		})
		switch {
		case err != nil:
			return nil, idemStatus(err)
		case ans.Replayed:
			_ = grpc.SetHeader(ctx, metadata.Pairs(ReplayedMetadata, "true"))
			return decodeAnswer(ans.Record)
		}
		return resp, herr
	}
}

func idemRequest(ctx context.Context, e *idempotency.Engine, method string, req any, vs []string) (idempotency.Request, error) {
	if len(vs) == 0 {
		return idempotency.Request{}, idempotency.ErrMissingKey
	}
	if len(vs) > 1 {
		return idempotency.Request{}, idempotency.ErrInvalidKey
	}
	key, err := idempotency.ParseKey(vs[0])
	if err != nil {
		return idempotency.Request{}, err
	}
	m, ok := req.(proto.Message)
	if !ok {
		return idempotency.Request{}, idempotency.ErrMisconfigured
	}
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return idempotency.Request{}, errors.Join(idempotency.ErrMisconfigured, err)
	}
	return idempotency.Request{
		Scope:       idempotency.Scope{Route: method, Tenant: e.Tenant(ctx), Key: key},
		Fingerprint: idempotency.NewFingerprint("grpc", method, body),
		Name:        method,
	}, nil
}

// typeHeader names the stored response message's type, for replay.
const typeHeader = "Proto-Type"

// idemResult encodes a handler's answer: the response message with its
// type, or the status.
func idemResult(resp any, err error) idempotency.Result {
	if err != nil {
		st := status.Convert(err)
		b, merr := proto.Marshal(st.Proto())
		if merr != nil {
			return idempotency.Result{}
		}
		return idempotency.Result{
			Record:      &idempotency.Record{Status: int(st.Code()), Body: b},
			ServerError: serverFault(st.Code()),
		}
	}
	m, ok := resp.(proto.Message)
	if !ok {
		return idempotency.Result{}
	}
	b, merr := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if merr != nil {
		return idempotency.Result{}
	}
	hdr := http.Header{typeHeader: {string(m.ProtoReflect().Descriptor().FullName())}}
	return idempotency.Result{Record: &idempotency.Record{Status: int(codes.OK), Header: hdr, Body: b}, Succeeded: true}
}

func serverFault(c codes.Code) bool {
	switch c {
	case codes.Unknown, codes.Internal, codes.Unavailable, codes.DataLoss,
		codes.DeadlineExceeded, codes.Canceled, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}

func decodeAnswer(rec *idempotency.Record) (any, error) {
	if codes.Code(rec.Status) != codes.OK {
		var sp spb.Status
		if err := proto.Unmarshal(rec.Body, &sp); err != nil {
			return nil, status.Error(codes.Internal, "idempotency: corrupt stored status")
		}
		return nil, status.FromProto(&sp).Err()
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(rec.Header.Get(typeHeader)))
	if err != nil {
		return nil, status.Error(codes.Internal, "idempotency: stored response type unknown")
	}
	m := mt.New().Interface()
	if err := proto.Unmarshal(rec.Body, m); err != nil {
		return nil, status.Error(codes.Internal, "idempotency: corrupt stored response")
	}
	return m, nil
}

// idemStatus maps the protocol's errors to gRPC codes.
func idemStatus(err error) error {
	code, msg := codes.Internal, "internal error"
	switch {
	case errors.Is(err, idempotency.ErrMissingKey):
		code, msg = codes.InvalidArgument, "missing idempotency-key metadata"
	case errors.Is(err, idempotency.ErrInvalidKey):
		code, msg = codes.InvalidArgument, "invalid idempotency-key metadata"
	case errors.Is(err, idempotency.ErrMismatch):
		code, msg = codes.FailedPrecondition, "idempotency-key already used for a different request"
	case errors.Is(err, idempotency.ErrInProgress):
		code, msg = codes.Aborted, "a call with this idempotency-key is being processed"
	case errors.Is(err, idempotency.ErrStaleFence):
		code, msg = codes.Aborted, "call superseded by a newer attempt with this idempotency-key"
	case errors.Is(err, context.DeadlineExceeded):
		code, msg = codes.DeadlineExceeded, "timed out waiting for the running attempt"
	case errors.Is(err, context.Canceled):
		code, msg = codes.Canceled, "canceled while waiting for the running attempt"
	case errors.Is(err, idempotency.ErrUnavailable):
		code, msg = codes.Unavailable, "lock or answer store unavailable"
	}
	return status.Error(code, msg)
}
