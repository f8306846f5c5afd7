package grpcmw

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/guard"
)

// KeyFunc derives a lock key from a call: its context (incoming metadata),
// its full method name ("/pkg.Service/Method") and its request message.
//
// On a unary call msg is the request. On a stream the interceptor first
// calls the KeyFunc with msg == nil: a key returned then is locked before
// the handler runs; a KeyFunc that needs a message returns ErrNeedMessage,
// and the lock is taken on the stream's first RecvMsg, keyed from that
// message. The ready-made key functions do this; custom ones that read msg
// must too.
//
// An error, or an invalid key (core.ValidateKey), ends the call
// InvalidArgument without taking a lock, except errors matching
// ErrMisconfigured (Internal). Never lock on "": the ready-made functions
// treat a missing or empty value as an invalid key.
type KeyFunc func(ctx context.Context, method string, msg any) (string, error)

// ErrNeedMessage is returned by a KeyFunc called with a nil message (at the
// start of a stream) when the key comes from the request message. The
// stream interceptor then takes the lock on the first RecvMsg.
var ErrNeedMessage = errors.New("grpcmw: the lock key needs the request message")

// ErrMisconfigured is matched (errors.Is) by key-function errors that are
// the server's fault, not the caller's: Field naming a field the request
// message does not have, or one that cannot be a key (repeated, map,
// message, floating point); MessageKey on a message without a LockKey
// method. The call ends Internal and the error is logged. Custom key
// functions may wrap it too.
var ErrMisconfigured error = misconfigured{}

type misconfigured struct{}

func (misconfigured) Error() string        { return "grpcmw: interceptor misconfigured" }
func (misconfigured) Is(target error) bool { return target == guard.ErrMisconfigured }

// Field uses a field of the request message as the key, read through
// protobuf reflection: Field("order_id"), or a path into nested messages,
// Field("order.id"). Names are the .proto field names (the JSON names work
// too). Prefer Template, which namespaces the key ("order:{order_id}"),
// unless the value is unique across methods.
//
// Strings are used as they are; integers and bools in decimal / "true";
// enums by value name; bytes in lowercase hex. An unset field, the zero
// value of a field without presence (0, "", the first enum value) and an
// unset message on the path are invalid keys (InvalidArgument). Repeated,
// map, message and floating-point fields cannot be keys (ErrMisconfigured).
// Field panics on a malformed path.
func Field(path string) KeyFunc {
	fp, err := parseFieldPath(path)
	if err != nil {
		panic("grpcmw: Field: " + err.Error())
	}
	return func(_ context.Context, _ string, msg any) (string, error) {
		v, err := fp.value(msg)
		if err != nil {
			return "", err
		}
		return validated(v)
	}
}

// LockKeyer is implemented by request messages that name their own lock
// key. Generated messages get the method from a file next to the generated
// code, in the same package:
//
//	func (r *PayRequest) LockKey() string { return "order:" + r.GetOrderId() }
type LockKeyer interface {
	LockKey() string
}

// MessageKey is a KeyFunc that asks the request message for its key
// (LockKeyer). An empty key is an invalid key; a message without the
// method is ErrMisconfigured.
func MessageKey(_ context.Context, _ string, msg any) (string, error) {
	if msg == nil {
		return "", ErrNeedMessage
	}
	k, ok := msg.(LockKeyer)
	if !ok {
		return "", fmt.Errorf("%w: MessageKey on %T, which has no LockKey() string method", ErrMisconfigured, msg)
	}
	return validated(k.LockKey())
}

// Template builds the key from the call: Template("order:{order_id}")
// locks "order:42" for a request with order_id 42. Placeholders are
//
//	{field} or {a.b}   a request field, formatted as by Field
//	{:method}          the full method name, "/pkg.Service/Method"
//	{:service}         the service part, "pkg.Service"
//	{md:name}          the first value of incoming metadata name
//
// A missing or empty value is an invalid key. A template with only
// {:method}, {:service} and {md:...} placeholders locks a stream before its
// handler runs; one with a field locks on the first received message.
// Braces cannot be escaped. A malformed template panics.
func Template(tmpl string) KeyFunc {
	t, err := guard.ParseTemplate(tmpl)
	if err != nil {
		panic("grpcmw: Template: " + err.Error())
	}
	srcs := make(map[string]source, len(t.Names()))
	needMsg := false
	for _, name := range t.Names() {
		s, err := parseSource(name)
		if err != nil {
			panic(fmt.Sprintf("grpcmw: Template %q: %v", tmpl, err))
		}
		needMsg = needMsg || s.kind == srcField
		srcs[name] = s
	}
	return func(ctx context.Context, method string, msg any) (string, error) {
		if needMsg && msg == nil {
			return "", ErrNeedMessage
		}
		return t.Expand(func(name string) (string, error) {
			s := srcs[name]
			switch s.kind {
			case srcMethod:
				return method, nil
			case srcService:
				svc, _, _ := strings.Cut(strings.TrimPrefix(method, "/"), "/")
				return svc, nil
			case srcMetadata:
				return firstIncoming(ctx, s.md), nil
			default:
				return s.field.value(msg)
			}
		})
	}
}

