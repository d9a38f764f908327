package h1

import (
	"fmt"
	"time"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/http1"
	"github.com/straitproxy/strait/internal/stream"
	"github.com/straitproxy/strait/internal/tunnel"
)

// A conn is the stream.Downstream of the request it is serving.
var _ stream.Downstream = (*conn)(nil)

func (c *conn) Head() *stream.RequestHead { return &c.head }

func (c *conn) ReadBody() ([]byte, error) { return c.rd.Body().Next() }
func (c *conn) BodyBuffered() bool        { return c.rd.Body().Ready() }
func (c *conn) BodyDone() bool            { return c.rd.Body().Done() }
func (c *conn) Trailer() *header.Header   { return &c.rd.Body().Trailer }

func (c *conn) Share()   { c.sock.Share() }
func (c *conn) Unshare() { c.sock.Unshare() }

func (c *conn) Interrupt(d stream.Dir)        { c.sock.Interrupt(d == stream.Write) }
func (c *conn) Interrupted(d stream.Dir) bool { return c.sock.Interrupted(d == stream.Write) }

// ClearInterrupt ends an interrupt; after one of reading, the watch buffer
// goes back to its pool if the watcher left nothing in it.
func (c *conn) ClearInterrupt(d stream.Dir) {
	c.sock.ClearInterrupt(d == stream.Write)
	if d == stream.Read {
		c.watch.drop()
	}
}

// Continue answers 100-continue, which strait does itself once the
// upstream is reached (nginx does the same).
func (c *conn) Continue() {
	if !c.req.ExpectContinue || c.continued {
		return
	}
	if _, err := c.WriteHead(&stream.ResponseHead{Status: 100}); err == nil {
		c.bw.Flush()
	}
	c.continued = true
}

// WriteInterim buffers an interim response for a client that can take
// one: HTTP/1.0 clients cannot (RFC 9110 §15.2).
func (c *conn) WriteInterim(status int, reason []byte, h *header.Header) error {
	if c.req.Minor == 0 {
		return nil
	}
	_, err := c.WriteHead(&stream.ResponseHead{Status: status, Reason: reason, Header: h})
	return err
}

// bodyFraming is how a response body goes to the client.
type bodyFraming uint8

const (
	noBody      bodyFraming = iota // none follows the head
	lengthBody                     // Content-Length bytes
	chunkedBody                    // chunked
	closeBody                      // until the connection closes (HTTP/1.0 clients)
)

// WriteHead buffers h for the client and reports whether a body follows.
// Every response head strait writes goes through it, so one place decides,
// from the final status and the client's method and version, whether a
// body follows, how it is delimited, and whether the connection stays open
// (RFC 9112 §6.3, §9.6). The framing and connection fields are strait's
// alone: h.Header must not hold any.
func (c *conn) WriteHead(h *stream.ResponseHead) (bool, error) {
	bw := c.writer()
	buf := http1.AppendStatusLine(bw.AvailableBuffer(), h.Status, h.Reason)
	if h.Header != nil {
		var err error
		if buf, err = http1.AppendHeader(buf, h.Header); err != nil {
			return false, fmt.Errorf("%w: %w", stream.ErrUnsendable, err)
		}
	}
	framing := noBody
	switch {
	case h.Status < 200: // interim, or 101: no body, no framing
		if h.Status == 101 {
			buf = append(append(append(buf, "Connection: Upgrade\r\nUpgrade: "...), h.Upgrade...), "\r\n"...)
			c.answered = true
		}
		_, err := bw.Write(append(buf, "\r\n"...))
		return false, err
	case h.Status == 204:
	case c.headReq || h.Status == 304:
		if h.Length >= 0 {
			buf = http1.AppendContentLength(buf, h.Length)
		}
	case h.Length >= 0:
		framing = lengthBody
		buf = http1.AppendContentLength(buf, h.Length)
	case c.req.Minor == 1:
		framing = chunkedBody
		buf = append(buf, "Transfer-Encoding: chunked\r\n"...)
		c.cw.Reset(bw)
	default:
		framing = closeBody
	}
	if framing == closeBody || !c.req.KeepAlive || c.srv.shuttingDown() {
		buf = append(buf, "Connection: close\r\n"...)
		c.req.KeepAlive = false
	} else if c.req.Minor == 0 {
		buf = append(buf, "Connection: keep-alive\r\n"...)
	}
	c.framing = framing
	c.answered = true
	_, err := bw.Write(append(buf, "\r\n"...))
	return framing != noBody, err
}

// WriteBody buffers a piece of the response body, framed as WriteHead
// chose.
func (c *conn) WriteBody(p []byte) error {
	var err error
	if c.framing == chunkedBody {
		_, err = c.cw.Write(p)
	} else {
		_, err = c.bw.Write(p)
	}
	return err
}

func (c *conn) Flush() error { return c.flush() }

// EndBody ends a chunked body with its trailer fields; other framings end
// by themselves.
func (c *conn) EndBody(trailer *header.Header) error {
	if c.framing != chunkedBody {
		return nil
	}
	return c.cw.Close(trailer)
}

func (c *conn) CloseAfter() { c.req.KeepAlive = false }

// Tunnel relays the upgraded connection. Server.Close ends it by shutting
// down both its sockets.
func (c *conn) Tunnel(up stream.Upstream, idle time.Duration) tunnel.Result {
	c.req.KeepAlive = false // the connection is the tunnel's now
	upNC, fromUpstream := up.Detach()
	srv := c.srv
	srv.mu.Lock()
	c.tunnelUp = upNC
	closing := srv.closing
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		c.tunnelUp = nil
		srv.mu.Unlock()
	}()
	if closing {
		return tunnel.Result{}
	}
	// Bytes that arrived with the heads are the first of each direction:
	// the client's, then those the watcher read while the 101 was awaited.
	fromClient := c.rd.TakeBuffered()
	if w := c.watch.takeAll(); len(w) > 0 {
		fromClient = append(fromClient[:len(fromClient):len(fromClient)], w...)
	}
	return tunnel.Relay(c.sock.NC, upNC, fromClient, fromUpstream, idle)
}
