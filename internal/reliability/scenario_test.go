//go:build linux

package reliability_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// claims says which properties a scenario's protection must keep.
type claims struct {
	Lock  bool // the fenced-mutex model: no acquisition inside another holder's tenure
	Store bool // the fenced register: no lost update, no stale write accepted
	RW    bool // the rw register: no read of a write in progress, no hold beside a writer
	Limit int  // permits: never more than Limit holders (0: not claimed)
}

func (c claims) violations(o *outcome) int {
	n := 0
	if c.Lock {
		n += o.DoubleGrants + o.FenceRepeats
	}
	if c.Store {
		n += o.LostUpdates + o.StaleAccepted
	}
	return n + familyViolations(c, o)
}

func (c claims) illegal(o *outcome) bool {
	return (c.Lock && o.LockCheck == porcupine.Illegal) || (c.Store && o.StoreCheck == porcupine.Illegal) ||
		(c.RW && o.RWCheck == porcupine.Illegal)
}

// scenario is a fault, the protection that must hold under it, and the
// same run with that protection switched off, which must break.
type scenario struct {
	Name     string
	Unit     string // what a fault is, for the table ("pauses")
	Claims   claims
	Switched string // what the negative control switches off
	Protected,
	Control spec
}

// runScenario runs the protected configuration and the negative control,
// fails unless the first shows no violation and the second shows some, and
// adds the row to the report.
func runScenario(t *testing.T, sc scenario) (prot, ctrl *outcome) {
	sz := gate(t)
	setReportInfo(sz.name, "")
	t.Run("protected", func(t *testing.T) { prot = execute(t, sc.Protected, sz.run) })
	// The control gets up to three windows to show a violation: the faults
	// are random, and one window can miss the moment that breaks it.
	for i := 1; i <= controlWindows; i++ {
		var o *outcome
		t.Run(fmt.Sprintf("control#%d", i), func(t *testing.T) { o = execute(t, sc.Control, sz.run) })
		if o == nil {
			break
		}
		ctrl = merge(ctrl, o)
		if sc.Claims.violations(ctrl) > 0 || sc.Claims.illegal(ctrl) {
			break
		}
	}
	if prot == nil || ctrl == nil {
		return prot, ctrl
	}
	t.Logf("protected: %+v", *prot)
	t.Logf("control:   %+v", *ctrl)
	if prot.Faults == 0 {
		t.Errorf("no fault was injected in the protected run: it proved nothing")
	}
	if prot.Grants == 0 || ctrl.Grants == 0 {
		t.Errorf("no lock was granted (protected %d, control %d)", prot.Grants, ctrl.Grants)
	}
	if v := sc.Claims.violations(prot); v > 0 || sc.Claims.illegal(prot) {
		t.Errorf("protected run: %s (%s=1 logs the histories and writes porcupine's visualization)",
			describeViolations(sc.Claims, prot), debugEnv)
	}
	if v := sc.Claims.violations(ctrl); v == 0 && !sc.Claims.illegal(ctrl) {
		t.Errorf("negative control (%s) showed no violation over %d faults in %d windows: the scenario cannot fail",
			sc.Switched, ctrl.Faults, ctrl.Windows)
	}
	addRow(reportRow{
		Scenario:   sc.Name,
		Faults:     fmt.Sprintf("%d %s", prot.Faults, sc.Unit),
		Ops:        ops(prot),
		Violations: describeViolations(sc.Claims, prot),
		Control:    fmt.Sprintf("%s (%s off; %d %s, %s%s%s)", describeViolations(sc.Claims, ctrl), sc.Switched, ctrl.Faults, sc.Unit, ops(ctrl), refused(ctrl), windows(ctrl)),
		Checks:     checks(sc.Claims, prot) + controlNotes(ctrl),
	})
	return prot, ctrl
}

// controlWindows bounds the fault windows a negative control gets.
const controlWindows = 3

