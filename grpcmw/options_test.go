package grpcmw_test

import (
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/grpcmw"
)

func TestOptions_panicAtConstruction(t *testing.T) {
	l := locktest.New()
	t.Cleanup(func() { _ = l.Close() })
	key := grpcmw.Field("counter_id")
	for name, f := range map[string]func(){
		"nil Locker":               func() { grpcmw.UnaryServerInterceptor(nil, key) },
		"nil KeyFunc":              func() { grpcmw.StreamServerInterceptor(l, nil) },
		"nil Option":               func() { grpcmw.UnaryServerInterceptor(l, key, nil) },
		"WithTTL zero":             func() { grpcmw.WithTTL(0) },
		"WithWait negative":        func() { grpcmw.WithWait(-time.Second) },
		"WithAutoRefresh zero":     func() { grpcmw.WithAutoRefresh(0) },
		"WithAutoRefresh two":      func() { grpcmw.WithAutoRefresh(time.Second, time.Second) },
		"WithMaxHold zero":         func() { grpcmw.WithMaxHold(0) },
		"WithReleaseTimeout zero":  func() { grpcmw.WithReleaseTimeout(0) },
		"WithErrorHandler nil":     func() { grpcmw.WithErrorHandler(nil) },
		"WithLockOptions nil":      func() { grpcmw.WithLockOptions(nil) },
		"WithLogger nil":           func() { grpcmw.WithLogger(nil) },
		"WithMethods none":         func() { grpcmw.WithMethods() },
		"WithMethods short name":   func() { grpcmw.WithMethods("Incr") },
		"WithMethods no slash":     func() { grpcmw.WithMethods("pkg.Svc/Incr") },
		"WithMethods service only": func() { grpcmw.WithMethods("/pkg.Svc/") },
		"refresh not below the TTL": func() {
			grpcmw.UnaryServerInterceptor(l, key, grpcmw.WithTTL(time.Second), grpcmw.WithAutoRefresh(time.Second))
		},
		"stream refresh not below the TTL": func() {
			grpcmw.StreamServerInterceptor(l, key, grpcmw.WithTTL(time.Second), grpcmw.WithAutoRefresh(2*time.Second))
		},
	} {
		t.Run(name, func(t *testing.T) { wantPanic(t, f) })
	}
}
