package main

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// mainEnv makes the test binary run main itself, so a test can run the
// command as an operator does (its own process, its own exit code and
// stderr) without building it first.
const mainEnv = "FENCEDLOCK_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(mainEnv) == "1" {
		main()
	}
	goleak.VerifyTestMain(m)
}
