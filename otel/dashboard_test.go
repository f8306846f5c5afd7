package otel_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/fencedlock/fencedlock/core"
	lockotel "github.com/fencedlock/fencedlock/otel"
)

// exportedNames drives every instrument of the observer through the real
// OpenTelemetry Prometheus exporter and returns the series names and label
// names it exposes.
func exportedNames(t *testing.T) (metrics, labels map[string]bool) {
	t.Helper()
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg), otelprom.WithoutScopeInfo(), otelprom.WithoutTargetInfo())
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	defer mp.Shutdown(context.Background())
	obs := lockotel.NewObserver(lockotel.WithMeterProvider(mp))
	ctx := context.Background()
	info := core.LockInfo{Key: "k", Name: "POST /x", Prefix: "lock:", Backend: "redis"}
	actx := obs.AcquireStart(ctx, core.AcquireStartEvent{LockInfo: info, TTL: time.Second})
	data := obs.AcquireEnd(actx, core.AcquireEndEvent{LockInfo: info, Acquired: true, Fence: 1, Contended: true, Wait: time.Millisecond})
	obs.Refreshed(ctx, core.RefreshEvent{LockInfo: info, Fence: 1, Auto: true, Err: core.ErrUnavailable, Data: data})
	obs.Released(ctx, core.ReleaseEvent{LockInfo: info, Fence: 1, Held: time.Millisecond, Data: data})
	actx = obs.AcquireStart(ctx, core.AcquireStartEvent{LockInfo: info, TTL: time.Second})
	data = obs.AcquireEnd(actx, core.AcquireEndEvent{LockInfo: info, Acquired: true, Fence: 2})
	obs.Lost(core.LostEvent{LockInfo: info, Fence: 2, Held: time.Second, Cause: errors.Join(core.ErrLost, core.ErrLeaseExpired), Data: data})

	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	metrics, labels = map[string]bool{}, map[string]bool{}
	for _, f := range fams {
		name := f.GetName()
		if f.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				metrics[name+s] = true
			}
		} else {
			metrics[name] = true
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = true
			}
		}
	}
	return metrics, labels
}

var (
	seriesRe = regexp.MustCompile(`\b(lock_[a-zA-Z0-9_]*)`)
	stripRe  = regexp.MustCompile(`\{[^}]*\}|\bby\s*\([^)]*\)|,\s*lock_[a-z_]+\)`)
	labelRe  = regexp.MustCompile(`\b([a-z_]+)\s*(=~|!=|!~|=)\s*"`)
	byRe     = regexp.MustCompile(`\bby\s*\(([^)]*)\)`)
)

// dashboardQueries returns every PromQL expression in the dashboard.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../docs/dashboards/fencedlock.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Query any `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard is not valid JSON: %v", err)
	}
	var q []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			q = append(q, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if s, ok := v.Query.(string); ok && strings.Contains(s, "label_values") {
			q = append(q, s)
		}
	}
	return q
}

// Every series and label the dashboard queries is one the otel package
// records, as the Prometheus exporter names it, and every instrument has a
// panel.
func TestDashboard_queriesOnlyRecordedMetrics(t *testing.T) {
	metrics, labels := exportedNames(t)
	used := map[string]bool{}
	for _, q := range dashboardQueries(t) {
		// Series names: what is left after label matchers, by (...) and
		// label_values' label argument are cut out.
		for _, m := range seriesRe.FindAllStringSubmatch(stripRe.ReplaceAllString(q, " "), -1) {
			name := m[1]
			used[name] = true
			if !metrics[name] {
				t.Errorf("dashboard queries %s, which otel does not export (exported: %v)", name, keys(metrics))
			}
		}
		var ls []string
		for _, m := range labelRe.FindAllStringSubmatch(q, -1) {
			ls = append(ls, m[1])
		}
		for _, m := range byRe.FindAllStringSubmatch(q, -1) {
			for _, l := range strings.Split(m[1], ",") {
				ls = append(ls, strings.TrimSpace(l))
			}
		}
		for _, l := range ls {
			if l != "le" && !labels[l] {
				t.Errorf("dashboard uses label %s, which otel does not export (exported: %v)", l, keys(labels))
			}
		}
	}
	for _, base := range []string{"lock_acquire_duration_seconds_bucket", "lock_contention_total", "lock_hold_duration_seconds_bucket",
		"lock_held", "lock_lost_total", "lock_refresh_failures_total"} {
		if !metrics[base] {
			t.Errorf("otel no longer exports %s: update the dashboard and this list", base)
		}
		if !used[base] {
			t.Errorf("no panel queries %s", base)
		}
	}
}

func keys(m map[string]bool) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	return s
}
