package otel_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/fencedlock/fencedlock/core"
	lockotel "github.com/fencedlock/fencedlock/otel"
)

const (
	name = "coupon:{id}"
	key  = "coupon:42"
)

func nameAttrs(backend string, extra ...attribute.KeyValue) []attribute.KeyValue {
	return append([]attribute.KeyValue{attribute.String("lock.name", name), attribute.String("lock.backend", backend),
		attribute.String("lock.mode", "exclusive")}, extra...)
}

func outcome(s string) attribute.KeyValue { return attribute.String("lock.outcome", s) }

func childOf(t *testing.T, s sdktrace.ReadOnlySpan, parent trace.Span) {
	t.Helper()
	if got, want := s.Parent().SpanID(), parent.SpanContext().SpanID(); got != want {
		t.Errorf("%s: parent %s, want the request span %s", s.Name(), got, want)
	}
	if s.SpanKind() != trace.SpanKindInternal {
		t.Errorf("%s: kind %v, want internal", s.Name(), s.SpanKind())
	}
}

func TestObserver_acquireRelease(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		rec := newRecorder(t)
		c := e.client(t, core.WithObserver(rec.obs), core.WithTTL(5*time.Second))
		ctx, req := rec.request(context.Background())
		l, err := c.Acquire(ctx, key, core.WithName(name))
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
		req.End()

		acq := rec.one(t, "lock.acquire")
		childOf(t, acq, req)
		checkAttrs(t, "lock.acquire", acq.Attributes(), map[string]any{
			"lock.name": name, "lock.backend": e.backend, "lock.mode": "exclusive", "lock.key.hash": hashOf(key),
			"lock.ttl": 5.0, "lock.outcome": "acquired", "lock.attempts": int64(1),
			"lock.contended": false, "lock.handoff": false, "lock.wait.duration": positive{},
			"lock.fence": int64(l.Fence()),
		})
		if acq.Status().Code != codes.Unset || len(acq.Events()) != 0 {
			t.Errorf("lock.acquire: status %v, events %v; want unset, none", acq.Status(), eventNames(acq))
		}

		hold := rec.one(t, "lock.hold")
		childOf(t, hold, req)
		checkAttrs(t, "lock.hold", hold.Attributes(), map[string]any{
			"lock.name": name, "lock.backend": e.backend, "lock.mode": "exclusive", "lock.key.hash": hashOf(key),
			"lock.ttl": 5.0, "lock.fence": int64(l.Fence()), "lock.handoff": false,
			"lock.outcome": "released",
		})
		if hold.Status().Code != codes.Unset || len(hold.Events()) != 0 {
			t.Errorf("lock.hold: status %v, events %v; want unset, none", hold.Status(), eventNames(hold))
		}
		if hold.StartTime().Before(acq.EndTime()) {
			t.Errorf("lock.hold starts before lock.acquire ends")
		}

		ms := rec.metrics(t)
		for _, m := range []struct {
			name, unit string
			data       any
		}{
			{"lock.acquire.duration", "s", metricdata.Histogram[float64]{}},
			{"lock.hold.duration", "s", metricdata.Histogram[float64]{}},
			{"lock.held", "{lock}", metricdata.Sum[int64]{}},
		} {
			got, ok := ms[m.name]
			if !ok {
				t.Errorf("metric %s missing", m.name)
				continue
			}
			if got.Unit != m.unit || got.Description == "" {
				t.Errorf("%s: unit %q, description %q; want unit %q and a description", m.name, got.Unit, got.Description, m.unit)
			}
		}
		if held := ms["lock.held"].Data.(metricdata.Sum[int64]); held.IsMonotonic {
			t.Error("lock.held is monotonic, want an up-down counter")
		}
		p := hist(t, ms, "lock.acquire.duration", nameAttrs(e.backend, outcome("acquired"))...)
		if p.Count != 1 || p.Sum <= 0 {
			t.Errorf("lock.acquire.duration{acquired}: count %d sum %v, want 1, > 0", p.Count, p.Sum)
		}
		wantBounds := []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}
		if !slices.Equal(p.Bounds, wantBounds) {
			t.Errorf("lock.acquire.duration bounds %v, want %v", p.Bounds, wantBounds)
		}
		if p := hist(t, ms, "lock.hold.duration", nameAttrs(e.backend, outcome("released"))...); p.Count != 1 || p.Bounds[0] != 0.001 {
			t.Errorf("lock.hold.duration{released}: count %d bounds %v, want 1 from 1ms", p.Count, p.Bounds)
		}
		if got := sum(t, ms, "lock.held", nameAttrs(e.backend)...); got != 0 {
			t.Errorf("lock.held = %d after release, want 0", got)
		}
		for _, m := range []string{"lock.contention", "lock.lost", "lock.refresh.failures"} {
			if n := points(ms, m); n != 0 {
				t.Errorf("%s has %d points, want none", m, n)
			}
		}
		noRawKey(t, rec, key)
	})
}

