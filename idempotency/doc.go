// Package idempotency makes a route or RPC idempotent per Idempotency-Key
// (draft-ietf-httpapi-idempotency-key-header): a request retried after a
// timeout, a double click or a client crash gets the first answer, and the
// handler's effect happens once.
//
//	store := idempotency.NewRedisStore(rdb, "")
//	mux.Handle("POST /charges", httpmw.Idempotent(locker, store)(charge))
//
// ginmw.Idempotent and grpcmw.UnaryIdempotent are the same protocol for gin
// and for unary gRPC methods (key in the "idempotency-key" metadata entry).
//
// # Protocol
//
// The key is scoped by the route pattern (r.Pattern, gin's route template,
// the RPC method) and, with WithTenant, by a tenant or principal, so two
// clients or two routes never share an answer. Scope.LockKey hashes the
// three into the key of a fenced core lock. A request then:
//
//  1. looks the answer up in the Store (one round trip); a stored answer is
//     replayed, marked Idempotent-Replayed: true, without running the
//     handler; stored for a different request (method, path and query, or
//     the SHA-256 of the body) it is refused with 422;
//  2. otherwise takes the lock for the key, waiting up to WithWait (default
//     10s) for a running attempt with the same key; the wait ends with that
//     attempt's answer, or 409 when it is still running (WithWait(0): 409 at
//     once, as the draft describes);
//  3. claims the key in the store with the lock's fence (Store.Begin), which
//     also finds an answer stored while it waited;
//  4. runs the handler with its response buffered, stores the answer
//     (status, the headers named by WithStoredHeaders, the body up to
//     WithMaxBody) for WithRetention (default 24h) with a fenced write, and
//     only then sends it; finally releases the lock.
//
// Nothing is stored when the handler panics (the panic goes on), answers a
// server error (5xx; WithStoreServerErrors stores those too), or the client
// went away and the handler did not succeed (it answered 400 or more, or
// returned without writing anything); the claim is released with the
// lock and a retry runs the handler again. A success whose client went away
// is stored: its effect happened, and the retry must see it.
//
// # Fencing
//
// A holder paused past its lease (GC, a stalled VM, a partition from the
// lock's Redis) can resume after a newer holder of the same key claimed or
// answered it. Every store write carries the writer's fence: the claim
// records it, and a write whose fence is lower than the one recorded is
// refused (ErrStaleFence, 409 to that holder's client). The newer answer is
// never overwritten.
//
// # Status codes
//
//	400 Bad Request            missing key on a route that requires one (the
//	                           default; WithOptionalKey runs such requests
//	                           unguarded), a malformed key (not 1 to 255 bytes
//	                           of printable ASCII, optionally a quoted string),
//	                           or the header sent twice
//	409 Conflict               an attempt with the key is still running and
//	                           the wait ended (Retry-After: its remaining
//	                           lease), or this attempt lost its lock to a newer
//	                           one (stale fence)
//	413 Content Too Large      request body above WithMaxRequestBody
//	422 Unprocessable Content  the key was used for a different request
//	503 Service Unavailable    the lock backend or the store is unreachable
//	504 Gateway Timeout        the request deadline passed while waiting
//
// Bodies are short fixed texts; they never contain the key.
//
// # Stores
//
// RedisStore keeps one hash per key (the fence and the encoded Record)
// named with the lock key's hash tag, so on a Cluster it lives in the lock's
// slot. Two Lua scripts do the claim and the fenced write.
//
// SQLStore keeps answers in a database table and, when the handler does
// its writes through the transaction TxFromContext returns, records the
// answer in that same transaction (begun with sqlguard, so it is fenced by
// the lock): the effect and the stored answer commit together or not at
// all, even when the process dies between them.
//
// # Performance
//
// A replay costs one Redis round trip plus the body copy; the first request
// with a key costs three more than a plain locked route (lookup, acquire,
// claim, store, release). Figures and the command are in
// docs/idempotency.md:
//
//	go test -run '^$' -bench . -benchtime 2000x -count 3 ./idempotency/
package idempotency
