// Command fencedlock inspects and repairs the locks fencedlock clients keep
// in Redis, so an operator never has to decode escaped keys such as
// lock:{coupon%3A42} with redis-cli.
//
// # Install
//
//	go install github.com/fencedlock/fencedlock/cmd/fencedlock@latest
//
// # Usage
//
//	fencedlock -redis 10.0.0.5:6379 ls              # every held lock
//	fencedlock -redis 10.0.0.5:6379 ls -json 'coupon:*'
//	fencedlock -redis redis://:pw@10.0.0.5:6379/0 show coupon:42
//	fencedlock -redis 10.0.0.5:6379 release --force coupon:42
//
// release --force deletes the hold, publishes the release notice so that
// waiters contend at once, and raises the key's fence counter: a storage
// that checks fences (sqlguard, httpmw's fence header) then refuses the
// evicted holder's writes. The evicted holder learns of the loss at its next
// renewal: its Done channel closes and Err matches core.ErrLost (with
// core.ErrOwnerChanged). A holder without auto-refresh learns it only when it
// next calls Refresh or Release.
//
// Owners are shown as Lock.Owner ids (a hash of the token); the token itself,
// which could release the lock, is never printed.
//
// # Exit status
//
// 0 on success; 1 for bad input, an unknown key or a refused confirmation;
// 2 when the backend cannot be reached (the message names the address).
// See docs/operators.md for the runbook.
package main
