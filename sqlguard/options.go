package sqlguard

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"sort"

	"github.com/fencedlock/fencedlock/core"
)

// Defaults, in one place.
const (
	// DefaultTable is the fence table's name unless WithTable says otherwise.
	DefaultTable = "fencedlock_fences"
	// DefaultFenceColumn is the column a row guard (Update) compares and sets.
	DefaultFenceColumn = "fence"

	// maxResourceLen and maxOwnerLen bound what is stored verbatim; longer
	// values are stored as a SHA-256 digest so that any lock key (up to
	// core.MaxKeyLen) and any forwarded owner id fit the columns.
	maxResourceLen = 255
	maxOwnerLen    = 64

	// guardAttempts bounds how often BeginTx starts over when the guard
	// statement hits a deadlock or serialization failure (nothing of the
	// caller's has run at that point, so a fresh transaction is safe).
	guardAttempts = 3
)

// Option configures BeginTx, Migrate or DDL.
type Option func(*config)

type config struct {
	dialect  Dialect
	table    string
	resource string
	token    *core.FenceToken // explicit fence: WithLock or WithFence
}

func newConfig(opts []Option) config {
	c := config{table: DefaultTable}
	for _, o := range opts {
		if o != nil {
			o(&c)
		}
	}
	return c
}

// WithDialect sets the SQL dialect instead of detecting it from the driver.
// It is required when db is neither *sql.DB nor *sql.Conn, or when the
// driver is wrapped (for example by a tracing driver).
func WithDialect(d Dialect) Option { return func(c *config) { c.dialect = d } }

// WithTable sets the fence table (default DefaultTable). The name must be a
// plain identifier, optionally schema-qualified ("locks.fences"); it is used
// unquoted, so it follows the database's usual case rules.
func WithTable(name string) Option { return func(c *config) { c.table = name } }

// WithLock guards with l's fence instead of the lock found in the context.
func WithLock(l *core.Lock) Option {
	return func(c *config) {
		if l == nil {
			c.token = nil
			return
		}
		t := l.FenceToken()
		c.token = &t
	}
}

// WithFence guards with t, a fence received from elsewhere (for example
// parsed with core.ParseFenceToken from a queue message). Without it BeginTx
// also finds a fence forwarded by httpmw or grpcmw in the context.
func WithFence(t core.FenceToken) Option { return func(c *config) { c.token = &t } }

// WithResource names the guarded resource (default: the lock key). Holders
// of different locks that write the same data must use the same resource,
// and one lock key must always map to the same resource.
func WithResource(name string) Option { return func(c *config) { c.resource = name } }

// fences resolves the fences to guard with: WithLock / WithFence (the last
// given wins), else every lock in ctx (core.LocksFromContext), else a fence
// forwarded by an upstream service. The result has one token per resource,
// sorted by resource, so that concurrent transactions over overlapping
// resource sets take the fence rows in one order and cannot deadlock.
//
// inner is the innermost lock's token (what Tx.Fence reports).
func (c *config) fences(ctx context.Context) (toks []core.FenceToken, inner core.FenceToken, err error) {
	switch {
	case c.token != nil:
		toks = []core.FenceToken{*c.token}
	default:
		for _, l := range core.LocksFromContext(ctx) {
			toks = append(toks, l.FenceToken())
		}
		if len(toks) == 0 {
			t, ok := core.FenceFromContext(ctx)
			if !ok {
				return nil, inner, ErrNoFence
			}
			toks = []core.FenceToken{t}
		}
	}
	if c.resource != "" {
		if len(toks) > 1 {
			return nil, inner, fmt.Errorf("%w: WithResource with %d locks in the context", ErrAmbiguousResource, len(toks))
		}
		toks[0].Key = c.resource
	}
	for _, t := range toks {
		if err := checkFence(t); err != nil {
			return nil, inner, err
		}
	}
	inner = toks[0]
	return dedupe(toks), inner, nil
}

func checkFence(t core.FenceToken) error {
	switch {
	case t.Fence == 0:
		return fmt.Errorf("sqlguard: fence 0: %w", core.ErrInvalidFence)
	case t.Fence > math.MaxInt64:
		// Columns are signed BIGINT. Fences issued by core are microsecond
		// clock readings (about 2^51 today) and stay far below this.
		return fmt.Errorf("sqlguard: fence %d exceeds the BIGINT range: %w", t.Fence, core.ErrInvalidFence)
	case t.Key == "":
		return fmt.Errorf("sqlguard: empty resource (set WithResource): %w", core.ErrInvalidFence)
	}
	return nil
}

// dedupe sorts toks by stored resource name and keeps one token per
// resource: the one with the highest fence (the same key held twice in one
// context can only be a nested re-acquisition).
func dedupe(toks []core.FenceToken) []core.FenceToken {
	sort.SliceStable(toks, func(i, j int) bool {
		return storedName(toks[i].Key, maxResourceLen) < storedName(toks[j].Key, maxResourceLen)
	})
	out := toks[:0]
	for _, t := range toks {
		if n := len(out); n > 0 && storedName(out[n-1].Key, maxResourceLen) == storedName(t.Key, maxResourceLen) {
			if t.Fence > out[n-1].Fence {
				out[n-1] = t
			}
			continue
		}
		out = append(out, t)
	}
	return out
}

// storedName maps a resource or owner to what is stored: itself when short
// enough, else "sha256:" and its hex digest (a prefix of it for owners).
func storedName(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	h := "sha256:" + hex.EncodeToString(sum[:])
	return h[:min(len(h), limit)]
}
