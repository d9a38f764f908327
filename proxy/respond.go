package proxy

import (
	"net/http"
	"strconv"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/http1"
)

// responseHead is a response head strait writes downstream.
type responseHead struct {
	status int
	reason []byte         // empty: the standard one
	header *header.Header // end-to-end fields only; nil for none
	// length is the body's length, or -1 if unknown (the body is then
	// chunked, or close-delimited to an HTTP/1.0 client). For a response
	// to HEAD and a 304 it is the length of the representation, sent as
	// Content-Length if known, and no body follows.
	length int64
	// upgrade is, for a 101, the protocol the connection switches to.
	upgrade []byte
}

// bodyFraming is how a response body goes downstream.
type bodyFraming uint8

const (
	noBody      bodyFraming = iota // none follows the head
	lengthBody                     // Content-Length bytes
	chunkedBody                    // chunked
	closeBody                      // until the connection closes (HTTP/1.0 clients)
)

// writeResponseHead buffers h for the client and returns how its body must
// be framed. Every response head strait writes goes through it, so one
// place decides, from the final status and the client's method and
// version, whether a body follows, how it is delimited, and whether the
// connection stays open (RFC 9112 §6.3, §9.6). The framing and connection
// fields are strait's alone: h.header must not hold any (filters' are
// removed before).
func (c *conn) writeResponseHead(h *responseHead) (bodyFraming, error) {
	bw := c.writer()
	buf := http1.AppendStatusLine(bw.AvailableBuffer(), h.status, h.reason)
	if h.header != nil {
		var err error
		if buf, err = http1.AppendHeader(buf, h.header); err != nil {
			return noBody, err
		}
	}
	framing := noBody
	switch {
	case h.status < 200: // interim, or 101: no body, no framing
		if h.status == 101 {
			buf = append(append(append(buf, "Connection: Upgrade\r\nUpgrade: "...), h.upgrade...), "\r\n"...)
		}
		_, err := bw.Write(append(buf, "\r\n"...))
		return noBody, err
	case h.status == 204:
	case c.headReq || h.status == 304:
		if h.length >= 0 {
			buf = http1.AppendContentLength(buf, h.length)
		}
	case h.length >= 0:
		framing = lengthBody
		buf = http1.AppendContentLength(buf, h.length)
	case c.req.Minor == 1:
		framing = chunkedBody
		buf = append(buf, "Transfer-Encoding: chunked\r\n"...)
	default:
		framing = closeBody
	}
	if framing == closeBody || !c.req.KeepAlive || c.srv.shuttingDown() {
		buf = append(buf, "Connection: close\r\n"...)
		c.req.KeepAlive = false
	} else if c.req.Minor == 0 {
		buf = append(buf, "Connection: keep-alive\r\n"...)
	}
	_, err := bw.Write(append(buf, "\r\n"...))
	return framing, err
}

// writeError answers with a short plain-text response of strait's own, and
// flushes it. detail, if any, follows the status text in the body: it names
// the rule a malformed request broke, which helps whoever wrote the client.
// Whether the connection stays open is c.req.KeepAlive.
func (c *conn) writeError(status int, detail string) {
	h := &c.scratch
	h.Reset()
	h.Add("Content-Type", "text/plain; charset=utf-8")
	switch status {
	case 503:
		h.Add("Retry-After", "1")
	case 405:
		h.Add("Allow", "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH, TRACE")
	}
	text := http.StatusText(status)
	if text == "" {
		text = "Status " + strconv.Itoa(status)
	}
	n := len(text) + 1
	if detail != "" {
		n += len(detail) + 2
	}
	framing, err := c.writeResponseHead(&responseHead{status: status, header: h, length: int64(n)})
	if err == nil && framing != noBody {
		bw := c.bw
		bw.WriteString(text)
		if detail != "" {
			bw.WriteString(": ")
			bw.WriteString(detail)
		}
		bw.WriteByte('\n')
	}
	c.bw.Flush()
	c.sess.answered = true
	c.sess.Stats.Status = status
	c.sess.Response.Status = status
}

// respondFromHook is Session.Respond for HTTP/1.1. Framing and connection
// fields among fields are dropped: strait frames the response itself.
// Upgrade is kept, for a 426 (RFC 9110 §15.5.22).
func (c *conn) respondFromHook(s *Session, status int, body []byte, fields []string) error {
	if status < 200 || status > 999 {
		return &Error{Side: Internal, Kind: KindFilter, Status: 500, Where: "respond: status out of range"}
	}
	h := &c.scratch
	h.Reset()
	for i := 0; i+1 < len(fields); i += 2 {
		if name := []byte(fields[i]); !http1.IsConnField(name) || header.EqualFold(name, "upgrade") {
			h.Add(fields[i], fields[i+1])
		}
	}
	framing, err := c.writeResponseHead(&responseHead{status: status, header: h, length: int64(len(body))})
	if err != nil {
		return &Error{Side: Internal, Kind: KindFilter, Status: 500, Where: "respond: invalid field", Err: err}
	}
	bw := c.bw
	if framing != noBody {
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