// Two processes want the same key: the second waits for a release notice
// and gets the next fence.
func TestObserver_Acquire_contended(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		rec := newRecorder(t)
		a := e.client(t, core.WithObserver(rec.obs))
		b, held := e.tapped(t, core.WithObserver(rec.obs))
		ctx := context.Background()
		la, err := a.Acquire(ctx, key, core.WithName(name))
		if err != nil {
			t.Fatal(err)
		}
		type result struct {
			l   *core.Lock
			err error
		}
		done := make(chan result, 1)
		go func() {
			ctx, req := rec.request(ctx)
			defer req.End()
			l, err := b.Acquire(ctx, key, core.WithName(name), core.WithWait(10*time.Second))
			done <- result{l, err}
		}()
		receive(t, held, "the waiter to find the lock held")
		if err := la.Release(ctx); err != nil {
			t.Fatal(err)
		}
		r := receive(t, done, "the waiter")
		if r.err != nil {
			t.Fatal(r.err)
		}
		if err := r.l.Release(ctx); err != nil {
			t.Fatal(err)
		}

		acqs := rec.ended("lock.acquire")
		if len(acqs) != 2 {
			t.Fatalf("%d lock.acquire spans, want 2", len(acqs))
		}
		waited := acqs[1]
		attrs := map[string]any{}
		for _, kv := range waited.Attributes() {
			attrs[string(kv.Key)] = kv.Value.AsInterface()
		}
		if attrs["lock.contended"] != true || attrs["lock.attempts"].(int64) < 2 ||
			attrs["lock.outcome"] != "acquired" || attrs["lock.fence"] != int64(la.Fence()+1) ||
			attrs["lock.handoff"] != false {
			t.Errorf("waiter's lock.acquire: %v; want contended, >= 2 attempts, acquired with fence %d", attrs, la.Fence()+1)
		}
		if waited.Status().Code != codes.Unset {
			t.Errorf("waiter's lock.acquire status %v, want unset", waited.Status())
		}
		if len(rec.ended("lock.hold")) != 2 {
			t.Errorf("%d lock.hold spans, want 2", len(rec.ended("lock.hold")))
		}

		ms := rec.metrics(t)
		if got := sum(t, ms, "lock.contention", nameAttrs(e.backend, outcome("acquired"))...); got != 1 {
			t.Errorf("lock.contention{acquired} = %d, want 1", got)
		}
		if m := ms["lock.contention"]; m.Unit != "{acquire}" || !m.Data.(metricdata.Sum[int64]).IsMonotonic {
			t.Errorf("lock.contention: unit %q, want a monotonic {acquire} counter", m.Unit)
		}
		if p := hist(t, ms, "lock.acquire.duration", nameAttrs(e.backend, outcome("acquired"))...); p.Count != 2 {
			t.Errorf("lock.acquire.duration{acquired} count %d, want 2", p.Count)
		}
		if p := hist(t, ms, "lock.hold.duration", nameAttrs(e.backend, outcome("released"))...); p.Count != 2 {
			t.Errorf("lock.hold.duration{released} count %d, want 2", p.Count)
		}
		if got := sum(t, ms, "lock.held", nameAttrs(e.backend)...); got != 0 {
			t.Errorf("lock.held = %d, want 0", got)
		}
	})
}

