package idempotency_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/fencedlock/fencedlock/idempotency"
)

func TestParseKey(t *testing.T) {
	cases := []struct {
		in, want string
		ok       bool
	}{
		{`"8e03978e-40d5-43e8-bc93-6894a57f9324"`, "8e03978e-40d5-43e8-bc93-6894a57f9324", true},
		{"abc", "abc", true},
		{` "a b" `, "a b", true},
		{`""`, "", false},
		{"", "", false},
		{`"abc`, "", false},
		{`"a\"b"`, "", false},
		{"a b", "", false},
		{"k\x00", "", false},
		{"ключ", "", false},
		{strings.Repeat("k", idempotency.MaxKeyLen), strings.Repeat("k", idempotency.MaxKeyLen), true},
		{strings.Repeat("k", idempotency.MaxKeyLen+1), "", false},
	}
	for _, c := range cases {
		got, err := idempotency.ParseKey(c.in)
		if c.ok != (err == nil) || got != c.want {
			t.Errorf("ParseKey(%q) = %q, %v", c.in, got, err)
		}
		if err != nil && !errors.Is(err, idempotency.ErrInvalidKey) {
			t.Errorf("ParseKey(%q) error %v does not match ErrInvalidKey", c.in, err)
		}
	}
}

func TestScope_LockKey(t *testing.T) {
	a := idempotency.Scope{Route: "POST /a", Tenant: "t", Key: "k"}
	seen := map[string]idempotency.Scope{}
	for _, s := range []idempotency.Scope{a, {Route: "POST /b", Tenant: "t", Key: "k"}, {Route: "POST /a", Tenant: "u", Key: "k"},
		{Route: "POST /a", Tenant: "tk", Key: ""}, {Route: "POST /a", Tenant: "", Key: "tk"}} {
		k := s.LockKey()
		if prev, dup := seen[k]; dup {
			t.Fatalf("%+v and %+v share lock key %s", prev, s, k)
		}
		seen[k] = s
		if strings.Contains(k, "POST") || strings.Contains(k, "{") {
			t.Fatalf("lock key %q carries user data", k)
		}
	}
	if same := (idempotency.Scope{Route: "POST /a", Tenant: "t", Key: "k"}); same.LockKey() != a.LockKey() {
		t.Fatal("LockKey is not stable")
	}
}

func TestFingerprint(t *testing.T) {
	base := idempotency.NewFingerprint("POST", "/a", []byte("x"))
	for _, f := range []idempotency.Fingerprint{
		idempotency.NewFingerprint("PUT", "/a", []byte("x")),
		idempotency.NewFingerprint("POST", "/b", []byte("x")),
		idempotency.NewFingerprint("POST", "/a", []byte("y")),
		idempotency.NewFingerprint("POST", "/ax", nil),
	} {
		if f == base {
			t.Fatal("different requests share a fingerprint")
		}
	}
}

func TestRecord_roundTrip(t *testing.T) {
	r := &idempotency.Record{
		Fingerprint: idempotency.NewFingerprint("POST", "/a", nil),
		Fence:       1 << 60,
		Status:      201,
		Header:      http.Header{"Content-Type": {"application/json"}, "Location": {"/c/1", ""}},
		Body:        []byte(`{"id":1}`),
	}
	got, err := idempotency.DecodeRecord(r.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if got.Fingerprint != r.Fingerprint || got.Fence != r.Fence || got.Status != r.Status ||
		string(got.Body) != string(r.Body) || got.Header.Get("Content-Type") != "application/json" || len(got.Header["Location"]) != 2 {
		t.Fatalf("round trip: %+v", got)
	}
	if _, err := idempotency.DecodeRecord((&idempotency.Record{}).Encode()); err != nil {
		t.Fatalf("empty record: %v", err)
	}
}

func TestDecodeRecord_corrupt(t *testing.T) {
	good := (&idempotency.Record{Status: 200, Header: http.Header{"A": {"b"}}, Body: []byte("body")}).Encode()
	for i := range len(good) {
		if _, err := idempotency.DecodeRecord(good[:i]); !errors.Is(err, idempotency.ErrCorruptRecord) {
			t.Fatalf("truncated at %d: %v", i, err)
		}
	}
	if _, err := idempotency.DecodeRecord(append(good, 0)); !errors.Is(err, idempotency.ErrCorruptRecord) {
		t.Fatalf("trailing byte: %v", err)
	}
	bad := append([]byte{1}, make([]byte, 32)...)
	bad = append(bad, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f) // a huge header count
	if _, err := idempotency.DecodeRecord(bad); !errors.Is(err, idempotency.ErrCorruptRecord) {
		t.Fatalf("huge count: %v", err)
	}
}
