package main

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

const (
	width, height          = 760, 420
	left, right, top, bott = 70, 20, 50, 60
)

var colors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd"}

// writeSVG draws each series' cumulative distribution: x is the wait on a
// log10 scale, y the share of acquisitions that waited at most that long.
func writeSVG(w io.Writer, title string, ss []series) error {
	lo, hi := math.Inf(1), 0.0
	for _, s := range ss {
		lo, hi = math.Min(lo, s.waits[0]), math.Max(hi, s.waits[len(s.waits)-1])
	}
	x0, x1 := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if x1 <= x0 {
		x1 = x0 + 1
	}
	pw, ph := float64(width-left-right), float64(height-top-bott)
	xp := func(us float64) float64 { return left + (math.Log10(us)-x0)/(x1-x0)*pw }
	yp := func(q float64) float64 { return top + (1-q)*ph }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="28" font-size="16" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	axes(&b, x0, x1, xp, yp)
	for i, s := range ss {
		c := colors[i%len(colors)]
		var pts []string
		n := float64(len(s.waits))
		step := max(1, len(s.waits)/600) // at most ~600 points per curve
		for j := 0; j < len(s.waits); j += step {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", xp(s.waits[j]), yp(float64(j+1)/n)))
		}
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", xp(s.waits[len(s.waits)-1]), yp(1)))
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(pts, " "))
		p50, p99 := quantile(s.waits, .5), quantile(s.waits, .99)
		ly := top + 20 + 18*i
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`, left+10, ly-4, left+30, ly-4, c)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s  (n=%d, p50 %s, p99 %s)</text>`+"\n", left+36, ly, html.EscapeString(s.name), len(s.waits), fmtUS(p50), fmtUS(p99))
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func axes(b *strings.Builder, x0, x1 float64, xp func(float64) float64, yp func(float64) float64) {
	fmt.Fprintf(b, `<g stroke="#999" stroke-width="1">`)
	for e := x0; e <= x1; e++ {
		x := xp(math.Pow(10, e))
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`, x, yp(0), x, yp(1))
	}
	for q := 0.0; q <= 1.0001; q += 0.25 {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`, xp(math.Pow(10, x0)), yp(q), xp(math.Pow(10, x1)), yp(q))
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f"/><line x1="%d" y1="%.1f" x2="%d" y2="%.1f"/></g>`+"\n",
		left, yp(0), width-right, yp(0), left, yp(0), left, yp(1))
	for e := x0; e <= x1; e++ {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`, xp(math.Pow(10, e)), yp(0)+16, fmtUS(math.Pow(10, e)))
	}
	for q := 0.0; q <= 1.0001; q += 0.25 {
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%.0f%%</text>`, left-6, yp(q)+4, q*100)
	}
	fmt.Fprintf(b, "\n"+`<text x="%d" y="%d" text-anchor="middle">wait until acquired (log scale)</text>`, left+(width-left-right)/2, height-18)
	fmt.Fprintf(b, `<text transform="translate(18 %d) rotate(-90)" text-anchor="middle">acquisitions that waited at most x</text>`+"\n", top+(height-top-bott)/2)
}

func quantile(w []float64, p float64) float64 { return w[int(float64(len(w)-1)*p)] }

func fmtUS(us float64) string {
	switch {
	case us >= 1e6:
		return fmt.Sprintf("%gs", math.Round(us/1e4)/100)
	case us >= 1e3:
		return fmt.Sprintf("%gms", math.Round(us/10)/100)
	}
	return fmt.Sprintf("%gµs", math.Round(us))
}
