package core

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// hashKeyLen is the length above which a key is stored as a hash, so that
// long user input cannot bloat Redis memory or the command stream.
const hashKeyLen = 128

// Keys is the set of backend keys belonging to one lock. All three share one
// Redis Cluster hash tag (the braces), so a Lua script can touch them in one
// slot and the release channel lives on the same shard.
type Keys struct {
	Prefix  string // the namespace (WithPrefix)
	Tag     string // the escaped or hashed caller's key: the hash tag, without braces
	Lock    string // holds the owner token, with the lease as its TTL
	Fence   string // the per-key fence counter
	Channel string // release notices
	// Shared and permit holds (Shared, Permits): Lock is then a hash of
	// holder token -> fence, Leases each holder's own lease end, Claims the
	// waiting writers that new shared holds queue behind.
	Leases string
	Claims string
	// Waiters of every Client queued in Redis for an exclusive hold: Queue
	// lists their tokens in arrival order; each waiter's entry, Queue + ":"
	// + the hex SHA-1 of its token, exists while it waits (a waiter that
	// died falls out when its entry ends).
	Queue string
}

// ValidateKey reports whether key may be locked: non-empty, at most
// MaxKeyLen bytes, valid UTF-8 without control characters. The error wraps
// ErrInvalidKey and never repeats the key.
func ValidateKey(key string) error {
	if key == "" {
		return fmt.Errorf("%w: empty", ErrInvalidKey)
	}
	if len(key) > MaxKeyLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidKey, MaxKeyLen)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: not valid UTF-8", ErrInvalidKey)
	}
	for _, r := range key {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: control character", ErrInvalidKey)
		}
	}
	return nil
}

// backendKeys maps a validated user key to backend keys. The user's part is
// escaped so '{' and '}' cannot choose a Cluster slot, and hashed when long.
func backendKeys(prefix, key string) Keys {
	var tag string
	if len(key) > hashKeyLen {
		sum := sha256.Sum256([]byte(key))
		tag = "#" + hex.EncodeToString(sum[:16])
	} else {
		tag = escapeKey(key)
	}
	// One allocation for every key: they are slices of one string.
	base := prefix + "{" + tag + "}"
	n := len(base)
	all := base + base + ":f" + base + ":r" + base + ":e" + base + ":w" + base + ":q"
	part := func(i int) string { return all[n+(i-1)*(n+2) : n+i*(n+2)] }
	return Keys{Prefix: prefix, Tag: tag, Lock: all[:n], Fence: part(1), Channel: part(2), Leases: part(3), Claims: part(4),
		Queue: part(5)}
}

// KeysFor returns the backend keys the Client uses for key under prefix (for
// audits, ACL rules, operator tools and tests).
func KeysFor(prefix, key string) Keys { return backendKeys(prefix, key) }

var keyEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D", "#", "%23")

func escapeKey(k string) string {
	if !strings.ContainsAny(k, "%{}#") {
		return k
	}
	return keyEscaper.Replace(k)
}
