//go:build linux

package reliability_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// outcome is what the checkers found in one run.
type outcome struct {
	Faults    int
	Attempts  int // acquire calls
	Grants    int // acquisitions
	Losses    int // loss notices
	Steps     int // witness increments attempted
	Committed int
	Refused   int // refused by the fence (sqlguard: ErrStaleFence)

	// Violations.
	DoubleGrants  int // an acquisition completed inside another holder's tenure
	FenceRepeats  int // a fence not above one granted before
	LostUpdates   int // committed increments missing from the witness
	StaleAccepted int // a write accepted after a write with a higher fence

	LockCheck, StoreCheck porcupine.CheckResult
	LeftoverAtStop        int // lock keys in Redis right after the workers exited
	Notes                 []string
	Windows               int // fault windows merged into this outcome (negative controls)

	familyCounts // shared holds and permits (family_check_test.go)
}

// checkTimeout bounds each porcupine search; histories here are mostly
// sequential (one holder at a time), so it is far more than needed.
const checkTimeout = 60 * time.Second

// ---- the fenced mutex -------------------------------------------------

// lockIn is one operation on the lock: an acquisition that returned fence
// F, or the end of that holder's tenure (release, loss, or lease run out).
type lockIn struct {
	End    bool
	W, Seq int
	F      uint64
}

type lockState struct {
	Held   bool
	W, Seq int
	Max    uint64 // highest fence granted so far
}

// lockModel: an acquisition is legal only when the lock is free and its
// fence is above every earlier fence; a tenure ends only for its holder.
//
// A tenure ends where the lock's promise ends: a release at its call (or
// at the validity deadline, if that came first), a loss anywhere from the
// validity deadline (Lock.Deadline) to the moment the holder was told. So
// the model checks the lock service against what Client promised its
// holder, whatever the holder did with it; what a paused or deaf holder
// writes late is the register model's business. A negative control that
// times its lease from the reply records the later end it believes in.
var lockModel = porcupine.Model{
	Init: func() any { return lockState{} },
	Step: func(s, in, _ any) (bool, any) {
		st, i := s.(lockState), in.(lockIn)
		if !i.End {
			if st.Held || i.F <= st.Max {
				return false, st
			}
			return true, lockState{Held: true, W: i.W, Seq: i.Seq, Max: i.F}
		}
		if !st.Held || st.W != i.W || st.Seq != i.Seq {
			return false, st
		}
		return true, lockState{Max: st.Max}
	},
	DescribeOperation: func(in, _ any) string {
		i := in.(lockIn)
		if i.End {
			return fmt.Sprintf("end w%d#%d", i.W, i.Seq)
		}
		return fmt.Sprintf("acquire w%d#%d fence %d", i.W, i.Seq, i.F)
	},
	DescribeState: func(s any) string {
		st := s.(lockState)
		if !st.Held {
			return fmt.Sprintf("free (max fence %d)", st.Max)
		}
		return fmt.Sprintf("held by w%d#%d (fence %d)", st.W, st.Seq, st.Max)
	},
}

// ---- the fenced register with a counter -------------------------------

// storeIn is one witness increment by tenure (W, Seq): read Read, write
// Read+1, under fence F, with outcome Res (ok, stale, unknown; aborts are
// left out).
type storeIn struct {
	W, Seq int
	F      uint64
	Read   int64
	Res    string
}

type storeState struct {
	V      int64
	Max    uint64 // highest fence accepted so far
	W, Seq int    // the tenure that wrote it
}

// storeModel is sqlguard's contract as a fenced register with a counter: a
// write is accepted only if its fence is above the highest accepted so
// far, or equal to it from the same holder; an increment must read the
// current value (read-modify-write is atomic). A refusal is legal only for
// a write that would not have been accepted; an unknown outcome may or may
// not have happened.
var storeModel = (&porcupine.NondeterministicModel{
	Init: func() []any { return []any{storeState{W: -1}} },
	Step: func(s, in, _ any) []any {
		st, i := s.(storeState), in.(storeIn)
		newer := i.F > st.Max || (i.F == st.Max && i.W == st.W && i.Seq == st.Seq)
		next := storeState{V: i.Read + 1, Max: i.F, W: i.W, Seq: i.Seq}
		applies := newer && i.Read == st.V
		switch i.Res {
		case "ok":
			if applies {
				return []any{next}
			}
			return nil
		case "stale":
			if !newer {
				return []any{st}
			}
			return nil
		case "unknown":
			if applies {
				return []any{st, next}
			}
		}
		return []any{st}
	},
	DescribeOperation: func(in, _ any) string {
		i := in.(storeIn)
		return fmt.Sprintf("w%d#%d fence %d: read %d write %d: %s", i.W, i.Seq, i.F, i.Read, i.Read+1, i.Res)
	},
	DescribeState: func(s any) string {
		st := s.(storeState)
		return fmt.Sprintf("value %d, max fence %d (w%d#%d)", st.V, st.Max, st.W, st.Seq)
	},
}).ToModel()

