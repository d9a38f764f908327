package proxy

import (
	"net/http"

	"github.com/straitproxy/strait/internal/http1"
)

// writeError answers with a short plain-text response of strait's own.
// detail, if any, follows the status text in the body: it names the rule a
// malformed request broke, which helps whoever wrote the client.
func (c *conn) writeError(status int, detail string, keep bool) {
	bw := c.writer()
	buf := bw.AvailableBuffer()
	buf = http1.AppendStatusLine(buf, status, nil)
	buf = append(buf, "Content-Type: text/plain; charset=utf-8\r\n"...)
	if status == 503 {
		buf = append(buf, "Retry-After: 1\r\n"...)
	}
	if status == 405 {
		buf = append(buf, "Allow: GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE\r\n"...)
	}
	if !keep {
		buf = append(buf, "Connection: close\r\n"...)
	}
	text := http.StatusText(status)
	n := len(text) + 1
	if detail != "" {
		n += len(detail) + 2
	}
	buf = http1.AppendContentLength(buf, int64(n))
	buf = append(buf, "\r\n"...)
	if string(c.req.Method) != "HEAD" {
		buf = append(buf, text...)
		if detail != "" {
			buf = append(append(buf, ": "...), detail...)
		}
		buf = append(buf, '\n')
	}
	bw.Write(buf)
	bw.Flush()
	c.sess.Stats.Status = status
	c.sess.Response.Status = status
}

// respondFromHook is Session.Respond for HTTP/1.1.
func (c *conn) respondFromHook(s *Session, status int, body []byte, fields []string) error {
	if status < 200 || status > 999 {
		return &Error{Side: Internal, Kind: KindFilter, Status: 500, Where: "respond: status out of range"}
	}
	bw := c.writer()
	buf := bw.AvailableBuffer()
	buf = http1.AppendStatusLine(buf, status, nil)
	for i := 0; i+1 < len(fields); i += 2 {
		var err error
		buf, err = http1.AppendField(buf, []byte(fields[i]), []byte(fields[i+1]))
		if err != nil {
			return &Error{Side: Internal, Kind: KindFilter, Status: 500, Where: "respond: invalid field " + fields[i], Err: err}
		}
	}
	if !c.req.KeepAlive {
		buf = append(buf, "Connection: close\r\n"...)
	}
	noBody := string(c.req.Method) == "HEAD" || status == 204 || status == 304
	if status != 204 && status != 304 {
		buf = http1.AppendContentLength(buf, int64(len(body)))
	}
	buf = append(buf, "\r\n"...)
	if _, err := bw.Write(buf); err != nil {
		return c.downstreamWriteError(err)
	}
	if !noBody {
		if _, err := bw.Write(body); err != nil {
			return c.downstreamWriteError(err)
		}
		s.Stats.BytesOut += int64(len(body))
	}
	if err := bw.Flush(); err != nil {
		return c.downstreamWriteError(err)
	}
	s.Stats.Status = status
	s.Response.Status = status
	return nil
}

func (c *conn) downstreamWriteError(err error) *Error {
	return &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "downstream write", Err: err}
}