func TestObserver_TryAcquire_held(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		rec := newRecorder(t)
		a := e.client(t, core.WithObserver(rec.obs))
		b := e.client(t, core.WithObserver(rec.obs))
		ctx := context.Background()
		la, err := a.Acquire(ctx, key, core.WithName(name))
		if err != nil {
			t.Fatal(err)
		}
		defer la.Release(ctx)
		rctx, req := rec.request(ctx)
		_, err = b.TryAcquire(rctx, key, core.WithName(name))
		req.End()
		if !errors.Is(err, core.ErrNotAcquired) {
			t.Fatalf("TryAcquire: %v, want ErrNotAcquired", err)
		}

		failed := rec.ended("lock.acquire")[1]
		childOf(t, failed, req)
		checkAttrs(t, "failed lock.acquire", failed.Attributes(), map[string]any{
			"lock.name": name, "lock.backend": e.backend, "lock.mode": "exclusive", "lock.key.hash": hashOf(key),
			"lock.ttl": core.DefaultTTL.Seconds(), "lock.outcome": "contended", "lock.attempts": int64(1),
			"lock.contended": true, "lock.handoff": false, "lock.wait.duration": positive{},
			"error.type": "contended",
		})
		if st := failed.Status(); st.Code != codes.Error || st.Description != core.ErrNotAcquired.Error() {
			t.Errorf("status %v, want Error %q", st, core.ErrNotAcquired.Error())
		}
		if len(failed.Events()) != 0 {
			t.Errorf("events %v, want none (no RecordError)", eventNames(failed))
		}
		if n := len(rec.ended("lock.hold")); n != 0 {
			t.Errorf("%d ended lock.hold spans, want 0", n)
		}
		ms := rec.metrics(t)
		if got := sum(t, ms, "lock.contention", nameAttrs(e.backend, outcome("contended"))...); got != 1 {
			t.Errorf("lock.contention{contended} = %d, want 1", got)
		}
		if p := hist(t, ms, "lock.acquire.duration", nameAttrs(e.backend, outcome("contended"))...); p.Count != 1 {
			t.Errorf("lock.acquire.duration{contended} count %d, want 1", p.Count)
		}
		if got := sum(t, ms, "lock.held", nameAttrs(e.backend)...); got != 1 {
			t.Errorf("lock.held = %d while one lock is held, want 1", got)
		}
	})
}

// The watchdog renews the lease; the key is then deleted behind the holder's
// back, the next renewal finds it gone, and the lock is lost.
func TestObserver_Lost_keyDeleted(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		rec := newRecorder(t)
		sig := withSignals(rec.obs)
		c := e.client(t, core.WithObserver(sig))
		ctx := context.Background()
		l, err := c.Acquire(ctx, key, core.WithName(name), core.WithTTL(2*time.Second), core.WithAutoRefresh(20*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		if err := receive(t, sig.refreshed, "a renewal"); err != nil {
			t.Fatalf("first renewal: %v", err)
		}
		e.expire(t, core.DefaultPrefix, key)
		receive(t, sig.lost, "the loss")
		for receive(t, sig.refreshed, "the failed renewal") == nil {
		}
		if !errors.Is(l.Err(), core.ErrLost) {
			t.Fatalf("Err() = %v, want ErrLost", l.Err())
		}
		if err := l.Release(ctx); !errors.Is(err, core.ErrNotHeld) {
			t.Fatalf("Release after loss: %v, want ErrNotHeld", err)
		}

		hold := rec.one(t, "lock.hold")
		checkAttrs(t, "lost lock.hold", hold.Attributes(), map[string]any{
			"lock.name": name, "lock.backend": e.backend, "lock.mode": "exclusive", "lock.key.hash": hashOf(key),
			"lock.ttl": 2.0, "lock.fence": int64(l.Fence()), "lock.handoff": false,
			"lock.outcome": "lost", "error.type": "lost",
		})
		if st := hold.Status(); st.Code != codes.Error || !errors.Is(l.Err(), core.ErrLost) || st.Description != l.Err().Error() {
			t.Errorf("status %v, want Error %q", st, l.Err())
		}
		events := hold.Events()
		if len(events) < 2 {
			t.Fatalf("events %v, want refresh... then lost", eventNames(hold))
		}
		// Renewals that worked, then the one that found the token gone
		// (core reports it before the loss it reveals), then the loss.
		for _, ev := range events[:len(events)-2] {
			if ev.Name != "refresh" || len(ev.Attributes) != 1 || ev.Attributes[0] != attribute.Bool("lock.refresh.auto", true) {
				t.Errorf("event %s %v, want refresh{lock.refresh.auto=true}", ev.Name, ev.Attributes)
			}
		}
		if failed := events[len(events)-2]; failed.Name != "refresh" || !slices.Equal(failed.Attributes, []attribute.KeyValue{
			attribute.Bool("lock.refresh.auto", true), attribute.String("error.type", "not_held"),
		}) {
			t.Errorf("event %s %v, want refresh{lock.refresh.auto=true, error.type=not_held}", failed.Name, failed.Attributes)
		}
		lost := events[len(events)-1]
		if lost.Name != "lost" || !slices.Equal(lost.Attributes, []attribute.KeyValue{
			attribute.String("error.type", "expired"), attribute.String("lock.lost.cause", l.Err().Error()),
		}) {
			t.Errorf("last event %s %v, want lost{error.type=expired, lock.lost.cause}", lost.Name, lost.Attributes)
		}

		ms := rec.metrics(t)
		if got := sum(t, ms, "lock.lost", nameAttrs(e.backend)...); got != 1 || ms["lock.lost"].Unit != "{lock}" {
			t.Errorf("lock.lost = %d (unit %q), want 1 {lock}", got, ms["lock.lost"].Unit)
		}
		if got := sum(t, ms, "lock.refresh.failures", nameAttrs(e.backend, attribute.String("error.type", "not_held"))...); got != 1 || ms["lock.refresh.failures"].Unit != "{refresh}" {
			t.Errorf("lock.refresh.failures{not_held} = %d (unit %q), want 1 {refresh}", got, ms["lock.refresh.failures"].Unit)
		}
		if p := hist(t, ms, "lock.hold.duration", nameAttrs(e.backend, outcome("lost"))...); p.Count != 1 {
			t.Errorf("lock.hold.duration{lost} count %d, want 1", p.Count)
		}
		if got := sum(t, ms, "lock.held", nameAttrs(e.backend)...); got != 0 {
			t.Errorf("lock.held = %d after the loss, want 0", got)
		}
	})
}

