package guard

import (
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// UnavailableRetryAfter is the base hint sent with 503 / Unavailable: long
// enough not to hammer a backend that is coming back, short enough that a
// failover (seconds) is not waited out twice.
const UnavailableRetryAfter = 2 * time.Second

// Hints computes Retry-After hints for one middleware. A refused client
// should come back about when the holder is done, not when its lease would
// run out: the lease is a safety bound, usually far longer than the hold.
// So the contended hint is the smaller of the holder's remaining lease and
// the hold time observed on this route (an exponentially weighted mean of
// the holds released through it; before the first release, the route's
// declared Expected hold), capped by the route's maximum, plus
// optional random jitter (a fraction of the hint) so that clients refused
// together do not come back together. It is safe for concurrent use and
// holds no lock.
type Hints struct {
	Expected time.Duration // the route's typical hold, used until one is observed (0: none)
	Max      time.Duration // route cap (0: none)
	Jitter   float64       // add up to this fraction of the hint at random (0: none)
	observed atomic.Int64  // EWMA of hold durations in ns (0: none seen)
}

// ObserveHold records how long a request held its locks.
func (h *Hints) ObserveHold(d time.Duration) {
	if d <= 0 {
		return
	}
	for {
		old := h.observed.Load()
		next := int64(d)
		if old > 0 {
			next = old + (int64(d)-old)/8 // weight 1/8, like TCP's SRTT
		}
		if h.observed.CompareAndSwap(old, next) {
			return
		}
	}
}

// Observed is the current mean hold (0 before the first release).
func (h *Hints) Observed() time.Duration { return time.Duration(h.observed.Load()) }

// For returns the hint for a refused request, jittered (0 for outcomes
// that carry none). res.RetryAfter is the holder's remaining lease when
// known; ttl (the route's TTL, 0: core.DefaultTTL) bounds an unknown one,
// say while another request of this process is acquiring the key: a zero
// hint would invite a hot retry loop.
func (h *Hints) For(res Result, ttl time.Duration) time.Duration {
	if ttl <= 0 {
		ttl = core.DefaultTTL
	}
	var base time.Duration
	switch res.Outcome {
	case Contended, Limited:
		base = res.RetryAfter
		if base <= 0 {
			base = ttl
		}
		if known := h.known(); known > 0 && known < base {
			base = known
		}
	case Unavailable:
		base = UnavailableRetryAfter
	default:
		return 0
	}
	if h.Max > 0 && base > h.Max {
		base = h.Max
	}
	if h.Jitter > 0 {
		base += time.Duration(rand.Int64N(int64(float64(base)*h.Jitter) + 1))
	}
	return base
}

// known is the best estimate of a hold on this route: the observed mean,
// else the declared expectation (0: nothing known).
func (h *Hints) known() time.Duration {
	if obs := h.Observed(); obs > 0 {
		return obs
	}
	return h.Expected
}
