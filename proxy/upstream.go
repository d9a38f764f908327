package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/http1"
)

// upConn is a connection to a peer, with its codec state. It lives in the
// shared pool between requests.
type upConn struct {
	nc      net.Conn
	key     string
	created time.Duration // mono
	rd      http1.Reader
	bw      *bufio.Writer
	cw      http1.ChunkedWriter
	resp    http1.Response
	alive   aliveCheck
	rawFD   int32 // the socket if plain TCP or Unix, for raw I/O; else -1
	raw     int32 // rawFD while raw I/O is on, else -1 (rawio_linux.go)

	// Deadlines: rolling ones of readIdle (when not 0) and writeIdle,
	// capped by the request's total upstream deadline (limit).
	rdl, wdl  deadline
	readIdle  time.Duration
	writeIdle time.Duration
	limit     time.Duration // mono; 0: none
	lastWrite time.Duration // when the last write began (mono)
	written   int64         // bytes written in the current exchange
}

func (u *upConn) Read(p []byte) (int, error) {
	fd := u.raw
	if u.limit > 0 && fd >= 0 && mono() >= u.limit {
		fd = -1 // past the total deadline: net.Conn reports it
	}
	if n := rawRead(fd, p); n > 0 {
		return n, nil
	}
	if u.readIdle > 0 {
		u.rdl.ensure(u.nc.SetReadDeadline, mono(), u.readIdle, u.limit)
	}
	return u.nc.Read(p)
}

func (u *upConn) Write(p []byte) (int, error) {
	u.lastWrite = mono()
	fd := u.raw
	if u.limit > 0 && u.lastWrite >= u.limit {
		fd = -1 // past the total deadline: net.Conn reports it
	}
	n := rawWrite(fd, p)
	u.written += int64(n)
	if n == len(p) {
		return n, nil
	}
	u.wdl.ensure(u.nc.SetWriteDeadline, u.lastWrite, u.writeIdle, u.limit)
	m, err := u.nc.Write(p[n:])
	u.written += int64(m)
	return n + m, err
}

// share turns raw I/O on c's and u's sockets off while another goroutine
// (a body copier, the watcher) uses them or may stop a wait with a
// deadline; unshare turns it back on once the last such goroutine is done.
// The fields change only while no other goroutine runs.
func (c *conn) share(u *upConn) {
	if c.helpers == 0 {
		c.raw, u.raw = -1, -1
	}
	c.helpers++
}

func (c *conn) unshare(u *upConn) {
	if c.helpers--; c.helpers == 0 {
		c.raw, u.raw = c.rawFD, u.rawFD
	}
}

// idempotent reports whether a request with this method may be sent twice
// (RFC 9110 §9.2.2).
func idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// Close closes the connection and gives its read buffer back. Only its
// owner (an exchange, or the pool) calls it.
func (u *upConn) Close() error {
	u.rd.Release()
	return u.nc.Close()
}

// proxy sends the request upstream, retrying where that is safe, and
// relays the response.
func (c *conn) proxy(s *Session) *Error {
	srv := c.srv
	ph := &srv.phases
	max := srv.opts.Limits.MaxAttempts
	for {
		s.Stats.Attempts++
		peer, err := ph.UpstreamPeer(s)
		if err != nil || peer == nil {
			if err == nil {
				err = errors.New("no peer chosen")
			}
			return asError(err, Internal, KindNoPeer, 503, "choosing a peer")
		}
		s.Stats.Peer = peer.Addr
		now := c.readAt // read the clock again only for a retry
		if s.Stats.Attempts > 1 {
			now = mono()
		}
		up, e := srv.connect(s, peer, !idempotent(s.Request.Method), now)
		if e != nil {
			if ph.FailToConnect != nil {
				e = ph.FailToConnect(s, peer, e)
			}
			if e.Retry && s.Stats.Attempts < max {
				continue
			}
			return e
		}
		e = c.exchange(s, up)
		if e == nil {
			return nil
		}
		if ph.ErrorWhileProxy != nil {
			e = ph.ErrorWhileProxy(s, peer, e)
		}
		if e.Retry && s.Stats.Attempts < max && !s.answered && s.Stats.BytesIn == 0 && !c.bodyStarted() {
			continue
		}
		return e
	}
}

