package proxy

import (
	"errors"
	"io"
	"sync/atomic"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/http1"
)

// bodySender sends a request body upstream on a goroutine of its own, so
// that a response that comes first (401, 413, a stream) is relayed at once.
// The exchange starts it, then either waits for it (an upgrade needs the
// whole body first) or stops it (the response is complete, or the exchange
// failed). Either way the exchange learns whether the whole body went out:
// only then may the upstream connection carry another request.
//
// If the response is slow to come, the exchange asks the sender to watch
// the client once the body is sent (watch.go): the sender's goroutine goes
// on as the watcher, and its result waits until it is stopped.
type bodySender struct {
	result  chan *Error  // the goroutine's result; buffered
	done    atomic.Bool  // the goroutine has its result
	state   atomic.Int32 // what the goroutine is doing, or is asked to do next
	running bool         // started and not yet waited for
	err     *Error       // the result, once waited for
}

// The body sender's states. The exchange moves sending to watchWanted when
// it would have the client watched, and back when it would rather not (an
// upgrade); the sender, with the body sent, moves watchWanted to watching,
// or else stores sent. Whichever comparison-and-swap fails learns the
// other's move.
const (
	sending     int32 = iota // the body is being sent
	sent                     // the goroutine is done with the body, and finishes
	watchWanted              // it is to watch the client once the body is sent
	watching                 // it sent the body and watches the client
)

// errBodyAborted is the body sender's result when the exchange stopped it
// before the whole body was sent. It never leaves the exchange.
var errBodyAborted = &Error{Side: Internal, Kind: KindOther, Where: "request body: stopped by the exchange"}

// startBody starts sending the request body to up.
func (c *conn) startBody(s *Session, up *upConn, chunked bool) {
	b := &c.body
	b.running, b.err = true, nil
	b.done.Store(false)
	b.state.Store(sending)
	c.share(up)
	go c.sendBody(s, up, chunked)
}

// sendBody is the body sender's goroutine. If the client's side fails (it
// left, stalled, or broke the framing) or a body filter does, the
// exchange's wait for the response is interrupted: the request is over.
// An upstream that stops reading is left to answer (it may have, early).
func (c *conn) sendBody(s *Session, up *upConn, chunked bool) {
	b := &c.body
	e := c.copyBody(s, up, chunked)
	if e != nil && e != errBodyAborted && e.Side != Upstream {
		if e.Kind == KindDownstreamGone {
			s.end(ErrClientGone)
		}
		up.rdl.interrupt(up.nc.SetReadDeadline)
	}
	// Unless the exchange is over, it goes on waiting for the response:
	// if it asked, watch the client until it is stopped.
	goesOn := e == nil || e.Side == Upstream
	for !b.state.CompareAndSwap(sending, sent) {
		if b.state.CompareAndSwap(watchWanted, watching) {
			if goesOn {
				c.watchClient(up)
			}
			break
		}
	}
	b.done.Store(true)
	b.result <- e
}

// finishBody waits for the whole body to be sent, stopping the watch the
// body sender may have begun, and returns the sender's result.
func (c *conn) finishBody(up *upConn) *Error {
	b := &c.body
	if b.running && !b.state.CompareAndSwap(watchWanted, sending) && b.state.Load() == watching {
		c.rdl.interrupt(c.nc.SetReadDeadline) // the body is sent: this ends the watch only
	}
	e := c.waitBody(up)
	c.rdl.reset(c.nc.SetReadDeadline)
	return e
}

// waitBody waits for the body sender to finish and returns its result.
func (c *conn) waitBody(up *upConn) *Error {
	b := &c.body
	if b.running {
		b.running = false
		b.err = <-b.result
		c.unshare(up)
	}
	return b.err
}

// abortBody stops the body sender if it has not finished, waits for it,
// and returns its result: errBodyAborted if it was stopped first. The
// request body is left where the sender stopped; what is left of it may
// still be read (the interrupt consumed nothing).
func (c *conn) abortBody(up *upConn) *Error {
	b := &c.body
	if !b.running {
		return b.err
	}
	if !b.done.Load() {
		c.rdl.interrupt(c.nc.SetReadDeadline)
		up.wdl.interrupt(up.nc.SetWriteDeadline)
	}
	e := c.waitBody(up)
	c.rdl.reset(c.nc.SetReadDeadline)
	up.wdl.reset(up.nc.SetWriteDeadline)
	c.dropWatchBuf()
	return e
}

