package grpcmw

import (
	"context"
	"errors"
	"fmt"

	"github.com/fencedlock/fencedlock/core"
)

// KeysFunc derives several lock keys from one call, for methods that touch
// more than one resource at once (a transfer holds both accounts). It is
// the multi-key KeyFunc, called the same way: at the start of a stream with
// msg == nil, returning ErrNeedMessage when a key needs the request.
//
// The interceptor locks every key returned or none. Repeated keys (a
// transfer from an account to itself) are locked once. No key at all, an
// empty or invalid key, or an error ends the call InvalidArgument without
// taking a lock, except errors matching ErrMisconfigured (Internal).
type KeysFunc func(ctx context.Context, method string, msg any) ([]string, error)

// Keys combines KeyFuncs into a KeysFunc: one key from each, in order. Use
// a Template per resource, so the keys are namespaced:
//
//	grpcmw.Keys(grpcmw.Template("account:{from}"), grpcmw.Template("account:{to}"))
//
// When a KeyFunc fails, the call fails: the error names which one (by
// position), wraps its cause (core.ErrInvalidKey, ErrMisconfigured) and
// carries no key or field value. Keys panics with no KeyFunc or a nil one.
func Keys(fns ...KeyFunc) KeysFunc {
	if len(fns) == 0 {
		panic("grpcmw: Keys with no KeyFunc")
	}
	for _, f := range fns {
		if f == nil {
			panic("grpcmw: Keys with a nil KeyFunc")
		}
	}
	fns = append([]KeyFunc(nil), fns...)
	names := make([]string, len(fns))
	for i := range fns {
		names[i] = fmt.Sprintf("key %d of %d", i+1, len(fns))
	}
	return combine(fns, names)
}

// Fields uses several request fields as the keys, each read as by Field:
//
//	grpcmw.Fields("from_account", "to_account")
//
// An unset or zero field is an invalid key (InvalidArgument; the error
// names the field, never its value). The values are locked as they are,
// so two methods locking the same value in different fields share the
// lock; to namespace them, use Keys with a Template per field. Fields
// panics with no path or a malformed one.
func Fields(paths ...string) KeysFunc {
	if len(paths) == 0 {
		panic("grpcmw: Fields with no field path")
	}
	fns := make([]KeyFunc, len(paths))
	for i, p := range paths {
		if _, err := parseFieldPath(p); err != nil {
			panic("grpcmw: Fields: " + err.Error())
		}
		fns[i] = Field(p) // its errors name the field already
	}
	return combine(fns, nil)
}

// combine calls every KeyFunc. An error other than ErrNeedMessage wins at
// once, prefixed with the KeyFunc's name when names is set; ErrNeedMessage
// from any of them defers the whole set to the message, so a stream locks
// all its keys together or none.
func combine(fns []KeyFunc, names []string) KeysFunc {
	return func(ctx context.Context, method string, msg any) ([]string, error) {
		keys := make([]string, 0, len(fns))
		needMsg := false
		for i, f := range fns {
			k, err := f(ctx, method, msg)
			switch {
			case errors.Is(err, ErrNeedMessage):
				needMsg = true
			case err != nil && names != nil:
				return nil, fmt.Errorf("grpcmw: %s: %w", names[i], err)
			case err != nil:
				return nil, err
			default:
				keys = append(keys, k)
			}
		}
		if needMsg {
			return nil, ErrNeedMessage
		}
		return keys, nil
	}
}

// single adapts a KeyFunc to the interceptor's KeysFunc.
func single(key KeyFunc) KeysFunc {
	return func(ctx context.Context, method string, msg any) ([]string, error) {
		k, err := key(ctx, method, msg)
		if err != nil {
			return nil, err
		}
		return []string{k}, nil
	}
}

// errNoKeys is what a custom KeysFunc returning no key (and no error)
// ends the call with: never run the handler unlocked by accident.
var errNoKeys = fmt.Errorf("%w: the KeysFunc returned no key", core.ErrInvalidKey)

// derive calls the interceptor's KeysFunc and refuses an empty set.
func (it *interceptor) derive(ctx context.Context, method string, msg any) ([]string, error) {
	keys, err := it.keys(ctx, method, msg)
	if err == nil && len(keys) == 0 {
		return nil, errNoKeys
	}
	return keys, err
}
