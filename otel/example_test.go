package otel_test

import (
	"context"
	"fmt"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	lockotel "github.com/fencedlock/fencedlock/otel"
)

// Wire the observer into a Client; name locks after the route, not the key.
func ExampleNewObserver() {
	spans := tracetest.NewSpanRecorder() // in a service: the SDK with an exporter
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(context.Background())

	locker := locktest.New( // in a service: core.New(rdb, ...)
		core.WithObserver(lockotel.NewObserver(lockotel.WithTracerProvider(tp))),
	)
	defer locker.Close()

	ctx := context.Background()
	lock, _ := locker.Acquire(ctx, "coupon:42", core.WithName("coupon:{id}"))
	_, err := locker.TryAcquire(ctx, "coupon:42", core.WithName("coupon:{id}"))
	_ = lock.Release(ctx)
	fmt.Println("second acquire failed:", err != nil)

	for _, s := range spans.Ended() {
		fmt.Print(s.Name(), " ", s.Status().Code)
		for _, a := range s.Attributes() {
			if a.Key == "lock.name" || a.Key == "lock.outcome" {
				fmt.Print(" ", a.Key, "=", a.Value.String())
			}
		}
		fmt.Println()
	}
	// Output:
	// second acquire failed: true
	// lock.acquire Unset lock.name=coupon:{id} lock.outcome=acquired
	// lock.acquire Error lock.name=coupon:{id} lock.outcome=contended
	// lock.hold Unset lock.name=coupon:{id} lock.outcome=released
}
