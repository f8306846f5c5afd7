// Command benchplot draws the wait-time distributions that
// `fencedlock bench -csv FILE` records as an SVG chart: one cumulative
// distribution per variant (fencedlock, the 1 ms polling lock) on a
// logarithmic time axis, with p50 and p99 marked in the legend. It uses only
// the standard library.
//
//	fencedlock -redis 127.0.0.1:6379 bench -csv /tmp/bench.csv
//	go run ./cmd/benchplot -in /tmp/bench.csv -out docs/bench-wait.svg
package main
