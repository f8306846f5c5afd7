package otel_test

import (
	"context"
	"testing"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/internal/redistest"
	lockotel "github.com/fencedlock/fencedlock/otel"
)

// The observer's cost per acquire + release, on the in-memory store so that
// the lock itself costs little and the telemetry shows:
//
//	go test -run '^$' -bench . -benchmem ./otel/
func BenchmarkObserver(b *testing.B) {
	for _, bc := range benchObservers() {
		b.Run(bc.name, func(b *testing.B) {
			c := locktest.New(core.WithObserver(bc.obs(b)), core.WithName("coupon:{id}"))
			defer c.Close()
			benchAcquireRelease(b, c)
		})
	}
}

// The same against a real redis-server, for scale: one acquire and one
// release are two round trips.
//
//	go test -run '^$' -bench ObserverRedis -benchmem ./otel/
func BenchmarkObserverRedis(b *testing.B) {
	srv := redistest.Start(b)
	for _, bc := range benchObservers() {
		if bc.name != "none" && bc.name != "sdk" {
			continue
		}
		b.Run(bc.name, func(b *testing.B) {
			c := core.New(srv.Client(b), core.WithObserver(bc.obs(b)), core.WithName("coupon:{id}"))
			defer c.Close()
			benchAcquireRelease(b, c)
		})
	}
}

func benchAcquireRelease(b *testing.B, c *core.Client) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		l, err := c.Acquire(ctx, "coupon:42")
		if err != nil {
			b.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

type benchObserver struct {
	name string
	obs  func(*testing.B) core.Observer
}

func benchObservers() []benchObserver {
	sdk := func(traces, metrics bool) func(b *testing.B) core.Observer {
		return func(b *testing.B) core.Observer {
			opts := []lockotel.Option{
				lockotel.WithTracerProvider(tracenoop.NewTracerProvider()),
				lockotel.WithMeterProvider(metricnoop.NewMeterProvider()),
			}
			if traces {
				// Every span sampled and exported (to nowhere) in batches.
				tp := sdktrace.NewTracerProvider(
					sdktrace.WithSampler(sdktrace.AlwaysSample()),
					sdktrace.WithBatcher(tracetest.NewNoopExporter()))
				b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
				opts = append(opts, lockotel.WithTracerProvider(tp))
			}
			if metrics {
				// Aggregated as a periodic or pull exporter would see them.
				mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				b.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
				opts = append(opts, lockotel.WithMeterProvider(mp))
			}
			return lockotel.NewObserver(opts...)
		}
	}
	return []benchObserver{
		{"none", func(*testing.B) core.Observer { return core.NopObserver{} }},
		{"noop", func(*testing.B) core.Observer {
			return lockotel.NewObserver(
				lockotel.WithTracerProvider(tracenoop.NewTracerProvider()),
				lockotel.WithMeterProvider(metricnoop.NewMeterProvider()))
		}},
		{"sdk-metrics", sdk(false, true)},
		{"sdk-traces", sdk(true, false)},
		{"sdk", sdk(true, true)},
	}
}
