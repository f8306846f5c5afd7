//go:build linux

package reliability_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fencedlock/fencedlock/core"
	"github.com/fencedlock/fencedlock/internal/redistest"
)

// kitACL is the least a Redis 7 ACL user needs to run the kit under the
// default prefix: the scripts (EVALSHA, with EVAL as the fallback after a
// restart empties the script cache), the commands the scripts call (ACL
// rules apply inside scripts too), pub/sub for waiting, on lock:* keys and
// channels only. Sharded pub/sub (a Cluster) adds +spublish +ssubscribe
// +sunsubscribe; CheckServer adds +info. The store queue (waiters of other
// Clients queued in Redis) needs +lpop +rpush +lrem. Shared holds and
// permits add +type +hget +hmget +hset +hdel +zadd +zrem +zcard +zrange
// +zrangebyscore +zremrangebyscore.
var kitACL = []string{
	"~lock:*", "&lock:*",
	"+evalsha", "+eval",
	"+set", "+get", "+del", "+incr", "+pexpire", "+pttl", "+time", "+publish",
	"+lpop", "+rpush", "+lrem",
	"+subscribe", "+unsubscribe", "+ping",
}

// TestSecurity_aclUser runs the whole kit (acquire, wait on a release
// notice, watchdog renewals, hand-off, release, the EVAL fallback) as a
// Redis user limited to kitACL, and checks that the user can do nothing
// else: other keys, other channels, admin commands and scripts that reach
// outside lock:* are refused. The control runs the same forbidden commands
// as a full user.
func TestSecurity_aclUser(t *testing.T) {
	gate(t)
	srv := redistest.Start(t)
	admin := srv.Client(t)
	ctx := context.Background()
	args := append([]any{"ACL", "SETUSER", "fencedlock", "reset", "on", ">s3cret"}, toAny(kitACL)...)
	if err := admin.Do(ctx, args...).Err(); err != nil {
		t.Fatal(err)
	}
	user := func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "fencedlock", Password: "s3cret"})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	a := core.New(user(), core.WithTTL(500*time.Millisecond))
	t.Cleanup(func() { _ = a.Close() })
	b := core.New(user(), core.WithTTL(500*time.Millisecond))
	t.Cleanup(func() { _ = b.Close() })

	ops := 0
	l, err := a.Acquire(ctx, "acl", core.WithAutoRefresh())
	if err != nil {
		t.Fatalf("acquire as the ACL user: %v", err)
	}
	ops++
	// A waiter in another Client subscribes to the release channel.
	got := make(chan error, 1)
	go func() {
		l2, err := b.Acquire(ctx, "acl", core.WithWait(5*time.Second))
		if err == nil {
			err = l2.Release(ctx)
		}
		got <- err
	}()
	time.Sleep(time.Second) // two TTLs: only the watchdog keeps the lock
	if l.Err() != nil {
		t.Fatalf("watchdog renewals failed as the ACL user: %v", l.Err())
	}
	if err := l.Refresh(ctx, 0); err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter woken by the release notice: %v", err)
	}
	ops += 4
	// Hand-off between goroutines of one Client.
	h1, err := a.Acquire(ctx, "acl:handoff")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var h2err error
	wg.Go(func() {
		h2, err := a.Acquire(ctx, "acl:handoff", core.WithWait(5*time.Second))
		if err == nil {
			err = h2.Release(ctx)
		}
		h2err = err
	})
	time.Sleep(50 * time.Millisecond)
	if err := h1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if h2err != nil {
		t.Fatalf("hand-off as the ACL user: %v", h2err)
	}
	ops += 3
	// A restart-like empty script cache: EVALSHA fails, EVAL must work.
	if err := admin.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	l3, err := a.Acquire(ctx, "acl:flushed")
	if err != nil {
		t.Fatalf("acquire after SCRIPT FLUSH (EVAL fallback): %v", err)
	}
	_ = l3.Release(ctx)
	ops += 2

	// What the user must not do.
	forbidden := []struct {
		name string
		args []any
	}{
		{"read another key", []any{"GET", "session:1"}},
		{"write a key outside the prefix", []any{"SET", "locks:1", "x"}},
		{"flush everything", []any{"FLUSHALL"}},
		{"reconfigure the server", []any{"CONFIG", "SET", "maxmemory-policy", "allkeys-lru"}},
		{"read another key from a script", []any{"EVAL", "return redis.call('GET', KEYS[1])", 1, "session:1"}},
		{"declare a lock key but touch another", []any{"EVAL", "return redis.call('GET', 'session:1')", 1, "lock:{x}"}},
		{"publish outside the prefix", []any{"PUBLISH", "orders", "x"}},
		{"list keys", []any{"KEYS", "*"}},
	}
	u := user()
	full := srv.Client(t)
	ctrl := 0
	for _, f := range forbidden {
		if err := u.Do(ctx, f.args...).Err(); err == nil ||
			!(strings.Contains(err.Error(), "NOPERM") || strings.Contains(err.Error(), "can't access")) {
			t.Errorf("%s: as the ACL user = %v, want a permission error", f.name, err)
		}
		if err := full.Do(ctx, f.args...).Err(); err == nil || errors.Is(err, redis.Nil) {
			ctrl++
		}
	}
	if ctrl == 0 {
		t.Error("negative control: a full user could not run the forbidden commands either; the test cannot fail")
	}
	// CheckServer needs +info; without it the check cannot run, and says
	// so with an error that is not ErrUnsafeServer.
	if err := core.CheckServer(ctx, u); err == nil || errors.Is(err, core.ErrUnsafeServer) {
		t.Errorf("CheckServer without +info = %v, want a permission error", err)
	}
	addRow(reportRow{
		Security:   true,
		Scenario:   "Redis ACL user limited to the kit's commands and `lock:*` keys/channels",
		Faults:     fmt.Sprintf("%d forbidden commands tried", len(forbidden)),
		Ops:        fmt.Sprintf("%d lock operations (acquire, wait + notice, watchdog, refresh, hand-off, release, EVAL fallback)", ops),
		Violations: "0",
		Control:    fmt.Sprintf("%d (the same commands as a full user)", ctrl),
		Checks:     "ACL: `" + strings.Join(kitACL, " ") + "`; CheckServer needs +info",
	})
}