// bodyStarted reports whether any of the request body was consumed, which
// rules out sending the request again.
func (c *conn) bodyStarted() bool {
	return c.req.Framing != http1.NoBody && (c.rd.Body().Done() || c.sess.Stats.BytesIn > 0)
}

// connect returns a pooled connection to peer, or dials a new one. With
// check, a pooled connection is first peeked at to see that the peer has
// not closed it. Idempotent requests skip the check (a system call): if the
// connection turns out closed, they are sent again on a new one. now is a
// recent clock reading, for the pool's idle ages.
func (srv *Server) connect(s *Session, peer *Peer, check bool, now time.Duration) (*upConn, *Error) {
	key := peer.Addr
	for {
		u, ok := srv.pool.Get(key, now)
		if !ok {
			break
		}
		if !check || u.alive.check(u.nc) {
			s.Stats.Reused = true
			return u, nil
		}
		srv.counters.UpstreamStale.Add(1)
		u.Close()
	}
	s.Stats.Reused = false
	start := mono()
	ctx, cancel := context.WithTimeout(s.ctx, srv.opts.Timeouts.Connect)
	nc, err := srv.dialer.DialContext(ctx, "tcp", peer.Addr)
	cancel()
	s.Stats.UpstreamDial = mono() - start
	if err != nil {
		e := &Error{Side: Upstream, Kind: KindConnect, Status: 502, Where: "upstream connect", Err: err}
		if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
			e.Kind, e.Status, e.Where = KindTimeout, 504, "upstream connect timeout"
		}
		return nil, e
	}
	srv.counters.UpstreamDials.Add(1)
	u := &upConn{nc: nc, key: key, created: start}
	u.bw = bufio.NewWriterSize(u, 4<<10)
	u.rd.Reset(u, srv.opts.Limits.UpstreamHead)
	u.alive.init(nc)
	u.rawFD = plainFD(nc, u.alive.fd)
	u.raw = u.rawFD
	return u, nil
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}

