package grpcmw_test

import (
	"bytes"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/core/locktest"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
)

// names records the lock names observers see.
type names struct {
	core.NopObserver
	mu  sync.Mutex
	got []string
}

func (n *names) AcquireStart(ctx context.Context, e core.AcquireStartEvent) context.Context {
	n.mu.Lock()
	n.got = append(n.got, e.Name)
	n.mu.Unlock()
	return ctx
}

func (n *names) list() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.got)
}

func TestWithName(t *testing.T) {
	l := locktest.New()
	t.Cleanup(func() { _ = l.Close() })
	obs := &names{}
	watch := grpcmw.WithLockOptions(core.WithObserver(obs))
	c := serve(t, "bufconn", newService(),
		grpc.ChainUnaryInterceptor(
			grpcmw.UnaryServerInterceptor(l, grpcmw.Field("counter_id"), watch, grpcmw.WithMethods(mIncr)),
			grpcmw.UnaryServerInterceptor(l, grpcmw.MessageKey, watch, grpcmw.WithMethods(mTransfer), grpcmw.WithName("transfer"))),
		grpc.ChainStreamInterceptor(grpcmw.StreamServerInterceptor(l, grpcmw.Field("counter_id"), watch)),
	).client()
	if _, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "secret-1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Transfer(context.Background(), &testpb.TransferRequest{From: "secret-2"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sumOnce(c, "secret-3"); err != nil {
		t.Fatal(err)
	}
	want := []string{mIncr, "transfer", mSum}
	if got := obs.list(); !slices.Equal(got, want) {
		t.Errorf("lock names %q, want %q: the method by default, never the key", got, want)
	}
}

func TestUnaryServerInterceptor_logsFailedRelease(t *testing.T) {
	store := locktest.NewStore()
	l := store.Client()
	t.Cleanup(func() { _ = l.Close() })
	var mu sync.Mutex
	var logs bytes.Buffer
	lg := slog.New(slog.NewTextHandler(lockedWriter{&mu, &logs}, nil))
	svc := newService()
	svc.hook = func(context.Context, string, *testpb.IncrRequest) error {
		store.SetDown(true) // the backend goes away while the handler runs
		return nil
	}
	c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(
		grpcmw.UnaryServerInterceptor(l, grpcmw.Template("counter:{counter_id}"), grpcmw.WithLogger(lg)))).client()
	if _, err := c.Incr(context.Background(), &testpb.IncrRequest{CounterId: "7"}); err != nil {
		t.Fatalf("a failed release must not fail the call: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if s := logs.String(); !strings.Contains(s, "release failed") || !strings.Contains(s, "lock="+mIncr) || strings.Contains(s, "counter:7") {
		t.Errorf("log = %q, want a release warning naming the method, not the key", s)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}
