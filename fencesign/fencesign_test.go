package fencesign_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/fencesign"
)

var (
	keyA = fencesign.Key{ID: "a", Secret: bytes.Repeat([]byte{1}, 32)}
	keyB = fencesign.Key{ID: "b", Secret: bytes.Repeat([]byte{2}, 32)}
	tok  = core.FenceToken{Key: "account:7", Fence: 42, Owner: "9f86d081"}
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func mustSigner(t *testing.T, k fencesign.Key, opts ...fencesign.Option) *fencesign.Signer {
	t.Helper()
	s, err := fencesign.NewSigner(k, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustVerifier(t *testing.T, keys []fencesign.Key, opts ...fencesign.Option) *fencesign.Verifier {
	t.Helper()
	v, err := fencesign.NewVerifier(keys, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVerify_roundTripAndRotation(t *testing.T) {
	v := mustVerifier(t, []fencesign.Key{keyA, keyB})
	for _, k := range []fencesign.Key{keyA, keyB} {
		s, err := mustSigner(t, k).Sign(tok)
		if err != nil {
			t.Fatal(err)
		}
		got, err := v.Verify(s)
		if err != nil || got != tok {
			t.Fatalf("Verify(%s) = %+v, %v", s, got, err)
		}
		// An unverifying receiver still reads the fence.
		if p, err := core.ParseFenceToken(s); err != nil || p != tok {
			t.Fatalf("ParseFenceToken(signed) = %+v, %v", p, err)
		}
	}
}

func TestVerify_refusals(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	signed, err := mustSigner(t, keyA, fencesign.WithClock(c.now), fencesign.WithTTL(10*time.Second)).Sign(tok)
	if err != nil {
		t.Fatal(err)
	}
	other := fencesign.Key{ID: "a", Secret: bytes.Repeat([]byte{9}, 32)} // same id, other secret
	wrongKey, _ := mustSigner(t, other, fencesign.WithClock(c.now)).Sign(tok)
	unknownKey, _ := mustSigner(t, fencesign.Key{ID: "zz", Secret: keyB.Secret}, fencesign.WithClock(c.now)).Sign(tok)
	huge := core.FenceToken{Key: tok.Key, Fence: 1 << 62, Owner: tok.Owner}
	sigPart := signed[strings.Index(signed, ";kid="):]
	for _, tc := range []struct {
		name  string
		token string
		later time.Duration
		want  error
	}{
		{"unsigned", tok.String(), 0, fencesign.ErrUnsigned},
		{"forged signature", tok.String() + ";kid=a;exp=1900000000;sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", 0, fencesign.ErrBadSignature},
		{"tampered fence", huge.String() + sigPart, 0, fencesign.ErrBadSignature},
		{"tampered expiry", strings.Replace(signed, ";exp=18", ";exp=19", 1), 0, fencesign.ErrBadSignature},
		{"extra parameter", strings.Replace(signed, ";kid=", ";x=1;kid=", 1), 0, fencesign.ErrBadSignature},
		{"wrong secret", wrongKey, 0, fencesign.ErrBadSignature},
		{"unknown key id", unknownKey, 0, fencesign.ErrUnknownKey},
		{"replayed after expiry", signed, 16 * time.Second, fencesign.ErrExpired},
		{"bad base64", signed + "!", 0, fencesign.ErrMalformed},
		{"bad expiry", tok.String() + ";kid=a;exp=x;sig=AA", 0, fencesign.ErrMalformed},
		{"empty", "", 0, fencesign.ErrUnsigned},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vc := &clock{t: c.t.Add(tc.later)}
			v := mustVerifier(t, []fencesign.Key{keyA, keyB}, fencesign.WithClock(vc.now))
			got, err := v.Verify(tc.token)
			if !errors.Is(err, tc.want) || !errors.Is(err, fencesign.ErrInvalid) || got != (core.FenceToken{}) {
				t.Fatalf("Verify = %+v, %v; want %v", got, err, tc.want)
			}
		})
	}
	// Within the leeway it is still accepted.
	vc := &clock{t: c.t.Add(14 * time.Second)}
	if _, err := mustVerifier(t, []fencesign.Key{keyA}, fencesign.WithClock(vc.now)).Verify(signed); err != nil {
		t.Fatalf("within leeway: %v", err)
	}
}

func TestNew_badKeys(t *testing.T) {
	for name, k := range map[string]fencesign.Key{
		"short secret": {ID: "a", Secret: []byte("short")},
		"empty id":     {Secret: keyA.Secret},
		"bad id":       {ID: "a;b", Secret: keyA.Secret},
	} {
		if _, err := fencesign.NewSigner(k); !errors.Is(err, fencesign.ErrBadKey) {
			t.Errorf("%s: NewSigner = %v", name, err)
		}
		if _, err := fencesign.NewVerifier([]fencesign.Key{k}); !errors.Is(err, fencesign.ErrBadKey) {
			t.Errorf("%s: NewVerifier = %v", name, err)
		}
	}
	if _, err := fencesign.NewVerifier([]fencesign.Key{keyA, keyA}); !errors.Is(err, fencesign.ErrBadKey) {
		t.Errorf("repeated id: %v", err)
	}
	if _, err := fencesign.NewVerifier(nil); !errors.Is(err, fencesign.ErrBadKey) {
		t.Errorf("no keys: %v", err)
	}
	if _, err := mustSigner(t, keyA).Sign(core.FenceToken{Key: "k"}); !errors.Is(err, core.ErrInvalidFence) {
		t.Errorf("fence 0: %v", err)
	}
}
