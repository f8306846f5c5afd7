//go:build linux

package reliability_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Environment switches.
const (
	// modeEnv selects the suite size: "smoke" (CI, a few minutes) or "soak".
	// Unset, every test skips, so `go test ./...` stays fast.
	modeEnv = "FENCEDLOCK_RELIABILITY"
	// durationEnv sets how long each soak run injects faults (default 60s).
	durationEnv = "FENCEDLOCK_RELIABILITY_DURATION"
	// reportEnv names a file the suite writes its Markdown table to.
	reportEnv = "FENCEDLOCK_RELIABILITY_REPORT"
	// workerEnv carries a worker's configuration (JSON) into a re-executed
	// test binary; its presence makes the process a worker.
	workerEnv = "FENCEDLOCK_RELIABILITY_WORKER"
	// debugEnv=1 logs every acquisition, the injected faults and, for a
	// history porcupine rejects, the whole history in call order.
	debugEnv = "FENCEDLOCK_RELIABILITY_DEBUG"
)

func debug() bool { return os.Getenv(debugEnv) == "1" }

func TestMain(m *testing.M) {
	code := m.Run()
	if os.Getenv(workerEnv) == "" {
		if err := writeReport(os.Getenv(reportEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "reliability: writing the report:", err)
			code = 1
		}
	}
	if code == 0 {
		// Workers check themselves too: a leak there fails their exit
		// status, which the parent treats as a failed run.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "reliability: leaked goroutines:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// sizing is how long and how hard the suite runs.
type sizing struct {
	name string
	run  time.Duration // fault-injection time per run (protected or control)
}

// gate skips the test unless the suite was asked for.
func gate(t *testing.T) sizing {
	t.Helper()
	switch m := os.Getenv(modeEnv); m {
	case "smoke":
		return sizing{name: m, run: 4 * time.Second}
	case "soak":
		d := time.Minute
		if v := os.Getenv(durationEnv); v != "" {
			var err error
			if d, err = time.ParseDuration(v); err != nil {
				if s, serr := strconv.Atoi(v); serr == nil {
					d, err = time.Duration(s)*time.Second, nil
				}
			}
			if err != nil || d <= 0 {
				t.Fatalf("%s=%q: want a duration such as 10m", durationEnv, v)
			}
		}
		return sizing{name: m, run: d}
	case "":
		t.Skip("reliability suite: set " + modeEnv + "=smoke (CI size, ~3 min) or " + modeEnv + "=soak to run it")
	default:
		t.Fatalf("%s=%q: want smoke or soak", modeEnv, m)
	}
	return sizing{}
}