// ---- checking a run ----------------------------------------------------

type tenure struct {
	acq, end *event
}

func (r *run) check(o *outcome) {
	evs := r.snapshot()
	o.Faults += int(r.faults.Load())
	tenures := map[[2]int]*tenure{}
	lockOps := map[string][]porcupine.Operation{}
	storeOps := map[string][]porcupine.Operation{}
	steps := map[string][]*event{}
	for i := range evs {
		e := &evs[i]
		switch e.K {
		case "acq":
			o.Attempts++
			if e.Res != "ok" {
				if debug() {
					r.t.Logf("acquire %s w%d at %d..%d: %s", e.Res, e.W, e.C/1e6%100000, e.R/1e6%100000, e.Note)
				}
				continue
			}
			o.Grants++
			if debug() {
				r.t.Logf("acquired %s w%d#%d at %d..%d fence %d", e.Mode, e.W, e.Seq, e.C/1e6%100000, e.R/1e6%100000, e.F)
			}
			if e.Mode != "" {
				continue // shared and permit holds: checkFamily
			}
			tenures[[2]int{e.W, e.Seq}] = &tenure{acq: e}
			lockOps[e.Key] = append(lockOps[e.Key], porcupine.Operation{
				ClientId: e.W, Input: lockIn{W: e.W, Seq: e.Seq, F: e.F}, Call: e.C, Return: e.R})
		case "end":
			if tn := tenures[[2]int{e.W, e.Seq}]; tn != nil {
				tn.end = e
			}
			if e.Res == "lost" || e.Res == "expired" {
				o.Losses++
			}
			if e.Mode != "" {
				continue
			}
			lockOps[e.Key] = append(lockOps[e.Key], porcupine.Operation{
				ClientId: e.W, Input: lockIn{End: true, W: e.W, Seq: e.Seq, F: e.F}, Call: e.C, Return: e.R})
		case "step":
			o.Steps++
			switch e.Res {
			case "ok":
				o.Committed++
			case "stale":
				o.Refused++
			case "abort":
				continue
			}
			steps[e.Key] = append(steps[e.Key], e)
			storeOps[e.Key] = append(storeOps[e.Key], porcupine.Operation{
				ClientId: e.W, Input: storeIn{W: e.W, Seq: e.Seq, F: e.F, Read: e.Read, Res: e.Res}, Call: e.C, Return: e.R})
		}
	}
	o.DoubleGrants = doubleGrants(tenures)
	o.FenceRepeats = fenceRepeats(tenures)
	final := witnessValues(r.t, r.dbc, r.db, r.spec.Keys)
	for _, k := range r.spec.Keys {
		ok := 0
		for _, e := range steps[k] {
			if e.Res == "ok" {
				ok++
			}
		}
		if lost := int64(ok) - final[k]; lost > 0 {
			o.LostUpdates += int(lost)
		}
		o.StaleAccepted += staleAccepted(steps[k])
	}
	o.LockCheck = r.porcupine("lock", lockModel, lockOps)
	o.StoreCheck = r.porcupine("store", storeModel, storeOps)
	r.checkFamily(o, evs)
	r.mu.Lock()
	o.Notes = append(o.Notes, r.notes...)
	r.mu.Unlock()
}

