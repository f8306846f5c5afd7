package main

import (
	"bytes"
	"encoding/xml"
	"strings"
	"testing"
)

func TestReadWaits_andSVG(t *testing.T) {
	in := "variant,wait_us\nfencedlock,120\nfencedlock,80\npolling-1ms,5000\npolling-1ms,900\npolling-1ms,0\n"
	ss, err := readWaits(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 2 || ss[0].name != "fencedlock" || ss[0].waits[0] != 80 || ss[1].waits[0] != 1 {
		t.Fatalf("series %+v", ss)
	}
	var b bytes.Buffer
	if err := writeSVG(&b, "t <&>", ss); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(b.Bytes(), new(struct{})); err != nil {
		t.Fatalf("not well-formed XML: %v", err)
	}
	if strings.Count(b.String(), "<polyline") != 2 || !strings.Contains(b.String(), "polling-1ms  (n=3") {
		t.Fatalf("chart lacks curves or legend:\n%s", b.String())
	}
}

func TestReadWaits_badInput(t *testing.T) {
	for _, in := range []string{"", "a,b\n", "variant,wait_us\n", "variant,wait_us\nx,-1\n", "variant,wait_us\nx,abc\n", "variant,wait_us\nx\n"} {
		if _, err := readWaits(strings.NewReader(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}
