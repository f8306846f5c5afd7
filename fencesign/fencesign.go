package fencesign

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// Defaults, in one place.
const (
	// DefaultTTL is how long a signed token is accepted after signing.
	DefaultTTL = 30 * time.Second
	// DefaultLeeway is the clock skew allowed between signer and verifier.
	DefaultLeeway = 5 * time.Second
	// MinSecretLen is the shortest secret accepted: 32 bytes, the size of
	// the HMAC-SHA-256 output.
	MinSecretLen = 32
)

// Errors. Every error of Verify matches ErrInvalid and one of the others.
var (
	ErrInvalid      = errors.New("fencesign: invalid signed fence")
	ErrMalformed    = fmt.Errorf("%w: malformed", ErrInvalid)
	ErrUnsigned     = fmt.Errorf("%w: not signed", ErrInvalid)
	ErrUnknownKey   = fmt.Errorf("%w: unknown key id", ErrInvalid)
	ErrBadSignature = fmt.Errorf("%w: bad signature", ErrInvalid)
	ErrExpired      = fmt.Errorf("%w: expired", ErrInvalid)

	// ErrBadKey is returned by NewSigner and NewVerifier for an empty or
	// malformed key id, a short secret, or a repeated id.
	ErrBadKey = errors.New("fencesign: bad key")
)

// Key is a shared secret with an id that names it in signed tokens.
type Key struct {
	// ID is sent with every token (letters, digits, '-', '_', '.', at most
	// 32 bytes); it is not secret.
	ID string
	// Secret is at least MinSecretLen random bytes.
	Secret []byte
}

func (k Key) check() error {
	if k.ID == "" || len(k.ID) > 32 || strings.Trim(k.ID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != "" {
		return fmt.Errorf("%w: key id %q", ErrBadKey, k.ID)
	}
	if len(k.Secret) < MinSecretLen {
		return fmt.Errorf("%w: key %q has a %d-byte secret, want at least %d", ErrBadKey, k.ID, len(k.Secret), MinSecretLen)
	}
	return nil
}

// Option configures a Signer or Verifier.
type Option func(*config)

type config struct {
	ttl    time.Duration
	leeway time.Duration
	now    func() time.Time
}

// WithTTL sets how long a token is valid after signing (Signer).
func WithTTL(d time.Duration) Option { return func(c *config) { c.ttl = d } }

// WithLeeway sets the allowed clock skew (Verifier).
func WithLeeway(d time.Duration) Option { return func(c *config) { c.leeway = d } }

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) Option { return func(c *config) { c.now = now } }

func newConfig(opts []Option) (config, error) {
	c := config{ttl: DefaultTTL, leeway: DefaultLeeway, now: time.Now}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	if c.ttl <= 0 || c.leeway < 0 || c.now == nil {
		return c, fmt.Errorf("fencesign: bad option: ttl %v, leeway %v", c.ttl, c.leeway)
	}
	return c, nil
}

// Signer signs fence tokens with one key. It is safe for concurrent use.
type Signer struct {
	key Key
	cfg config
}

// NewSigner returns a Signer for k.
func NewSigner(k Key, opts ...Option) (*Signer, error) {
	if err := k.check(); err != nil {
		return nil, err
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	k.Secret = append([]byte(nil), k.Secret...)
	return &Signer{key: k, cfg: cfg}, nil
}

// Sign returns the signed form of t (see the package doc).
func (s *Signer) Sign(t core.FenceToken) (string, error) {
	if t.Fence == 0 {
		return "", fmt.Errorf("fencesign: sign: %w", core.ErrInvalidFence)
	}
	if err := core.ValidateKey(t.Key); err != nil {
		return "", fmt.Errorf("fencesign: sign: %w: %w", core.ErrInvalidFence, err)
	}
	exp := s.cfg.now().Add(s.cfg.ttl).Unix()
	mac := sum(s.key.Secret, t, s.key.ID, exp)
	return t.String() + ";kid=" + s.key.ID + ";exp=" + strconv.FormatInt(exp, 10) +
		";sig=" + base64.RawURLEncoding.EncodeToString(mac), nil
}

// Verifier checks signed fence tokens against a set of keys. It is safe
// for concurrent use.
type Verifier struct {
	keys map[string][]byte
	cfg  config
}

// NewVerifier returns a Verifier that accepts tokens signed with any of keys.
func NewVerifier(keys []Key, opts ...Option) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: no keys", ErrBadKey)
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	v := &Verifier{keys: make(map[string][]byte, len(keys)), cfg: cfg}
	for _, k := range keys {
		if err := k.check(); err != nil {
			return nil, err
		}
		if _, dup := v.keys[k.ID]; dup {
			return nil, fmt.Errorf("%w: key id %q given twice", ErrBadKey, k.ID)
		}
		v.keys[k.ID] = append([]byte(nil), k.Secret...)
	}
	return v, nil
}

// Verify checks s and returns the fence token it carries.
func (v *Verifier) Verify(s string) (core.FenceToken, error) {
	body, sig, ok := strings.Cut(s, ";sig=")
	if !ok {
		return core.FenceToken{}, ErrUnsigned
	}
	mac, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || strings.Contains(sig, ";") {
		return core.FenceToken{}, ErrMalformed
	}
	rest, expStr, ok1 := cutLast(body, ";exp=")
	tokStr, kid, ok2 := cutLast(rest, ";kid=")
	if !ok1 || !ok2 {
		return core.FenceToken{}, ErrUnsigned
	}
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil {
		return core.FenceToken{}, ErrMalformed
	}
	secret, ok := v.keys[kid]
	if !ok {
		return core.FenceToken{}, ErrUnknownKey
	}
	t, err := core.ParseFenceToken(tokStr)
	if err != nil {
		return core.FenceToken{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	// The MAC covers the parsed values, not the text, so two spellings of
	// one token verify alike and no parameter can ride along unsigned.
	if !hmac.Equal(mac, sum(secret, t, kid, exp)) || tokStr != t.String() {
		return core.FenceToken{}, ErrBadSignature
	}
	if v.cfg.now().After(time.Unix(exp, 0).Add(v.cfg.leeway)) {
		return core.FenceToken{}, ErrExpired
	}
	return t, nil
}

func cutLast(s, sep string) (before, after string, ok bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

// sum is the MAC: HMAC-SHA-256 over a versioned, length-prefixed encoding
// of the key id, expiry, lock key, fence and owner.
func sum(secret []byte, t core.FenceToken, kid string, exp int64) []byte {
	m := hmac.New(sha256.New, secret)
	var n [8]byte
	field := func(s string) {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		m.Write(n[:])
		m.Write([]byte(s))
	}
	field("fencedlock-fence-v1")
	field(kid)
	binary.BigEndian.PutUint64(n[:], uint64(exp))
	m.Write(n[:])
	field(t.Key)
	binary.BigEndian.PutUint64(n[:], t.Fence)
	m.Write(n[:])
	field(t.Owner)
	return m.Sum(nil)
}