// Metadata uses the first value of the incoming metadata name (case
// insensitive, such as "x-tenant-id") as the key. Missing or empty
// metadata is an invalid key. On streams it locks before the handler runs.
func Metadata(name string) KeyFunc {
	if name == "" {
		panic("grpcmw: Metadata with an empty name")
	}
	name = strings.ToLower(name)
	return func(ctx context.Context, _ string, _ any) (string, error) {
		v := firstIncoming(ctx, name)
		if v == "" {
			return "", fmt.Errorf("%w: missing metadata", core.ErrInvalidKey)
		}
		return validated(v)
	}
}

func firstIncoming(ctx context.Context, name string) string {
	if vs := metadata.ValueFromIncomingContext(ctx, name); len(vs) > 0 {
		return vs[0]
	}
	return ""
}

func validated(k string) (string, error) {
	if err := core.ValidateKey(k); err != nil {
		return "", err
	}
	return k, nil
}

type sourceKind int

const (
	srcField sourceKind = iota
	srcMethod
	srcService
	srcMetadata
)

// source is where one template placeholder takes its value from.
type source struct {
	kind  sourceKind
	field fieldPath
	md    string
}

func parseSource(name string) (source, error) {
	switch {
	case name == ":method":
		return source{kind: srcMethod}, nil
	case name == ":service":
		return source{kind: srcService}, nil
	case strings.HasPrefix(name, "md:"):
		md := strings.ToLower(name[len("md:"):])
		if md == "" {
			return source{}, errors.New("empty metadata name in {md:}")
		}
		return source{kind: srcMetadata, md: md}, nil
	case strings.HasPrefix(name, ":"):
		return source{}, fmt.Errorf("unknown placeholder {%s} (want {:method} or {:service})", name)
	}
	fp, err := parseFieldPath(name)
	if err != nil {
		return source{}, err
	}
	return source{kind: srcField, field: fp}, nil
}

// fieldPath is a dotted path of field names into a message.
type fieldPath []protoreflect.Name

func parseFieldPath(path string) (fieldPath, error) {
	if path == "" {
		return nil, errors.New("empty field path")
	}
	parts := strings.Split(path, ".")
	fp := make(fieldPath, len(parts))
	for i, p := range parts {
		n := protoreflect.Name(p)
		if !n.IsValid() {
			return nil, fmt.Errorf("field path %q: %q is not a field name", path, p)
		}
		fp[i] = n
	}
	return fp, nil
}

func (fp fieldPath) String() string {
	parts := make([]string, len(fp))
	for i, n := range fp {
		parts[i] = string(n)
	}
	return strings.Join(parts, ".")
}

// value reads the field at fp in msg as a key string. Missing values are
// core.ErrInvalidKey, a path that does not fit the message is
// ErrMisconfigured; neither error contains a field value.
func (fp fieldPath) value(msg any) (string, error) {
	if msg == nil {
		return "", ErrNeedMessage
	}
	pm, ok := msg.(proto.Message)
	if !ok {
		return "", fmt.Errorf("%w: field %q read from %T, which is not a protobuf message", ErrMisconfigured, fp.String(), msg)
	}
	m := pm.ProtoReflect()
	last := len(fp) - 1
	for i, name := range fp {
		md := m.Descriptor()
		fd := md.Fields().ByName(name)
		if fd == nil {
			fd = md.Fields().ByJSONName(string(name))
		}
		if fd == nil {
			return "", fmt.Errorf("%w: message %s has no field %q", ErrMisconfigured, md.FullName(), name)
		}
		if fd.IsList() || fd.IsMap() {
			return "", fmt.Errorf("%w: field %s is repeated or a map and cannot be a key", ErrMisconfigured, fd.FullName())
		}
		isMsg := fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind
		if i < last {
			if !isMsg {
				return "", fmt.Errorf("%w: field %s is not a message, so %q cannot go into it", ErrMisconfigured, fd.FullName(), fp.String())
			}
			if !m.Has(fd) {
				return "", fmt.Errorf("%w: field %q not set", core.ErrInvalidKey, fp[:i+1].String())
			}
			m = m.Get(fd).Message()
			continue
		}
		if isMsg {
			return "", fmt.Errorf("%w: field %s is a message; name a field inside it (%s.<field>)", ErrMisconfigured, fd.FullName(), fp.String())
		}
		if fd.Kind() == protoreflect.FloatKind || fd.Kind() == protoreflect.DoubleKind {
			return "", fmt.Errorf("%w: floating-point field %s cannot be a key", ErrMisconfigured, fd.FullName())
		}
		// Has is false for an unset field with presence and for the zero
		// value of one without: either way there is nothing to lock on.
		if !m.Has(fd) {
			return "", fmt.Errorf("%w: field %q not set", core.ErrInvalidKey, fp.String())
		}
		return format(fd, m.Get(fd)), nil
	}
	return "", nil // unreachable: fp is never empty
}

func format(fd protoreflect.FieldDescriptor, v protoreflect.Value) string {
	switch fd.Kind() {
	case protoreflect.StringKind:
		return v.String()
	case protoreflect.BoolKind:
		return strconv.FormatBool(v.Bool())
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return strconv.FormatInt(v.Int(), 10)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind,
		protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return strconv.FormatUint(v.Uint(), 10)
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return strconv.FormatInt(int64(v.Enum()), 10)
	case protoreflect.BytesKind:
		return hex.EncodeToString(v.Bytes())
	}
	return "" // kinds rejected by value
}