// merge adds b's counts to a (nil: b).
func merge(a, b *outcome) *outcome {
	if a == nil {
		b.Windows = 1
		return b
	}
	a.Windows++
	a.Faults += b.Faults
	a.Attempts += b.Attempts
	a.Grants += b.Grants
	a.Losses += b.Losses
	a.Steps += b.Steps
	a.Committed += b.Committed
	a.Refused += b.Refused
	a.DoubleGrants += b.DoubleGrants
	a.FenceRepeats += b.FenceRepeats
	a.LostUpdates += b.LostUpdates
	a.StaleAccepted += b.StaleAccepted
	a.LeftoverAtStop += b.LeftoverAtStop
	a.LockCheck = worse(a.LockCheck, b.LockCheck)
	a.StoreCheck = worse(a.StoreCheck, b.StoreCheck)
	a.Notes = append(a.Notes, b.Notes...)
	a.add(b.familyCounts)
	return a
}

func worse(a, b porcupine.CheckResult) porcupine.CheckResult {
	switch {
	case a == porcupine.Illegal || b == porcupine.Illegal:
		return porcupine.Illegal
	case a == porcupine.Unknown || b == porcupine.Unknown:
		return porcupine.Unknown
	}
	return porcupine.Ok
}

func ops(o *outcome) string {
	s := fmt.Sprintf("%d acquisitions", o.Grants)
	if o.Steps > 0 {
		s += fmt.Sprintf(", %d writes", o.Steps)
	}
	return s + familyOps(o)
}

func describeViolations(c claims, o *outcome) string {
	var parts []string
	if c.Lock && o.DoubleGrants > 0 {
		parts = append(parts, plural(o.DoubleGrants, "double grant"))
	}
	if c.Lock && o.FenceRepeats > 0 {
		parts = append(parts, plural(o.FenceRepeats, "repeated fence"))
	}
	if c.Store && o.LostUpdates > 0 {
		parts = append(parts, plural(o.LostUpdates, "lost update"))
	}
	if c.Store && o.StaleAccepted > 0 {
		parts = append(parts, plural(o.StaleAccepted, "stale write")+" accepted")
	}
	parts = append(parts, familyParts(c, o)...)
	s := fmt.Sprint(c.violations(o))
	if len(parts) > 0 {
		s += " (" + strings.Join(parts, ", ") + ")"
	}
	if c.illegal(o) {
		s += ", not linearizable"
	}
	return s
}

func checks(c claims, o *outcome) string {
	var parts []string
	verdict := func(r porcupine.CheckResult) string {
		switch r {
		case porcupine.Ok:
			return "linearizable"
		case porcupine.Illegal:
			return "NOT linearizable"
		}
		return "undecided"
	}
	if c.Lock {
		parts = append(parts, "mutex model "+verdict(o.LockCheck))
	} else if o.DoubleGrants > 0 || o.FenceRepeats > 0 || o.LockCheck == porcupine.Illegal {
		parts = append(parts, fmt.Sprintf("mutex model %s (%s, %s; not claimed here)", verdict(o.LockCheck),
			plural(o.DoubleGrants, "double grant"), plural(o.FenceRepeats, "repeated fence")))
	}
	if c.Store || o.Steps > 0 {
		parts = append(parts, "register model "+verdict(o.StoreCheck))
	}
	parts = append(parts, familyChecks(c, o)...)
	if o.Refused > 0 {
		parts = append(parts, fmt.Sprintf("%d stale writes refused by the fence", o.Refused))
	}
	if o.Losses > 0 {
		parts = append(parts, plural(o.Losses, "loss notice"))
	}
	parts = append(parts, fmt.Sprintf("%d lock keys at exit, all expired", o.LeftoverAtStop))
	parts = append(parts, o.Notes...)
	return strings.Join(parts, "; ")
}

func controlNotes(o *outcome) string {
	if len(o.Notes) == 0 {
		return ""
	}
	return "; control: " + strings.Join(o.Notes, "; ")
}

func refused(o *outcome) string {
	s := ""
	if o.Refused > 0 {
		s = fmt.Sprintf(", %d refused by the fence", o.Refused)
	}
	if o.StaleReads+o.StaleWrites+o.Partial > 0 {
		s += fmt.Sprintf(", %d reads and %d writes refused by the register's fence, %d half-written", o.StaleReads, o.StaleWrites, o.Partial)
	}
	return s
}

func windows(o *outcome) string {
	if o.Windows > 1 {
		return fmt.Sprintf(", %d windows", o.Windows)
	}
	return ""
}

func plural(n int, s string) string {
	if n == 1 {
		return "1 " + s
	}
	return fmt.Sprintf("%d %ss", n, s)
}
