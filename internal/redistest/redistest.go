// Package redistest starts real redis-server processes, and a fault-injecting
// TCP proxy in front of them, for integration tests.
//
// Miniredis is enough for unit tests, but the guarantees this project sells
// (fencing, expiry, behaviour across crashes, restarts and partitions) only
// mean something against the real server, so integration tests use Start.
// When redis-server is missing the tests skip; set FENCEDLOCK_REQUIRE_REDIS=1
// (as CI does) to make that a failure, so a broken CI image cannot turn the
// integration suite into a silent no-op.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	binary     = "redis-server"
	requireEnv = "FENCEDLOCK_REQUIRE_REDIS"
	missingMsg = "redistest: redis-server not found on PATH; install redis-server (Debian: apt-get install redis-server) to run integration tests"
)

// errAddrInUse means another process won the race for the port we picked.
var errAddrInUse = errors.New("redistest: port already in use")

// Available reports whether Start can run a server here, for tests that want
// to choose between a real server and miniredis rather than skip.
func Available() bool {
	if !supported {
		return false
	}
	_, err := exec.LookPath(binary)
	return err == nil
}

// Server is one redis-server process owned by a test. Its port and data
// directory survive Kill and Restart, so a test can crash and revive "the
// same" server. Methods that can fail call Fatal on the testing.TB given to
// Start, so call them from that test's goroutine.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	cfg  config
	port int
	out  *tail

	mu       sync.Mutex
	proc     *process // nil while the server is not running
	reported bool     // output already shown in a failure message
}

// process is one run of redis-server; done is closed once it has been reaped.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs a redis-server on a free 127.0.0.1 port with persistence off and
// a private data directory, waits until it answers PING, and kills it when
// the test ends. It skips the test when redis-server is not installed (see
// the package doc for FENCEDLOCK_REQUIRE_REDIS).
func Start(tb testing.TB, opts ...Option) *Server {
	tb.Helper()
	bin := lookup(tb)
	s := &Server{
		tb:  tb,
		bin: bin,
		dir: tb.TempDir(),
		cfg: newConfig(opts),
		out: &tail{max: outputTail},
	}
	// Registered after TempDir, so it runs first: the process is gone
	// before its directory is removed.
	tb.Cleanup(s.cleanup)

	var err error
	for range portAttempts {
		if s.port, err = freePort(); err != nil {
			break
		}
		if err = s.launch(); !errors.Is(err, errAddrInUse) {
			break
		}
	}
	if err != nil {
		s.fatal(err)
	}
	return s
}

// StartN starts n independent servers, each with its own port and data
// directory, as a Redlock quorum needs.
func StartN(tb testing.TB, n int, opts ...Option) []*Server {
	tb.Helper()
	if n < 1 {
		panic("redistest: StartN needs n >= 1")
	}
	servers := make([]*Server, n)
	for i := range servers {
		servers[i] = Start(tb, opts...)
	}
	return servers
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port is the server's TCP port; it stays the same across Restart.
func (s *Server) Port() int { return s.port }

// Client returns a new go-redis client for the server, closed when tb ends,
// so each test or subtest owns its connections and goleak stays quiet.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Kill ends the server with SIGKILL and waits for it, like a crash: nothing
// is flushed or saved on the way out. Killing a stopped server is fine.
// Kill is a no-op when the server is not running.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.proc = nil
	s.mu.Unlock()
	if p != nil {
		p.kill()
	}
}

