package core

import (
	"slices"
	"strings"
	"time"
)

// Snapshot is what a Client holds and waits for at one moment, for debug
// pages and operator tools (see httpmw.DebugHandler). Taking one locks the
// Client briefly; it sends nothing to the backend.
type Snapshot struct {
	Backend string       // Backend.Name()
	Held    []HeldLock   // locks held through this Client, oldest first
	Waiting []WaitingKey // keys with local waiters or a goroutine asking the backend
	Taken   time.Time    // when the snapshot was taken (monotonic reading included)
}

// HeldLock describes one held lock in a Snapshot. It never carries the
// owner token, only the shareable owner id.
type HeldLock struct {
	Key         string        // the caller's key (may carry user data)
	Name        string        // WithName, "" when unset
	Prefix      string        // WithPrefix
	Owner       string        // Lock.Owner
	Fence       uint64        // Lock.Fence
	Mode        Mode          // Lock.Mode
	Permits     int           // Lock.Permits (permit holds)
	HeldFor     time.Duration // since the acquiring command was sent
	TTL         time.Duration // the current lease length
	Remaining   time.Duration // until the local validity deadline (<= 0: about to be lost)
	Renewals    int           // successful renewals, manual and automatic
	AutoRefresh bool          // renewed by the watchdog
	Handoff     bool          // granted by a local hand-off
}

// WaitingKey describes one key with local waiters in a Snapshot.
type WaitingKey struct {
	Key        string // the backend lock key (see KeysFor)
	Waiters    int    // goroutines queued behind the local head
	Contending bool   // the local head is asking the backend
	Held       bool   // a lock on the key is held through this Client
	Handoffs   int    // local hand-offs on this key since its queue formed
	// Parked counts shared or permit requests parked in this Client's
	// gate for the key (all mode tags), behind one of them that waits in
	// the backend (counted in Contending).
	Parked int
}

// Snapshot returns what c holds and waits for now.
func (c *Client) Snapshot() Snapshot {
	now := time.Now()
	s := Snapshot{Backend: c.b.Name(), Taken: now}
	c.mu.Lock()
	locks := make([]*Lock, 0, len(c.held))
	for l := range c.held {
		locks = append(locks, l)
	}
	for k, q := range c.queues {
		if len(q.waiters) == 0 && !q.contending {
			continue
		}
		s.Waiting = append(s.Waiting, WaitingKey{
			Key: k, Waiters: len(q.waiters), Contending: q.contending,
			Held: q.holder, Handoffs: q.handoffTotal,
		})
	}
	for gk, g := range c.gates {
		if len(g.waiters) == 0 && !g.head {
			continue
		}
		k, _, _ := strings.Cut(gk, "\x00")
		i := slices.IndexFunc(s.Waiting, func(w WaitingKey) bool { return w.Key == k })
		if i < 0 {
			s.Waiting = append(s.Waiting, WaitingKey{Key: k})
			i = len(s.Waiting) - 1
		}
		s.Waiting[i].Parked += len(g.waiters)
		s.Waiting[i].Contending = s.Waiting[i].Contending || g.head
	}
	c.mu.Unlock()
	for _, l := range locks {
		l.mu.Lock()
		h := HeldLock{
			Key: l.key, Name: l.cfg.name, Prefix: l.prefix, Owner: ownerID(l.token),
			Fence: l.fence, Mode: l.cfg.mode, Permits: l.Permits(), HeldFor: now.Sub(l.start), TTL: l.ttl,
			Remaining: l.deadline.Sub(now), Renewals: l.renewals,
			AutoRefresh: l.cfg.autoRefresh, Handoff: l.handoff,
		}
		held := l.state == stateHeld
		l.mu.Unlock()
		if held {
			s.Held = append(s.Held, h)
		}
	}
	slices.SortFunc(s.Held, func(a, b HeldLock) int {
		if a.HeldFor != b.HeldFor {
			return int(b.HeldFor - a.HeldFor) // oldest first
		}
		return strings.Compare(a.Key, b.Key)
	})
	slices.SortFunc(s.Waiting, func(a, b WaitingKey) int { return strings.Compare(a.Key, b.Key) })
	return s
}