// doubleGrants counts acquisitions that certainly happened inside another
// holder's tenure: they returned before that tenure could have ended, and
// were called after its acquisition returned or carry a higher fence (if
// the fence lies about the order, that is a violation of its own).
// porcupine decides the uncertain cases.
func doubleGrants(tenures map[[2]int]*tenure) int {
	byKey := map[string][]*tenure{}
	for _, tn := range tenures {
		byKey[tn.acq.Key] = append(byKey[tn.acq.Key], tn)
	}
	n := 0
	for _, ts := range byKey {
		for _, b := range ts {
			for _, a := range ts {
				end := int64(math.MaxInt64)
				if a.end != nil {
					end = a.end.C
				}
				if a != b && b.acq.R < end && (a.acq.R < b.acq.C || a.acq.F < b.acq.F) {
					n++
					break
				}
			}
		}
	}
	return n
}

// fenceRepeats counts acquisitions whose fence is not above the fence of an
// acquisition of the same key that returned before they were called.
func fenceRepeats(tenures map[[2]int]*tenure) int {
	byKey := map[string][]*event{}
	for _, tn := range tenures {
		byKey[tn.acq.Key] = append(byKey[tn.acq.Key], tn.acq)
	}
	n := 0
	for _, acqs := range byKey {
		for _, b := range acqs {
			for _, a := range acqs {
				if a != b && a.R < b.C && a.F >= b.F {
					n++
					break
				}
			}
		}
	}
	return n
}

// staleAccepted counts accepted writes whose fence is below that of a write
// accepted certainly before them (it returned before they were called).
func staleAccepted(steps []*event) int {
	var oks []*event
	for _, e := range steps {
		if e.Res == "ok" {
			oks = append(oks, e)
		}
	}
	byRet := append([]*event(nil), oks...)
	sort.Slice(byRet, func(i, j int) bool { return byRet[i].R < byRet[j].R })
	prefixMax := make([]uint64, len(byRet))
	var m uint64
	for i, e := range byRet {
		m = max(m, e.F)
		prefixMax[i] = m
	}
	n := 0
	for _, e := range oks {
		// writes that returned before e was called
		j := sort.Search(len(byRet), func(i int) bool { return byRet[i].R >= e.C })
		if j > 0 && prefixMax[j-1] > e.F {
			n++
		}
	}
	return n
}

// porcupine checks each key's history and returns the worst verdict. An
// illegal history is written out as porcupine's HTML visualization.
func (r *run) porcupine(what string, m porcupine.Model, byKey map[string][]porcupine.Operation) porcupine.CheckResult {
	res := porcupine.Ok
	for k, ops := range byKey {
		got, info := porcupine.CheckOperationsVerbose(m, ops, checkTimeout)
		switch got {
		case porcupine.Illegal:
			res = porcupine.Illegal
			if !debug() {
				continue
			}
			sorted := append([]porcupine.Operation(nil), ops...)
			sort.Slice(sorted, func(i, j int) bool { return sorted[i].Call < sorted[j].Call })
			for _, op := range sorted {
				r.t.Logf("%s %d..%d %s", what, op.Call/1e6%100000, op.Return/1e6%100000, m.DescribeOperation(op.Input, op.Output))
			}
			name := strings.NewReplacer("/", "_", " ", "_", ":", "_", "#", "_").Replace(r.t.Name() + "_" + what + "_" + k)
			path := filepath.Join(os.TempDir(), "fencedlock-"+name+".html")
			if err := porcupine.VisualizePath(m, info, path); err == nil {
				r.t.Logf("%s history of %q is not linearizable; visualization: %s", what, k, path)
			}
		case porcupine.Unknown:
			if res == porcupine.Ok {
				res = porcupine.Unknown
			}
			r.t.Logf("%s history of %q: porcupine gave up after %v (%d operations)", what, k, checkTimeout, len(ops))
		}
	}
	return res
}

