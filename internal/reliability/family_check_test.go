//go:build linux

package reliability_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// familyCounts is what the lock family's checkers found (part of outcome).
type familyCounts struct {
	Reads, Writes, Counts   int // operations on the rw register and the permit witness
	StaleReads, StaleWrites int // refused by the register's fence (a write refused at its first half)
	Partial                 int // writes whose second half was refused (or abandoned): half-written
	StaleCounts             int // permit witness check-ins refused (the entry had expired)
	MaxReaders              int // most readers certainly holding at one instant
	MaxInside               int // highest permit witness count

	// Violations.
	Overlaps         int // a hold certainly held beside a writer's (or a writer's beside any)
	InProgress       int // reads that saw half of a write that went on to complete
	OverLimit        int // permit witness counts above the limit
	TenuresOverLimit int // instants with more than the limit of permit tenures certainly held

	RWCheck porcupine.CheckResult // the rw register model ("" when not checked)
}

func (a *familyCounts) add(b familyCounts) {
	a.Reads += b.Reads
	a.Writes += b.Writes
	a.Counts += b.Counts
	a.StaleReads += b.StaleReads
	a.StaleWrites += b.StaleWrites
	a.Partial += b.Partial
	a.StaleCounts += b.StaleCounts
	a.MaxReaders = max(a.MaxReaders, b.MaxReaders)
	a.MaxInside = max(a.MaxInside, b.MaxInside)
	a.Overlaps += b.Overlaps
	a.InProgress += b.InProgress
	a.OverLimit += b.OverLimit
	a.TenuresOverLimit += b.TenuresOverLimit
	if a.RWCheck != "" || b.RWCheck != "" {
		a.RWCheck = worse(a.RWCheck, b.RWCheck)
	}
}

// ---- the rw register -----------------------------------------------------

// rwIn is one operation on the two-part register: a read that returned
// (A, B), or a write of Val by tenure (W, Seq) under fence F.
type rwIn struct {
	Read   bool
	W, Seq int
	F      uint64
	Val    int64
	A, B   int64
	Res    string
}

type rwState struct {
	A, B      int64
	Max, WMax uint64 // highest fence seen, highest writer fence
	OW, OSeq  int    // the tenure that set Max
}

// rwModel is the register as rwScript promises it, with the two halves of
// a write as one atomic operation: a linearizable history has no read that
// sees a write in progress. A write that lost its second half (partial:
// refused, or abandoned at the loss notice) is an operation of its own that
// sets the first half only; an unknown outcome may or may not have landed.
// With fenced (the guard on) a half is accepted only under a fence above
// every fence seen, or equal to it from the same tenure, and a read only
// under a fence above every writer's; without, everything is accepted.
func rwModel(fenced bool) porcupine.Model {
	return (&porcupine.NondeterministicModel{
		Init: func() []any { return []any{rwState{OW: -1}} },
		Step: func(s, in, _ any) []any {
			st, i := s.(rwState), in.(rwIn)
			if i.Read {
				return rwRead(fenced, st, i)
			}
			newer := !fenced || i.F > st.Max || (i.F == st.Max && i.W == st.OW && i.Seq == st.OSeq)
			half := rwState{A: i.Val, B: st.B, Max: max(st.Max, i.F), WMax: max(st.WMax, i.F), OW: i.W, OSeq: i.Seq}
			if !fenced {
				half.Max, half.WMax, half.OW, half.OSeq = 0, 0, -1, 0
			}
			whole := half
			whole.B = i.Val
			switch {
			case i.Res == "stale" && !newer, i.Res == "unknown1" && !newer:
				return []any{st}
			case !newer:
				return nil
			}
			switch i.Res {
			case "ok":
				return []any{whole}
			case "partial":
				return []any{half}
			case "unknown1":
				return []any{st, half}
			case "unknown2":
				return []any{half, whole}
			}
			return nil
		},
		DescribeOperation: func(in, _ any) string {
			i := in.(rwIn)
			if i.Read {
				return fmt.Sprintf("w%d#%d fence %d: read (%d, %d): %s", i.W, i.Seq, i.F, i.A, i.B, i.Res)
			}
			return fmt.Sprintf("w%d#%d fence %d: write %d: %s", i.W, i.Seq, i.F, i.Val, i.Res)
		},
		DescribeState: func(s any) string {
			st := s.(rwState)
			return fmt.Sprintf("(%d, %d), max fence %d, writers' %d", st.A, st.B, st.Max, st.WMax)
		},
	}).ToModel()
}

