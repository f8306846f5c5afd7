package otel

import (
	"context"
	"sync/atomic"
	"time"

	otelapi "go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"

	"github.com/fencedlock/fencedlock/core"
)

// Span names.
const (
	spanAcquire  = "lock.acquire"
	spanHold     = "lock.hold"
	eventRefresh = "refresh"
	eventLost    = "lost"
)

// NewObserver returns a core.Observer that records spans and metrics for
// every lock it sees. Install it on a Client (core.New(rdb,
// core.WithObserver(obs))) or per call. One observer serves any number of
// Clients and goroutines.
//
// It never fails: an instrument the MeterProvider refuses is reported to
// otel.Handle and replaced by a no-op one.
func NewObserver(opts ...Option) core.Observer {
	var c config
	for _, opt := range opts {
		opt(&c)
	}
	tp, mp := c.tp, c.mp
	if tp == nil {
		tp = otelapi.GetTracerProvider()
	}
	if mp == nil {
		mp = otelapi.GetMeterProvider()
	}
	o := &observer{
		tracer:  tp.Tracer(ScopeName, trace.WithInstrumentationVersion(Version)),
		rawKeys: c.rawKeys,
	}
	m := mp.Meter(ScopeName, metric.WithInstrumentationVersion(Version))
	var err error
	o.acquireDur, err = m.Float64Histogram("lock.acquire.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time to acquire a lock or give up, by outcome."),
		metric.WithExplicitBucketBoundaries(acquireBuckets...))
	o.acquireDur = orNoop[metric.Float64Histogram](o.acquireDur, err, metricnoop.Float64Histogram{})
	o.contention, err = m.Int64Counter("lock.contention",
		metric.WithUnit("{acquire}"),
		metric.WithDescription("Acquisitions that found the lock held at least once, by outcome."))
	o.contention = orNoop[metric.Int64Counter](o.contention, err, metricnoop.Int64Counter{})
	o.holdDur, err = m.Float64Histogram("lock.hold.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Time a lock was held, from grant to release or loss."),
		metric.WithExplicitBucketBoundaries(holdBuckets...))
	o.holdDur = orNoop[metric.Float64Histogram](o.holdDur, err, metricnoop.Float64Histogram{})
	o.held, err = m.Int64UpDownCounter("lock.held",
		metric.WithUnit("{lock}"),
		metric.WithDescription("Locks currently held."))
	o.held = orNoop[metric.Int64UpDownCounter](o.held, err, metricnoop.Int64UpDownCounter{})
	o.permits, err = m.Int64UpDownCounter("lock.permits.used",
		metric.WithUnit("{permit}"),
		metric.WithDescription("Permits currently held (core.Permits holds), per lock name."))
	o.permits = orNoop[metric.Int64UpDownCounter](o.permits, err, metricnoop.Int64UpDownCounter{})
	o.lost, err = m.Int64Counter("lock.lost",
		metric.WithUnit("{lock}"),
		metric.WithDescription("Locks that ended without Release: not renewed in time, taken over, or past their hold cap."))
	o.lost = orNoop[metric.Int64Counter](o.lost, err, metricnoop.Int64Counter{})
	o.refreshFail, err = m.Int64Counter("lock.refresh.failures",
		metric.WithUnit("{refresh}"),
		metric.WithDescription("Lease renewals that failed, by error.type."))
	o.refreshFail = orNoop[metric.Int64Counter](o.refreshFail, err, metricnoop.Int64Counter{})
	return o
}

// orNoop reports a failed instrument creation to otel.Handle and returns
// fallback (a no-op instrument) when the provider gave no instrument.
func orNoop[T any](inst T, err error, fallback T) T {
	if err != nil {
		otelapi.Handle(err)
	}
	if any(inst) == nil {
		return fallback
	}
	return inst
}

type observer struct {
	tracer  trace.Tracer
	rawKeys bool

	acquireDur  metric.Float64Histogram
	contention  metric.Int64Counter
	holdDur     metric.Float64Histogram
	held        metric.Int64UpDownCounter
	permits     metric.Int64UpDownCounter // lock.permits.used
	lost        metric.Int64Counter
	refreshFail metric.Int64Counter

	sets setCache
}

var _ core.Observer = (*observer)(nil)