// exchange sends the request on up and relays the response. On return up
// is back in the pool or closed.
func (c *conn) exchange(s *Session, up *upConn) (e *Error) {
	srv := c.srv
	t := &srv.opts.Timeouts
	reusable := false
	defer func() {
		// A pooled connection keeps its writer and a small read buffer:
		// fetching them from pools for every request cost more.
		up.rd.Trim()
		if reusable {
			srv.pool.Put(up.key, up, up.created, mono())
		} else {
			up.Close()
		}
	}()
	up.written = 0
	up.limit = 0
	if t.UpstreamTotal > 0 {
		up.limit = mono() + t.UpstreamTotal
	}
	// The write deadline rolls across exchanges: it bounds each write.
	up.writeIdle = t.UpstreamWrite
	up.readIdle = 0

	// h2c upgrades are not tunnelled: strait speaks HTTP/1.1 upstream, and
	// the field was removed with the hop-by-hop ones.
	upgrade := c.req.Upgrade != nil && !header.HasElement(c.req.Upgrade, "h2c")
	if ph := srv.phases.UpstreamRequestFilter; ph != nil {
		if err := ph(s, &s.Request); err != nil {
			return asError(err, Internal, KindFilter, 500, "upstream request filter")
		}
	}
	hasBody := c.req.Framing != http1.NoBody
	chunked := hasBody && (c.req.Framing == http1.ChunkedBody || srv.phases.RequestBodyFilter != nil)
	if err := c.writeRequestHead(s, up, hasBody, chunked, upgrade); err != nil {
		// Only a field or path a filter set can be refused here.
		return &Error{Side: Internal, Kind: KindFilter, Status: 500, Where: "upstream request head", Err: err}
	}
	var sent time.Duration // when the head went (mono)
	// The body goes up on its own goroutine, so that an upstream that
	// answers early (413, 401) is relayed without waiting for it.
	bodyRunning := false
	if hasBody {
		if c.req.ExpectContinue {
			// strait answers 100-continue itself, once the upstream is
			// reached (nginx does the same).
			if _, err := io.WriteString(c.writer(), "HTTP/1.1 100 Continue\r\n\r\n"); err == nil {
				c.bw.Flush()
			}
			c.continued = true
		}
		bodyRunning = true
		sent = mono()
		c.share(up)
		go c.sendBody(s, up, chunked)
	} else {
		if err := up.bw.Flush(); err != nil {
			retry := s.Stats.Reused && (idempotent(s.Request.Method) || up.written == 0)
			return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream write", Err: err, Retry: retry}
		}
		sent = up.lastWrite
	}
	// stopBody waits for the body copier and returns its result; abortBody
	// first cuts both its reads and its writes short.
	stopBody := func() *Error {
		if !bodyRunning {
			return nil
		}
		bodyRunning = false
		e := <-c.bodyErr
		c.unshare(up)
		return e
	}
	abortBody := func() *Error {
		if !bodyRunning {
			return nil
		}
		c.nc.SetReadDeadline(aLongTimeAgo)
		up.nc.SetWriteDeadline(aLongTimeAgo)
		e := stopBody() // the copier is done with both deadlines now
		c.rdl.forget()
		up.wdl.forget()
		return e
	}
	defer abortBody()

	// The response head. It is seldom there yet: let other connections
	// run first, so that it usually is by the time this one reads. That
	// saves a read that would fail (EAGAIN) and a park on the netpoller:
	// one system call in five per request under load. (Yielding before
	// the client's next request too starved the netpoller: p99 10 ms.)
	runtime.Gosched()
	e = c.readResponseHead(s, up, sent, hasBody)
	if e != nil {
		// The client's own failure, if its body broke first, is the cause.
		if be := abortBody(); be != nil && be.Side == Downstream {
			return be
		}
		return e
	}
	resp := &up.resp
	s.Stats.UpstreamHeader = mono() - sent

	if resp.Status == 101 {
		if !upgrade {
			return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream switched protocols unasked"}
		}
		if be := stopBody(); be != nil {
			return be
		}
		return c.tunnel(s, up)
	}

	// The response head downstream.
	s.Response.Status = resp.Status
	s.Response.Header, resp.Header = resp.Header, s.Response.Header
	defer func() { s.Response.Header, resp.Header = resp.Header, s.Response.Header }()
	headOnly := resp.Framing == http1.NoBody
	var cl []byte
	if headOnly && resp.Status != 204 {
		cl = s.Response.Header.Get("content-length") // HEAD and 304 keep theirs
	}
	stripConnFields(&s.Response.Header, resp.Conn)
	if ph := srv.phases.ResponseFilter; ph != nil {
		if err := ph(s, &s.Response); err != nil {
			return asError(err, Internal, KindFilter, 502, "response filter")
		}
	}
	down := c.writer()
	buf := down.AvailableBuffer()
	buf = http1.AppendStatusLine(buf, s.Response.Status, resp.Reason)
	buf, err := http1.AppendHeader(buf, &s.Response.Header)
	if err != nil {
		return &Error{Side: Internal, Kind: KindFilter, Status: 502, Where: "response head", Err: err}
	}
	// Framing downstream: the length when known and unchanged, else chunked
	// to HTTP/1.1 clients and close-delimited to HTTP/1.0 ones.
	downChunked, downClose := false, false
	switch {
	case headOnly:
		if cl != nil {
			buf = append(append(append(buf, "Content-Length: "...), cl...), "\r\n"...)
		}
	case resp.Framing == http1.LengthBody && srv.phases.ResponseBodyFilter == nil:
		buf = http1.AppendContentLength(buf, resp.ContentLength)
	case c.req.Minor == 1:
		buf = append(buf, "Transfer-Encoding: chunked\r\n"...)
		downChunked = true
	default:
		downClose = true
	}
	if downClose || !c.req.KeepAlive || srv.shuttingDown() {
		buf = append(buf, "Connection: close\r\n"...)
		c.req.KeepAlive = false
	} else if c.req.Minor == 0 {
		buf = append(buf, "Connection: keep-alive\r\n"...)
	}
	buf = append(buf, "\r\n"...)
	s.answered = true
	s.Stats.Status = s.Response.Status
	if _, err := down.Write(buf); err != nil {
		return c.downstreamWriteError(err)
	}

	// The response body.
	up.readIdle = t.UpstreamRead
	if e := c.relayResponseBody(s, up, headOnly, downChunked); e != nil {
		return e
	}
	if err := down.Flush(); err != nil {
		return c.downstreamWriteError(err)
	}
	if be := stopBody(); be != nil && be.Side == Downstream {
		// The client failed mid-body after the response went out: the
		// response stands, but the connection ends.
		c.req.KeepAlive = false
	}
	reusable = resp.KeepAlive && up.rd.Body().Done() && up.rd.Buffered() == 0 &&
		c.rd.Body().Done() && !c.clientGone
	return nil
}

