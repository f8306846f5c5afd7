package core

import (
	"context"
	"time"
)

// Observer receives the life of every lock a Client handles. Implementations
// must be fast and safe for concurrent use; they run on the caller's
// goroutine (Lost runs on a timer or watchdog goroutine). Embed NopObserver
// to implement only some hooks. Package otel turns these into spans and
// metrics; core itself depends on no telemetry library.
type Observer interface {
	// AcquireStart is called when Acquire or TryAcquire begins. The returned
	// context is used for the backend calls of that acquisition and is
	// passed to AcquireEnd (so a span can be its parent).
	AcquireStart(ctx context.Context, e AcquireStartEvent) context.Context
	// AcquireEnd is called once per AcquireStart. Its return value is kept
	// with the lock (when acquired) and handed back as Data in later events.
	AcquireEnd(ctx context.Context, e AcquireEndEvent) any
	// Released is called when a lock is released (or handed to a local
	// waiter).
	Released(ctx context.Context, e ReleaseEvent)
	// Refreshed is called after every renewal attempt, manual or by the
	// watchdog.
	Refreshed(ctx context.Context, e RefreshEvent)
	// Lost is called when a held lock ends without Release.
	Lost(e LostEvent)
}

// LockInfo identifies a lock in events.
type LockInfo struct {
	Key     string // the caller's key; may carry user data, record with care
	Name    string // low-cardinality name from WithName ("" when unset)
	Prefix  string
	Backend string
	Mode    Mode // exclusive, shared or permit
}

// AcquireStartEvent describes an acquisition that begins.
type AcquireStartEvent struct {
	LockInfo
	TTL  time.Duration
	Wait time.Duration // <0: until the context ends; 0: one attempt
}

// AcquireEndEvent describes how an acquisition ended.
type AcquireEndEvent struct {
	LockInfo
	Acquired  bool
	Err       error
	Fence     uint64
	Attempts  int           // backend attempts made by this caller
	Contended bool          // the lock was found held at least once
	Handoff   bool          // granted by a local hand-off
	Wait      time.Duration // time from start to end
}

// ReleaseEvent describes a release.
type ReleaseEvent struct {
	LockInfo
	Fence   uint64
	Held    time.Duration
	Handoff bool // the lock went straight to a local waiter
	Err     error
	Data    any
}

// RefreshEvent describes a renewal attempt.
type RefreshEvent struct {
	LockInfo
	Fence uint64
	Auto  bool // by the watchdog
	Err   error
	Data  any
}

// LostEvent describes a lock that ended without Release.
type LostEvent struct {
	LockInfo
	Fence uint64
	Held  time.Duration
	Cause error
	Data  any
}

// NopObserver does nothing; embed it to implement part of Observer.
type NopObserver struct{}

func (NopObserver) AcquireStart(ctx context.Context, _ AcquireStartEvent) context.Context {
	return ctx
}
func (NopObserver) AcquireEnd(context.Context, AcquireEndEvent) any { return nil }
func (NopObserver) Released(context.Context, ReleaseEvent)          {}
func (NopObserver) Refreshed(context.Context, RefreshEvent)         {}
func (NopObserver) Lost(LostEvent)                                  {}