// Restart kills the server if it is running and starts it again on the same
// port with the same directory and arguments. Without persistence it comes
// back empty; with AOF (WithArgs("--appendonly", "yes", ...)) it reloads
// what was fsynced, which is how tests model a crash and recovery.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Kill()
	// A stranger may grab the port between our kill and relaunch; the
	// port is part of the server's identity, so wait for it instead of moving.
	deadline := time.Now().Add(s.cfg.startTimeout)
	for {
		err := s.launch()
		if err == nil {
			return
		}
		if !errors.Is(err, errAddrInUse) || time.Now().After(deadline) {
			s.fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop freezes the server with SIGSTOP: connections stay open but nothing is
// answered, like a long GC pause or a VM being suspended. Undo with Cont.
func (s *Server) Stop() { s.signal(sigStop, "Stop") }

// Cont resumes a server frozen by Stop; it then answers what queued up.
func (s *Server) Cont() { s.signal(sigCont, "Cont") }

// FlushAll removes every key, for tests that share one server between cases.
func (s *Server) FlushAll() {
	s.tb.Helper()
	if _, err := command(s.Addr(), s.cfg.startTimeout, "FLUSHALL"); err != nil {
		s.tb.Fatalf("redistest: FLUSHALL on %s: %v", s.Addr(), err)
	}
}

func (s *Server) signal(sig signal, name string) {
	s.tb.Helper()
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p == nil {
		s.tb.Fatalf("redistest: %s on %s: server is not running", name, s.Addr())
		return
	}
	if err := signalGroup(p.cmd.Process.Pid, sig); err != nil {
		s.tb.Fatalf("redistest: %s on %s: %v", name, s.Addr(), err)
	}
}

// cleanup shows the server's log when the test failed, since it often says
// why (OOM, a rejected argument, a crash), unless a failure already showed it.
func (s *Server) cleanup() {
	s.Kill()
	s.mu.Lock()
	reported := s.reported
	s.mu.Unlock()
	if s.tb.Failed() && !reported {
		s.tb.Logf("redistest: output of redis-server on %s:\n%s", s.Addr(), s.out.String())
	}
}

func (s *Server) fatal(err error) {
	s.tb.Helper()
	s.mu.Lock()
	s.reported = true
	s.mu.Unlock()
	s.tb.Fatalf("%v\n--- redis-server output (tail) ---\n%s", err, s.out.String())
}

// launch starts one run of redis-server on s.port and waits until it is ours
// and ready. On error nothing is left running.
func (s *Server) launch() error {
	args := []string{
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
	}
	args = append(args, s.cfg.args...)
	if s.cfg.confFile != "" {
		args = append([]string{s.cfg.confFile}, args...)
	}

	mark := fmt.Sprintf("--- redistest: starting on port %d ---\n", s.port)
	_, _ = io.WriteString(s.out, mark)

	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.Stdout, cmd.Stderr = s.out, s.out
	// A forked child (AOF rewrite) may hold the output pipe open; do not
	// let it keep Wait, and so the cleanup, hanging.
	cmd.WaitDelay = time.Second
	configure(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redistest: start %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	// Owned by p: every path ends in p.kill, which waits for done.
	go func() {
		defer close(p.done)
		_ = cmd.Wait()
	}()

	if err := s.waitReady(p, mark); err != nil {
		p.kill()
		return err
	}
	s.mu.Lock()
	s.proc = p
	s.mu.Unlock()
	return nil
}

// waitReady polls until the process on s.port is p and answers PING. Checking
// the pid matters: if we lost a port race to another redis-server, its PONG
// must not make the test talk to someone else's data.
func (s *Server) waitReady(p *process, mark string) error {
	pidLine := "\nprocess_id:" + strconv.Itoa(p.cmd.Process.Pid) + "\r\n"
	deadline := time.Now().Add(s.cfg.startTimeout)
	var last error
	for {
		info, err := command(s.Addr(), 250*time.Millisecond, "INFO", "server")
		if err == nil && !strings.Contains(info, pidLine) {
			err = errors.New("redistest: another process answers on this port")
		}
		if err == nil {
			var pong string
			if pong, err = command(s.Addr(), 250*time.Millisecond, "PING"); err == nil && pong == "PONG" {
				return nil
			}
		}
		last = err

		select {
		case <-p.done:
			run := s.out.String()
			if i := strings.LastIndex(run, mark); i >= 0 {
				run = run[i:]
			}
			if strings.Contains(run, "Address already in use") {
				return errAddrInUse
			}
			return fmt.Errorf("redistest: redis-server on port %d exited during startup: %v", s.port, p.cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redistest: redis-server on port %d not ready after %v: %v", s.port, s.cfg.startTimeout, last)
		}
	}
}

// kill SIGKILLs the process group and waits until the leader is reaped.
func (p *process) kill() {
	select {
	case <-p.done:
		return // already reaped; its pid may belong to someone else now
	default:
	}
	_ = signalGroup(p.cmd.Process.Pid, sigKill)
	<-p.done
}

// lookup finds redis-server or ends the test: Skip normally, Fatal when the
// environment insists on integration tests.
func lookup(tb testing.TB) string {
	tb.Helper()
	msg := missingMsg
	bin, err := exec.LookPath(binary)
	if supported && err == nil {
		return bin
	}
	if !supported {
		msg = "redistest: real redis-server tests run on Linux only"
	}
	if os.Getenv(requireEnv) == "1" {
		tb.Fatal(msg + " (" + requireEnv + "=1)")
	}
	tb.Skip(msg)
	return ""
}

// freePort asks the kernel for an unused port. It is free only until someone
// else takes it, which launch detects and Start retries.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redistest: find a free port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	return port, ln.Close()
}

// command runs one command on a fresh connection. It speaks just enough RESP2
// for readiness checks and FLUSHALL, without a client pool to clean up.
func command(addr string, timeout time.Duration, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}

	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, req.String()); err != nil {
		return "", err
	}

	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("redistest: empty reply")
	}
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", errors.New("redistest: redis: " + line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("redistest: unexpected reply %q", line)
}

// tail keeps the last max bytes written to it; redis-server writes its log
// here from the exec copy goroutine while tests may read it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, b...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = t.buf[over:]
	}
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