func toAny(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// TestSecurity_tls checks whether the installed redis-server was built with
// TLS and, if it was, runs the kit over a TLS connection with a
// certificate from a throw-away CA (client certificates required), and
// checks that a client trusting another CA, or presenting no certificate,
// is refused.
func TestSecurity_tls(t *testing.T) {
	gate(t)
	if !redistest.Available() {
		t.Skip("redis-server not installed")
	}
	if !redisHasTLS(t) {
		addRow(reportRow{Security: true, Scenario: "TLS", Faults: "-", Ops: "-", Violations: "-", Control: "-",
			Checks: "the installed redis-server was built without TLS (BUILD_TLS=no); not tested"})
		t.Skip("the installed redis-server has no TLS support")
	}
	dir := t.TempDir()
	ca, caKey := newCA(t, "fencedlock test CA")
	other, _ := newCA(t, "some other CA")
	write := func(name string, der []byte, typ string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	srvCert, srvKey := newLeaf(t, ca, caKey, true)
	cliCert, cliKey := newLeaf(t, ca, caKey, false)
	caPath := write("ca.pem", ca.Raw, "CERTIFICATE")
	certPath := write("server.pem", srvCert.Raw, "CERTIFICATE")
	keyPath := write("server.key", srvKey.([]byte), "EC PRIVATE KEY")
	port := freePort(t)
	srv := redistest.Start(t, redistest.WithArgs("--tls-port", strconv.Itoa(port),
		"--tls-cert-file", certPath, "--tls-key-file", keyPath, "--tls-ca-cert-file", caPath,
		"--tls-auth-clients", "yes"))
	tlsAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	_ = srv

	pool := x509.NewCertPool()
	pool.AddCert(ca)
	clientPair := tls.Certificate{Certificate: [][]byte{cliCert.Raw}, PrivateKey: cliKey}
	good := redis.NewClient(&redis.Options{Addr: tlsAddr, TLSConfig: &tls.Config{
		RootCAs: pool, Certificates: []tls.Certificate{clientPair}, MinVersion: tls.VersionTLS12}})
	t.Cleanup(func() { _ = good.Close() })
	ctx := context.Background()
	c := core.New(good)
	t.Cleanup(func() { _ = c.Close() })
	w := core.New(good)
	t.Cleanup(func() { _ = w.Close() })
	l, err := c.Acquire(ctx, "tls")
	if err != nil {
		t.Fatalf("acquire over TLS: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		l2, err := w.Acquire(ctx, "tls", core.WithWait(5*time.Second))
		if err == nil {
			if l2.Fence() <= l.Fence() {
				err = fmt.Errorf("fence %d after %d", l2.Fence(), l.Fence())
			}
			_ = l2.Release(ctx)
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("waiter over TLS: %v", err)
	}

	// Refused: a client that trusts another CA, and one without a certificate.
	otherPool := x509.NewCertPool()
	otherPool.AddCert(other)
	refused := 0
	for _, cfg := range []*tls.Config{
		{RootCAs: otherPool, Certificates: []tls.Certificate{clientPair}},
		{RootCAs: pool},
	} {
		bad := quietClient(t, &redis.Options{Addr: tlsAddr, TLSConfig: cfg})
		bc := core.New(bad)
		if _, err := bc.TryAcquire(ctx, "tls"); errors.Is(err, core.ErrUnavailable) {
			refused++
		} else {
			t.Errorf("a client the server should refuse got %v", err)
		}
		_ = bc.Close()
	}
	// Control: without the CA check (InsecureSkipVerify) the wrong-CA
	// client connects, which is what the certificate check prevents.
	ctrl := 0
	insecure := quietClient(t, &redis.Options{Addr: tlsAddr, TLSConfig: &tls.Config{
		InsecureSkipVerify: true, Certificates: []tls.Certificate{clientPair}}}) //nolint:gosec // the control
	if insecure.Ping(ctx).Err() == nil {
		ctrl++
	}
	addRow(reportRow{
		Security:   true,
		Scenario:   "TLS (redis-server built with TLS: yes)",
		Faults:     "2 clients the server must refuse",
		Ops:        "acquire, wait + release notice, release over TLS with client certificates",
		Violations: fmt.Sprint(2 - refused),
		Control:    fmt.Sprintf("%d (a client skipping server verification connects)", ctrl),
		Checks:     "go-redis `Options.TLSConfig` is all the kit needs; pub/sub rides the same TLS connection settings",
	})
}

// redisHasTLS starts redis-server with a TLS port and no certificate: a
// TLS build complains about the missing certificate, one without TLS about
// an unknown directive.
func redisHasTLS(t *testing.T) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "redis-server", "--port", "0", "--tls-port", strconv.Itoa(freePort(t)),
		"--save", "", "--appendonly", "no").CombinedOutput()
	s := string(out)
	switch {
	case strings.Contains(s, "tls-cert-file"), strings.Contains(s, "Failed to configure TLS"):
		return true
	case strings.Contains(s, "Bad directive"):
		return false
	}
	t.Fatalf("cannot tell whether redis-server supports TLS:\n%s", s)
	return false
}

func freePort(t *testing.T) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// newLeaf returns a certificate signed by ca and its key (DER, for the
// server's PEM file; the *ecdsa.PrivateKey for a Go client).
func newLeaf(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey, server bool) (*x509.Certificate, any) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: "fencedlock"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if server {
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return cert, kder
	}
	return cert, key
}
