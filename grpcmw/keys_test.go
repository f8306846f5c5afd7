package grpcmw_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
)

func TestKeysFuncs(t *testing.T) {
	md := metadata.NewIncomingContext(context.Background(), metadata.Pairs("x-tenant", "t1"))
	transfer := &testpb.TransferRequest{From: "alice", To: "bob"}
	for _, tc := range []struct {
		name    string
		f       grpcmw.KeysFunc
		ctx     context.Context
		msg     any
		want    []string
		wantErr error
		mention string // the error names which key failed
	}{
		{"Fields", grpcmw.Fields("from", "to"), md, transfer, []string{"alice", "bob"}, nil, ""},
		{"Fields same value twice", grpcmw.Fields("from", "to"), md, &testpb.TransferRequest{From: "c", To: "c"}, []string{"c", "c"}, nil, ""},
		{"Fields empty to", grpcmw.Fields("from", "to"), md, &testpb.TransferRequest{From: "alice"}, nil, core.ErrInvalidKey, `field "to"`},
		{"Fields empty from", grpcmw.Fields("from", "to"), md, &testpb.TransferRequest{To: "bob"}, nil, core.ErrInvalidKey, `field "from"`},
		{"Fields unknown field", grpcmw.Fields("from", "nope"), md, transfer, nil, grpcmw.ErrMisconfigured, `field "nope"`},
		{"Fields at stream start", grpcmw.Fields("from", "to"), md, nil, nil, grpcmw.ErrNeedMessage, ""},
		{"Keys templates", grpcmw.Keys(grpcmw.Template("account:{from}"), grpcmw.Template("account:{to}")), md, transfer,
			[]string{"account:alice", "account:bob"}, nil, ""},
		{"Keys empty template value", grpcmw.Keys(grpcmw.Template("account:{from}"), grpcmw.Template("account:{to}")), md,
			&testpb.TransferRequest{From: "alice"}, nil, core.ErrInvalidKey, "key 2 of 2"},
		{"Keys metadata only, no message needed", grpcmw.Keys(grpcmw.Metadata("x-tenant"), grpcmw.Template("{:service}")), md, nil,
			[]string{"t1", "fencedlock.grpcmw.test.Counter"}, nil, ""},
		{"Keys metadata and field at stream start", grpcmw.Keys(grpcmw.Metadata("x-tenant"), grpcmw.Field("from")), md, nil,
			nil, grpcmw.ErrNeedMessage, ""},
		{"Keys missing metadata wins over waiting for the message", grpcmw.Keys(grpcmw.Field("from"), grpcmw.Metadata("x-other")), md, nil,
			nil, core.ErrInvalidKey, "key 2 of 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.f(tc.ctx, mTransfer, tc.msg)
			if tc.wantErr == nil {
				if err != nil || !slices.Equal(got, tc.want) {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || got != nil {
				t.Fatalf("got %q, %v; want an error matching %v", got, err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("error %q does not name %s", err, tc.mention)
			}
			if strings.Contains(err.Error(), "alice") || strings.Contains(err.Error(), "bob") {
				t.Errorf("error %q echoes a field value", err)
			}
		})
	}
}

func TestKeysFuncs_panicOnBadSetup(t *testing.T) {
	l := locktest.New()
	t.Cleanup(func() { _ = l.Close() })
	for name, f := range map[string]func(){
		"Fields none":                      func() { grpcmw.Fields() },
		"Fields malformed":                 func() { grpcmw.Fields("from", "a..b") },
		"Keys none":                        func() { grpcmw.Keys() },
		"Keys nil":                         func() { grpcmw.Keys(grpcmw.Field("from"), nil) },
		"UnaryServerInterceptorKeys nil":   func() { grpcmw.UnaryServerInterceptorKeys(l, nil) },
		"StreamServerInterceptorKeys nil":  func() { grpcmw.StreamServerInterceptorKeys(l, nil) },
		"UnaryServerInterceptorKeys nil l": func() { grpcmw.UnaryServerInterceptorKeys(nil, grpcmw.Fields("from")) },
		"Keys WithShared and WithPermits": func() {
			grpcmw.UnaryServerInterceptorKeys(l, grpcmw.Fields("from"), grpcmw.WithShared(mIncr), grpcmw.WithPermits(2))
		},
	} {
		t.Run(name, func(t *testing.T) { wantPanic(t, f) })
	}
}
