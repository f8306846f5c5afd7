package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
)

func main() {
	in := flag.String("in", "", "CSV written by fencedlock bench -csv (variant,wait_us)")
	out := flag.String("out", "", "SVG file to write (default stdout)")
	title := flag.String("title", "Time to acquire one contended lock", "chart title")
	flag.Parse()
	if err := run(*in, *out, *title); err != nil {
		fmt.Fprintln(os.Stderr, "benchplot:", err)
		os.Exit(1)
	}
}

func run(in, out, title string) error {
	if in == "" {
		return errors.New("-in is required")
	}
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	series, err := readWaits(f)
	if err != nil {
		return err
	}
	w := io.Writer(os.Stdout)
	if out != "" {
		o, err := os.Create(out)
		if err != nil {
			return err
		}
		defer o.Close()
		w = o
	}
	return writeSVG(w, title, series)
}

// series is one variant's waits in microseconds, sorted.
type series struct {
	name  string
	waits []float64
}

// readWaits parses variant,wait_us rows, keeping the variants' order.
func readWaits(r io.Reader) ([]series, error) {
	rows, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) < 2 || len(rows[0]) != 2 || rows[0][1] != "wait_us" {
		return nil, errors.New("want a header variant,wait_us and at least one row")
	}
	idx := map[string]int{}
	var out []series
	for i, row := range rows[1:] {
		v, err := strconv.ParseFloat(row[1], 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("row %d: bad wait %q", i+2, row[1])
		}
		j, ok := idx[row[0]]
		if !ok {
			j = len(out)
			idx[row[0]] = j
			out = append(out, series{name: row[0]})
		}
		out[j].waits = append(out[j].waits, max(v, 1)) // log axis: floor at 1 µs
	}
	for i := range out {
		slices.Sort(out[i].waits)
	}
	return out, nil
}
