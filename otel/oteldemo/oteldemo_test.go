package oteldemo_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/otel/oteldemo"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestSetup_stdout(t *testing.T) {
	var buf bytes.Buffer
	tel, err := oteldemo.Setup(oteldemo.ModeStdout, &buf)
	if err != nil {
		t.Fatal(err)
	}
	c := locktest.New(core.WithObserver(tel.Observer()), core.WithName("coupon:{id}"))
	ctx, req := tel.TracerProvider.Tracer("test").Start(context.Background(), "POST /coupons/{id}")
	l, err := c.Acquire(ctx, "coupon:42")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.TryAcquire(ctx, "coupon:42"); !errors.Is(err, core.ErrNotAcquired) {
		t.Fatalf("TryAcquire: %v", err)
	}
	_ = l.Release(ctx)
	req.End()
	_ = c.Close()
	if err := tel.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Spans print as they end, then the metrics at Shutdown: a stream of
	// JSON documents.
	var spans, metrics []string
	dec := json.NewDecoder(&buf)
	for dec.More() {
		var doc struct {
			Name         string
			ScopeMetrics []struct {
				Metrics []struct{ Name string }
			}
		}
		if err := dec.Decode(&doc); err != nil {
			t.Fatalf("output is not a JSON stream: %v", err)
		}
		if doc.Name != "" {
			spans = append(spans, doc.Name)
		}
		for _, sm := range doc.ScopeMetrics {
			for _, m := range sm.Metrics {
				metrics = append(metrics, m.Name)
			}
		}
	}
	if got := strings.Join(spans, ","); got != "lock.acquire,lock.acquire,lock.hold,POST /coupons/{id}" {
		t.Errorf("spans printed: %s", got)
	}
	if got := strings.Join(metrics, ","); got != "lock.acquire.duration,lock.contention,lock.hold.duration,lock.held" {
		t.Errorf("metrics printed: %s", got)
	}
	if strings.Contains(buf.String(), "coupon:42") {
		t.Error("the raw key was printed")
	}
}

func TestSetup_off(t *testing.T) {
	for _, mode := range []string{"", oteldemo.ModeOff} {
		var buf bytes.Buffer
		tel, err := oteldemo.Setup(mode, &buf)
		if err != nil {
			t.Fatal(err)
		}
		c := locktest.New(core.WithObserver(tel.Observer()))
		l, err := c.Acquire(context.Background(), "k")
		if err != nil {
			t.Fatal(err)
		}
		_ = l.Release(context.Background())
		_ = c.Close()
		if err := tel.Shutdown(context.Background()); err != nil || buf.Len() != 0 {
			t.Errorf("mode %q: Shutdown %v, printed %q; want nothing", mode, err, buf.String())
		}
	}
}

func TestSetup_unknownMode(t *testing.T) {
	if _, err := oteldemo.Setup("jaeger", nil); err == nil || !strings.HasPrefix(err.Error(), "oteldemo: ") {
		t.Fatalf("Setup(jaeger) = %v, want an oteldemo error", err)
	}
}
