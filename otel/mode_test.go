package otel_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

func modeAttrs(lockName, mode string, extra ...attribute.KeyValue) []attribute.KeyValue {
	return append([]attribute.KeyValue{attribute.String("lock.name", lockName), attribute.String("lock.backend", "redis"),
		attribute.String("lock.mode", mode)}, extra...)
}

func spanMode(t *testing.T, r *recorder, span string) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, s := range r.ended(span) {
		for _, kv := range s.Attributes() {
			if kv.Key == "lock.mode" {
				n[kv.Value.AsString()]++
			}
		}
	}
	return n
}

func TestObserver_lockModeAndPermitsUsed(t *testing.T) {
	srv := redistest.Start(t)
	rec := newRecorder(t)
	ctx := context.Background()
	var cs []*core.Client
	for range 2 {
		c := core.New(srv.Client(t), core.WithObserver(rec.obs))
		t.Cleanup(func() { _ = c.Close() })
		cs = append(cs, c)
	}

	// Two permits of one key from two Clients, a shared and an
	// exclusive hold of others.
	p1, err := cs[0].Acquire(ctx, "jobs", core.Permits(3), core.WithName("jobs"))
	if err != nil {
		t.Fatal(err)
	}
	p2, err := cs[1].Acquire(ctx, "jobs", core.Permits(3), core.WithName("jobs"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := cs[1].Acquire(ctx, "doc", core.Shared(), core.WithName("doc"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := cs[0].Acquire(ctx, "other", core.WithName("other"))
	if err != nil {
		t.Fatal(err)
	}
	ms := rec.metrics(t)
	if got := sum(t, ms, "lock.permits.used", modeAttrs("jobs", "permit")...); got != 2 {
		t.Fatalf("lock.permits.used = %d while 2 permits are held; want 2", got)
	}
	if got := sum(t, ms, "lock.held", modeAttrs("doc", "shared")...); got != 1 {
		t.Fatalf("lock.held{mode=shared} = %d; want 1", got)
	}
	if got := sum(t, ms, "lock.permits.used", modeAttrs("doc", "shared")...); got != 0 {
		t.Fatalf("a shared hold counted as a permit (%d)", got)
	}
	if m := ms["lock.permits.used"]; m.Unit != "{permit}" || m.Data.(metricdata.Sum[int64]).IsMonotonic {
		t.Fatalf("lock.permits.used: unit %q, monotonic %v; want {permit}, up-down", m.Unit, m.Data.(metricdata.Sum[int64]).IsMonotonic)
	}

	if err := p1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if got := sum(t, rec.metrics(t), "lock.permits.used", modeAttrs("jobs", "permit")...); got != 1 {
		t.Fatalf("lock.permits.used = %d after one release; want 1", got)
	}
	for _, l := range []*core.Lock{p2, r, w} {
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
	ms = rec.metrics(t)
	if got := sum(t, ms, "lock.permits.used", modeAttrs("jobs", "permit")...); got != 0 {
		t.Fatalf("lock.permits.used = %d after every release; want 0", got)
	}
	if got := hist(t, ms, "lock.acquire.duration", modeAttrs("jobs", "permit", attribute.String("lock.outcome", "acquired"))...).Count; got != 2 {
		t.Fatalf("lock.acquire.duration{mode=permit} count = %d; want 2", got)
	}
	want := map[string]int{"permit": 2, "shared": 1, "exclusive": 1}
	for _, span := range []string{"lock.acquire", "lock.hold"} {
		got := spanMode(t, rec, span)
		for m, n := range want {
			if got[m] != n {
				t.Errorf("%s spans by lock.mode = %v; want %v", span, got, want)
				break
			}
		}
	}
}

func TestObserver_permitsUsedDropsOnLoss(t *testing.T) {
	srv := redistest.Start(t)
	rec := newRecorder(t)
	c := core.New(srv.Client(t), core.WithObserver(rec.obs))
	t.Cleanup(func() { _ = c.Close() })
	ctx := context.Background()
	l, err := c.Acquire(ctx, "jobs", core.Permits(2), core.WithName("jobs"), core.WithTTL(time.Second), core.WithAutoRefresh())
	if err != nil {
		t.Fatal(err)
	}
	if got := sum(t, rec.metrics(t), "lock.permits.used", modeAttrs("jobs", "permit")...); got != 1 {
		t.Fatalf("lock.permits.used = %d; want 1", got)
	}
	// Drop every key behind the holder's back: the next renewal finds the
	// permit gone and the lock is lost.
	if err := srv.Client(t).FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("lock not lost within 5s of its permit being dropped")
	}
	// The observer hears of the loss just after Done closes.
	deadline := time.Now().Add(time.Second)
	for sum(t, rec.metrics(t), "lock.permits.used", modeAttrs("jobs", "permit")...) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("lock.permits.used still 1 a second after the loss; want 0")
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = l.Release(ctx)
}
