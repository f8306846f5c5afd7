package grpcmw_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/grpcmw"
	"github.com/fencedlock/fencedlock/grpcmw/internal/testpb"
)

// seenLocks is what a handler found in its context.
type seenLocks struct {
	keys   []string
	fences map[string]uint64
	fence  core.FenceToken // core.FenceFromContext
	held   map[string]bool // in the backend, while the handler ran
}

// capture returns a transfer hook reporting the locks in the handler's
// context, and whether the backend held them then.
func capture(b *backend, seen chan<- seenLocks) func(context.Context, *testpb.TransferRequest) error {
	return func(ctx context.Context, _ *testpb.TransferRequest) error {
		s := seenLocks{fences: map[string]uint64{}, held: map[string]bool{}}
		for _, l := range core.LocksFromContext(ctx) {
			s.keys = append(s.keys, l.Key())
			s.fences[l.Key()] = l.Fence()
			s.held[l.Key()] = b.held(l.Key())
		}
		slices.Sort(s.keys)
		s.fence, _ = core.FenceFromContext(ctx)
		seen <- s
		return nil
	}
}

// lastFence takes and releases key elsewhere and returns its fence.
func lastFence(t *testing.T, b *backend, key string) uint64 {
	t.Helper()
	l, err := b.client().TryAcquire(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Release(context.Background())
	return l.Fence()
}

func TestUnaryServerInterceptorKeys_handlerContext(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		seen := make(chan seenLocks, 1)
		svc := &transferService{ledger: newLedger(10, "a", "b")}
		svc.hook = capture(b, seen)
		c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(
			grpcmw.UnaryServerInterceptorKeys(b.client(), accountKeys()))).client()

		t.Run("both locks and their fences", func(t *testing.T) {
			before := map[string]uint64{"account:a": lastFence(t, b, "account:a"), "account:b": lastFence(t, b, "account:b")}
			if _, err := c.Transfer(context.Background(), &testpb.TransferRequest{From: "b", To: "a"}); err != nil {
				t.Fatal(err)
			}
			s := recv(t, seen, "handler")
			if !slices.Equal(s.keys, []string{"account:a", "account:b"}) {
				t.Fatalf("locks in the handler's context: %q; want both accounts", s.keys)
			}
			for k, f := range s.fences {
				if f <= before[k] || !s.held[k] {
					t.Errorf("%s: fence %d (previous holder's %d), held %v; want a newer fence, held", k, f, before[k], s.held[k])
				}
			}
			if s.fences[s.fence.Key] != s.fence.Fence {
				t.Errorf("core.FenceFromContext = %+v; want the fence of one of the locks %v", s.fence, s.fences)
			}
			if b.held("account:a") || b.held("account:b") {
				t.Error("locks still held after the call")
			}
		})

		t.Run("from == to is locked once", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := c.Transfer(ctx, &testpb.TransferRequest{From: "a", To: "a"}); err != nil {
				t.Fatalf("same account twice: %v; want OK, not a wait on itself", err)
			}
			if s := recv(t, seen, "handler"); !slices.Equal(s.keys, []string{"account:a"}) {
				t.Fatalf("locks in the handler's context: %q; want account:a once", s.keys)
			}
			if b.held("account:a") {
				t.Error("lock still held after the call")
			}
		})
	})
}

func TestUnaryServerInterceptorKeys_refusals(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		entered := make(chan *testpb.TransferRequest, 16)
		svc := &transferService{ledger: newLedger(10, "a", "b", "c")}
		svc.hook = func(_ context.Context, req *testpb.TransferRequest) error { entered <- req; return nil }
		start := func(keys grpcmw.KeysFunc, opts ...grpcmw.Option) testpb.CounterClient {
			opts = append(opts, grpcmw.WithLogger(discard()))
			return serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(
				grpcmw.UnaryServerInterceptorKeys(b.client(), keys, opts...))).client()
		}

		t.Run("one key held elsewhere: Aborted, nothing held", func(t *testing.T) {
			b.hold("account:b", 5*time.Second)
			_, err := start(accountKeys()).Transfer(context.Background(), &testpb.TransferRequest{From: "c", To: "b"})
			st := wantCode(t, err, codes.Aborted)
			if d, ok := grpcmw.RetryDelay(err); !ok || d <= 0 || d > 5*time.Second {
				t.Errorf("RetryInfo = %v, %v; want the holder's remaining lease", d, ok)
			}
			if strings.Contains(st.Message(), "account") {
				t.Errorf("message %q echoes a key", st.Message())
			}
			if b.held("account:c") {
				t.Error("the free key stayed held after the refusal (not all-or-none)")
			}
		})

		t.Run("one wait budget for the set", func(t *testing.T) {
			// account:a (taken first: sorted order) frees up after 500ms,
			// account:c never: the call waits 600ms in all, not 500ms for
			// account:a and then 600ms more for account:c.
			b.hold("account:a", 500*time.Millisecond)
			b.hold("account:c", 10*time.Second)
			begin := time.Now()
			_, err := start(accountKeys(), grpcmw.WithWait(600*time.Millisecond)).
				Transfer(context.Background(), &testpb.TransferRequest{From: "c", To: "a"})
			took := time.Since(begin)
			wantCode(t, err, codes.Aborted)
			if took < 550*time.Millisecond || took > 950*time.Millisecond {
				t.Errorf("refused after %v; want about the one 600ms budget", took)
			}
			if b.held("account:a") {
				t.Error("account:a stayed held after the refusal")
			}
		})

		t.Run("empty field is InvalidArgument", func(t *testing.T) {
			causes := make(chan error, 2)
			keep := grpcmw.WithErrorHandler(func(ctx context.Context, m string, e *grpcmw.Error) error {
				causes <- e.Err
				return grpcmw.DefaultErrorHandler(ctx, m, e)
			})
			for _, keys := range []grpcmw.KeysFunc{accountKeys(), grpcmw.Fields("from", "to")} {
				_, err := start(keys, keep).Transfer(context.Background(), &testpb.TransferRequest{From: "a"})
				wantCode(t, err, codes.InvalidArgument)
				if cause := recv(t, causes, "error handler"); !errors.Is(cause, core.ErrInvalidKey) {
					t.Errorf("cause %v; want one matching core.ErrInvalidKey", cause)
				}
			}
		})

		t.Run("no key at all is InvalidArgument", func(t *testing.T) {
			none := func(context.Context, string, any) ([]string, error) { return nil, nil }
			_, err := start(none).Transfer(context.Background(), &testpb.TransferRequest{From: "a", To: "b"})
			wantCode(t, err, codes.InvalidArgument)
		})

		t.Run("field the message lacks is Internal", func(t *testing.T) {
			_, err := start(grpcmw.Fields("from", "counter_id")).Transfer(context.Background(), &testpb.TransferRequest{From: "a", To: "b"})
			wantCode(t, err, codes.Internal)
		})

		t.Run("unreachable backend is Unavailable", func(t *testing.T) {
			l, _ := b.unreachable()
			c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(
				grpcmw.UnaryServerInterceptorKeys(l, accountKeys(), grpcmw.WithLogger(discard())))).client()
			_, err := c.Transfer(context.Background(), &testpb.TransferRequest{From: "a", To: "b"})
			wantCode(t, err, codes.Unavailable)
		})

		if len(entered) != 0 {
			t.Fatalf("%d refused calls reached the handler", len(entered))
		}
	})
}

