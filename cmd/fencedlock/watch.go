package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// watchRow is one key in the live view.
type watchRow struct {
	lockRow
	grantsPerSec float64 // fence increments per second: acquisitions and hand-offs
}

func (c *cli) watch(ctx context.Context, g *globals, args []string) error {
	var every time.Duration
	var top, count int
	s, rest, err := c.open(ctx, g, "watch", args, func(f fsFlags) {
		f.DurationVar(&every, "interval", time.Second, "refresh interval")
		f.IntVar(&top, "top", 20, "keys shown")
		f.IntVar(&count, "n", 0, "stop after this many refreshes (0: until Ctrl-C)")
	})
	if err != nil {
		return err
	}
	defer s.close()
	if every < 100*time.Millisecond || top < 1 || count < 0 || len(rest) > 1 {
		return fmt.Errorf("%w: watch [-interval >= 100ms] [-top N] [-n N] [PATTERN]", errInput)
	}
	pattern := ""
	if len(rest) == 1 {
		pattern = rest[0]
	}
	prev := map[string]seen{}
	for i := 0; count == 0 || i < count; i++ {
		rows, err := s.list(ctx, pattern)
		if ctx.Err() != nil {
			return nil // Ctrl-C
		}
		if err != nil {
			return err
		}
		now := time.Now()
		c.drawWatch(g, hottest(rows, prev, now, top), len(rows), now)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
	return nil
}

// seen is a key's fence when it was last listed: keys come and go between
// holds, so the rate is taken against the last time the key was seen.
type seen struct {
	fence uint64
	at    time.Time
}

// hottest ranks keys by waiters, then grant rate, and remembers fences.
func hottest(rows []lockRow, prev map[string]seen, now time.Time, top int) []watchRow {
	out := make([]watchRow, 0, len(rows))
	for _, r := range rows {
		w := watchRow{lockRow: r}
		if p, ok := prev[r.BackendKey]; ok && r.Fence > p.fence && now.After(p.at) {
			w.grantsPerSec = float64(r.Fence-p.fence) / now.Sub(p.at).Seconds()
		}
		prev[r.BackendKey] = seen{fence: r.Fence, at: now}
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b watchRow) int {
		if a.Waiters != b.Waiters {
			return int(b.Waiters - a.Waiters)
		}
		if a.grantsPerSec != b.grantsPerSec {
			if a.grantsPerSec > b.grantsPerSec {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Key, b.Key)
	})
	return out[:min(top, len(out))]
}

func (c *cli) drawWatch(g *globals, rows []watchRow, held int, now time.Time) {
	fmt.Fprint(c.stdout, "\x1b[H\x1b[2J") // home, clear
	target := describeAddr(g)
	if g.etcd != "" {
		target = "etcd at " + g.etcd
	}
	fmt.Fprintf(c.stdout, "fencedlock watch  %s  prefix %q  %s  %d held\n\n", target, g.prefix, now.Format("15:04:05"), held)
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tOWNER\tTTL_MS\tWAITERS\tGRANTS/S\tFENCE")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.1f\t%d\n", r.Key, r.Owner, r.TTLms, r.Waiters, r.grantsPerSec, r.Fence)
	}
	tw.Flush()
}
