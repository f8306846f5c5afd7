package otel

import (
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Option configures NewObserver.
type Option func(*config)

type config struct {
	tp      trace.TracerProvider // nil: the global one
	mp      metric.MeterProvider // nil: the global one
	rawKeys bool
}

// Histogram bucket boundaries, in seconds, advised to the SDK (a View can
// override them). An uncontended acquire is one round trip (tens of µs on
// loopback, ~1ms across a zone); a contended one waits for a release or a
// lease (ms to s).
var (
	acquireBuckets = []float64{
		0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
		0.1, 0.25, 0.5, 1, 2.5, 5, 10,
	}
	// Holds cover the guarded work: a request, a job, a stream.
	holdBuckets = []float64{
		0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
		30, 60, 300, 900,
	}
)

// WithTracerProvider sets where spans go. Default: the global
// TracerProvider.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tp = tp }
}

// WithMeterProvider sets where metrics go. Default: the global
// MeterProvider.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) { c.mp = mp }
}

// WithRawKeys adds the caller's lock key to spans as lock.key. Keys often
// carry user data (ids, e-mail addresses), so it is off by default and
// spans carry only lock.key.hash. Metrics never carry the key.
func WithRawKeys() Option {
	return func(c *config) { c.rawKeys = true }
}