// Without the watchdog the loss shows at Release, which core reports as a
// release that found the lease gone.
func TestObserver_Lost_atRelease(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		rec := newRecorder(t)
		c := e.client(t, core.WithObserver(rec.obs))
		ctx := context.Background()
		l, err := c.Acquire(ctx, key, core.WithName(name))
		if err != nil {
			t.Fatal(err)
		}
		e.expire(t, core.DefaultPrefix, key)
		rerr := l.Release(ctx)
		if !errors.Is(rerr, core.ErrLost) {
			t.Fatalf("Release: %v, want ErrLost", rerr)
		}
		hold := rec.one(t, "lock.hold")
		if got := eventNames(hold); len(got) != 1 || got[0] != "lost{error.type=expired,lock.lost.cause="+l.Err().Error()+"}" {
			t.Errorf("events %v, want one lost", got)
		}
		if hold.Status().Code != codes.Error {
			t.Errorf("status %v, want Error", hold.Status())
		}
		ms := rec.metrics(t)
		if got := sum(t, ms, "lock.lost", nameAttrs(e.backend)...); got != 1 {
			t.Errorf("lock.lost = %d, want 1", got)
		}
		if p := hist(t, ms, "lock.hold.duration", nameAttrs(e.backend, outcome("lost"))...); p.Count != 1 {
			t.Errorf("lock.hold.duration{lost} count %d, want 1", p.Count)
		}
	})
}

