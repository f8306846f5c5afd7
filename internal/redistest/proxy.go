package redistest

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"
)

// dialTimeout bounds the proxy's dial to its target; the target is on
// loopback, so only a wedged host would ever need it.
const dialTimeout = 2 * time.Second

// Proxy is a TCP proxy from a local address to one target, used to inject the
// network faults a distributed lock must survive: a partition (Block), slow
// links (Delay) and dropped connections (ResetAll). Point the code under test
// at Addr instead of the server.
//
// Every goroutine the proxy starts is stopped and waited for by Close, which
// runs automatically when the test ends.
type Proxy struct {
	target string
	ln     net.Listener
	wg     sync.WaitGroup
	once   sync.Once

	mu     sync.Mutex
	closed bool
	healed chan struct{} // non-nil while blocked; closed by Unblock
	delay  time.Duration
	links  map[*link]struct{}
}

// NewProxy starts a proxy on 127.0.0.1:0 that forwards to target.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("redistest: proxy listen: %v", err)
	}
	p := &Proxy{target: target, ln: ln, links: make(map[*link]struct{})}
	p.wg.Go(p.accept)
	tb.Cleanup(p.Close)
	return p
}

// Addr is the address clients should dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Block partitions clients from the target. Bytes in either direction are
// held, not delivered, so both sides see a silent network: nothing is closed
// or refused, and connections accepted meanwhile are not even dialed
// through. Like TCP retransmission after a real partition heals, held bytes
// are delivered after Unblock if neither side has given up by then.
func (p *Proxy) Block() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.healed == nil {
		p.healed = make(chan struct{})
	}
}

// Unblock ends a partition started by Block.
func (p *Proxy) Unblock() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.healed != nil {
		close(p.healed)
		p.healed = nil
	}
}

// Delay holds every chunk of data, in each direction, for d before passing
// it on; 0 removes the delay. It applies to chunks read from now on.
func (p *Proxy) Delay(d time.Duration) {
	if d < 0 {
		panic("redistest: Proxy.Delay needs d >= 0")
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// ResetAll closes every current connection on both sides with a TCP RST, as
// a crashed middlebox or failover would. The proxy keeps accepting new ones.
func (p *Proxy) ResetAll() {
	for _, l := range p.snapshot() {
		l.close(true)
	}
}

// Close stops accepting, resets every connection and waits for all of the
// proxy's goroutines. It is safe to call more than once.
func (p *Proxy) Close() {
	p.once.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		_ = p.ln.Close()
		p.ResetAll()
		p.wg.Wait()
	})
}

func (p *Proxy) snapshot() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	return links
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE; do not spin
			continue
		}
		l := &link{client: c, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.links[l] = struct{}{}
		p.mu.Unlock()
		p.wg.Go(func() { p.serve(l) })
	}
}

// serve dials the target once the network allows it, then pumps both
// directions until either side ends or the link is reset.
func (p *Proxy) serve(l *link) {
	defer func() {
		l.close(false)
		p.mu.Lock()
		delete(p.links, l)
		p.mu.Unlock()
	}()
	if !p.pass(l) {
		return
	}
	up, err := net.DialTimeout("tcp", p.target, dialTimeout)
	if err != nil {
		return // the client sees a close, as if the target refused it
	}
	if !l.setUpstream(up) {
		return
	}
	p.wg.Go(func() { p.pipe(l, up, l.client) })
	p.pipe(l, l.client, up)
}

func (p *Proxy) pipe(l *link, src, dst net.Conn) {
	defer l.close(false)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.pass(l) {
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// pass waits out the current delay and any partition. It reports false when
// the link was closed meanwhile.
func (p *Proxy) pass(l *link) bool {
	p.mu.Lock()
	d := p.delay
	p.mu.Unlock()
	if d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			return false
		}
	}
	for {
		p.mu.Lock()
		healed := p.healed
		p.mu.Unlock()
		if healed == nil {
			return true
		}
		select {
		case <-healed:
		case <-l.done:
			return false
		}
	}
}

// link is one client connection and, once dialed, its upstream twin.
type link struct {
	client net.Conn
	done   chan struct{} // closed by close; wakes anything waiting on the link
	once   sync.Once

	mu       sync.Mutex
	upstream net.Conn
}

// setUpstream attaches the dialed target connection, or closes it and
// reports false if the link was reset while dialing.
func (l *link) setUpstream(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.done:
		_ = c.Close()
		return false
	default:
	}
	l.upstream = c
	return true
}

// close shuts both sides once. abrupt sends a TCP RST instead of a FIN, so
// peers see "connection reset" rather than a clean EOF.
func (l *link) close(abrupt bool) {
	l.once.Do(func() {
		close(l.done)
		shut(l.client, abrupt)
		l.mu.Lock()
		if l.upstream != nil {
			shut(l.upstream, abrupt)
		}
		l.mu.Unlock()
	})
}

func shut(c net.Conn, abrupt bool) {
	if tc, ok := c.(*net.TCPConn); ok && abrupt {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}
