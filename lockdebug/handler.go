package lockdebug

import (
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/fencedlock/fencedlock/core"
)

// Snapshotter is what the handler reads: *core.Client implements it.
type Snapshotter interface {
	Snapshot() core.Snapshot
}

// Option configures Handler.
type Option func(*config)

type config struct {
	refresh time.Duration
}

// WithRefresh sets how often the HTML page reloads itself (default 2 s).
// It panics when d is not at least a second.
func WithRefresh(d time.Duration) Option {
	if d < time.Second {
		panic("lockdebug: WithRefresh needs at least one second")
	}
	return func(c *config) { c.refresh = d }
}

// Handler returns a handler serving s's snapshot as an HTML page, or as
// JSON for ?format=json and Accept: application/json. It panics when s is
// nil.
func Handler(s Snapshotter, opts ...Option) http.Handler {
	if s == nil {
		panic("lockdebug: Handler needs a Snapshotter")
	}
	cfg := config{refresh: 2 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	return &handler{s: s, cfg: cfg}
}

type handler struct {
	s   Snapshotter
	cfg config
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "lockdebug: method not allowed", http.StatusMethodNotAllowed)
		return
	}
	doc := NewDocument(h.s.Snapshot())
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	if wantsJSON(r) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(doc)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = page.Execute(w, pageData{Document: doc, RefreshSeconds: int(h.cfg.refresh / time.Second)})
}

func wantsJSON(r *http.Request) bool {
	if f := r.URL.Query().Get("format"); f != "" {
		return f == "json"
	}
	return strings.Contains(r.Header.Get("Accept"), "application/json")
}

type pageData struct {
	Document
	RefreshSeconds int
}

var page = template.Must(template.New("page").Parse(pageHTML))
