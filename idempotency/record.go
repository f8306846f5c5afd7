package idempotency

import (
	"encoding/binary"
	"fmt"
	"net/http"
)

// Record is a stored answer. For HTTP, Status is the status code, Header
// the selected response headers and Body the response body; for gRPC
// (grpcmw), Status is the status code, Body the marshalled response message
// or status.
type Record struct {
	Fingerprint Fingerprint
	Fence       uint64 // the fence of the attempt that stored it
	Status      int
	Header      http.Header
	Body        []byte
}

const recordVersion = 1

// Encode returns the record's compact binary form (what the stores keep).
func (r *Record) Encode() []byte {
	n := 1 + len(r.Fingerprint) + 3*binary.MaxVarintLen64 + len(r.Body)
	for k, vs := range r.Header {
		n += len(k) + 2*binary.MaxVarintLen64
		for _, v := range vs {
			n += len(v) + binary.MaxVarintLen64
		}
	}
	b := make([]byte, 0, n)
	b = append(b, recordVersion)
	b = append(b, r.Fingerprint[:]...)
	b = binary.AppendUvarint(b, r.Fence)
	b = binary.AppendVarint(b, int64(r.Status))
	b = binary.AppendUvarint(b, uint64(len(r.Header)))
	for k, vs := range r.Header {
		b = appendBytes(b, k)
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendBytes(b, v)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(r.Body)))
	return append(b, r.Body...)
}

func appendBytes(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// DecodeRecord parses what Encode wrote. Errors wrap ErrCorruptRecord.
func DecodeRecord(b []byte) (*Record, error) {
	d := decoder{b: b}
	if v := d.byte(); v != recordVersion {
		return nil, fmt.Errorf("%w: version %d", ErrCorruptRecord, v)
	}
	r := &Record{}
	copy(r.Fingerprint[:], d.take(len(r.Fingerprint)))
	r.Fence = d.uvarint()
	r.Status = int(d.varint())
	if nh := d.count(); nh > 0 {
		r.Header = make(http.Header, nh)
		for range nh {
			k := string(d.take(d.count()))
			vs := make([]string, d.count())
			for i := range vs {
				vs[i] = string(d.take(d.count()))
			}
			r.Header[k] = vs
		}
	}
	r.Body = d.take(d.count())
	if d.bad || len(d.b) != 0 {
		return nil, ErrCorruptRecord
	}
	return r, nil
}

// decoder reads a record; after the first error it only returns zeros.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) byte() byte {
	if d.bad || len(d.b) == 0 {
		d.bad = true
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) take(n int) []byte {
	if d.bad || n < 0 || n > len(d.b) {
		d.bad = true
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.bad {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.bad {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.bad = true
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a length or item count. Every item takes at least one byte,
// so a count above what is left is corrupt (and cannot make Decode
// allocate without limit).
func (d *decoder) count() int {
	v := d.uvarint()
	if v > uint64(len(d.b)) {
		d.bad = true
		return 0
	}
	return int(v)
}