func rwRead(fenced bool, st rwState, i rwIn) []any {
	stale := fenced && i.F < st.WMax
	switch {
	case i.Res == "stale" && stale:
		return []any{st}
	case i.Res != "ok" || stale || i.A != st.A || i.B != st.B:
		return nil
	}
	if fenced && i.F > st.Max {
		st.Max, st.OW, st.OSeq = i.F, i.W, i.Seq
	}
	return []any{st}
}

// ---- checking a run --------------------------------------------------------

// checkFamily checks the rw register and the permit witness of a run.
func (r *run) checkFamily(o *outcome, evs []event) {
	var ts []*tenure
	byKey := map[[2]int]*tenure{}
	writes := map[int64]*event{}
	ops := map[string][]porcupine.Operation{}
	for i := range evs {
		e := &evs[i]
		switch {
		case e.K == "acq" && e.Res == "ok" && (e.Mode != "" || e.Role != ""):
			tn := &tenure{acq: e}
			byKey[[2]int{e.W, e.Seq}] = tn
			ts = append(ts, tn)
		case e.K == "end":
			if tn := byKey[[2]int{e.W, e.Seq}]; tn != nil {
				tn.end = e
			}
		case e.K == "write":
			o.Writes++
			writes[e.Val] = e
			ops[e.Key] = r.rwOp(ops[e.Key], o, e, rwIn{W: e.W, Seq: e.Seq, F: e.F, Val: e.Val, Res: e.Res})
		case e.K == "read":
			o.Reads++
			ops[e.Key] = r.rwOp(ops[e.Key], o, e, rwIn{Read: true, W: e.W, Seq: e.Seq, F: e.F, A: e.Read, B: e.Read2, Res: e.Res})
		case e.K == "count":
			o.Counts++
			if e.Res == "stale" {
				o.StaleCounts++
			}
			if e.Res == "ok" {
				o.MaxInside = max(o.MaxInside, int(e.Read))
				if r.spec.Limit > 0 && e.Read > int64(r.spec.Limit) {
					o.OverLimit++
				}
			}
		}
	}
	for i := range evs {
		e := &evs[i]
		if e.K == "read" && e.Res == "ok" && e.Read != e.Read2 {
			if wr := writes[e.Read]; wr != nil && wr.Res == "ok" {
				o.InProgress++
			}
		}
	}
	o.Overlaps, o.MaxReaders, o.TenuresOverLimit = familyOverlaps(ts, r.spec.Limit)
	if len(ops) > 0 {
		o.RWCheck = r.porcupine("rw register", rwModel(r.spec.Worker.Fence), ops)
	}
}

// rwOp adds a register operation to the history (aborted ones did nothing).
func (r *run) rwOp(ops []porcupine.Operation, o *outcome, e *event, in rwIn) []porcupine.Operation {
	switch e.Res {
	case "abort", "unknown":
		return ops
	case "partial":
		o.Partial++
	case "stale":
		if in.Read {
			o.StaleReads++
		} else {
			o.StaleWrites++
		}
	}
	return append(ops, porcupine.Operation{ClientId: e.W, Input: in, Call: e.C, Return: e.R})
}

