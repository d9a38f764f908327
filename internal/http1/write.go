package http1

import (
	"io"
	"net/http"
	"strconv"

	"github.com/straitproxy/strait/header"
)

// The append functions build message heads for forwarding. They write only
// HTTP/1.1 and only well-formed fields: a field a program set with a CR, LF
// or other control character in it is refused, never sent, so nothing set on
// a message can split it in two on the wire.

// AppendRequestLine appends "method target HTTP/1.1\r\n". A method that
// is not a token, or a target with a character a request-target cannot
// hold (SP, CR, LF, controls), is refused: a program may have set them.
func AppendRequestLine(dst, method, target []byte) ([]byte, error) {
	if !isToken(method) {
		return dst, ErrMethod
	}
	if len(target) == 0 {
		return dst, ErrTarget
	}
	for _, c := range target {
		if !isTargetChar[c] && c != '*' {
			return dst, ErrTarget
		}
	}
	dst = append(dst, method...)
	dst = append(dst, ' ')
	dst = append(dst, target...)
	return append(dst, " HTTP/1.1\r\n"...), nil
}

// AppendStatusLine appends "HTTP/1.1 status reason\r\n". An empty reason,
// or one with a character a reason-phrase cannot hold, is replaced by the
// standard one.
func AppendStatusLine(dst []byte, status int, reason []byte) []byte {
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, ' ')
	if len(reason) > 0 && validReason(reason) {
		return append(append(dst, reason...), "\r\n"...)
	}
	return append(append(dst, http.StatusText(status)...), "\r\n"...)
}

func validReason(b []byte) bool { return valueEnd(b) == len(b) }

// AppendField appends "name: value\r\n", or returns an error if name is
// not a token or value holds a character a field value cannot.
func AppendField(dst, name, value []byte) ([]byte, error) {
	if !isToken(name) {
		return dst, ErrFieldName
	}
	if valueEnd(value) < len(value) {
		return dst, ErrFieldValue
	}
	dst = append(dst, name...)
	dst = append(dst, ": "...)
	dst = append(dst, header.TrimSpace(value)...)
	return append(dst, "\r\n"...), nil
}

// AppendHeader appends every field of h, or none if one is refused.
func AppendHeader(dst []byte, h *header.Header) ([]byte, error) {
	orig := len(dst)
	checked := h.Checked()
	for i := range checked { // as the parser checked them
		f := h.Field(i)
		dst = append(dst, f.Name...)
		dst = append(dst, ": "...)
		dst = append(dst, f.Value...)
		dst = append(dst, "\r\n"...)
	}
	for i := checked; i < h.Len(); i++ {
		f := h.Field(i)
		var err error
		if dst, err = AppendField(dst, f.Name, f.Value); err != nil {
			return dst[:orig], err
		}
	}
	return dst, nil
}

// AppendContentLength appends "Content-Length: n\r\n".
func AppendContentLength(dst []byte, n int64) []byte {
	dst = append(dst, "Content-Length: "...)
	dst = strconv.AppendInt(dst, n, 10)
	return append(dst, "\r\n"...)
}

// ChunkedWriter writes a body with the chunked coding. Each Write is one
// chunk; Close writes the last chunk and the trailers. Write through a
// buffered writer: a chunk is three small writes.
type ChunkedWriter struct {
	w       io.Writer
	scratch [20]byte
}

// Reset makes c write to w.
func (c *ChunkedWriter) Reset(w io.Writer) { c.w = w }

func (c *ChunkedWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil // an empty chunk would end the body
	}
	line := append(strconv.AppendInt(c.scratch[:0], int64(len(p)), 16), '\r', '\n')
	if _, err := c.w.Write(line); err != nil {
		return 0, err
	}
	n, err := c.w.Write(p)
	if err != nil {
		return n, err
	}
	_, err = io.WriteString(c.w, "\r\n")
	return n, err
}

// Close ends the body: the last chunk, then the trailer fields (if t is
// not nil), then the empty line. Trailer fields are checked before anything
// is written.
func (c *ChunkedWriter) Close(t *header.Header) error {
	n := 0
	if t != nil {
		n = t.Len()
	}
	for i := range n {
		f := t.Field(i)
		if _, err := AppendField(c.scratch[:0:0], f.Name, nil); err != nil {
			return err
		}
		if !validReason(f.Value) {
			return ErrFieldValue
		}
	}
	if _, err := io.WriteString(c.w, "0\r\n"); err != nil {
		return err
	}
	for i := range n {
		f := t.Field(i)
		if _, err := c.w.Write(f.Name); err != nil {
			return err
		}
		if _, err := io.WriteString(c.w, ": "); err != nil {
			return err
		}
		if _, err := c.w.Write(header.TrimSpace(f.Value)); err != nil {
			return err
		}
		if _, err := io.WriteString(c.w, "\r\n"); err != nil {
			return err
		}
	}
	_, err := io.WriteString(c.w, "\r\n")
	return err
}
