//go:build linux

package reliability_test

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"time"
)

// reportRow is one line of the table in docs/reliability.md.
type reportRow struct {
	Security   bool // a security check rather than a fault scenario
	Scenario   string
	Faults     string
	Ops        string
	Violations string
	Control    string // the negative control's violations
	Checks     string
}

var report struct {
	mu      sync.Mutex
	mode    string
	storage string
	rows    []reportRow
}

func addRow(r reportRow) {
	report.mu.Lock()
	defer report.mu.Unlock()
	report.rows = append(report.rows, r)
}

func setReportInfo(mode, storage string) {
	report.mu.Lock()
	defer report.mu.Unlock()
	if mode != "" {
		report.mode = mode
	}
	if storage != "" {
		report.storage = storage
	}
}

// writeReport writes the Markdown table to path ("" writes nothing).
func writeReport(path string) error {
	report.mu.Lock()
	defer report.mu.Unlock()
	if path == "" || len(report.rows) == 0 {
		return nil
	}
	var b strings.Builder
	ver, _ := exec.Command("redis-server", "--version").Output()
	fmt.Fprintf(&b, "Measured %s with `FENCEDLOCK_RELIABILITY=%s go test -race -count=1 ./internal/reliability/` "+
		"(%s, %s/%s, %d CPUs, %s; lock scenarios write through %s).\n\n",
		time.Now().UTC().Format("2006-01-02"), report.mode, runtime.Version(), runtime.GOOS, runtime.GOARCH,
		runtime.NumCPU(), strings.TrimSpace(strings.SplitN(string(ver), " sha=", 2)[0]), report.storage)
	table := func(title string, security bool) {
		fmt.Fprintf(&b, "### %s\n\n", title)
		b.WriteString("| scenario | faults injected | operations | violations | negative control: violations | checks |\n")
		b.WriteString("| --- | --- | --- | --- | --- | --- |\n")
		for _, r := range report.rows {
			if r.Security == security {
				fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", r.Scenario, r.Faults, r.Ops, r.Violations, r.Control, r.Checks)
			}
		}
		b.WriteString("\n")
	}
	table("Faults", false)
	table("Security", true)
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
