// Package otel turns fencedlock's lock events into OpenTelemetry spans and
// metrics. It implements core.Observer with the OpenTelemetry API only; the
// SDK, exporters and sampling are the application's choice.
//
// The package is named after its folder, so it clashes with
// go.opentelemetry.io/otel. Import it as lockotel:
//
//	import (
//		"go.opentelemetry.io/otel"
//		lockotel "github.com/fencedlock/fencedlock/otel"
//	)
//
//	locker := core.New(rdb, core.WithObserver(lockotel.NewObserver()))
//	lock, err := locker.Acquire(ctx, "coupon:"+id, core.WithName("coupon:{id}"))
//
// Without WithTracerProvider / WithMeterProvider the observer uses the
// global providers (otel.SetTracerProvider, otel.SetMeterProvider). Create
// it after the SDK is installed; one made earlier follows the first
// provider installed, as everything obtained from the globals does.
//
// # Spans
//
// lock.acquire is a child of the span in the context given to Acquire or
// TryAcquire; the backend's own spans (a Redis instrumentation) nest below
// it. It ends when the acquisition ends; a lock that is not acquired sets
// the status to Error with error.type equal to lock.outcome (contended,
// canceled, deadline_exceeded, unavailable, quorum, invalid_key, closed,
// error), without an exception event. lock.hold is its sibling, recorded
// when lock.acquire is: it starts when the lock is granted and ends at
// Release or loss, with a "refresh" event per renewal (error.type set when
// it failed) and a "lost" event when the lock ends without Release.
//
// # Keys
//
// Lock keys may carry user data ("coupon:42", an e-mail address). They are
// never put on metrics. Spans carry lock.key.hash, the first 8 bytes of the
// key's SHA-256 in hex, so the spans of one key can be correlated; the raw
// key is added as lock.key only with WithRawKeys. A hash of a key from a
// small space (a numeric id) can be reversed by trying every value: it
// hides data from casual readers, it is not encryption. lock.name is the
// low-cardinality name from core.WithName (adapters pass the route template
// or RPC method); without one it is the key prefix (core.WithPrefix).
//
// # Metrics
//
//	lock.acquire.duration  histogram  s         lock.name, lock.backend, lock.mode, lock.outcome
//	lock.contention        counter    {acquire} lock.name, lock.backend, lock.mode, lock.outcome
//	lock.hold.duration     histogram  s         lock.name, lock.backend, lock.mode, lock.outcome
//	lock.held              updown     {lock}    lock.name, lock.backend, lock.mode
//	lock.permits.used      updown     {permit}  lock.name, lock.backend, lock.mode
//	lock.lost              counter    {lock}    lock.name, lock.backend, lock.mode
//	lock.refresh.failures  counter    {refresh} lock.name, lock.backend, lock.mode, error.type
//
// lock.mode is the kind of hold (core.Mode): exclusive, shared (core.Shared,
// a reader) or permit (core.Permits, one of n); lock.acquire and lock.hold
// carry it too. lock.permits.used counts the permit holds in place: up
// when one is granted, down at its release or loss; compare it with the
// limit's n to see how full a concurrency limit runs. Every shared hold and
// every permit is a lock of its own, so lock.held counts each one.
//
// lock.contention counts acquisitions that found the lock held at least
// once, whether they then got it (outcome acquired) or gave up. The outcome
// of a hold is released, handoff, lost or release_failed.
//
// Instrumentation never breaks the host: an instrument that cannot be
// created is reported to otel.Handle and replaced by a no-op one.
package otel
