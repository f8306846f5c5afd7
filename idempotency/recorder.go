package idempotency

import (
	"bytes"
	"net/http"
)

// recorder buffers the handler's response so that it can be stored before
// it is sent. A body above the limit is sent through as it comes and not
// stored. Flush is a no-op while buffering (the answer is sent whole, after
// it is stored); Hijack is not offered.
type recorder struct {
	w       http.ResponseWriter
	header  http.Header
	status  int
	body    bytes.Buffer
	limit   int
	through bool // over the limit: writing straight to w
}

func newRecorder(w http.ResponseWriter, limit int) *recorder {
	return &recorder{w: w, header: make(http.Header), limit: limit}
}

func (r *recorder) Header() http.Header {
	if r.through {
		return r.w.Header()
	}
	return r.header
}

func (r *recorder) WriteHeader(code int) {
	if r.status != 0 || code < 200 {
		return // repeated, or 1xx (not kept)
	}
	r.status = code
	if r.through {
		r.w.WriteHeader(code)
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	if r.through {
		return r.w.Write(b)
	}
	if r.body.Len()+len(b) > r.limit {
		r.passThrough()
		return r.w.Write(b)
	}
	return r.body.Write(b)
}

func (r *recorder) Flush() {}

// passThrough sends what is buffered and switches to writing through.
func (r *recorder) passThrough() {
	r.through = true
	hdr := r.w.Header()
	for k, vs := range r.header {
		hdr[k] = vs
	}
	r.w.WriteHeader(r.status)
	_, _ = r.w.Write(r.body.Bytes())
	r.body = bytes.Buffer{}
}

// result is the answer to store, or no record when it went through. A
// handler that wrote nothing is answered 200 by net/http, but it is no
// success: a handler that gave up on a departed client returns that way,
// and its empty 200 must not be replayed to the retry.
func (r *recorder) result(keep []string) Result {
	if r.through {
		return Result{}
	}
	wrote, status := r.status != 0, r.status
	if !wrote {
		status = http.StatusOK
	}
	rec := &Record{Status: status, Body: r.body.Bytes()}
	for _, k := range keep {
		if vs, ok := r.header[k]; ok {
			if rec.Header == nil {
				rec.Header = make(http.Header, len(keep))
			}
			rec.Header[k] = vs
		}
	}
	return Result{Record: rec, ServerError: status >= 500, Succeeded: wrote && status < 400}
}

// flush sends the buffered answer with every header the handler set.
func (r *recorder) flush() {
	if r.through {
		return
	}
	hdr := r.w.Header()
	for k, vs := range r.header {
		hdr[k] = vs
	}
	status := r.status
	if status == 0 {
		status = http.StatusOK
	}
	r.w.WriteHeader(status)
	_, _ = r.w.Write(r.body.Bytes())
}