// TestModels_catchViolations feeds the checkers hand-made histories, so a
// model that accepts everything cannot hide behind a green suite.
func TestModels_catchViolations(t *testing.T) {
	gate(t)
	op := func(w int, in any, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: w, Input: in, Call: call, Return: ret}
	}
	acq := func(w, seq int, f uint64, c, r int64) porcupine.Operation {
		return op(w, lockIn{W: w, Seq: seq, F: f}, c, r)
	}
	end := func(w, seq int, c, r int64) porcupine.Operation {
		return op(w, lockIn{End: true, W: w, Seq: seq}, c, r)
	}
	locks := []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"sequential", []porcupine.Operation{acq(0, 1, 5, 0, 1), end(0, 1, 2, 3), acq(1, 1, 6, 4, 5), end(1, 1, 6, 7)}, porcupine.Ok},
		{"overlapping calls may order", []porcupine.Operation{acq(0, 1, 7, 0, 10), acq(1, 1, 6, 1, 2), end(1, 1, 3, 4), end(0, 1, 11, 12)}, porcupine.Ok},
		{"double grant", []porcupine.Operation{acq(0, 1, 5, 0, 1), acq(1, 1, 6, 2, 3), end(0, 1, 4, 5), end(1, 1, 6, 7)}, porcupine.Illegal},
		{"repeated fence", []porcupine.Operation{acq(0, 1, 5, 0, 1), end(0, 1, 2, 3), acq(1, 1, 5, 4, 5), end(1, 1, 6, 7)}, porcupine.Illegal},
		{"end by a stranger", []porcupine.Operation{acq(0, 1, 5, 0, 1), end(1, 1, 2, 3)}, porcupine.Illegal},
	}
	for _, c := range locks {
		if got := porcupine.CheckOperations(lockModel, c.ops); (got && c.want != porcupine.Ok) || (!got && c.want == porcupine.Ok) {
			t.Errorf("mutex model, %s: linearizable=%v", c.name, got)
		}
	}
	step := func(w, seq int, f uint64, read int64, res string, c, r int64) porcupine.Operation {
		return op(w, storeIn{W: w, Seq: seq, F: f, Read: read, Res: res}, c, r)
	}
	stores := []struct {
		name string
		ops  []porcupine.Operation
		ok   bool
	}{
		{"sequential", []porcupine.Operation{step(0, 1, 5, 0, "ok", 0, 1), step(0, 1, 5, 1, "ok", 2, 3), step(1, 1, 6, 2, "ok", 4, 5)}, true},
		{"older refused", []porcupine.Operation{step(1, 1, 6, 0, "ok", 0, 1), step(0, 1, 5, -1, "stale", 2, 3)}, true},
		{"same fence, other owner refused", []porcupine.Operation{step(1, 1, 6, 0, "ok", 0, 1), step(0, 1, 6, -1, "stale", 2, 3)}, true},
		{"unknown outcome either way", []porcupine.Operation{step(0, 1, 5, 0, "unknown", 0, 1), step(1, 1, 6, 0, "ok", 2, 3)}, true},
		{"stale write accepted", []porcupine.Operation{step(1, 1, 6, 0, "ok", 0, 1), step(0, 1, 5, 1, "ok", 2, 3)}, false},
		{"lost update", []porcupine.Operation{step(0, 1, 5, 0, "ok", 0, 1), step(1, 1, 6, 0, "ok", 2, 3)}, false},
		{"newer refused", []porcupine.Operation{step(0, 1, 5, 0, "ok", 0, 1), step(1, 1, 6, -1, "stale", 2, 3)}, false},
	}
	for _, c := range stores {
		if got := porcupine.CheckOperations(storeModel, c.ops); got != c.ok {
			t.Errorf("register model, %s: linearizable=%v", c.name, got)
		}
	}
	// The direct counts.
	ev := func(w, seq int, f uint64, c, r int64) *event {
		return &event{K: "acq", W: w, Seq: seq, Key: "k", F: f, C: c, R: r, Res: "ok"}
	}
	tenures := map[[2]int]*tenure{
		{0, 1}: {acq: ev(0, 1, 5, 0, 1), end: &event{C: 10, R: 11}},
		{1, 1}: {acq: ev(1, 1, 6, 2, 3), end: &event{C: 12, R: 13}},   // inside w0's tenure
		{2, 1}: {acq: ev(2, 1, 6, 14, 15), end: &event{C: 16, R: 17}}, // repeats fence 6
	}
	if n := doubleGrants(tenures); n != 1 {
		t.Errorf("doubleGrants = %d, want 1", n)
	}
	if n := fenceRepeats(tenures); n != 1 {
		t.Errorf("fenceRepeats = %d, want 1", n)
	}
	steps := []*event{
		{F: 6, C: 0, R: 1, Res: "ok"}, {F: 5, C: 2, R: 3, Res: "ok"}, {F: 7, C: 0, R: 9, Res: "ok"},
	}
	if n := staleAccepted(steps); n != 1 {
		t.Errorf("staleAccepted = %d, want 1", n)
	}
}