// The store goes away while a lock is held: a new acquire, a renewal and the
// release all fail.
func TestObserver_backendDown(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		rec := newRecorder(t)
		c := e.client(t, core.WithObserver(rec.obs), core.WithName(name))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		l, err := c.Acquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		e.down(t)
		if _, err := c.TryAcquire(ctx, "coupon:7"); !errors.Is(err, core.ErrUnavailable) {
			t.Fatalf("TryAcquire on a down store: %v, want ErrUnavailable", err)
		}
		if err := l.Refresh(ctx, 0); !errors.Is(err, core.ErrUnavailable) {
			t.Fatalf("Refresh on a down store: %v, want ErrUnavailable", err)
		}
		if err := l.Release(ctx); !errors.Is(err, core.ErrUnavailable) {
			t.Fatalf("Release on a down store: %v, want ErrUnavailable", err)
		}

		failed := rec.ended("lock.acquire")[1]
		checkAttrs(t, "lock.acquire on a down store", failed.Attributes(), map[string]any{
			"lock.name": name, "lock.backend": e.backend, "lock.mode": "exclusive", "lock.key.hash": hashOf("coupon:7"),
			"lock.ttl": core.DefaultTTL.Seconds(), "lock.outcome": "unavailable", "lock.attempts": int64(1),
			"lock.contended": false, "lock.handoff": false, "lock.wait.duration": positive{},
			"error.type": "unavailable",
		})
		if st := failed.Status(); st.Code != codes.Error || st.Description == "" {
			t.Errorf("status %v, want Error with a description", st)
		}
		hold := rec.one(t, "lock.hold")
		if got := eventNames(hold); !slices.Equal(got, []string{"refresh{lock.refresh.auto=false,error.type=unavailable}"}) {
			t.Errorf("lock.hold events %v, want one failed refresh", got)
		}
		a := map[attribute.Key]attribute.Value{}
		for _, kv := range hold.Attributes() {
			a[kv.Key] = kv.Value
		}
		if a["lock.outcome"].AsString() != "release_failed" || a["error.type"].AsString() != "release_failed" || hold.Status().Code != codes.Error {
			t.Errorf("lock.hold outcome %q error.type %q status %v, want release_failed and Error",
				a["lock.outcome"].AsString(), a["error.type"].AsString(), hold.Status())
		}

		ms := rec.metrics(t)
		if p := hist(t, ms, "lock.acquire.duration", nameAttrs(e.backend, outcome("unavailable"))...); p.Count != 1 {
			t.Errorf("lock.acquire.duration{unavailable} count %d, want 1", p.Count)
		}
		if got := sum(t, ms, "lock.refresh.failures", nameAttrs(e.backend, attribute.String("error.type", "unavailable"))...); got != 1 {
			t.Errorf("lock.refresh.failures{unavailable} = %d, want 1", got)
		}
		if p := hist(t, ms, "lock.hold.duration", nameAttrs(e.backend, outcome("release_failed"))...); p.Count != 1 {
			t.Errorf("lock.hold.duration{release_failed} count %d, want 1", p.Count)
		}
		if got := sum(t, ms, "lock.held", nameAttrs(e.backend)...); got != 0 {
			t.Errorf("lock.held = %d, want 0", got)
		}
		if n := points(ms, "lock.contention"); n != 0 {
			t.Errorf("lock.contention has %d points, want none", n)
		}
	})
}

// A waiter whose context ends gives up with canceled or deadline_exceeded.
func TestObserver_Acquire_contextEnds(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		rec := newRecorder(t)
		a := e.client(t, core.WithObserver(rec.obs), core.WithName(name))
		b, held := e.tapped(t, core.WithObserver(rec.obs), core.WithName(name))
		ctx := context.Background()
		la, err := a.Acquire(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		defer la.Release(ctx)

		cctx, cancel := context.WithCancel(ctx)
		errc := make(chan error, 1)
		go func() {
			_, err := b.Acquire(cctx, key)
			errc <- err
		}()
		receive(t, held, "the waiter to find the lock held")
		cancel()
		if err := receive(t, errc, "the cancelled waiter"); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled Acquire: %v", err)
		}
		dctx, dcancel := context.WithTimeout(ctx, 30*time.Millisecond)
		defer dcancel()
		if _, err := b.Acquire(dctx, key); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Acquire past its deadline: %v", err)
		}

		acqs := rec.ended("lock.acquire")
		for i, want := range []string{"canceled", "deadline_exceeded"} {
			s := acqs[i+1]
			a := map[attribute.Key]attribute.Value{}
			for _, kv := range s.Attributes() {
				a[kv.Key] = kv.Value
			}
			if a["lock.outcome"].AsString() != want || a["error.type"].AsString() != want ||
				!a["lock.contended"].AsBool() || s.Status().Code != codes.Error {
				t.Errorf("acquire %d: outcome %q error.type %q contended %v status %v; want %s, contended, Error",
					i, a["lock.outcome"].AsString(), a["error.type"].AsString(), a["lock.contended"].AsBool(), s.Status(), want)
			}
		}
		ms := rec.metrics(t)
		for _, want := range []string{"canceled", "deadline_exceeded"} {
			if got := sum(t, ms, "lock.contention", nameAttrs(e.backend, outcome(want))...); got != 1 {
				t.Errorf("lock.contention{%s} = %d, want 1", want, got)
			}
			if p := hist(t, ms, "lock.acquire.duration", nameAttrs(e.backend, outcome(want))...); p.Count != 1 {
				t.Errorf("lock.acquire.duration{%s} count %d, want 1", want, p.Count)
			}
		}
	})
}

