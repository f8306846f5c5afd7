package otel_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	lockotel "github.com/fencedlock/fencedlock/otel"
)

// Without options the observer records to the global providers.
func TestNewObserver_globalProviders(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	prevTP, prevMP := otel.GetTracerProvider(), otel.GetMeterProvider()
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	t.Cleanup(func() {
		otel.SetTracerProvider(prevTP)
		otel.SetMeterProvider(prevMP)
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})

	c := locktest.New(core.WithObserver(lockotel.NewObserver()))
	defer c.Close()
	l, err := c.Acquire(context.Background(), "k")
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Release(context.Background())

	if n := len(sr.Ended()); n != 2 {
		t.Errorf("%d spans on the global TracerProvider, want lock.acquire and lock.hold", n)
	}
	rec := &recorder{reader: reader}
	if ms := rec.metrics(t); len(ms) != 3 {
		t.Errorf("global MeterProvider got metrics %v, want acquire and hold durations, held", ms)
	}
}

// A MeterProvider that refuses every instrument.
type brokenMeterProvider struct{ metricnoop.MeterProvider }

func (brokenMeterProvider) Meter(string, ...metric.MeterOption) metric.Meter { return brokenMeter{} }

type brokenMeter struct{ metricnoop.Meter }

var errBroken = errors.New("no instruments today")

func (brokenMeter) Int64Counter(string, ...metric.Int64CounterOption) (metric.Int64Counter, error) {
	return nil, errBroken
}
func (brokenMeter) Int64UpDownCounter(string, ...metric.Int64UpDownCounterOption) (metric.Int64UpDownCounter, error) {
	return nil, errBroken
}
func (brokenMeter) Float64Histogram(string, ...metric.Float64HistogramOption) (metric.Float64Histogram, error) {
	return nil, errBroken
}

// Instrumentation never breaks the host: failed instruments are reported
// to otel.Handle, spans still work, and locks work.
func TestNewObserver_instrumentErrors(t *testing.T) {
	var mu sync.Mutex
	var handled []error
	prev := otel.GetErrorHandler()
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		mu.Lock()
		handled = append(handled, err)
		mu.Unlock()
	}))
	t.Cleanup(func() { otel.SetErrorHandler(prev) })

	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	defer tp.Shutdown(context.Background())
	obs := lockotel.NewObserver(lockotel.WithTracerProvider(tp), lockotel.WithMeterProvider(brokenMeterProvider{}))

	mu.Lock()
	n := len(handled)
	for _, err := range handled {
		if !errors.Is(err, errBroken) {
			t.Errorf("handled %v, want the provider's error", err)
		}
	}
	mu.Unlock()
	if n != 7 {
		t.Errorf("%d errors handled, want one per instrument (7)", n)
	}

	store := locktest.NewStore()
	c := store.Client(core.WithObserver(obs))
	defer c.Close()
	ctx := context.Background()
	l, err := c.Acquire(ctx, "k", core.WithAutoRefresh())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryAcquire(ctx, "k"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatal(err)
	}
	if err := l.Refresh(ctx, 0); err != nil {
		t.Fatal(err)
	}
	store.Expire(core.DefaultPrefix, "k")
	_ = l.Refresh(ctx, 0)
	if !errors.Is(l.Err(), core.ErrLost) {
		t.Fatalf("Err() = %v, want ErrLost", l.Err())
	}
	if n := len(sr.Ended()); n != 3 {
		t.Errorf("%d spans, want 3 with the broken meter", n)
	}
}