// acquisition is what AcquireStart leaves in the context for AcquireEnd
// when lock.acquire is recorded.
type acquisition struct {
	span   trace.Span // lock.acquire
	parent trace.Span // the caller's span, parent of lock.hold
	ttl    time.Duration
	hash   string
	hold   hold // becomes the lock's Data when it is granted
}

type acquisitionKey struct{}

// hold is the observer's state for a held lock (core keeps it as Data).
type hold struct {
	span    trace.Span  // lock.hold, or a no-op span
	counted bool        // lock.held was incremented
	permit  bool        // lock.permits.used was incremented
	ended   atomic.Bool // core may report the end twice (Lost racing a hand-off)
}

var (
	internalKind = trace.WithSpanKind(trace.SpanKindInternal)
	noSpan       = trace.SpanFromContext(context.Background()) // no-op
)

func (o *observer) AcquireStart(ctx context.Context, e core.AcquireStartEvent) context.Context {
	parent := trace.SpanFromContext(ctx)
	// The name and backend are known to the sampler; the rest is added
	// only to spans that are recorded.
	ctx, span := o.tracer.Start(ctx, spanAcquire, internalKind,
		trace.WithAttributes(keyName.String(lockName(e.LockInfo)), keyBackend.String(e.Backend),
			keyMode.String(e.Mode.String())))
	if !span.IsRecording() {
		return ctx
	}
	a := &acquisition{span: span, parent: parent, ttl: e.TTL, hash: keyHash(e.Key)}
	attrs := [...]attribute.KeyValue{keyKeyHash.String(a.hash), keyTTL.Float64(e.TTL.Seconds()), keyKey.String(e.Key)}
	n := len(attrs) - 1
	if o.rawKeys {
		n++
	}
	span.SetAttributes(attrs[:n]...)
	return context.WithValue(ctx, acquisitionKey{}, a)
}

func (o *observer) AcquireEnd(ctx context.Context, e core.AcquireEndEvent) any {
	outcome := acquireOutcome(e)
	span := trace.SpanFromContext(ctx)
	if span.IsRecording() {
		attrs := [...]attribute.KeyValue{
			keyOutcome.String(outcome),
			keyAttempts.Int(e.Attempts),
			keyContended.Bool(e.Contended),
			keyHandoff.Bool(e.Handoff),
			keyWait.Float64(e.Wait.Seconds()),
			fenceAttr(e.Fence),
		}
		if e.Acquired {
			span.SetAttributes(attrs[:]...)
		} else {
			attrs[len(attrs)-1] = keyErrorType.String(outcome)
			span.SetAttributes(attrs[:]...)
			span.SetStatus(codes.Error, statusText(e.Err))
		}
	}
	span.End()

	name := lockName(e.LockInfo)
	if o.acquireDur.Enabled(ctx) || o.contention.Enabled(ctx) {
		set := o.sets.get(infoSet(name, e.LockInfo).with(keyOutcome, outcome))
		o.acquireDur.Record(ctx, e.Wait.Seconds(), metric.WithAttributeSet(set))
		if e.Contended {
			o.contention.Add(ctx, 1, metric.WithAttributeSet(set))
		}
	}
	if !e.Acquired {
		return nil
	}

	// lock.hold is recorded when lock.acquire was.
	a, _ := ctx.Value(acquisitionKey{}).(*acquisition)
	if a != nil && a.span.SpanContext().SpanID() != span.SpanContext().SpanID() {
		a = nil // not ours: an acquisition further up the context
	}
	counted := o.held.Enabled(ctx)
	permit := e.Mode == core.PermitMode && o.permits.Enabled(ctx)
	if a == nil && !counted && !permit && !o.holdDur.Enabled(ctx) && !o.lost.Enabled(ctx) {
		return nil // nothing to record about this hold
	}
	h := o.startHold(ctx, a, name, e)
	if counted {
		h.counted = true
		o.held.Add(ctx, 1, metric.WithAttributeSet(o.sets.get(infoSet(name, e.LockInfo))))
	}
	if permit {
		h.permit = true
		o.permits.Add(ctx, 1, metric.WithAttributeSet(o.sets.get(infoSet(name, e.LockInfo))))
	}
	return h
}

