package otel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"sync"

	"go.opentelemetry.io/otel/attribute"

	"github.com/fencedlock/fencedlock/core"
)

// Attribute keys. No semantic convention covers locks, so they live under
// "lock."; error.type is the semantic-convention key.
const (
	keyName      = attribute.Key("lock.name")
	keyKey       = attribute.Key("lock.key")
	keyKeyHash   = attribute.Key("lock.key.hash")
	keyBackend   = attribute.Key("lock.backend")
	keyMode      = attribute.Key("lock.mode") // exclusive, shared or permit (core.Mode.String)
	keyAttempts  = attribute.Key("lock.attempts")
	keyContended = attribute.Key("lock.contended")
	keyHandoff   = attribute.Key("lock.handoff")
	keyWait      = attribute.Key("lock.wait.duration")
	keyTTL       = attribute.Key("lock.ttl")
	keyFence     = attribute.Key("lock.fence")
	keyOutcome   = attribute.Key("lock.outcome")
	keyAuto      = attribute.Key("lock.refresh.auto")
	keyCause     = attribute.Key("lock.lost.cause")
	keyErrorType = attribute.Key("error.type")
)

// Outcomes of an acquisition (lock.outcome on lock.acquire and
// lock.acquire.duration; error.type of a failed acquire).
const (
	outcomeAcquired    = "acquired"
	outcomeContended   = "contended" // held elsewhere until the wait ended
	outcomeCanceled    = "canceled"  // the caller's context was cancelled
	outcomeDeadline    = "deadline_exceeded"
	outcomeUnavailable = "unavailable" // the backend could not be reached
	outcomeQuorum      = "quorum"      // a multi-node backend missed its majority
	outcomeInvalidKey  = "invalid_key"
	outcomeClosed      = "closed" // the Client was closed
	outcomeError       = "error"
)

// Outcomes of a hold (lock.outcome on lock.hold.duration).
const (
	holdReleased      = "released"
	holdHandoff       = "handoff" // passed straight to a local waiter
	holdLost          = "lost"
	holdReleaseFailed = "release_failed" // the backend did not answer the release
)

// Error types of a failed renewal.
const (
	refreshNotHeld = "not_held"
)

func acquireOutcome(e core.AcquireEndEvent) string {
	if e.Acquired {
		return outcomeAcquired
	}
	return errorClass(e.Err)
}

// errorClass maps core's sentinels to a short, low-cardinality name. The
// context is checked before ErrNotAcquired, which a cancelled wait wraps too.
func errorClass(err error) string {
	switch {
	case err == nil:
		return outcomeError
	case errors.Is(err, core.ErrInvalidKey):
		return outcomeInvalidKey
	case errors.Is(err, core.ErrClosed):
		return outcomeClosed
	case errors.Is(err, core.ErrQuorum):
		return outcomeQuorum
	case errors.Is(err, core.ErrUnavailable):
		return outcomeUnavailable
	case errors.Is(err, context.Canceled):
		return outcomeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return outcomeDeadline
	case errors.Is(err, core.ErrNotAcquired):
		return outcomeContended
	case errors.Is(err, core.ErrNotHeld):
		return refreshNotHeld
	}
	return outcomeError
}

func holdOutcome(e core.ReleaseEvent) string {
	switch {
	case e.Err == nil && e.Handoff:
		return holdHandoff
	case e.Err == nil:
		return holdReleased
	case errors.Is(e.Err, core.ErrLost):
		return holdLost
	}
	return holdReleaseFailed
}

// lostCause classifies why a lock was lost, for the "lost" span event.
func lostCause(err error) string {
	switch {
	case errors.Is(err, core.ErrHoldCapReached):
		return "hold_cap"
	case errors.Is(err, core.ErrClosed):
		return outcomeClosed
	}
	return "expired"
}

// lockName is the low-cardinality name of a lock: the WithName name, else
// the key prefix. Never the key.
func lockName(li core.LockInfo) string {
	if li.Name != "" {
		return li.Name
	}
	return li.Prefix
}

// keyHash identifies a key on spans without revealing it to casual readers.
func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

func fenceAttr(f uint64) attribute.KeyValue {
	return keyFence.Int64(int64(min(f, math.MaxInt64)))
}

// setKey names a metric attribute set: lock name, backend, mode and, when
// extra is non-empty, one more attribute (lock.outcome or error.type).
type setKey struct {
	name, backend string
	mode          core.Mode
	extraKey      attribute.Key
	extra         string
}

// infoSet is the set key of a lock's name, backend and mode.
func infoSet(name string, li core.LockInfo) setKey {
	return setKey{name: name, backend: li.Backend, mode: li.Mode}
}

// with adds the extra attribute.
func (k setKey) with(key attribute.Key, v string) setKey {
	k.extraKey, k.extra = key, v
	return k
}

// maxCachedSets bounds the cache: lock names are meant to be few (route
// templates), but a caller passing raw keys to WithName must not make it
// grow without end. Past the bound, sets are built per call.
const maxCachedSets = 1024

// setCache keeps the attribute sets of metric measurements, so the hot path
// neither allocates nor sorts attributes.
type setCache struct {
	mu sync.RWMutex
	m  map[setKey]attribute.Set
}

func (c *setCache) get(k setKey) attribute.Set {
	c.mu.RLock()
	s, ok := c.m[k]
	c.mu.RUnlock()
	if ok {
		return s
	}
	if k.extraKey == "" {
		s = attribute.NewSet(keyName.String(k.name), keyBackend.String(k.backend), keyMode.String(k.mode.String()))
	} else {
		s = attribute.NewSet(keyName.String(k.name), keyBackend.String(k.backend), keyMode.String(k.mode.String()),
			k.extraKey.String(k.extra))
	}
	c.mu.Lock()
	if c.m == nil {
		c.m = make(map[setKey]attribute.Set)
	}
	if len(c.m) < maxCachedSets {
		c.m[k] = s
	}
	c.mu.Unlock()
	return s
}
