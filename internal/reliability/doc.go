// Package reliability is fencedlock's fault and security suite. It is all
// tests: real redis-server processes, lock clients in separate OS processes
// (the test binary re-executed as a worker, so SIGSTOP pauses a real
// holder), injected faults (pauses, crashes and restarts, partitions,
// delays, connection resets after a command reached Redis, memory
// pressure), and checkers (porcupine over recorded histories, non-atomic
// witnesses, end-of-run audits). The lock family (core.Shared,
// core.Permits) has witnesses of its own in Redis: a reader-writer register
// with two-part writes, and a count of valid permit holders. Every scenario
// also runs a negative control with its protection switched off, which
// must show violations.
//
// It stays out of the fast `go test ./...` path: without
// FENCEDLOCK_RELIABILITY=smoke (CI size, a few minutes) or =soak (longer,
// FENCEDLOCK_RELIABILITY_DURATION per run) every test skips. See
// docs/reliability.md for what each scenario does and the measured table.
package reliability