// familyOverlaps looks at each acquisition's return: every tenure whose
// acquisition had returned by then and whose end was not yet called
// certainly held at that instant, the new one included. It counts the
// acquisitions at which a writer (role w) held beside anyone, the most
// readers seen holding at once, and, with limit > 0, the acquisitions at
// which more than limit tenures held.
func familyOverlaps(ts []*tenure, limit int) (overlaps, maxReaders, overLimit int) {
	for _, b := range ts {
		t := b.acq.R
		var inside, readers, writers int
		for _, a := range ts {
			end := int64(1<<63 - 1)
			if a.end != nil {
				end = a.end.C
			}
			if a.acq.R <= t && t < end {
				inside++
				if a.acq.Role == "w" {
					writers++
				}
				if a.acq.Role == "r" {
					readers++
				}
			}
		}
		if writers > 0 && inside > 1 {
			overlaps++
		}
		maxReaders = max(maxReaders, readers)
		if limit > 0 && inside > limit {
			overLimit++
		}
	}
	return overlaps, maxReaders, overLimit
}

// ---- the report --------------------------------------------------------------

func familyViolations(c claims, o *outcome) int {
	n := 0
	if c.RW {
		n += o.Overlaps + o.InProgress
	}
	if c.Limit > 0 {
		n += o.OverLimit + o.TenuresOverLimit
	}
	return n
}

func familyParts(c claims, o *outcome) []string {
	var parts []string
	if c.RW && o.Overlaps > 0 {
		parts = append(parts, plural(o.Overlaps, "hold")+" beside a writer")
	}
	if c.RW && o.InProgress > 0 {
		parts = append(parts, plural(o.InProgress, "read")+" of a write in progress")
	}
	if c.Limit > 0 && o.OverLimit > 0 {
		parts = append(parts, fmt.Sprintf("%s of more than %d holders", plural(o.OverLimit, "witness count"), c.Limit))
	}
	if c.Limit > 0 && o.TenuresOverLimit > 0 {
		parts = append(parts, fmt.Sprintf("%s with more than %d tenures", plural(o.TenuresOverLimit, "grant"), c.Limit))
	}
	return parts
}

func familyOps(o *outcome) string {
	var parts []string
	if o.Reads+o.Writes > 0 {
		parts = append(parts, fmt.Sprintf("%d reads, %d two-part writes", o.Reads, o.Writes))
	}
	if o.Counts > 0 {
		parts = append(parts, fmt.Sprintf("%d witness counts", o.Counts))
	}
	if len(parts) == 0 {
		return ""
	}
	return ", " + strings.Join(parts, ", ")
}

func familyChecks(c claims, o *outcome) []string {
	var parts []string
	if o.RWCheck != "" {
		v := map[porcupine.CheckResult]string{porcupine.Ok: "linearizable", porcupine.Illegal: "NOT linearizable"}[o.RWCheck]
		if v == "" {
			v = "undecided"
		}
		parts = append(parts, "rw register model "+v, fmt.Sprintf("up to %d readers at once", o.MaxReaders))
	}
	if c.Limit > 0 {
		parts = append(parts, fmt.Sprintf("up to %d holders counted at once (limit %d)", o.MaxInside, c.Limit))
	}
	if o.StaleReads+o.StaleWrites+o.Partial > 0 {
		parts = append(parts, fmt.Sprintf("register's fence refused %d reads and %d writes; %d writes left half-written (second half refused)",
			o.StaleReads, o.StaleWrites, o.Partial))
	}
	if o.StaleCounts > 0 {
		parts = append(parts, fmt.Sprintf("%d check-ins after a pause refused by the witness (permit expired)", o.StaleCounts))
	}
	return parts
}

