package grpcmw_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
)

func TestKeyFuncs(t *testing.T) {
	full := &testpb.IncrRequest{
		CounterId: "c-1",
		Ref:       &testpb.Ref{Id: "r-1", Inner: &testpb.Ref{Id: "r-2"}},
		Account:   -42,
		Tenant:    proto.String("acme"),
		Tags:      []string{"a"},
		Flag:      true,
		Kind:      testpb.Kind_KIND_SLOW,
		Blob:      []byte{0xde, 0xad},
		Ratio:     0.5,
		Shard:     7,
		Labels:    map[string]string{"k": "v"},
		Target:    &testpb.IncrRequest_Team{Team: 9},
	}
	md := metadata.Pairs("x-tenant", "t1", "x-empty", "")
	ctx := metadata.NewIncomingContext(context.Background(), md)

	type outcome int
	const (
		ok outcome = iota
		invalid
		misconfigured
		needMessage
	)
	for _, tc := range []struct {
		name string
		key  grpcmw.KeyFunc
		msg  any
		want string
		out  outcome
	}{
		{"string field", grpcmw.Field("counter_id"), full, "c-1", ok},
		{"JSON name", grpcmw.Field("counterId"), full, "c-1", ok},
		{"nested", grpcmw.Field("ref.id"), full, "r-1", ok},
		{"nested twice", grpcmw.Field("ref.inner.id"), full, "r-2", ok},
		{"negative int", grpcmw.Field("account"), full, "-42", ok},
		{"optional set", grpcmw.Field("tenant"), full, "acme", ok},
		{"bool", grpcmw.Field("flag"), full, "true", ok},
		{"enum by name", grpcmw.Field("kind"), full, "KIND_SLOW", ok},
		{"bytes in hex", grpcmw.Field("blob"), full, "dead", ok},
		{"uint", grpcmw.Field("shard"), full, "7", ok},
		{"oneof member set", grpcmw.Field("team"), full, "9", ok},
		{"oneof member unset", grpcmw.Field("user"), full, "", invalid},
		{"empty string", grpcmw.Field("counter_id"), &testpb.IncrRequest{}, "", invalid},
		{"zero int", grpcmw.Field("account"), &testpb.IncrRequest{}, "", invalid},
		{"zero enum", grpcmw.Field("kind"), &testpb.IncrRequest{}, "", invalid},
		{"unset optional", grpcmw.Field("tenant"), &testpb.IncrRequest{}, "", invalid},
		{"unset message on the path", grpcmw.Field("ref.id"), &testpb.IncrRequest{}, "", invalid},
		{"typed nil message", grpcmw.Field("counter_id"), (*testpb.IncrRequest)(nil), "", invalid},
		{"too long", grpcmw.Field("counter_id"), &testpb.IncrRequest{CounterId: strings.Repeat("x", core.MaxKeyLen+1)}, "", invalid},
		{"unknown field", grpcmw.Field("nope"), full, "", misconfigured},
		{"float", grpcmw.Field("ratio"), full, "", misconfigured},
		{"repeated", grpcmw.Field("tags"), full, "", misconfigured},
		{"map", grpcmw.Field("labels"), full, "", misconfigured},
		{"message", grpcmw.Field("ref"), full, "", misconfigured},
		{"through a scalar", grpcmw.Field("counter_id.x"), full, "", misconfigured},
		{"through a repeated", grpcmw.Field("ref.tags.x"), full, "", misconfigured},
		{"not a proto", grpcmw.Field("counter_id"), struct{}{}, "", misconfigured},
		{"Field on a stream start", grpcmw.Field("counter_id"), nil, "", needMessage},

		{"LockKey", grpcmw.MessageKey, &testpb.TransferRequest{From: "alice"}, "account:alice", ok},
		{"LockKey empty", grpcmw.MessageKey, &testpb.TransferRequest{}, "", invalid},
		{"no LockKey", grpcmw.MessageKey, full, "", misconfigured},
		{"MessageKey on a stream start", grpcmw.MessageKey, nil, "", needMessage},

		{"template", grpcmw.Template("counter:{counter_id}:{ref.id}"), full, "counter:c-1:r-1", ok},
		{"template method", grpcmw.Template("{:method}/{counter_id}"), full, mIncr + "/c-1", ok},
		{"template service", grpcmw.Template("{:service}"), full, "fencedlock.grpcmw.test.Counter", ok},
		{"template metadata", grpcmw.Template("{md:X-Tenant}:{counter_id}"), full, "t1:c-1", ok},
		{"template empty part", grpcmw.Template("counter:{counter_id}"), &testpb.IncrRequest{}, "", invalid},
		{"template empty metadata", grpcmw.Template("t:{md:x-empty}"), full, "", invalid},
		{"template with field on a stream start", grpcmw.Template("{md:x-tenant}:{counter_id}"), nil, "", needMessage},
		{"template without field on a stream start", grpcmw.Template("{:method}:{md:x-tenant}"), nil, mIncr + ":t1", ok},

		{"metadata", grpcmw.Metadata("X-Tenant"), nil, "t1", ok},
		{"metadata missing", grpcmw.Metadata("x-nope"), nil, "", invalid},
		{"metadata empty", grpcmw.Metadata("x-empty"), nil, "", invalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.key(ctx, mIncr, tc.msg)
			switch tc.out {
			case ok:
				if err != nil || got != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
			case invalid:
				if !errors.Is(err, core.ErrInvalidKey) || errors.Is(err, grpcmw.ErrMisconfigured) {
					t.Fatalf("got %q, %v; want core.ErrInvalidKey", got, err)
				}
			case misconfigured:
				if !errors.Is(err, grpcmw.ErrMisconfigured) {
					t.Fatalf("got %q, %v; want ErrMisconfigured", got, err)
				}
			case needMessage:
				if !errors.Is(err, grpcmw.ErrNeedMessage) {
					t.Fatalf("got %q, %v; want ErrNeedMessage", got, err)
				}
			}
			if err != nil && tc.msg == full && strings.Contains(err.Error(), "c-1") {
				t.Errorf("error %q contains a field value", err)
			}
		})
	}
}

func TestKeyFuncs_panicOnBadSetup(t *testing.T) {
	for name, f := range map[string]func(){
		"Field empty":             func() { grpcmw.Field("") },
		"Field bad name":          func() { grpcmw.Field("a..b") },
		"Field dash":              func() { grpcmw.Field("order-id") },
		"Template empty":          func() { grpcmw.Template("") },
		"Template unclosed":       func() { grpcmw.Template("a:{id") },
		"Template unknown pseudo": func() { grpcmw.Template("{:nope}") },
		"Template empty metadata": func() { grpcmw.Template("{md:}") },
		"Template bad field":      func() { grpcmw.Template("{a-b}") },
		"Metadata empty":          func() { grpcmw.Metadata("") },
	} {
		t.Run(name, func(t *testing.T) { wantPanic(t, f) })
	}
}

// wantPanic fails unless f panics with a message starting "grpcmw: ".
func wantPanic(t *testing.T, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		v := recover()
		s, _ := v.(string)
		if !strings.HasPrefix(s, "grpcmw: ") {
			t.Fatalf("panic %v, want one with the grpcmw: prefix", v)
		}
	}()
	f()
}
