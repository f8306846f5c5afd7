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
// A KeyFunc derives the key from the call (context, full method name,
// request):
//
//	Field("order_id"), Field("order.id")  a request field through protobuf reflection
//	                                      (nested paths; .proto or JSON names)
//	MessageKey                            the request's own LockKey() string method
//	                                      (LockKeyer; write it next to the generated code)
//	Template("order:{order_id}")          fields, plus {:method}, {:service} and
//	                                      {md:name} (incoming metadata)
//	Metadata("x-tenant-id")               the first value of incoming metadata
//
// Field renders strings as they are, integers in decimal, enums by name and
// bytes in hex; repeated, map, message and float fields are a server
// misconfiguration. An unset field, a zero value without presence, missing
// metadata or an invalid key is InvalidArgument, never a lock on "".
//
// # Several keys
//
// A method that touches more than one resource (a transfer between two
// accounts) locks them all with UnaryServerInterceptorKeys or
// StreamServerInterceptorKeys and a KeysFunc: Keys combines KeyFuncs, one
// key each, and Fields reads several request fields as by Field:
//
//	grpcmw.UnaryServerInterceptorKeys(locker,
//		grpcmw.Keys(grpcmw.Template("account:{from}"), grpcmw.Template("account:{to}")),
//		grpcmw.WithMethods("/bank.Accounts/Transfer"), grpcmw.WithWait(2*time.Second))
//
// The keys are taken with core.Locker.AcquireAll: every key or none (a key
// that cannot be had gives back the ones already taken), in one order
// every caller shares (sorted backend keys), so transfers a→b and b→a
// cannot deadlock, and with one WithWait budget for the whole set. A key
// repeated (from == to) is locked once. The handler's context carries
// every lock (core.LocksFromContext) and is cancelled when any of them is
// lost; they are released together. Refusals map to the same status
// codes as for one key, an empty field included (InvalidArgument), and a
// KeysFunc returning no key is InvalidArgument too. WithShared and
// WithPermits apply to every key of the set: a shared method holds a share
// of each key, a limited one a permit of each. A call costs two Redis
// round trips per distinct key (an acquire and a release each).
//
// # Options
//
// The same names and meaning as in httpmw: WithTTL, WithWait (default: fail
// fast), WithAutoRefresh, WithMaxHold, WithFailOpen, WithErrorHandler,
// WithName (default: the full method name; never the key),
// WithReleaseTimeout, WithLockOptions (core options, applied last),
// WithLogger, plus WithMethods. Configuration mistakes panic when the
// interceptor is built, with a "grpcmw:" prefix.
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
// a stream that runs longer than the TTL keeps its lock.
//
//   - A key that needs no message (Metadata, or a Template of {:method},
//     {:service} and {md:...} only) is locked before the handler runs; a
//     refusal ends the stream before it starts.
//   - A key from the request message (Field, MessageKey, a Template with
//     fields) is locked on the first RecvMsg, from the first message: the
//     handler gets that message only once the lock is held, and a refusal
//     is returned by that RecvMsg. Messages sent before the first RecvMsg
//     go out unlocked, and a stream that ends without a message runs
//     unlocked. stream.Context() carries the lock from the first RecvMsg
//     on; a context taken earlier is still cancelled if the lock is lost.
//   - After a refusal or a loss, RecvMsg and SendMsg return that status and
//     the stream ends with it, whatever the handler returns. A handler
//     blocked in Recv notices a loss with the next message; one that must
//     stop at once watches stream.Context().Done().
//
// A custom KeyFunc is called with msg == nil at the start of a stream and
// returns ErrNeedMessage to have the stream locked on its first message.
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
// UnaryClientInterceptor and StreamClientInterceptor put
// core.FenceFromContext(ctx) of an outgoing call into the fence-token
// metadata ("<fence>;owner=<id>;key=<escaped key>", the value of httpmw's
// Fence-Token header); metadata the caller set itself wins.
// UnarySigningClientInterceptor and StreamSigningClientInterceptor sign it
// (package fencesign). On the receiving service UnaryAcceptSignedFence and
// StreamAcceptSignedFence check the signature (Unauthenticated when it is
// bad) and put the fence into the context with core.ContextWithFence, where
// sqlguard finds it; a malformed or repeated value is InvalidArgument.
// UnaryAcceptUnsignedFence and StreamAcceptUnsignedFence (or
// FenceFromIncoming by hand) trust it as sent: accept unsigned fences only
// from trusted callers. The metadata carries the lock key.
//
//	// Service A calls out with the handler's context.
//	conn, err := grpc.NewClient(target,
//		grpc.WithChainUnaryInterceptor(grpcmw.UnarySigningClientInterceptor(signer)),
//		grpc.WithChainStreamInterceptor(grpcmw.StreamSigningClientInterceptor(signer)))
//
//	// Service B guards its own writes with A's fence.
//	srv := grpc.NewServer(
//		grpc.ChainUnaryInterceptor(grpcmw.UnaryAcceptSignedFence(verifier)),
//		grpc.ChainStreamInterceptor(grpcmw.StreamAcceptSignedFence(verifier)))
//
// # Cost
//
// Two Redis round trips per unary call (acquire, release), about 3.5 KB
// and 71 allocations more than a bare call, almost all in core and
// go-redis; docs/benchmarks.md in the repository has the figures and the
// command. examples/grpcserver runs an Orders server and its clients in
// one program: concurrent Pay calls for one order, one charges, the others
// end Aborted with a RetryInfo delay, retry and find the order paid.
package grpcmw
