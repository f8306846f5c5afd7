package httpmw

import (
	"bufio"
	"io"
	"net"
	"net/http"
)

// responseWriter records whether the handler started a response, so that a
// lock lost mid-request can still be answered with 409. Optional interfaces
// stay reachable: Flush and Hijack directly (for type assertions), the rest
// through Unwrap (http.ResponseController).
type responseWriter struct {
	http.ResponseWriter
	written bool
}

func (w *responseWriter) WriteHeader(code int) {
	// 1xx informational responses (except 101) do not start the response.
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.written = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *responseWriter) Write(b []byte) (int, error) {
	w.written = true
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps io.Copy on the server's fast path (sendfile).
func (w *responseWriter) ReadFrom(r io.Reader) (int64, error) {
	w.written = true
	return io.Copy(w.ResponseWriter, r)
}

func (w *responseWriter) Flush() {
	w.written = true
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.written = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
