//go:build !linux

package etcdtest

import (
	"errors"
	"os/exec"
)

// supported is false off Linux: without Pdeathsig a crashed test binary would
// leave etcd processes behind, so Start skips there instead.
const supported = false

type signal int

// Placeholders: never sent, because Start refuses to run off Linux.
const (
	sigKill signal = iota
	sigStop
	sigCont
)

func configure(*exec.Cmd) {}

func signalGroup(int, signal) error {
	return errors.New("etcdtest: process signals are supported on Linux only")
}