// A release with a local waiter hands the lock over in one round trip.
func TestObserver_Release_handoff(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		// Whether the waiter is queued before the release is up to the
		// scheduler: try until it is (almost always the first time).
		for try := 1; ; try++ {
			rec := newRecorder(t)
			c := e.client(t, core.WithObserver(rec.obs), core.WithName(name))
			ctx := context.Background()
			first, err := c.Acquire(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			got := make(chan *core.Lock, 1)
			go func() {
				l, err := c.Acquire(ctx, key, core.WithWait(10*time.Second))
				if err != nil {
					t.Error(err)
				}
				got <- l
			}()
			time.Sleep(time.Duration(try) * 5 * time.Millisecond)
			if err := first.Release(ctx); err != nil {
				t.Fatal(err)
			}
			second := receive(t, got, "the waiter")
			if second == nil {
				return
			}
			if err := second.Release(ctx); err != nil {
				t.Fatal(err)
			}
			holds := rec.ended("lock.hold")
			a := map[attribute.Key]attribute.Value{}
			for _, kv := range holds[0].Attributes() {
				a[kv.Key] = kv.Value
			}
			if a["lock.outcome"].AsString() != "handoff" {
				if try == 20 {
					t.Fatalf("no hand-off in %d tries", try)
				}
				continue
			}
			w := map[attribute.Key]attribute.Value{}
			for _, kv := range rec.ended("lock.acquire")[1].Attributes() {
				w[kv.Key] = kv.Value
			}
			if !w["lock.handoff"].AsBool() || !w["lock.contended"].AsBool() || w["lock.outcome"].AsString() != "acquired" ||
				w["lock.fence"].AsInt64() != int64(second.Fence()) || second.Fence() <= first.Fence() {
				t.Errorf("waiter's lock.acquire %v, want handoff, contended, acquired, fence %d", w, second.Fence())
			}
			h := map[attribute.Key]attribute.Value{}
			for _, kv := range holds[1].Attributes() {
				h[kv.Key] = kv.Value
			}
			if !h["lock.handoff"].AsBool() || h["lock.outcome"].AsString() != "released" {
				t.Errorf("second lock.hold %v, want handoff=true, released", h)
			}
			ms := rec.metrics(t)
			if p := hist(t, ms, "lock.hold.duration", nameAttrs(e.backend, outcome("handoff"))...); p.Count != 1 {
				t.Errorf("lock.hold.duration{handoff} count %d, want 1", p.Count)
			}
			if got := sum(t, ms, "lock.held", nameAttrs(e.backend)...); got != 0 {
				t.Errorf("lock.held = %d, want 0", got)
			}
			return
		}
	})
}

