package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/fencedlock/fencedlock/internal/redistest"
)

// runProcess runs the command in its own process, through main.
func runProcess(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), mainEnv+"=1")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

// As a process: an unreachable Redis (each address form) is exit 2 and one
// line on stderr naming the address, with none of go-redis's own pool logs
// and no stack trace; an unknown key is exit 1 and one line.
func TestProcess_exitCodesAndOneLineErrors(t *testing.T) {
	srv := redistest.Start(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-redis", "127.0.0.1:1", "ls"}, exitUnreachable, "fencedlock: cannot reach Redis at 127.0.0.1:1: "},
		{[]string{"-redis", "redis://127.0.0.1:1/0", "show", "k"}, exitUnreachable, "fencedlock: cannot reach Redis at 127.0.0.1:1: "},
		{[]string{"-redis", "127.0.0.1:1,127.0.0.1:2", "ls"}, exitUnreachable, "fencedlock: cannot reach Redis at 127.0.0.1:1,127.0.0.1:2: "},
		{[]string{"-redis", "127.0.0.1:1", "-master", "m", "ls"}, exitUnreachable, `fencedlock: cannot reach Redis Sentinel 127.0.0.1:1 (master "m"): `},
		{[]string{"-redis", srv.Addr(), "show", "no:such:key"}, exitInput, `fencedlock: bad input: no lock is held on key "no:such:key"`},
		{[]string{"-redis", srv.Addr(), "release", "--force", "-yes", "no:such:key"}, exitInput, `fencedlock: bad input: no lock is held on key "no:such:key"`},
	} {
		code, _, stderr := runProcess(t, tc.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != tc.code || len(lines) != 1 || !strings.HasPrefix(lines[0], tc.want) {
			t.Errorf("%q: exit %d, stderr:\n%s\nwant exit %d and one line starting %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}
