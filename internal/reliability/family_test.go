//go:build linux

package reliability_test

import (
	"testing"
	"time"
)

// TestFamily_rwRegister: five workers (five processes, five Clients) share
// one key, 70 % of their holds shared (core.Shared()) and reading, the
// rest exclusive and writing. The data is a register in Redis whose writes
// are two calls with a 3 ms pause between (rwScript), so a reader beside a
// writer sees a write in progress, and two writers side by side tear each
// other's values. Holders are paused past their lease (SIGSTOP, watchdog
// frozen too, deaf to the loss notice): a writer frozen between its halves
// leaves a half-written value (a partial write, an operation of its own in
// the model) and its second half must be refused by the register's fence
// guard, which readers' fences raise too. Checked: porcupine over the
// register's history (rwModel), the holds' overlaps on the lock's own
// timeline, and reads of halves of writes that went on to complete. The
// control's writers take Shared() like the readers (a route mapped wrongly)
// and write without the guard.
func TestFamily_rwRegister(t *testing.T) {
	w := base()
	w.Family, w.ReadProb = "rw", 0.7
	w.TTL, w.Auto, w.WatchLoss = 300*time.Millisecond, true, false
	w.Steps, w.Gap = 3, 3*time.Millisecond
	ctrl := w
	ctrl.WritersShared, ctrl.Fence = true, false
	keys := []string{"doc:1"}
	runScenario(t, scenario{
		Name:      "lock family: reader-writer register (Shared readers, exclusive writers), holders paused (SIGSTOP) past their TTL",
		Unit:      "pauses",
		Claims:    claims{Lock: true, RW: true},
		Switched:  "exclusive writers (Shared instead) and the register's fence",
		Protected: spec{Workers: 5, Keys: keys, Worker: w, Inject: pauses(w.TTL)},
		Control:   spec{Workers: 5, Keys: keys, Worker: ctrl, Inject: pauses(w.TTL)},
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
