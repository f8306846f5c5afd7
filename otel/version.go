package otel

// ScopeName is the instrumentation scope of the tracer and meter: this
// package's import path.
const ScopeName = "github.com/fencedlock/fencedlock/otel"

// Version is the instrumentation version reported with ScopeName.
const Version = "0.1.0"