// bodyStarted reports whether any of the request body was consumed, which
// rules out sending the request again.
func (c *conn) bodyStarted() bool {
	return c.req.Framing != http1.NoBody && (c.rd.Body().Done() || c.sess.Stats.BytesIn > 0)
}

// copyBody copies the request body to up, through the body filter.
func (c *conn) copyBody(s *Session, up *upConn, chunked bool) *Error {
	body := c.rd.Body()
	var w io.Writer = up.bw
	if chunked {
		up.cw.Reset(up.bw)
		w = &up.cw
	}
	writeErr := func(err error) *Error {
		if up.wdl.interrupted() {
			return errBodyAborted
		}
		return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream write", Err: err}
	}
	filter := c.srv.phases.RequestBodyFilter
	max := c.srv.opts.Limits.MaxRequestBody
	for {
		data, rerr := body.Next()
		if rerr != nil && rerr != io.EOF {
			var pe *http1.Error
			switch {
			case c.rdl.interrupted():
				return errBodyAborted
			case errors.As(rerr, &pe):
				return &Error{Side: Downstream, Kind: KindProtocol, Status: pe.Status, Where: "request body", Err: rerr}
			case isTimeout(rerr):
				return &Error{Side: Downstream, Kind: KindTimeout, Status: 408, Where: "request body timeout", Err: rerr}
			}
			return &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "request body", Err: rerr}
		}
		s.Stats.BytesIn += int64(len(data))
		if max > 0 && s.Stats.BytesIn > max {
			c.srv.counters.BodyTooLarge.Add(1)
			return &Error{Side: Downstream, Kind: KindLimit, Status: 413, Where: "request body over the limit"}
		}
		if filter != nil {
			var err error
			if data, err = filter(s, data, rerr == io.EOF); err != nil {
				return asError(err, Internal, KindFilter, 500, "request body filter")
			}
		}
		if len(data) > 0 {
			if _, err := w.Write(data); err != nil {
				return writeErr(err)
			}
		}
		if rerr == io.EOF {
			break
		}
		if !body.Ready() {
			if err := up.bw.Flush(); err != nil {
				return writeErr(err)
			}
		}
	}
	if chunked {
		copyTrailers(&s.Request.Trailer, &body.Trailer)
		if err := up.cw.Close(&s.Request.Trailer); err != nil {
			return writeErr(err)
		}
	}
	if err := up.bw.Flush(); err != nil {
		return writeErr(err)
	}
	return nil
}

// copyTrailers makes dst a copy of the trailer fields src received, less
// those a trailer may not carry.
func copyTrailers(dst, src *header.Header) {
	dst.CopyFrom(src)
	dst.DelFunc(func(f header.Field) bool { return prohibitedTrailer(f.Name) })
}

// prohibitedTrailer reports whether a field may not be sent as a trailer:
// RFC 9110 §6.5.1 rules out fields that frame the message, route it,
// modify the request, authenticate, control the response or caching, or
// say how to process the content; and connection fields are hop-by-hop.
// A recipient could otherwise merge them into the head and act on them.
func prohibitedTrailer(name []byte) bool {
	if http1.IsConnField(name) {
		return true // Connection, Content-Length, Transfer-Encoding, TE, ...
	}
	var lower [32]byte
	if len(name) > len(lower) {
		return false
	}
	for i, ch := range name {
		if 'A' <= ch && ch <= 'Z' {
			ch += 'a' - 'A'
		}
		lower[i] = ch
	}
	switch string(lower[:len(name)]) {
	case "host", "authorization", "proxy-authorization", "proxy-authenticate", "www-authenticate",
		"authentication-info", "cookie", "set-cookie",
		"cache-control", "expires", "age", "date", "pragma", "vary", "warning", "max-forwards",
		"range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range",
		"location", "retry-after", "trailer",
		"content-type", "content-encoding", "content-range", "content-language", "content-location":
		return true
	}
	return false
}
