package lockdebug

import (
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// Document is the JSON the handler serves. Durations are milliseconds.
type Document struct {
	Backend string    `json:"backend"`
	Taken   time.Time `json:"taken"`
	Held    []Held    `json:"held"`
	Waiting []Waiting `json:"waiting"`
}

// Held is one held lock.
type Held struct {
	Key         string `json:"key"`
	Name        string `json:"name,omitempty"`
	Prefix      string `json:"prefix"`
	Owner       string `json:"owner"`
	Fence       uint64 `json:"fence"`
	Mode        string `json:"mode"`              // exclusive, shared, permit
	Permits     int    `json:"permits,omitempty"` // n of a permit hold
	HeldForMS   int64  `json:"held_for_ms"`
	TTLMS       int64  `json:"ttl_ms"`
	RemainingMS int64  `json:"remaining_ms"`
	Renewals    int    `json:"renewals"`
	AutoRefresh bool   `json:"auto_refresh"`
	Handoff     bool   `json:"handoff"`
}

// Waiting is one key with local waiters.
type Waiting struct {
	BackendKey string `json:"backend_key"`
	Waiters    int    `json:"waiters"`
	Contending bool   `json:"contending"`
	Held       bool   `json:"held"`
	Handoffs   int    `json:"handoffs"`
	Parked     int    `json:"parked"` // shared or permit requests parked in the gate
}

// NewDocument converts a snapshot. Empty lists stay [] in JSON.
func NewDocument(s core.Snapshot) Document {
	d := Document{Backend: s.Backend, Taken: s.Taken, Held: []Held{}, Waiting: []Waiting{}}
	for _, h := range s.Held {
		d.Held = append(d.Held, Held{
			Key: h.Key, Name: h.Name, Prefix: h.Prefix, Owner: h.Owner, Fence: h.Fence, Mode: h.Mode.String(), Permits: h.Permits,
			HeldForMS: h.HeldFor.Milliseconds(), TTLMS: h.TTL.Milliseconds(),
			RemainingMS: h.Remaining.Milliseconds(), Renewals: h.Renewals,
			AutoRefresh: h.AutoRefresh, Handoff: h.Handoff,
		})
	}
	for _, w := range s.Waiting {
		d.Waiting = append(d.Waiting, Waiting{
			BackendKey: w.Key, Waiters: w.Waiters, Contending: w.Contending,
			Held: w.Held, Handoffs: w.Handoffs, Parked: w.Parked,
		})
	}
	return d
}