// Many goroutines in two processes fight over one key: every acquisition
// and hold is accounted for once.
func TestObserver_concurrent(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		rec := newRecorder(t)
		clients := []*core.Client{
			e.client(t, core.WithObserver(rec.obs), core.WithName(name)),
			e.client(t, core.WithObserver(rec.obs), core.WithName(name)),
		}
		const workers, rounds = 8, 10
		ctx := context.Background()
		var wg sync.WaitGroup
		for w := range workers {
			wg.Go(func() {
				c := clients[w%len(clients)]
				for range rounds {
					l, err := c.Acquire(ctx, key, core.WithWait(20*time.Second))
					if err != nil {
						t.Error(err)
						return
					}
					time.Sleep(100 * time.Microsecond) // overlap with the others
					if err := l.Release(ctx); err != nil {
						t.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()

		const n = workers * rounds
		acqs, holds := rec.ended("lock.acquire"), rec.ended("lock.hold")
		if len(acqs) != n || len(holds) != n {
			t.Fatalf("%d lock.acquire and %d lock.hold spans, want %d each", len(acqs), len(holds), n)
		}
		fences := map[int64]bool{}
		for _, s := range holds {
			for _, kv := range s.Attributes() {
				if kv.Key == "lock.fence" {
					fences[kv.Value.AsInt64()] = true
				}
			}
		}
		if len(fences) != n {
			t.Errorf("%d distinct fences on %d holds", len(fences), n)
		}
		ms := rec.metrics(t)
		if p := hist(t, ms, "lock.acquire.duration", nameAttrs(e.backend, outcome("acquired"))...); p.Count != n {
			t.Errorf("lock.acquire.duration{acquired} count %d, want %d", p.Count, n)
		}
		released := hist(t, ms, "lock.hold.duration", nameAttrs(e.backend, outcome("released"))...).Count
		handoff := hist(t, ms, "lock.hold.duration", nameAttrs(e.backend, outcome("handoff"))...).Count
		if released+handoff != n {
			t.Errorf("lock.hold.duration: %d released + %d handoff, want %d", released, handoff, n)
		}
		contended := 0
		for _, s := range acqs {
			for _, kv := range s.Attributes() {
				if kv.Key == "lock.contended" && kv.Value.AsBool() {
					contended++
				}
			}
		}
		if c := sum(t, ms, "lock.contention", nameAttrs(e.backend, outcome("acquired"))...); c != int64(contended) {
			t.Errorf("lock.contention{acquired} = %d, but %d spans say contended", c, contended)
		}
		if got := sum(t, ms, "lock.held", nameAttrs(e.backend)...); got != 0 {
			t.Errorf("lock.held = %d, want 0", got)
		}
	})
}

func TestObserver_Acquire_invalidKeyAndClosed(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		rec := newRecorder(t)
		c := e.client(t, core.WithObserver(rec.obs), core.WithName(name))
		ctx := context.Background()
		if _, err := c.Acquire(ctx, ""); !errors.Is(err, core.ErrInvalidKey) {
			t.Fatalf("Acquire(\"\"): %v", err)
		}
		_ = c.Close()
		if _, err := c.Acquire(ctx, key); !errors.Is(err, core.ErrClosed) {
			t.Fatalf("Acquire after Close: %v", err)
		}
		for i, want := range []string{"invalid_key", "closed"} {
			s := rec.ended("lock.acquire")[i]
			a := map[attribute.Key]attribute.Value{}
			for _, kv := range s.Attributes() {
				a[kv.Key] = kv.Value
			}
			if a["lock.outcome"].AsString() != want || a["error.type"].AsString() != want ||
				a["lock.attempts"].AsInt64() != 0 || s.Status().Code != codes.Error {
				t.Errorf("outcome %q error.type %q attempts %d status %v; want %s, 0 attempts, Error",
					a["lock.outcome"].AsString(), a["error.type"].AsString(), a["lock.attempts"].AsInt64(), s.Status(), want)
			}
		}
		ms := rec.metrics(t)
		for _, want := range []string{"invalid_key", "closed"} {
			if p := hist(t, ms, "lock.acquire.duration", nameAttrs(e.backend, outcome(want))...); p.Count != 1 {
				t.Errorf("lock.acquire.duration{%s} count %d, want 1", want, p.Count)
			}
		}
	})
}

func TestWithRawKeys(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		for _, raw := range []bool{false, true} {
			var opts []lockotel.Option
			if raw {
				opts = append(opts, lockotel.WithRawKeys())
			}
			rec := newRecorder(t, opts...)
			// No WithName: the prefix names the lock.
			c := e.client(t, core.WithObserver(rec.obs), core.WithPrefix("shop:"))
			l, err := c.Acquire(context.Background(), key)
			if err != nil {
				t.Fatal(err)
			}
			_ = l.Release(context.Background())
			for _, s := range append(rec.ended("lock.acquire"), rec.ended("lock.hold")...) {
				a := map[attribute.Key]attribute.Value{}
				for _, kv := range s.Attributes() {
					a[kv.Key] = kv.Value
				}
				if a["lock.name"].AsString() != "shop:" || a["lock.key.hash"].AsString() != hashOf(key) {
					t.Errorf("raw=%v %s: lock.name %q hash %q, want the prefix and the hash", raw, s.Name(), a["lock.name"].AsString(), a["lock.key.hash"].AsString())
				}
				if v, ok := a["lock.key"]; ok != raw || (raw && v.AsString() != key) {
					t.Errorf("raw=%v %s: lock.key %q present %v", raw, s.Name(), v.AsString(), ok)
				}
			}
			ms := rec.metrics(t)
			shop := []attribute.KeyValue{attribute.String("lock.name", "shop:"), attribute.String("lock.backend", e.backend),
				attribute.String("lock.mode", "exclusive"), outcome("acquired")}
			if p := hist(t, ms, "lock.acquire.duration", shop...); p.Count != 1 {
				t.Errorf("raw=%v: lock.acquire.duration{lock.name=shop:} count %d, want 1", raw, p.Count)
			}
			if !raw {
				noRawKey(t, rec, key)
			}
		}
	})
}
