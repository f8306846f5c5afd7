//go:build linux

package reliability_test

import (
	"testing"
	"time"
)

// rwWorker is the reader-writer register's worker: 70 % of its holds are
// shared (core.Shared()) and do 3 reads, the rest exclusive and do 3
// two-part writes (rwScript: half a, 3 ms, half b), through the register's
// fence guard. Holders are deaf to the loss notice, as a SIGSTOPped one is.
func rwWorker() workerConfig {
	w := base()
	w.Family, w.ReadProb = "rw", 0.7
	w.TTL, w.Auto, w.WatchLoss = 300*time.Millisecond, true, false
	w.Steps, w.Gap = 3, 3*time.Millisecond
	return w
}

// TestFamily_rwRegister: five workers (five processes, five Clients) read
// and write one register under one key (rwWorker), a reader beside a
// writer would see a write in progress (a != b), two writers side by side
// tear each other's values. Holders are paused past their lease (SIGSTOP,
// watchdog frozen too). Checked: porcupine over the register's history
// (rwModel), holds beside a writer on the lock's own timeline, reads of
// halves of writes that went on to complete, and the mutex model over the
// writers. The control's writers take Shared() like the readers (a route
// mapped wrongly); the register's guard stays on and turns most of the
// overlaps into refused writes, so the lock's timeline is where it shows.
func TestFamily_rwRegister(t *testing.T) {
	w := rwWorker()
	ctrl := w
	ctrl.WritersShared = true
	keys := []string{"doc:1"}
	runScenario(t, scenario{
		Name:      "lock family: reader-writer register (Shared readers, exclusive writers), holders paused (SIGSTOP) past their TTL",
		Unit:      "pauses",
		Claims:    claims{Lock: true, RW: true},
		Switched:  "exclusive writers (Shared instead)",
		Protected: spec{Workers: 5, Keys: keys, Worker: w, Inject: pauses(w.TTL)},
		Control:   spec{Workers: 5, Keys: keys, Worker: ctrl, Inject: pauses(w.TTL)},
	})
}

// TestFamily_rwRegisterGuard is the same run with the other protection
// switched off, and the pauses aimed at writers, a few ms into their
// writes: a writer frozen between its halves wakes up after readers (or
// another writer) took the key, and only the register's fence guard, which
// readers' fences raise too, refuses its second half. The control writes
// and reads without the guard.
func TestFamily_rwRegisterGuard(t *testing.T) {
	w := rwWorker()
	ctrl := w
	ctrl.Fence = false
	keys := []string{"doc:1"}
	runScenario(t, scenario{
		Name:      "lock family: reader-writer register, writers paused (SIGSTOP) past their TTL mid-write",
		Unit:      "pauses",
		Claims:    claims{Lock: true, RW: true},
		Switched:  "the register's fence guard",
		Protected: spec{Workers: 5, Keys: keys, Worker: w, Inject: pausesOf(w.TTL, "w")},
		Control:   spec{Workers: 5, Keys: keys, Worker: ctrl, Inject: pausesOf(w.TTL, "w")},
	})
}

// TestFamily_permits: five workers hold core.Permits(3) of one key for
// 16 check-ins with the permit witness (permitScript), 5 ms apart (the
// pause inside the hold); the witness counts, at the server's clock, the holders whose
// permit is still valid as Client promised it (Lock.Deadline). Holders
// are paused past their lease (SIGSTOP, deaf to the loss notice): a paused
// holder's permit runs out and is taken by another worker, and its
// check-ins after the pause are refused (it no longer counts). Checked: the witness never counts more
// than 3, and no acquisition returns while more than 3 tenures certainly
// hold. The control asks for Permits(5), the too-large n of a
// misconfigured route, against the same witness bound of 3.
func TestFamily_permits(t *testing.T) {
	const n = 3
	w := base()
	w.Family, w.Permits = "permits", n
	w.TTL, w.Auto, w.WatchLoss = 300*time.Millisecond, true, false
	w.Steps, w.Gap = 16, 5*time.Millisecond
	ctrl := w
	ctrl.Permits = n + 2
	keys := []string{"jobs:1"}
	runScenario(t, scenario{
		Name:      "lock family: Permits(3) from 5 Clients, holders paused (SIGSTOP) past their TTL",
		Unit:      "pauses",
		Claims:    claims{Limit: n},
		Switched:  "the bound (Permits(5) instead of Permits(3))",
		Protected: spec{Workers: 5, Keys: keys, Limit: n, Worker: w, Inject: pauses(w.TTL)},
		Control:   spec{Workers: 5, Keys: keys, Limit: n, Worker: ctrl, Inject: pauses(w.TTL)},
	})
}
