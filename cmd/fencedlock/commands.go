package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/fencedlock/fencedlock/core"
)

// session is a parsed command with its connection.
type session struct {
	g    *globals
	rdb  redis.UniversalClient // nil on etcd
	etcd *clientv3.Client      // nil on Redis
}

func (s *session) close() {
	if s.rdb != nil {
		s.rdb.Close()
	}
	if s.etcd != nil {
		s.etcd.Close()
	}
}

// list returns the held locks matching pattern on either backend.
func (s *session) list(ctx context.Context, pattern string) ([]lockRow, error) {
	if s.etcd != nil {
		rows, err := etcdList(ctx, s.etcd, s.g.prefix, pattern)
		if err != nil {
			return nil, &unreachableError{addr: "etcd at " + s.g.etcd, err: err}
		}
		return rows, nil
	}
	rows, err := listLocks(ctx, s.rdb, s.g.prefix, pattern)
	return rows, backendErr(s.g, err)
}

// open parses a command's flags (the globals included) and connects.
func (c *cli) open(ctx context.Context, g *globals, name string, args []string, bind func(fsFlags)) (*session, []string, error) {
	fs := g.flagSet("fencedlock "+name, c.stderr)
	if bind != nil {
		bind(fsFlags{fs})
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, flagErr(err)
	}
	if g.etcd != "" {
		cli, err := connectEtcd(ctx, g)
		if err != nil {
			return nil, nil, err
		}
		return &session{g: g, etcd: cli}, fs.Args(), nil
	}
	rdb, err := connect(ctx, g)
	if err != nil {
		return nil, nil, err
	}
	return &session{g: g, rdb: rdb}, fs.Args(), nil
}

func (c *cli) ls(ctx context.Context, g *globals, args []string) error {
	var asJSON bool
	s, rest, err := c.open(ctx, g, "ls", args, func(f fsFlags) { f.BoolVar(&asJSON, "json", false, "print JSON") })
	if err != nil {
		return err
	}
	defer s.close()
	if len(rest) > 1 {
		return fmt.Errorf("%w: ls takes at most one PATTERN", errInput)
	}
	pattern := ""
	if len(rest) == 1 {
		pattern = rest[0]
	}
	cctx, cancel := context.WithTimeout(ctx, 10*g.timeout)
	defer cancel()
	rows, err := s.list(cctx, pattern)
	if err != nil {
		return err
	}
	slices.SortFunc(rows, func(a, b lockRow) int { return strings.Compare(a.Key, b.Key) })
	if asJSON {
		return writeJSON(c.stdout, rows)
	}
	writeTable(c.stdout, rows)
	return nil
}

// showRow is what show prints: a lockRow plus the lock's own details.
type showRow struct {
	lockRow
	Prefix string `json:"prefix"`
}

func (c *cli) show(ctx context.Context, g *globals, args []string) error {
	var asJSON bool
	s, rest, err := c.open(ctx, g, "show", args, func(f fsFlags) { f.BoolVar(&asJSON, "json", false, "print JSON") })
	if err != nil {
		return err
	}
	defer s.close()
	key, err := oneKey("show", rest)
	if err != nil {
		return err
	}
	row, err := s.held(ctx, key)
	if err != nil {
		return err
	}
	if asJSON {
		return writeJSON(c.stdout, showRow{lockRow: row, Prefix: g.prefix})
	}
	writeTable(c.stdout, []lockRow{row})
	writeDetails(c.stdout, row)
	return nil
}

// writeDetails prints what show adds to the ls row: the backend key, the
// fence counter and each shared or permit holder.
func writeDetails(w io.Writer, r lockRow) {
	fmt.Fprintf(w, "\nbackend key:   %s\n", r.BackendKey)
	if r.FenceCounter > 0 {
		fmt.Fprintf(w, "fence counter: %d (the next holder's fence is above it)\n", r.FenceCounter)
	}
	if r.Mode == "" {
		return
	}
	fmt.Fprintf(w, "mode:          %s, %d holder(s)\n", r.Mode, len(r.Holders))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  HOLDER\tTTL_MS\tFENCE")
	for _, h := range r.Holders {
		fmt.Fprintf(tw, "  %s\t%d\t%d\n", h.Owner, h.TTLms, h.Fence)
	}
	tw.Flush()
}

// held inspects key and reports an unknown key as bad input.
func (s *session) held(ctx context.Context, key string) (lockRow, error) {
	cctx, cancel := context.WithTimeout(ctx, s.g.timeout)
	defer cancel()
	row, ok, err := s.inspect(cctx, key)
	if err != nil {
		return lockRow{}, err
	}
	if !ok {
		return lockRow{}, fmt.Errorf("%w: no lock is held on key %q under prefix %q", errInput, key, s.g.prefix)
	}
	return row, nil
}

func (s *session) inspect(ctx context.Context, key string) (lockRow, bool, error) {
	lockKey := core.KeysFor(s.g.prefix, key).Lock
	if s.etcd != nil {
		q, err := etcdQueue(ctx, s.etcd, lockKey)
		if err != nil {
			return lockRow{}, false, &unreachableError{addr: "etcd at " + s.g.etcd, err: err}
		}
		if len(q) == 0 {
			return lockRow{}, false, nil
		}
		return etcdRow(key, lockKey, q), true, nil
	}
	row, ok, err := inspect(ctx, s.rdb, key, lockKey)
	return row, ok, backendErr(s.g, err)
}

func oneKey(cmd string, rest []string) (string, error) {
	if len(rest) != 1 {
		return "", fmt.Errorf("%w: %s takes exactly one KEY", errInput, cmd)
	}
	if err := core.ValidateKey(rest[0]); err != nil {
		return "", fmt.Errorf("%w: %v", errInput, err)
	}
	return rest[0], nil
}

func (c *cli) confirm(prompt string) bool {
	fmt.Fprint(c.stderr, prompt)
	line, _ := bufio.NewReader(c.stdin).ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes"
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func writeTable(w io.Writer, rows []lockRow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tOWNER\tTTL_MS\tFENCE\tWAITERS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", r.Key, r.Owner, r.TTLms, r.Fence, r.Waiters)
	}
	tw.Flush()
}
