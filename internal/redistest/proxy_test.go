package redistest_test

import (
	"bufio"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/fencedlock/fencedlock/internal/redistest"
)

func TestProxy_forwards(t *testing.T) {
	s := redistest.Start(t)
	p := redistest.NewProxy(t, s.Addr())
	c := quickClient(t, p.Addr())
	ctx := t.Context()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Client(t).Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Fatalf("GET k on the server = %q, %v", got, err)
	}
}

func TestProxy_Block_timesOutThenRecovers(t *testing.T) {
	s := redistest.Start(t)
	p := redistest.NewProxy(t, s.Addr())
	c := quickClient(t, p.Addr())
	ctx := t.Context()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	p.Block()
	start := time.Now()
	err := c.Ping(ctx).Err()
	if err == nil {
		t.Fatal("PING through a blocked proxy succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("PING took %v to fail; want about the 200ms timeout", d)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("PING error = %v; want a timeout, not a closed connection", err)
	}

	p.Unblock()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING after Unblock: %v", err)
	}
}

func TestProxy_Block_holdsNewConnections(t *testing.T) {
	s := redistest.Start(t)
	p := redistest.NewProxy(t, s.Addr())
	p.Block()

	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatalf("dial during a partition: %v", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.ReadString('\n'); !isTimeout(err) {
		t.Fatalf("read during a partition = %v; want a timeout", err)
	}

	p.Unblock()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := r.ReadString('\n'); err != nil || line != "+PONG\r\n" {
		t.Fatalf("read after Unblock = %q, %v; want the held PING answered", line, err)
	}
}

func TestProxy_Delay(t *testing.T) {
	s := redistest.Start(t)
	p := redistest.NewProxy(t, s.Addr())
	c := timeoutClient(t, p.Addr(), 2*time.Second)
	ctx := t.Context()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	const d = 50 * time.Millisecond
	p.Delay(d)
	start := time.Now()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if got := time.Since(start); got < 2*d {
		t.Fatalf("round trip %v; want at least %v (delay each way)", got, 2*d)
	}
}

func TestProxy_ResetAll(t *testing.T) {
	s := redistest.Start(t)
	p := redistest.NewProxy(t, s.Addr())

	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		t.Fatal(err)
	}
	if line, err := r.ReadString('\n'); err != nil || line != "+PONG\r\n" {
		t.Fatalf("PING through proxy = %q, %v", line, err)
	}

	p.ResetAll()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after ResetAll = %v; want connection reset", err)
	}

	if err := quickClient(t, p.Addr()).Ping(t.Context()).Err(); err != nil {
		t.Fatalf("new connection after ResetAll: %v", err)
	}
}

func TestProxy_Close_idempotent(t *testing.T) {
	s := redistest.Start(t)
	p := redistest.NewProxy(t, s.Addr())
	p.Block()
	conn, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = conn.Write([]byte("PING\r\n")) // leaves a goroutine waiting on the partition
	p.Close()
	p.Close()
	if _, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Fatal("dial after Close succeeded")
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
