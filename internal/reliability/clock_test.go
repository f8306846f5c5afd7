//go:build linux

package reliability_test

import (
	"time"

	"golang.org/x/sys/unix"
)

// mono reads CLOCK_MONOTONIC in nanoseconds. Histories are compared across
// processes, and Go's own monotonic readings are offsets from each
// process's start, so every timestamp in a history comes from this
// system-wide clock instead. It keeps counting while a process is stopped
// by SIGSTOP (it stops only during system suspend), so a paused worker's
// timestamps stay on the same time line as everyone else's. Wall-clock
// time is never used: NTP steps would reorder events.
func mono() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic("reliability: clock_gettime(CLOCK_MONOTONIC): " + err.Error())
	}
	return ts.Nano()
}

// monoOf converts a time.Time with a monotonic reading (a lock's deadline)
// to the mono time line: now on both clocks, plus the distance to t.
func monoOf(t time.Time) int64 {
	return mono() + int64(time.Until(t))
}
