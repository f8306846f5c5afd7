// Package lockdebug serves what one process holds and waits for, in the
// spirit of net/http/pprof and expvar: a JSON document for tools and a
// small HTML page that refreshes itself, both from core.Client.Snapshot.
//
// # Usage
//
// Mount it on an internal or authenticated mux, never on the public one:
// keys may carry user data (a coupon code, an account id).
//
//	locker := core.New(rdb)
//	mux := http.NewServeMux()
//	mux.Handle("/debug/locks", lockdebug.Handler(locker))
//
// GET /debug/locks shows the page; GET /debug/locks?format=json (or a request
// with Accept: application/json) returns the document. The page reloads
// every 2 s (WithRefresh changes it).
//
// # What it shows
//
// Held locks: key, name (WithName), fence, owner id (never the token), held
// for, lease, time to the local validity deadline, renewals, whether the
// watchdog renews it and whether it came by hand-off. Waiting keys: the
// backend key, local waiters, whether the head is asking the backend, and
// hand-offs since the queue formed, and shared or permit requests parked
// in the Client's gate. Taking a snapshot sends nothing to the
// backend, so the page is cheap to leave open and works while Redis is down.
//
// The JSON fields are only ever added to.
package lockdebug
