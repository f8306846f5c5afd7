package idempotency

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"io"
	"strings"
)

// MaxKeyLen bounds an idempotency key in bytes (after unquoting). UUIDs,
// which the draft recommends, are 36.
const MaxKeyLen = 255

// ParseKey reads an Idempotency-Key header value. The draft makes it a
// structured-field string ("..."); a bare token is accepted too, since many
// clients send one. The key must be 1 to MaxKeyLen bytes of printable ASCII.
// Errors wrap ErrInvalidKey and never repeat the key.
func ParseKey(v string) (string, error) {
	v = strings.TrimSpace(v)
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = v[1 : len(v)-1]
		if strings.ContainsAny(v, `"\`) {
			// Escapes are legal in sf-strings but no key generator
			// uses them; refusing keeps one spelling per key.
			return "", ErrInvalidKey
		}
	} else if strings.ContainsAny(v, `" `) {
		return "", ErrInvalidKey
	}
	if len(v) == 0 || len(v) > MaxKeyLen {
		return "", ErrInvalidKey
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 || v[i] > 0x7e {
			return "", ErrInvalidKey
		}
	}
	return v, nil
}

// Scope names what an idempotency key belongs to: the route pattern (or
// RPC method) and, when set, the tenant or principal, so that two clients
// (or two routes) using the same key never meet.
type Scope struct {
	Route  string
	Tenant string
	Key    string
}

// LockKey is the lock key (and, through its hash tag, the store key) for
// the scope: "idem:" plus a SHA-256 prefix of route, tenant and key. User
// data never reaches Redis or the lock's telemetry in clear.
func (s Scope) LockKey() string {
	h := sha256.New()
	writeField(h, s.Route)
	writeField(h, s.Tenant)
	writeField(h, s.Key)
	var sum [sha256.Size]byte
	return "idem:" + hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// Fingerprint identifies a request so that a key reused for another one is
// refused (422): SHA-256 over method, target and body.
type Fingerprint [sha256.Size]byte

// NewFingerprint fingerprints a request from its method, target (path and
// query, or RPC method) and body.
func NewFingerprint(method, target string, body []byte) Fingerprint {
	h := sha256.New()
	writeField(h, method)
	writeField(h, target)
	_, _ = h.Write(body)
	var f Fingerprint
	h.Sum(f[:0])
	return f
}

// writeField writes a length-prefixed field, so ("ab","c") and ("a","bc")
// hash differently.
func writeField(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	_, _ = h.Write(n[:])
	_, _ = io.WriteString(h, s)
}