// startHold starts lock.hold as a sibling of lock.acquire when that was
// recorded (a != nil), else returns a hold with a no-op span.
func (o *observer) startHold(ctx context.Context, a *acquisition, name string, e core.AcquireEndEvent) *hold {
	if a == nil {
		return &hold{span: noSpan}
	}
	h := &a.hold
	attrs := [...]attribute.KeyValue{
		keyName.String(name), keyBackend.String(e.Backend), keyMode.String(e.Mode.String()), keyKeyHash.String(a.hash),
		fenceAttr(e.Fence), keyHandoff.Bool(e.Handoff), keyTTL.Float64(a.ttl.Seconds()),
		keyKey.String(e.Key),
	}
	n := len(attrs) - 1
	if o.rawKeys {
		n++
	}
	_, h.span = o.tracer.Start(trace.ContextWithSpan(ctx, a.parent), spanHold, internalKind,
		trace.WithAttributes(attrs[:n]...))
	return h
}

func (o *observer) Released(ctx context.Context, e core.ReleaseEvent) {
	o.end(ctx, holdEnd{data: e.Data, info: e.LockInfo, held: e.Held, outcome: holdOutcome(e), err: e.Err})
}

func (o *observer) Lost(e core.LostEvent) {
	o.end(context.Background(), holdEnd{data: e.Data, info: e.LockInfo, held: e.Held, outcome: holdLost, err: e.Cause})
}

// holdEnd is how a hold ended, as Released or Lost reports it.
type holdEnd struct {
	data    any // the *hold AcquireEnd returned
	info    core.LockInfo
	held    time.Duration
	outcome string
	err     error
}

// end closes a hold once, whichever of Released and Lost reports it.
func (o *observer) end(ctx context.Context, e holdEnd) {
	li, held, outcome, err := e.info, e.held, e.outcome, e.err
	h, _ := e.data.(*hold)
	if h == nil || !h.ended.CompareAndSwap(false, true) {
		return
	}
	name := lockName(li)
	if h.span.IsRecording() {
		h.span.SetAttributes(keyOutcome.String(outcome))
		if outcome == holdLost {
			h.span.AddEvent(eventLost, trace.WithAttributes(
				keyErrorType.String(lostCause(err)), keyCause.String(statusText(err))))
		}
		if err != nil {
			h.span.SetAttributes(keyErrorType.String(outcome))
			h.span.SetStatus(codes.Error, statusText(err))
		}
	}
	h.span.End()
	if outcome == holdLost && o.lost.Enabled(ctx) {
		o.lost.Add(ctx, 1, metric.WithAttributeSet(o.sets.get(infoSet(name, li))))
	}
	if o.holdDur.Enabled(ctx) {
		o.holdDur.Record(ctx, held.Seconds(), metric.WithAttributeSet(
			o.sets.get(infoSet(name, li).with(keyOutcome, outcome))))
	}
	if h.counted {
		o.held.Add(ctx, -1, metric.WithAttributeSet(o.sets.get(infoSet(name, li))))
	}
	if h.permit {
		o.permits.Add(ctx, -1, metric.WithAttributeSet(o.sets.get(infoSet(name, li))))
	}
}

func (o *observer) Refreshed(ctx context.Context, e core.RefreshEvent) {
	var class string
	if e.Err != nil {
		class = errorClass(e.Err)
		if o.refreshFail.Enabled(ctx) {
			o.refreshFail.Add(ctx, 1, metric.WithAttributeSet(o.sets.get(
				infoSet(lockName(e.LockInfo), e.LockInfo).with(keyErrorType, class))))
		}
	}
	// A renewal that found the lock gone is reported after Lost, which
	// ended the span; its failure is then on the "lost" event.
	h, _ := e.Data.(*hold)
	if h == nil || h.ended.Load() || !h.span.IsRecording() {
		return
	}
	if e.Err == nil {
		h.span.AddEvent(eventRefresh, trace.WithAttributes(keyAuto.Bool(e.Auto)))
		return
	}
	h.span.AddEvent(eventRefresh, trace.WithAttributes(keyAuto.Bool(e.Auto), keyErrorType.String(class)))
}

// statusText is the span status description of a failure. Core's messages
// never contain the key.
func statusText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
