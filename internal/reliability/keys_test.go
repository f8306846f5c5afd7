//go:build linux

package reliability_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// hashTag is the part of a key Redis Cluster hashes: the text between the
// first '{' and the first '}' after it, if that is not empty; else the
// whole key.
func hashTag(key string) string {
	s := strings.IndexByte(key, '{')
	if s < 0 {
		return key
	}
	e := strings.IndexByte(key[s+1:], '}')
	if e <= 0 {
		return key
	}
	return key[s+1 : s+1+e]
}

// crc16 is CRC-16/XMODEM, Redis Cluster's key hash.
func crc16(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

func slot(key string) int { return int(crc16([]byte(hashTag(key)))) % 16384 }

// expectedTag is what the kit must put in the braces for a user key: the
// key with % { } # escaped, or '#' and 128 bits of its SHA-256 when long.
func expectedTag(key string) string {
	if len(key) > 128 {
		sum := sha256.Sum256([]byte(key))
		return "#" + hex.EncodeToString(sum[:16])
	}
	return strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D", "#", "%23").Replace(key)
}

func unescapeTag(tag string) string {
	return strings.NewReplacer("%7B", "{", "%7D", "}", "%23", "#", "%25", "%").Replace(tag)
}

// wantInvalid says independently of core why a key must be refused.
func wantInvalid(key string) bool {
	if key == "" || len(key) > core.MaxKeyLen || !utf8.ValidString(key) {
		return true
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			return true
		}
	}
	return false
}

// checkKey asserts the key path's invariants for one user key and reports
// whether the naive construction (prefix{key}, no escaping) would have let
// the key choose its own hash slot.
func checkKey(t testing.TB, prefix, key string) (valid, steered bool) {
	err := core.ValidateKey(key)
	if wantInvalid(key) {
		if !errors.Is(err, core.ErrInvalidKey) {
			t.Fatalf("ValidateKey(%q) = %v, want ErrInvalidKey", key, err)
		}
		if err != nil && strings.Contains(err.Error(), key) && key != "" {
			t.Fatalf("ValidateKey(%q) echoes the key: %v", key, err)
		}
		return false, false
	}
	if err != nil {
		t.Fatalf("ValidateKey(%q) = %v, want nil", key, err)
	}
	ks := core.KeysFor(prefix, key)
	tag := expectedTag(key)
	if ks.Lock != prefix+"{"+tag+"}" || ks.Fence != ks.Lock+":f" || ks.Channel != ks.Lock+":r" {
		t.Fatalf("KeysFor(%q) = %+v; want tag %q", key, ks, tag)
	}
	for _, k := range []string{ks.Lock, ks.Fence, ks.Channel} {
		if hashTag(k) != tag {
			t.Fatalf("%q hashes %q, not the escaped user key %q", k, hashTag(k), tag)
		}
		if strings.ContainsAny(k, "\r\n\x00") {
			t.Fatalf("backend key %q carries CR, LF or NUL", k)
		}
		if len(k) > len(prefix)+2+3*128+2 {
			t.Fatalf("backend key for a %d-byte user key is %d bytes", len(key), len(k))
		}
	}
	if strings.ContainsAny(tag, "{}") {
		t.Fatalf("tag %q of %q contains a brace", tag, key)
	}
	if len(key) <= 128 && unescapeTag(tag) != key {
		t.Fatalf("escaping is not reversible for %q: %q", key, tag)
	}
	naive := prefix + "{" + key + "}"
	return true, hashTag(naive) != key
}

// keyAlphabet is what the fuzzer builds keys from: Redis glob characters,
// braces, the escape characters themselves, line breaks and NUL, and
// Unicode that looks alike or composes differently.
var keyAlphabet = []string{
	"a", "b", "7", ":", "/", " ", "{", "}", "{}", "}{", "%", "%7B", "%25", "#", "#abc", "*", "?", "[", "]", "\\",
	"\r", "\n", "\r\n", "\x00", "\x7f", "\u0085", "\t", "é", "e\u0301", "\u2028", "\u202e", "ａ", "а", "ß", "\ufeff", "😀",
	"\xff", "\xc3", "lock:", "{coupon}",
}

func randomKey(r *rand.Rand) string {
	var b strings.Builder
	n := r.IntN(12)
	if r.IntN(20) == 0 {
		n = 100 + r.IntN(600) // long: crosses the 128-byte hash limit and sometimes MaxKeyLen
	}
	for range n {
		b.WriteString(keyAlphabet[r.IntN(len(keyAlphabet))])
	}
	return b.String()
}

// keySeeds are the hand-picked cases.
var keySeeds = []string{
	"", "coupon:42", "{coupon:42}", "x}{y", "{}", "}", "{", "%7B", "%", "#", "#" + strings.Repeat("0", 32),
	"a\r\nSET evil 1", "nul\x00byte", "*", "lock:*", "[a-z]?", strings.Repeat("k", 128), strings.Repeat("k", 129),
	strings.Repeat("é", 512), strings.Repeat("x", core.MaxKeyLen), strings.Repeat("x", core.MaxKeyLen+1),
	"caf\u00e9", "cafe\u0301", "\xff\xfe", "\u202egnp.exe",
}

