package locktest

import (
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// Shared and permit holds, as the Redis backend keeps them: one lease per
// holder, a mode tag per key, and waiting writers' claims that hold new
// shared requests back. s.mu is held by every function here.

type shareSet struct {
	tag     string // core.Hold.ModeTag of the holders
	holders map[string]shareHolder
}

type shareHolder struct {
	fence   uint64
	expires time.Time
}

// liveShares drops holders whose lease ended; nil when none is left.
func (s *Store) liveShares(k string) *shareSet {
	set := s.shares[k]
	if set == nil {
		return nil
	}
	now := s.now()
	for tok, h := range set.holders {
		if !now.Before(h.expires) {
			delete(set.holders, tok)
		}
	}
	if len(set.holders) == 0 {
		delete(s.shares, k)
		return nil
	}
	return set
}

func (set *shareSet) longest(now time.Time) time.Duration {
	var d time.Duration
	for _, h := range set.holders {
		d = max(d, h.expires.Sub(now))
	}
	return d
}

// refuseWriter answers an exclusive request that shared holders block and
// records its claim when it is going to wait.
func (s *Store) refuseWriter(h core.Hold, set *shareSet, ttl time.Duration) core.Grant {
	now := s.now()
	left := set.longest(now)
	g := core.Grant{HolderTTL: left}
	if h.Queue || h.Claimed {
		if s.claims[h.Keys.Lock] == nil {
			s.claims[h.Keys.Lock] = make(map[string]time.Time)
		}
		s.claims[h.Keys.Lock][h.Token] = now.Add(max(2*ttl, 2*left))
		g.Claimed = true
	}
	return g
}

// claimLeft is the longest live writer's claim on k.
func (s *Store) claimLeft(k string) time.Duration {
	now := s.now()
	var d time.Duration
	for tok, until := range s.claims[k] {
		if !now.Before(until) {
			delete(s.claims[k], tok)
			continue
		}
		d = max(d, until.Sub(now))
	}
	return d
}

func (s *Store) withdrawClaim(h core.Hold) bool {
	if _, ok := s.claims[h.Keys.Lock][h.Token]; !ok {
		return false
	}
	delete(s.claims[h.Keys.Lock], h.Token)
	return true
}

func (s *Store) acquireShared(h core.Hold, ttl time.Duration) (core.Grant, error) {
	k, now := h.Keys.Lock, s.now()
	if e, ok := s.live(k); ok {
		return core.Grant{HolderTTL: e.expires.Sub(now)}, nil
	}
	set := s.liveShares(k)
	if set != nil {
		if mine, ok := set.holders[h.Token]; ok { // a retry that landed
			set.holders[h.Token] = shareHolder{fence: mine.fence, expires: now.Add(ttl)}
			return core.Grant{Acquired: true, Fence: mine.fence, Free: free(h, len(set.holders))}, nil
		}
		if set.tag != h.ModeTag() {
			return core.Grant{}, &core.ModeError{Want: h.ModeTag(), Have: set.tag}
		}
	}
	if left := s.claimLeft(k); left > 0 {
		return core.Grant{HolderTTL: left}, nil
	}
	if set == nil {
		set = &shareSet{tag: h.ModeTag(), holders: make(map[string]shareHolder)}
		s.shares[k] = set
	}
	if h.Mode == core.PermitMode && len(set.holders) >= h.Permits {
		first := time.Duration(-1)
		for _, x := range set.holders {
			if d := x.expires.Sub(now); first < 0 || d < first {
				first = d
			}
		}
		return core.Grant{HolderTTL: first}, nil
	}
	s.fences[h.Keys.Fence]++
	f := s.fences[h.Keys.Fence]
	set.holders[h.Token] = shareHolder{fence: f, expires: now.Add(ttl)}
	return core.Grant{Acquired: true, Fence: f, Free: free(h, len(set.holders))}, nil
}

func free(h core.Hold, held int) int {
	if h.Mode == core.PermitMode {
		return h.Permits - held
	}
	return -1
}

func (s *Store) releaseShared(h core.Hold) bool {
	set := s.liveShares(h.Keys.Lock)
	if set == nil {
		return false
	}
	if _, ok := set.holders[h.Token]; !ok {
		return false
	}
	delete(set.holders, h.Token)
	if len(set.holders) == 0 {
		delete(s.shares, h.Keys.Lock)
	}
	return true
}

func (s *Store) refreshShared(r core.RefreshRequest) error {
	set := s.liveShares(r.Keys.Lock)
	if set == nil {
		return core.ErrNotHeld
	}
	h, ok := set.holders[r.Token]
	if !ok {
		return core.ErrNotHeld
	}
	set.holders[r.Token] = shareHolder{fence: h.fence, expires: s.now().Add(r.TTL)}
	return nil
}

// Holders reports how many shared or permit holds key (under prefix) has.
func (s *Store) Holders(prefix, key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if set := s.liveShares(core.KeysFor(prefix, key).Lock); set != nil {
		return len(set.holders)
	}
	return 0
}
