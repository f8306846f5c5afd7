// Package oteldemo prints fencedlock's telemetry with the OpenTelemetry
// SDK's stdout exporters, for the programs under examples/ and for local
// debugging. Services wire their own SDK and exporters instead; package
// otel itself depends on the OpenTelemetry API only, and this package is
// where the SDK comes in.
//
// An example program's -otel flag:
//
//	mode := flag.String("otel", "off", "telemetry: off or stdout")
//	flag.Parse()
//	tel, err := oteldemo.Setup(*mode, os.Stdout)
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer tel.Shutdown(context.Background()) // prints the metrics
//	locker := core.New(rdb, core.WithObserver(tel.Observer()))
//
// Spans are printed as they end, as indented JSON; metrics are printed by
// Shutdown (and every minute in a long-running program).
package oteldemo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	stdoutmetric "go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	stdouttrace "go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/fencedlock/fencedlock/core"
	lockotel "github.com/fencedlock/fencedlock/otel"
)

// Modes accepted by Setup.
const (
	ModeOff    = "off"
	ModeStdout = "stdout"
)

// Providers holds the tracer and meter providers of a demo program. Use
// them for the program's own spans (a request span around Acquire) so the
// lock spans nest below it.
type Providers struct {
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider

	shutdown func(context.Context) error
}

// Setup returns providers for the value of an -otel flag: "stdout" prints
// to w (see Stdout); "off" or "" records nothing.
func Setup(mode string, w io.Writer) (*Providers, error) {
	switch mode {
	case ModeStdout:
		return Stdout(w)
	case ModeOff, "":
		return &Providers{
			TracerProvider: tracenoop.NewTracerProvider(),
			MeterProvider:  metricnoop.NewMeterProvider(),
			shutdown:       func(context.Context) error { return nil },
		}, nil
	}
	return nil, fmt.Errorf("oteldemo: unknown telemetry mode %q (want %q or %q)", mode, ModeOff, ModeStdout)
}

// Stdout returns SDK providers that print to w: every span when it ends,
// every sampled, as indented JSON; the metrics when Shutdown is called and
// once a minute before. Writes are serialised, so w need not be safe for
// concurrent use. The resource is the SDK's default (OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES apply).
func Stdout(w io.Writer) (*Providers, error) {
	w = &lockedWriter{w: w}
	te, err := stdouttrace.New(stdouttrace.WithWriter(w), stdouttrace.WithPrettyPrint())
	if err != nil {
		return nil, fmt.Errorf("oteldemo: %w", err)
	}
	me, err := stdoutmetric.New(stdoutmetric.WithWriter(w), stdoutmetric.WithPrettyPrint())
	if err != nil {
		return nil, fmt.Errorf("oteldemo: %w", err)
	}
	res := resource.Default()
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithSyncer(te), // print in program order, no batching delay
	)
	mp := sdkmetric.NewMeterProvider(
		sdkmetric.WithResource(res),
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(me)),
	)
	return &Providers{
		TracerProvider: tp,
		MeterProvider:  mp,
		shutdown: func(ctx context.Context) error {
			return errors.Join(tp.Shutdown(ctx), mp.Shutdown(ctx))
		},
	}, nil
}

// Observer returns a lock observer (package otel) recording to p.
func (p *Providers) Observer(opts ...lockotel.Option) core.Observer {
	opts = append([]lockotel.Option{
		lockotel.WithTracerProvider(p.TracerProvider),
		lockotel.WithMeterProvider(p.MeterProvider),
	}, opts...)
	return lockotel.NewObserver(opts...)
}

// Shutdown prints what is still buffered (the metrics) and stops the
// providers. Call it once, before the program exits.
func (p *Providers) Shutdown(ctx context.Context) error { return p.shutdown(ctx) }

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(b)
}