// FuzzKeysFor checks the key path on arbitrary input:
// FENCEDLOCK_RELIABILITY=smoke go test -fuzz=FuzzKeysFor ./internal/reliability/
func FuzzKeysFor(f *testing.F) {
	for _, s := range keySeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		gate(t)
		checkKey(t, core.DefaultPrefix, key)
	})
}

// TestSecurity_keyPath runs the key-path checks over the seeds and a
// generated corpus, uses a sample on a real server (locks, release
// notices, SCAN), cross-checks the slot computation against a
// cluster-enabled redis-server, and records which spellings share a lock.
func TestSecurity_keyPath(t *testing.T) {
	sz := gate(t)
	n := 20000
	if sz.name == "soak" {
		n = 500000
	}
	r := rand.New(rand.NewPCG(1, 2))
	corpus := append([]string(nil), keySeeds...)
	for range n {
		corpus = append(corpus, randomKey(r))
	}
	valid, steered := 0, 0
	var sample []string
	byBackend := map[string]string{}
	for _, k := range corpus {
		v, s := checkKey(t, core.DefaultPrefix, k)
		if !v {
			continue
		}
		valid++
		if s {
			steered++
		}
		bk := core.KeysFor(core.DefaultPrefix, k).Lock
		if other, ok := byBackend[bk]; ok && other != k {
			t.Fatalf("%q and %q share the backend key %q", k, other, bk)
		}
		byBackend[bk] = k
		if len(sample) < 300 && r.IntN(20) == 0 {
			sample = append(sample, k)
		}
	}
	sample = append(sample, "{coupon:42}", "x}{y", strings.Repeat("é", 100), "lock:*", "[a-z]?")

	// The sample on a real server: each key locks, wakes a waiter through
	// its release channel, and is found by an escaped SCAN pattern.
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	c := core.New(rdb)
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	for _, k := range sample {
		l, err := c.Acquire(ctx, k)
		if err != nil {
			t.Fatalf("Acquire(%q): %v", k, err)
		}
		// The audits find lock keys with SCAN MATCH prefix*: the
		// escaped pattern must match this key and nothing else.
		lk := core.KeysFor(core.DefaultPrefix, k).Lock
		var found []string
		it := rdb.Scan(ctx, 0, globEscape(lk), 1000).Iterator()
		for it.Next(ctx) {
			found = append(found, it.Val())
		}
		if it.Err() != nil || len(found) != 1 || found[0] != lk {
			t.Fatalf("SCAN MATCH %q = %q, %v; want just %q", globEscape(lk), found, it.Err(), lk)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatalf("Release(%q): %v", k, err)
		}
	}
	// Slots as Redis Cluster computes them.
	cl := redistest.Start(t, redistest.WithArgs("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"))
	clc := cl.Client(t)
	for _, k := range sample {
		for _, bk := range []string{core.KeysFor(core.DefaultPrefix, k).Lock, core.KeysFor(core.DefaultPrefix, k).Channel} {
			got, err := clc.ClusterKeySlot(ctx, bk).Result()
			if err != nil {
				t.Fatal(err)
			}
			if int(got) != slot(bk) || slot(bk) != int(crc16([]byte(expectedTag(k))))%16384 {
				t.Fatalf("slot of %q: redis %d, ours %d", bk, got, slot(bk))
			}
		}
	}

	// Spellings. The kit compares bytes: it does not normalize Unicode or
	// case, so spellings a human calls the same are different locks.
	same := func(a, b string) bool { return core.KeysFor("", a).Lock == core.KeysFor("", b).Lock }
	spell := []struct {
		a, b string
		what string
	}{
		{"caf\u00e9", "cafe\u0301", "NFC vs NFD"},
		{"Coupon:1", "coupon:1", "case"},
		{"ｃｏｕｐｏｎ:1", "coupon:1", "full-width vs ASCII"},
		{"c\u043eupon:1", "coupon:1", "Cyrillic о vs Latin o"},
		{"coupon:1", "coupon:1\u200b", "trailing zero-width space"},
	}
	var notes []string
	for _, s := range spell {
		if same(s.a, s.b) {
			t.Errorf("%s spellings share a lock; the docs say they do not", s.what)
		}
		notes = append(notes, s.what)
	}
	if !same(norm.NFC.String("caf\u00e9"), norm.NFC.String("cafe\u0301")) {
		t.Error("NFC-normalized spellings should share a lock")
	}
	if steered == 0 {
		t.Error("negative control: no fuzzed key would steer its slot without escaping; the corpus is too tame")
	}
	addRow(reportRow{
		Security:   true,
		Scenario:   "key path fuzz (ValidateKey + KeysFor: globs, braces, CR/LF, NUL, long, Unicode)",
		Faults:     fmt.Sprintf("%d generated keys", len(corpus)),
		Ops:        fmt.Sprintf("%d valid keys checked, %d used on a real server, %d slots checked against CLUSTER KEYSLOT", valid, len(sample), 2*len(sample)),
		Violations: "0",
		Control:    fmt.Sprintf("%d (keys whose braces would choose the hash slot under a naive prefix{key})", steered),
		Checks:     "invalid keys refused without echo; one hash tag per lock, equal to the escaped user key (or its SHA-256 above 128 bytes), so lock, fence and channel share a slot no user can choose; escaping reversible; distinct keys never share a backend key; different spellings (" + strings.Join(notes, ", ") + ") are different locks",
	})
}
