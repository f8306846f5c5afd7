package etcdtest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// A member's process: start, stop, kill, restart, and how it is waited for.

// Name is the member's name (m0, m1, ...).
func (m *Member) Name() string { return m.name }

// Endpoint is the member's client URL.
func (m *Member) Endpoint() string { return "http://" + m.Addr() }

// Addr is the member's client host:port; it stays the same across Restart.
func (m *Member) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(m.clientPort)) }

func (m *Member) peerURL() string {
	return "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(m.peerPort))
}

// Running reports whether the member's process is up (it may still be
// catching up or without a leader).
func (m *Member) Running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.proc != nil
}

// Kill ends the member with SIGKILL and waits for it, like a crash. Killing
// a stopped member is a no-op.
func (m *Member) Kill() {
	m.mu.Lock()
	p := m.proc
	m.proc = nil
	m.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// Restart kills the member if it is running and starts it again with the
// same ports and data directory, then waits until it is healthy, which
// needs a quorum of the cluster to be running.
func (m *Member) Restart() {
	c := m.c
	c.tb.Helper()
	m.Kill()
	// A stranger may grab a port between our kill and relaunch; the ports
	// are part of the member's identity, so wait for them instead of moving.
	deadline := time.Now().Add(c.cfg.startTimeout)
	for {
		err := m.launch()
		if err == nil {
			err = c.waitHealthy([]*Member{m})
		}
		if err == nil {
			return
		}
		m.Kill()
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			c.fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop freezes the member with SIGSTOP: connections stay open but nothing is
// answered, like a long GC pause or a suspended VM. Undo with Cont.
func (m *Member) Stop() { m.signal(sigStop, "Stop") }

// Cont resumes a member frozen by Stop.
func (m *Member) Cont() { m.signal(sigCont, "Cont") }

func (m *Member) signal(sig signal, name string) {
	m.c.tb.Helper()
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		m.c.tb.Fatalf("etcdtest: %s on %s: member is not running", name, m.name)
		return
	}
	if err := signalGroup(p.cmd.Process.Pid, sig); err != nil {
		m.c.tb.Fatalf("etcdtest: %s on %s: %v", name, m.name, err)
	}
}

// launch starts one run of the member. It does not wait for health: a
// member of a new cluster cannot be healthy before a quorum has started.
func (m *Member) launch() error {
	c := m.c
	args := []string{
		"--name", m.name,
		"--data-dir", m.dir,
		"--listen-client-urls", m.Endpoint(),
		"--advertise-client-urls", m.Endpoint(),
		"--listen-peer-urls", m.peerURL(),
		"--initial-advertise-peer-urls", m.peerURL(),
		"--initial-cluster", m.initial,
		"--initial-cluster-token", m.token,
		"--initial-cluster-state", "new", // ignored once the data dir has a WAL
		"--heartbeat-interval", strconv.FormatInt(c.cfg.heartbeat.Milliseconds(), 10),
		"--election-timeout", strconv.FormatInt(c.cfg.election.Milliseconds(), 10),
		"--logger", "zap",
		"--log-outputs", "stderr",
		"--log-level", "warn",
	}
	args = append(args, c.cfg.args...)

	mark := fmt.Sprintf("--- etcdtest: starting %s on port %d ---\n", m.name, m.clientPort)
	_, _ = io.WriteString(m.out, mark)
	m.mu.Lock()
	m.mark = mark
	m.mu.Unlock()

	cmd := exec.Command(c.bin, args...)
	cmd.Dir = m.dir
	cmd.Stdout, cmd.Stderr = m.out, m.out
	cmd.WaitDelay = time.Second
	configure(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("etcdtest: start %s: %w", c.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	// Owned by p: every path ends in p.kill, which waits for done.
	go func() {
		defer close(p.done)
		_ = cmd.Wait()
	}()
	m.mu.Lock()
	m.proc = p
	m.mu.Unlock()
	return nil
}

// waitHealthy polls every member's /health until all say true. A member
// that exits meanwhile ends the wait with its reason.
func (c *Cluster) waitHealthy(ms []*Member) error {
	deadline := time.Now().Add(c.cfg.startTimeout)
	pending := append([]*Member(nil), ms...)
	var last error
	for len(pending) > 0 {
		next := pending[:0]
		for _, m := range pending {
			if err := m.exited(); err != nil {
				return err
			}
			body, err := httpGet(m.clientPort, "/health", 250*time.Millisecond)
			if err == nil && !bytes.Contains(body, []byte(`"health":"true"`)) {
				err = fmt.Errorf("etcdtest: %s not healthy: %s", m.name, strings.TrimSpace(string(body)))
			}
			if err == nil {
				// Healthy and still alive: the port is ours, not a stranger's.
				if err := m.exited(); err != nil {
					return err
				}
				continue
			}
			last = err
			next = append(next, m)
		}
		pending = next
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("etcdtest: %d member(s) not healthy after %v: %v", len(pending), c.cfg.startTimeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// exited returns an error if the member's process ended.
func (m *Member) exited() error {
	m.mu.Lock()
	p, mark := m.proc, m.mark
	m.mu.Unlock()
	if p == nil {
		return fmt.Errorf("etcdtest: %s is not running", m.name)
	}
	select {
	case <-p.done:
	default:
		return nil
	}
	run := m.out.String()
	if i := strings.LastIndex(run, mark); i >= 0 {
		run = run[i:]
	}
	if strings.Contains(run, "address already in use") {
		return errAddrInUse
	}
	return fmt.Errorf("etcdtest: %s on port %d exited: %v", m.name, m.clientPort, p.cmd.ProcessState)
}