// writeRequestHead buffers the request head for up.
func (c *conn) writeRequestHead(s *Session, up *upConn, hasBody, chunked, upgrade bool) error {
	r := &s.Request
	buf := up.bw.AvailableBuffer()
	path := r.Path
	if len(path) == 0 {
		path = []byte{'/'}
	}
	buf, err := http1.AppendRequestLine(buf, []byte(r.Method), path)
	if err != nil {
		return err
	}
	if host := r.Header.Get("host"); len(host) == 0 {
		r.Header.Del("Host")
		buf = append(append(append(buf, "Host: "...), s.Stats.Peer...), "\r\n"...)
	}
	buf, err = http1.AppendHeader(buf, &r.Header)
	if err != nil {
		return err
	}
	switch {
	case chunked:
		buf = append(buf, "Transfer-Encoding: chunked\r\n"...)
	case hasBody:
		buf = http1.AppendContentLength(buf, r.ContentLength)
	}
	if upgrade {
		buf, err = http1.AppendField(append(buf, "Connection: upgrade\r\n"...), []byte("Upgrade"), c.req.Upgrade)
		if err != nil {
			return err
		}
	}
	buf = append(buf, "\r\n"...)
	_, err = up.bw.Write(buf)
	return err
}

// readResponseHead reads the final response head, relaying interim (1xx)
// responses other than 100 and 101.
func (c *conn) readResponseHead(s *Session, up *upConn, sent time.Duration, hasBody bool) *Error {
	t := &c.srv.opts.Timeouts
	deadline := sent + t.ResponseHeader
	// Wait a short while first; if the upstream is slow, start watching
	// the client so that a client that gives up cancels the request.
	const watchAfter = 20 * time.Millisecond
	watching := false
	defer func() {
		if watching {
			c.stopWatch(up)
		}
	}()
	first := !hasBody
	for {
		// The deadline counts from when the request was sent, so the one
		// set for the last response on this connection often still fits.
		d := t.ResponseHeader
		if first && d > watchAfter {
			d = watchAfter
		}
		up.rdl.ensure(up.nc.SetReadDeadline, sent, d, up.limit)
		if c.bodyFailed.Load() { // checked after the deadline is set: no lost wake-up
			return errBodyFailed
		}
		err := up.rd.ReadResponse(&up.resp, []byte(s.Request.Method))
		if err != nil && c.bodyFailed.Load() {
			return errBodyFailed
		}
		if err != nil && first && isTimeout(err) && mono() < deadline {
			first = false
			watching = c.startWatch(up)
			continue
		}
		if err != nil {
			if watching { // it may have seen the client go
				c.stopWatch(up)
				watching = false
			}
			return c.upstreamReadError(s, up, err)
		}
		st := up.resp.Status
		if st >= 200 || st == 101 {
			return nil
		}
		if st != 100 && c.req.Minor == 1 {
			// 103 Early Hints and others go to the client as they come.
			down := c.writer()
			buf := http1.AppendStatusLine(down.AvailableBuffer(), st, up.resp.Reason)
			buf, _ = http1.AppendHeader(buf, &up.resp.Header)
			buf = append(buf, "\r\n"...)
			down.Write(buf)
			if err := down.Flush(); err != nil {
				return c.downstreamWriteError(err)
			}
		}
	}
}

// errBodyFailed stands for the request body's own error, which the
// exchange takes from the body copier.
var errBodyFailed = &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "request body"}