// TestFamilyModels_catchViolations feeds the family's checkers hand-made
// histories, so a checker that accepts everything cannot hide behind a
// green run.
func TestFamilyModels_catchViolations(t *testing.T) {
	gate(t)
	op := func(w int, in rwIn, call, ret int64) porcupine.Operation {
		in.W, in.Seq = w, 1
		return porcupine.Operation{ClientId: w, Input: in, Call: call, Return: ret}
	}
	wr := func(f uint64, v int64, res string) rwIn { return rwIn{F: f, Val: v, Res: res} }
	rd := func(f uint64, a, b int64, res string) rwIn { return rwIn{Read: true, F: f, A: a, B: b, Res: res} }
	cases := []struct {
		name   string
		fenced bool
		ops    []porcupine.Operation
		ok     bool
	}{
		{"write then read", true, []porcupine.Operation{op(0, wr(5, 7, "ok"), 0, 1), op(1, rd(6, 7, 7, "ok"), 2, 3)}, true},
		{"concurrent read sees before or after", true, []porcupine.Operation{op(0, wr(5, 7, "ok"), 0, 10), op(1, rd(4, 0, 0, "ok"), 1, 2)}, true},
		{"read of a write in progress", true, []porcupine.Operation{op(0, wr(5, 7, "ok"), 0, 10), op(1, rd(6, 7, 0, "ok"), 2, 3)}, false},
		{"half-written value left by a paused writer", true, []porcupine.Operation{
			op(0, wr(5, 7, "partial"), 0, 10), op(1, rd(6, 7, 0, "ok"), 2, 3), op(2, wr(8, 9, "ok"), 4, 5), op(1, rd(9, 9, 9, "ok"), 6, 7)}, true},
		{"write refused after a later reader", true, []porcupine.Operation{op(1, rd(6, 0, 0, "ok"), 0, 1), op(0, wr(5, 7, "stale"), 2, 3)}, true},
		{"stale write accepted after a later reader", true, []porcupine.Operation{op(1, rd(6, 0, 0, "ok"), 0, 1), op(0, wr(5, 7, "ok"), 2, 3)}, false},
		{"stale read accepted after a later writer", true, []porcupine.Operation{op(0, wr(6, 7, "ok"), 0, 1), op(1, rd(5, 7, 7, "ok"), 2, 3)}, false},
		{"read refused though no writer came later", true, []porcupine.Operation{op(0, wr(4, 7, "ok"), 0, 1), op(1, rd(5, 7, 7, "stale"), 2, 3)}, false},
		{"torn writers, unguarded", false, []porcupine.Operation{
			op(0, wr(5, 7, "ok"), 0, 10), op(1, wr(6, 8, "ok"), 1, 11), op(2, rd(7, 8, 7, "ok"), 12, 13)}, false},
		{"unknown second half either way", true, []porcupine.Operation{op(0, wr(5, 7, "unknown2"), 0, 1), op(1, rd(6, 7, 0, "ok"), 2, 3)}, true},
	}
	for _, c := range cases {
		if got := porcupine.CheckOperations(rwModel(c.fenced), c.ops); got != c.ok {
			t.Errorf("rw register model, %s: linearizable=%v", c.name, got)
		}
	}
	ten := func(role string, acqR, endC int64) *tenure {
		return &tenure{acq: &event{K: "acq", Role: role, R: acqR}, end: &event{C: endC}}
	}
	readers := []*tenure{ten("r", 1, 10), ten("r", 2, 10), ten("r", 3, 10)}
	if ov, mr, _ := familyOverlaps(readers, 0); ov != 0 || mr != 3 {
		t.Errorf("three readers: overlaps %d, most readers %d; want 0, 3", ov, mr)
	}
	if ov, _, _ := familyOverlaps(append(readers, ten("w", 5, 20)), 0); ov != 1 {
		t.Errorf("a writer granted beside readers: overlaps %d, want 1", ov)
	}
	if ov, _, _ := familyOverlaps([]*tenure{ten("w", 1, 5), ten("w", 5, 9), ten("r", 9, 12)}, 0); ov != 0 {
		t.Errorf("back-to-back holds: overlaps %d, want 0", ov)
	}
	permits := []*tenure{ten("", 1, 10), ten("", 2, 10), ten("", 3, 10), ten("", 11, 20)}
	if _, _, over := familyOverlaps(permits, 3); over != 0 {
		t.Errorf("3 permits, then a fourth after an end: %d over the limit, want 0", over)
	}
	if _, _, over := familyOverlaps(append(permits, ten("", 4, 12)), 3); over != 1 {
		t.Errorf("a fourth permit among three: %d over the limit, want 1", over)
	}
}
