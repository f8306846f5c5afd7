package etcdtest

import (
	"os/exec"
	"syscall"
)

const supported = true

type signal = syscall.Signal

const (
	sigKill = syscall.SIGKILL
	sigStop = syscall.SIGSTOP
	sigCont = syscall.SIGCONT
)

// configure puts the member in its own process group, so Kill, Stop and Cont
// reach it as a whole, and asks the kernel to SIGKILL it if the test binary
// dies without running cleanups (a panic, go test -timeout, Ctrl-C), so no
// orphan keeps a port busy.
func configure(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signalGroup sends sig to the process group led by pid.
func signalGroup(pid int, sig signal) error {
	return syscall.Kill(-pid, sig)
}