func (c *conn) upstreamReadError(s *Session, up *upConn, err error) *Error {
	if c.clientGone {
		return &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "client closed while waiting for the upstream"}
	}
	var pe *http1.Error
	switch {
	case errors.As(err, &pe):
		c.srv.counters.UpstreamProtocol.Add(1)
		return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream response head", Err: err}
	case isTimeout(err):
		return &Error{Side: Upstream, Kind: KindTimeout, Status: 504, Where: "upstream response header timeout", Err: err}
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err):
		// A reused connection the origin closed as we sent, with nothing
		// of a response back: the request may go again if that cannot do
		// harm twice (an idempotent method) or it never left (nothing
		// written).
		retry := s.Stats.Reused && (err == io.EOF || isReset(err)) && (idempotent(s.Request.Method) || up.written == 0)
		return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream closed before responding", Err: err, Retry: retry}
	}
	return &Error{Side: Upstream, Kind: KindOther, Status: 502, Where: "upstream read", Err: err}
}

// relayResponseBody streams the response body downstream as it arrives,
// flushing each piece so that streams (SSE, long polls) are not held back.
func (c *conn) relayResponseBody(s *Session, up *upConn, headOnly, chunked bool) *Error {
	body := up.rd.Body()
	down := c.bw
	var w io.Writer = down
	if chunked {
		c.cw.Reset(down)
		w = &c.cw
	}
	filter := c.srv.phases.ResponseBodyFilter
	if !headOnly {
		for {
			data, rerr := body.Next()
			if len(data) > 0 || (rerr == io.EOF && filter != nil) {
				if filter != nil {
					var err error
					if data, err = filter(s, data, rerr == io.EOF); err != nil {
						return asError(err, Internal, KindFilter, 502, "response body filter")
					}
				}
				if len(data) > 0 {
					if _, err := w.Write(data); err != nil {
						return c.downstreamWriteError(err)
					}
					s.Stats.BytesOut += int64(len(data))
				}
				if rerr == nil && !body.Ready() {
					if err := down.Flush(); err != nil {
						return c.downstreamWriteError(err)
					}
				}
			}
			if rerr == io.EOF {
				break
			}
			if rerr != nil {
				return c.upstreamBodyError(rerr)
			}
		}
	}
	if chunked {
		s.Response.Trailer.CopyFrom(&body.Trailer)
		if err := c.cw.Close(&s.Response.Trailer); err != nil {
			return c.downstreamWriteError(err)
		}
	}
	return nil
}

func (c *conn) upstreamBodyError(err error) *Error {
	if c.clientGone {
		return &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "client closed"}
	}
	var pe *http1.Error
	switch {
	case errors.As(err, &pe):
		return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream response body", Err: err}
	case isTimeout(err):
		return &Error{Side: Upstream, Kind: KindTimeout, Status: 504, Where: "upstream read timeout", Err: err}
	}
	return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream response body", Err: err}
}

// sendBody copies the request body upstream and reports on c.bodyErr. If
// the client side fails (it left, stalled, or broke the framing), the wait
// for the response head is woken: the exchange is over.
func (c *conn) sendBody(s *Session, up *upConn, chunked bool) {
	e := c.copyBody(s, up, chunked)
	if e != nil && e.Side == Downstream {
		c.bodyFailed.Store(true)
		up.nc.SetReadDeadline(aLongTimeAgo)
	}
	c.bodyErr <- e
}

func (c *conn) copyBody(s *Session, up *upConn, chunked bool) *Error {
	body := c.rd.Body()
	var w io.Writer = up.bw
	if chunked {
		up.cw.Reset(up.bw)
		w = &up.cw
	}
	filter := c.srv.phases.RequestBodyFilter
	max := c.srv.opts.Limits.MaxRequestBody
	for {
		data, rerr := body.Next()
		if rerr != nil && rerr != io.EOF {
			var pe *http1.Error
			if errors.As(rerr, &pe) {
				return &Error{Side: Downstream, Kind: KindProtocol, Status: pe.Status, Where: "request body", Err: rerr}
			}
			if isTimeout(rerr) {
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
				return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream write", Err: err}
			}
		}
		if rerr == io.EOF {
			break
		}
		if !body.Ready() {
			if err := up.bw.Flush(); err != nil {
				return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream write", Err: err}
			}
		}
	}
	if chunked {
		s.Request.Trailer.CopyFrom(&body.Trailer)
		if err := up.cw.Close(&s.Request.Trailer); err != nil {
			return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream write", Err: err}
		}
	}
	if err := up.bw.Flush(); err != nil {
		return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream write", Err: err}
	}
	return nil
}
