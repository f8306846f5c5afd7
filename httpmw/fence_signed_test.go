package httpmw_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/fencesign"
	"github.com/fencedlock/fencedlock/httpmw"
)

var (
	signKey  = fencesign.Key{ID: "k1", Secret: bytes.Repeat([]byte{7}, 32)}
	otherKey = fencesign.Key{ID: "k1", Secret: bytes.Repeat([]byte{8}, 32)}
)

// signedTokens returns tokens a receiver holding signKey must refuse, by name.
func signedTokens(t *testing.T, ft core.FenceToken) (good string, bad map[string]string) {
	t.Helper()
	sign := func(k fencesign.Key, opts ...fencesign.Option) string {
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
	good = sign(signKey)
	old := func() time.Time { return time.Now().Add(-time.Hour) }
	huge := core.FenceToken{Key: ft.Key, Fence: 1 << 60, Owner: ft.Owner}
	return good, map[string]string{
		"unsigned":              ft.String(),
		"forged":                huge.String() + ";kid=k1;exp=9999999999;sig=" + strings.Repeat("A", 43),
		"tampered":              huge.String() + good[strings.Index(good, ";kid="):],
		"replayed after expiry": sign(signKey, fencesign.WithClock(old)),
		"wrong key":             sign(otherKey),
		"unknown key id":        sign(fencesign.Key{ID: "k2", Secret: signKey.Secret}),
		"garbage":               "x;sig=%%%",
	}
}

func TestAcceptSignedFence(t *testing.T) {
	v, err := fencesign.NewVerifier([]fencesign.Key{signKey})
	if err != nil {
		t.Fatal(err)
	}
	var got box[*core.FenceToken]
	ran := make(chan struct{}, 16)
	ts := serve(t, httpmw.AcceptSignedFence(v)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran <- struct{}{}
		fenceRecorder(&got).ServeHTTP(w, r)
	})))
	ft := core.FenceToken{Key: "account:7", Fence: 42, Owner: "o1"}
	good, bad := signedTokens(t, ft)

	if r := do(t, ts.Client(), "POST", ts.URL, httpmw.FenceHeader, good); r.status != http.StatusOK {
		t.Fatalf("signed: %d %s", r.status, r.body)
	}
	<-ran
	if g := got.get(); g == nil || *g != ft {
		t.Fatalf("fence in context = %v, want %v", g, ft)
	}
	for name, tok := range bad {
		t.Run(name, func(t *testing.T) {
			got.set(nil)
			if r := do(t, ts.Client(), "POST", ts.URL, httpmw.FenceHeader, tok); r.status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401", r.status)
			}
			select {
			case <-ran:
				t.Fatal("the handler ran with an untrusted fence")
			default:
			}
		})
	}
	if r := do(t, ts.Client(), "POST", ts.URL, httpmw.FenceHeader, good, httpmw.FenceHeader, good); r.status != http.StatusBadRequest {
		t.Fatalf("repeated: %d", r.status)
	}
	if r := do(t, ts.Client(), "POST", ts.URL); r.status != http.StatusOK {
		t.Fatalf("no header: %d", r.status)
	}
	<-ran
}

func TestSignedTransport_endToEnd(t *testing.T) {
	s, err := fencesign.NewSigner(signKey)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := fencesign.NewVerifier([]fencesign.Key{signKey})
	var got box[*core.FenceToken]
	ts := serve(t, httpmw.AcceptSignedFence(v)(fenceRecorder(&got)))
	client := &http.Client{Transport: httpmw.SignedTransport(ts.Client().Transport, s)}

	locks := newMemoryClient()
	defer locks.Close()
	l, err := locks.Acquire(context.Background(), "account:9")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(context.Background())
	ctx := core.ContextWithLock(context.Background(), l)
	if r := doCtx(ctx, t, client, "POST", ts.URL); r.status != http.StatusOK {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	if g := got.get(); g == nil || *g != l.FenceToken() {
		t.Fatalf("fence = %v, want %v", g, l.FenceToken())
	}
	// The unsigned Transport's header is refused by the same receiver.
	plain := &http.Client{Transport: httpmw.Transport(ts.Client().Transport)}
	if r := doCtx(ctx, t, plain, "POST", ts.URL); r.status != http.StatusUnauthorized {
		t.Fatalf("unsigned sender: %d, want 401", r.status)
	}
}

func TestAcceptSignedFence_nil(t *testing.T) {
	for name, f := range map[string]func(){
		"nil verifier":        func() { httpmw.AcceptSignedFence(nil) },
		"nil handler":         func() { httpmw.AcceptSignedFence(&fencesign.Verifier{})(nil) },
		"nil signer":          func() { httpmw.SignedTransport(nil, nil) },
		"nil unsigned accept": func() { httpmw.AcceptUnsignedFence(nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
