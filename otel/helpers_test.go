package otel_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/internal/redistest"
	lockotel "github.com/fencedlock/fencedlock/otel"
)

// recorder is an SDK pipeline that keeps every span and lets the test
// collect metrics on demand.
type recorder struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
	obs    core.Observer
}

func newRecorder(t *testing.T, opts ...lockotel.Option) *recorder {
	t.Helper()
	r := &recorder{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	r.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	t.Cleanup(func() {
		_ = r.tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	opts = append([]lockotel.Option{lockotel.WithTracerProvider(r.tp), lockotel.WithMeterProvider(mp)}, opts...)
	r.obs = lockotel.NewObserver(opts...)
	return r
}

// request starts the span a server would have open around the lock.
func (r *recorder) request(ctx context.Context) (context.Context, trace.Span) {
	return r.tp.Tracer("test").Start(ctx, "request")
}

// ended returns the ended spans called name, in the order they ended.
func (r *recorder) ended(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// one returns the only ended span called name.
func (r *recorder) one(t *testing.T, name string) sdktrace.ReadOnlySpan {
	t.Helper()
	s := r.ended(name)
	if len(s) != 1 {
		t.Fatalf("%d ended %s spans, want 1", len(s), name)
	}
	return s[0]
}

// metrics collects and returns every metric of the lock scope by name.
func (r *recorder) metrics(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		want := instrumentation.Scope{Name: lockotel.ScopeName, Version: lockotel.Version}
		if sm.Scope != want {
			t.Errorf("scope %+v, want %+v", sm.Scope, want)
		}
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// sum returns the value of the point of an int64 sum with exactly attrs.
func sum(t *testing.T, ms map[string]metricdata.Metrics, name string, attrs ...attribute.KeyValue) int64 {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		return 0
	}
	data, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("%s: data %T, want Sum[int64]", name, m.Data)
	}
	want := attribute.NewSet(attrs...)
	for _, p := range data.DataPoints {
		if p.Attributes.Equals(&want) {
			return p.Value
		}
	}
	return 0
}

// hist returns the point of a float64 histogram with exactly attrs (Count
// 0 when there is none).
func hist(t *testing.T, ms map[string]metricdata.Metrics, name string, attrs ...attribute.KeyValue) metricdata.HistogramDataPoint[float64] {
	t.Helper()
	m, ok := ms[name]
	if !ok {
		return metricdata.HistogramDataPoint[float64]{}
	}
	data, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s: data %T, want Histogram[float64]", name, m.Data)
	}
	want := attribute.NewSet(attrs...)
	for _, p := range data.DataPoints {
		if p.Attributes.Equals(&want) {
			return p
		}
	}
	return metricdata.HistogramDataPoint[float64]{}
}

// points counts the data points of a metric, whatever their attributes.
func points(ms map[string]metricdata.Metrics, name string) int {
	switch d := ms[name].Data.(type) {
	case metricdata.Sum[int64]:
		return len(d.DataPoints)
	case metricdata.Histogram[float64]:
		return len(d.DataPoints)
	}
	return 0
}

// positive stands for a duration attribute: a float64 of seconds > 0.
type positive struct{}

// checkAttrs compares a span's attributes with want, exactly.
func checkAttrs(t *testing.T, what string, got []attribute.KeyValue, want map[string]any) {
	t.Helper()
	seen := map[string]bool{}
	for _, kv := range got {
		k := string(kv.Key)
		seen[k] = true
		w, ok := want[k]
		switch {
		case !ok:
			t.Errorf("%s: unexpected attribute %s=%v", what, k, kv.Value.String())
		case w == (positive{}):
			if f, isF := kv.Value.AsInterface().(float64); !isF || f <= 0 {
				t.Errorf("%s: %s=%v, want seconds > 0", what, k, kv.Value.String())
			}
		case kv.Value.AsInterface() != w:
			t.Errorf("%s: %s=%v (%T), want %v (%T)", what, k, kv.Value.AsInterface(), kv.Value.AsInterface(), w, w)
		}
	}
	var missing []string
	for k := range want {
		if !seen[k] {
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("%s: missing attributes %v", what, missing)
	}
}

// eventNames lists a span's events as "name{k=v,...}".
func eventNames(s sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, e := range s.Events() {
		var kv []string
		for _, a := range e.Attributes {
			kv = append(kv, fmt.Sprintf("%s=%s", a.Key, a.Value.String()))
		}
		out = append(out, e.Name+"{"+strings.Join(kv, ",")+"}")
	}
	return out
}

func hashOf(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

// noRawKey fails if key appears in any span attribute or event, or in any
// metric attribute.
func noRawKey(t *testing.T, r *recorder, key string) {
	t.Helper()
	for _, s := range r.spans.Ended() {
		for _, kv := range s.Attributes() {
			if strings.Contains(kv.Value.String(), key) {
				t.Errorf("span %s carries the raw key in %s", s.Name(), kv.Key)
			}
		}
		for _, e := range s.Events() {
			for _, kv := range e.Attributes {
				if strings.Contains(kv.Value.String(), key) {
					t.Errorf("span %s event %s carries the raw key in %s", s.Name(), e.Name, kv.Key)
				}
			}
		}
	}
	for name, m := range r.metrics(t) {
		var sets []attribute.Set
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, p := range d.DataPoints {
				sets = append(sets, p.Attributes)
			}
		case metricdata.Histogram[float64]:
			for _, p := range d.DataPoints {
				sets = append(sets, p.Attributes)
			}
		}
		for _, s := range sets {
			for _, kv := range s.ToSlice() {
				if strings.Contains(kv.Value.String(), key) {
					t.Errorf("metric %s carries the raw key in %s", name, kv.Key)
				}
			}
		}
	}
}

// env is one lock store the tests run against: real Redis, or the
// in-memory store of core/locktest.
type env struct {
	backend string // the lock.backend attribute
	// client returns a new Client on the shared store, as another process
	// would have; it is closed when the test ends.
	client func(t *testing.T, opts ...core.Option) *core.Client
	// tapped is client, whose backend also reports (without blocking) every
	// attempt that found the lock held.
	tapped func(t *testing.T, opts ...core.Option) (*core.Client, <-chan struct{})
	// expire drops a lease behind its holder's back.
	expire func(t *testing.T, prefix, key string)
	// down makes the store unreachable for the rest of the test.
	down func(t *testing.T)
}

// eachEnv runs f against real Redis (skipped when redis-server is not
// installed) and the in-memory store.
func eachEnv(t *testing.T, f func(t *testing.T, e *env)) {
	t.Run("redis", func(t *testing.T) {
		srv := redistest.Start(t)
		admin := srv.Client(t)
		newClient := func(t *testing.T, tap chan struct{}, opts []core.Option) *core.Client {
			// No retries: a killed server fails calls at once.
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, DialerRetries: 1})
			t.Cleanup(func() { _ = rdb.Close() })
			var b core.Backend = core.NewRedisBackend(rdb)
			if tap != nil {
				b = &tapBackend{Backend: b, held: tap}
			}
			c := core.NewWithBackend(b, opts...)
			t.Cleanup(func() { _ = c.Close() })
			return c
		}
		f(t, &env{
			backend: "redis",
			client:  func(t *testing.T, opts ...core.Option) *core.Client { return newClient(t, nil, opts) },
			tapped: func(t *testing.T, opts ...core.Option) (*core.Client, <-chan struct{}) {
				tap := make(chan struct{}, 1)
				return newClient(t, tap, opts), tap
			},
			expire: func(t *testing.T, prefix, key string) {
				// The lease ends and another holder comes and goes (its
				// fence moves the counter on): a loss, not a re-sent release.
				k := core.KeysFor(prefix, key)
				if n, err := admin.Del(context.Background(), k.Lock).Result(); err != nil || n != 1 {
					t.Fatalf("DEL lock key: %d, %v", n, err)
				}
				if err := admin.Incr(context.Background(), k.Fence).Err(); err != nil {
					t.Fatal(err)
				}
			},
			down: func(*testing.T) { srv.Kill() },
		})
	})
	t.Run("memory", func(t *testing.T) {
		store := locktest.NewStore()
		newClient := func(t *testing.T, tap chan struct{}, opts []core.Option) *core.Client {
			var c *core.Client
			if tap == nil {
				c = store.Client(opts...)
			} else {
				// The store's backend, reached through a throwaway Client
				// that starts nothing.
				c = core.NewWithBackend(&tapBackend{Backend: store.Client().Backend(), held: tap}, opts...)
			}
			t.Cleanup(func() { _ = c.Close() })
			return c
		}
		f(t, &env{
			backend: "memory",
			client:  func(t *testing.T, opts ...core.Option) *core.Client { return newClient(t, nil, opts) },
			tapped: func(t *testing.T, opts ...core.Option) (*core.Client, <-chan struct{}) {
				tap := make(chan struct{}, 1)
				return newClient(t, tap, opts), tap
			},
			expire: func(_ *testing.T, prefix, key string) { store.Expire(prefix, key) },
			down:   func(*testing.T) { store.SetDown(true) },
		})
	})
}

// tapBackend reports each attempt that found the lock held, so a test can
// release only once a waiter has really contended.
type tapBackend struct {
	core.Backend
	held chan struct{}
}

func (b *tapBackend) Acquire(ctx context.Context, h core.Hold, ttl time.Duration) (core.Grant, error) {
	g, err := b.Backend.Acquire(ctx, h, ttl)
	if err == nil && !g.Acquired {
		select {
		case b.held <- struct{}{}:
		default:
		}
	}
	return g, err
}

// signals wraps an observer and tells the test when hooks ran (after the
// wrapped observer is done with them).
type signals struct {
	core.Observer
	refreshed chan error
	lost      chan struct{}
}

func withSignals(o core.Observer) *signals {
	return &signals{Observer: o, refreshed: make(chan error, 1024), lost: make(chan struct{}, 16)}
}

func (s *signals) Refreshed(ctx context.Context, e core.RefreshEvent) {
	s.Observer.Refreshed(ctx, e)
	s.refreshed <- e.Err
}

func (s *signals) Lost(e core.LostEvent) {
	s.Observer.Lost(e)
	s.lost <- struct{}{}
}

func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}
