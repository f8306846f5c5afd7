// Package grpcmw guards gRPC methods with a distributed lock: one holder
// per key at a time across every instance of a service.
//
//	srv := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(
//			grpcmw.UnaryServerInterceptor(locker, grpcmw.Template("order:{order_id}"),
//				grpcmw.WithMethods("/shop.Orders/Pay", "/shop.Orders/Refund")),
//		),
//		grpc.ChainStreamInterceptor(
//			grpcmw.StreamServerInterceptor(locker, grpcmw.Metadata("x-cart-id"),
//				grpcmw.WithMethods("/shop.Carts/Edit"), grpcmw.WithMaxHold(10*time.Minute)),
//		),
//	)
//
// # Keys
//
// A KeyFunc derives the key from the call: Field reads a request field
// through protobuf reflection ("order_id", or "order.id" into a nested
// message), MessageKey asks the message (LockKeyer), Template combines
// fields, the method name and metadata ("order:{order_id}"), Metadata reads
// incoming metadata. A missing or empty value is InvalidArgument, never a
// lock on "".
//
// # Which methods
//
// Without WithMethods the interceptor locks every method of the server, so
// the KeyFunc must fit every request. WithMethods names the methods to
// lock. For other rules, wrap the interceptor in go-grpc-middleware's
// selector (github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector):
//
//	selector.UnaryServerInterceptor(
//		grpcmw.UnaryServerInterceptor(locker, grpcmw.Field("order_id")),
//		selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
//			return c.Service == "shop.Orders"
//		}),
//	)
//
// Both chain with the rest of a server's interceptors through
// grpc.ChainUnaryInterceptor / grpc.ChainStreamInterceptor. Put
// authentication before the lock, so unauthenticated callers cannot hold
// keys; a recovery interceptor may go on either side (the lock is released
// before a panic leaves the interceptor).
//
// # What the handler sees
//
// The handler runs with the lock in its context: core.FromContext returns
// it, and core.FenceFromContext its fence for guarded writes (see
// sqlguard). The context is cancelled when the lock is lost mid-call (the
// lease could not be renewed, WithMaxHold was reached), with
// context.Cause(ctx) matching core.ErrLost, and the call then ends Aborted
// whatever the handler returned. A handler doing work that must not
// outlive the lock passes the context to everything it calls. Long unary
// handlers should use WithAutoRefresh.
//
// The lock is released after the handler returns, also when it panics (the
// panic then goes on) or the client went away, with a context detached
// from the call and a timeout of its own (WithReleaseTimeout).
//
// # Streams
//
// A stream holds its lock for its whole life. Stream interceptors renew the
// lease by default (WithAutoRefresh sets the interval, WithMaxHold caps the
// total, WithLockOptions(core.WithoutAutoRefresh()) turns renewal off), so
// a stream that runs longer than the TTL keeps its lock. A key from
// metadata is locked before the handler runs; a key from the request
// message is locked on the first RecvMsg, keyed from the first message (see
// StreamServerInterceptor for the details).
//
// # Readers and writers, concurrency limits
//
// WithShared makes the named methods take shared holds (core.Shared): they
// run together on one key, while the interceptor's other methods take
// exclusive holds that wait for them and exclude them; once a writer
// waits, new readers queue behind it. WithPermits(n) makes the interceptor
// a concurrency limit instead: at most n calls per key at once, across
// every process (core.Permits):
//
//	grpcmw.UnaryServerInterceptor(locker, grpcmw.Template("doc:{doc_id}"),
//		grpcmw.WithMethods("/docs.Docs/Update"), grpcmw.WithShared("/docs.Docs/Get"))
//	grpcmw.UnaryServerInterceptor(locker, grpcmw.Metadata("x-tenant"), grpcmw.WithPermits(4))
//
// # Status codes
//
//	Aborted            held by another call (with an errdetails.RetryInfo
//	                   detail: the holder's remaining lease, or the TTL
//	                   when that is unknown), or the lock was lost while
//	                   the handler ran (no RetryInfo)
//	InvalidArgument    missing, empty, invalid or oversized key
//	Unavailable        lock backend unreachable (unless WithFailOpen)
//	DeadlineExceeded   the call's deadline passed while waiting (WithWait)
//	Canceled           the client went away while waiting
//	ResourceExhausted  WithPermits: no permit freed up within the wait
//	                   (with a RetryInfo detail, as for Aborted)
//	Internal           the key cannot be derived from this method's request
//	                   (ErrMisconfigured), or a lock-mode configuration
//	                   error: core.ErrModeMismatch (interceptors disagree
//	                   on a key's mode or n), core.ErrModeUnsupported
//	                   (Redlock, etcd); logged at error level, never Aborted
//
// Messages are short fixed texts; they never contain the key or backend
// error text. WithErrorHandler replaces the status. Clients read the retry
// hint with RetryDelay.
//
// # Fences across services
//
// UnaryClientInterceptor and StreamClientInterceptor forward the fence of
// the lock in an outgoing call's context in the fence-token metadata;
// UnaryAcceptFence and StreamAcceptFence (or FenceFromIncoming) read it on
// the receiving service so that its own guarded writes use it.
package grpcmw