func TestUnaryServerInterceptorKeys_releases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b *backend) {
		both := func() bool { return b.held("account:a") || b.held("account:b") }

		t.Run("when the handler panics", func(t *testing.T) {
			panics := make(chan any, 1)
			svc := &transferService{ledger: newLedger(10, "a", "b")}
			svc.hook = func(context.Context, *testpb.TransferRequest) error {
				if !b.held("account:a") || !b.held("account:b") {
					return errors.New("not both held")
				}
				panic("boom")
			}
			c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(recoverer(panics),
				grpcmw.UnaryServerInterceptorKeys(b.client(), accountKeys()))).client()
			_, err := c.Transfer(context.Background(), &testpb.TransferRequest{From: "a", To: "b"})
			wantCode(t, err, codes.Internal)
			if v := recv(t, panics, "the panic"); v != "boom" {
				t.Fatalf("recovered %v, want the handler's panic", v)
			}
			if both() {
				t.Error("a key is still held after a panicking handler")
			}
		})

		t.Run("when the client goes away", func(t *testing.T) {
			entered := make(chan struct{}, 1)
			rec := newRecorder()
			svc := &transferService{ledger: newLedger(10, "a", "b")}
			svc.hook = func(ctx context.Context, _ *testpb.TransferRequest) error {
				entered <- struct{}{}
				<-ctx.Done()
				return ctx.Err()
			}
			c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(rec.unary(),
				grpcmw.UnaryServerInterceptorKeys(b.client(), accountKeys()))).client()
			ctx, cancel := context.WithCancel(context.Background())
			go func() { recv(t, entered, "handler entry"); cancel() }()
			_, err := c.Transfer(ctx, &testpb.TransferRequest{From: "a", To: "b"})
			wantCode(t, err, codes.Canceled)
			rec.next(t)
			if both() {
				t.Error("a key is still held after the client went away")
			}
		})

		t.Run("losing either key cancels the handler and ends Aborted", func(t *testing.T) {
			entered := make(chan struct{}, 1)
			causes := make(chan error, 1)
			svc := &transferService{ledger: newLedger(10, "a", "b")}
			svc.hook = func(ctx context.Context, _ *testpb.TransferRequest) error {
				entered <- struct{}{}
				select {
				case <-ctx.Done():
					causes <- context.Cause(ctx)
				case <-time.After(10 * time.Second):
					causes <- errors.New("context not cancelled within 10s")
				}
				return nil
			}
			c := serve(t, "bufconn", svc, grpc.ChainUnaryInterceptor(grpcmw.UnaryServerInterceptorKeys(
				b.client(), accountKeys(), grpcmw.WithTTL(time.Second), grpcmw.WithAutoRefresh(20*time.Millisecond),
				grpcmw.WithLogger(discard())))).client()
			errc := make(chan error, 1)
			go func() {
				_, err := c.Transfer(context.Background(), &testpb.TransferRequest{From: "a", To: "b"})
				errc <- err
			}()
			recv(t, entered, "handler entry")
			b.expire("account:b")
			if cause := recv(t, causes, "handler context"); !isLost(cause) {
				t.Fatalf("context.Cause = %v, want core.ErrLost", cause)
			}
			wantCode(t, recv(t, errc, "call result"), codes.Aborted)
			if both() {
				t.Error("the key not lost is still held after the call")
			}
		})
	})
}
