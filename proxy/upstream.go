package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"time"

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
	if u.rdl.interrupted() { // the watcher or the body sender ended the exchange
		return 0, errInterrupted
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
	if u.wdl.interrupted() { // the body sender is being stopped
		return n, errInterrupted
	}
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
// owner (an exchange, or the pool) calls it, once.
func (u *upConn) Close() error {
	u.rd.Release()
	releaseSocket()
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
		up, e := srv.connect(s, peer, now)
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

// connect returns a pooled connection to peer, or dials a new one. now is
// a recent clock reading, for the pool's idle ages.
//
// A pooled connection is peeked at first (one system call, about 0.5 us):
// one the peer has closed, or that holds bytes it sent after its last
// response, is not used. Those bytes would otherwise be read as the next
// request's response: one client's answer given to another (nginx and
// Envoy close such connections as their event loops see the bytes). Only
// bytes that arrive after the peek cannot be told from the response. A
// request the peer closes on unanswered is sent again where that is safe
// (see exchangeFailed).
func (srv *Server) connect(s *Session, peer *Peer, now time.Duration) (*upConn, *Error) {
	key := peer.Addr
	for {
		u, ok := srv.pool.Get(key, now)
		if !ok {
			break
		}
		if u.alive.check(u.nc) {
			s.Stats.Reused = true
			return u, nil
		}
		srv.counters.UpstreamStale.Add(1)
		u.Close()
	}
	s.Stats.Reused = false
	if !takeSocket() {
		// Out of sockets: idle upstream connections are the ones to
		// give up.
		srv.pool.CloseIdle()
		if !takeSocket() {
			srv.counters.ConnsOverFDLimit.Add(1)
			return nil, &Error{Side: Internal, Kind: KindLimit, Status: 503, Where: "upstream connect: out of file descriptors"}
		}
	}
	start := mono()
	ctx, cancel := context.WithTimeout(context.Background(), srv.opts.Timeouts.Connect)
	nc, err := srv.dialer.DialContext(ctx, "tcp", peer.Addr)
	if err != nil && isFDExhausted(err) && srv.pool.Len() > 0 {
		// Descriptors the sockets' count does not see ran out: idle
		// upstream connections go here too.
		srv.pool.CloseIdle()
		nc, err = srv.dialer.DialContext(ctx, "tcp", peer.Addr)
	}
	cancel()
	s.Stats.UpstreamDial = mono() - start
	if err != nil {
		releaseSocket()
		e := &Error{Side: Upstream, Kind: KindConnect, Status: 502, Where: "upstream connect", Err: err}
		switch {
		case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
			e.Kind, e.Status, e.Where = KindTimeout, 504, "upstream connect timeout"
		case isFDExhausted(err):
			srv.counters.ConnsOverFDLimit.Add(1)
			e.Side, e.Kind, e.Status, e.Where = Internal, KindLimit, 503, "upstream connect: out of file descriptors"
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
// is back in the pool or closed, and nothing else runs on the connection's
// sockets.
func (c *conn) exchange(s *Session, up *upConn) *Error {
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
	c.body.err = nil

	upgrade := c.upgradeOffer()
	if ph := srv.phases.UpstreamRequestFilter; ph != nil {
		if err := ph(s, &s.Request); err != nil {
			return asError(err, Internal, KindFilter, 500, "upstream request filter")
		}
		// Framing and connection fields are strait's to write.
		stripHopByHop(&s.Request.Header)
	}
	hasBody := c.req.Framing != http1.NoBody
	chunked := hasBody && (c.req.Framing == http1.ChunkedBody || srv.phases.RequestBodyFilter != nil)
	if err := c.writeRequestHead(s, up, hasBody, chunked, upgrade); err != nil {
		// Only a field or path a filter set can be refused here.
		return &Error{Side: Internal, Kind: KindFilter, Status: 500, Where: "upstream request head", Err: err}
	}
	var sent time.Duration // when the head went (mono)
	if hasBody {
		if c.req.ExpectContinue && !c.continued {
			// strait answers 100-continue itself, once the upstream is
			// reached (nginx does the same).
			if _, err := c.writeResponseHead(&responseHead{status: 100}); err == nil {
				c.bw.Flush()
			}
			c.continued = true
		}
		sent = mono()
		c.startBody(s, up, chunked)
		defer c.abortBody(up) // on every early return; a no-op after the last
	} else {
		if err := up.bw.Flush(); err != nil {
			e := &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream write", Err: err}
			e.Retry = s.Stats.Reused && (idempotent(s.Request.Method) || up.written == 0)
			return e
		}
		sent = up.lastWrite
	}

	// The response head. It is seldom there yet: let other connections
	// run first, so that it usually is by the time this one reads. That
	// saves a read that would fail (EAGAIN) and a park on the netpoller:
	// one system call in five per request under load. (Yielding before
	// the client's next request too starved the netpoller: p99 10 ms.)
	runtime.Gosched()
	if e := c.readResponseHead(s, up, sent, hasBody); e != nil {
		return c.exchangeFailed(s, up, e)
	}
	resp := &up.resp
	s.Stats.UpstreamHeader = mono() - sent

	if resp.Status == 101 {
		proto, e := c.switchedTo(resp, upgrade)
		if e != nil {
			return e
		}
		if be := c.finishBody(up); be != nil {
			return be
		}
		return c.tunnel(s, up, proto)
	}

	// The response head downstream.
	s.Response.Status = resp.Status
	s.Response.Header, resp.Header = resp.Header, s.Response.Header
	defer func() { s.Response.Header, resp.Header = resp.Header, s.Response.Header }()
	// What a HEAD or 304 response says of the representation's length,
	// before the framing fields go with the hop-by-hop ones.
	represented := int64(-1)
	if resp.Framing == http1.LengthBody {
		represented = resp.ContentLength
	} else if resp.Framing == http1.NoBody && (c.headReq || resp.Status == 304) {
		if n, err := strconv.ParseInt(string(s.Response.Header.Get("content-length")), 10, 64); err == nil && n >= 0 {
			represented = n
		}
	}
	stripConnFields(&s.Response.Header, resp.Conn)
	if ph := srv.phases.ResponseFilter; ph != nil {
		if err := ph(s, &s.Response); err != nil {
			return asError(err, Internal, KindFilter, 502, "response filter")
		}
		if st := s.Response.Status; st < 200 || st > 999 {
			return &Error{Side: Internal, Kind: KindFilter, Status: 502, Where: "response filter set status " + strconv.Itoa(st)}
		}
		stripHopByHop(&s.Response.Header)
	}
	// Framing downstream follows the final status and the body strait
	// will send, whatever filters did (writeResponseHead).
	originBody := resp.Framing != http1.NoBody
	length := int64(-1)
	switch st := s.Response.Status; {
	case c.headReq || st == 304:
		length = represented
	case !originBody:
		length = 0
	case resp.Framing == http1.LengthBody && srv.phases.ResponseBodyFilter == nil:
		length = resp.ContentLength
	}
	reason := resp.Reason
	if s.Response.Status != resp.Status {
		reason = nil // the origin's no longer fits
	}
	framing, err := c.writeResponseHead(&responseHead{status: s.Response.Status, reason: reason, header: &s.Response.Header, length: length})
	if err != nil {
		return &Error{Side: Internal, Kind: KindFilter, Status: 502, Where: "response head", Err: err}
	}
	s.answered = true
	s.Stats.Status = s.Response.Status

	// The response body. One the client is not to get (HEAD, 204, 304) is
	// left unread, and the connection with it.
	up.readIdle = t.UpstreamRead
	if framing != noBody && originBody {
		if e := c.relayResponseBody(s, up, framing); e != nil {
			return c.exchangeFailed(s, up, e)
		}
	}
	if err := c.bw.Flush(); err != nil {
		return c.exchangeFailed(s, up, c.downstreamWriteError(err))
	}

	// The response is complete, so a request body still going is no
	// longer wanted (nginx stops sending it too). The connection is
	// reused only if the whole request went out and the whole response
	// came in.
	be := c.abortBody(up)
	switch {
	case be == nil, be == errBodyAborted, be.Side == Upstream:
		// Done; or the origin answered before it had the whole body.
	case be.Side == Downstream:
		// The client broke its body after the response went out: the
		// response stands, the connection ends.
		c.req.KeepAlive = false
	default:
		return be // a body filter failed: the request failed
	}
	reusable = be == nil && resp.KeepAlive && up.rd.Body().Done() && up.rd.Buffered() == 0 &&
		!up.rdl.interrupted()
	return nil
}

// exchangeFailed stops the body sender and returns the error the exchange
// ends with: when another goroutine interrupted it, the cause that one
// found. A request the origin closed on without answering is marked for a
// retry where sending it again is safe.
func (c *conn) exchangeFailed(s *Session, up *upConn, e *Error) *Error {
	be := c.abortBody(up)
	switch {
	case c.clientGone:
		return &Error{Side: Downstream, Kind: KindDownstreamGone, Where: "client closed while waiting for the upstream"}
	case be != nil && be != errBodyAborted && be.Side != Upstream:
		return be // the client's body broke, or a body filter failed
	}
	if e.Side == Upstream && e.Kind == KindClosed && !s.answered && (e.Err == io.EOF || isReset(e.Err)) {
		// A reused connection the origin closed as we sent, with nothing
		// of a response back: the request may go again if that cannot do
		// harm twice (an idempotent method) or it never left (nothing
		// written).
		e.Retry = s.Stats.Reused && (idempotent(s.Request.Method) || up.written == 0)
	}
	return e
}

// writeRequestHead buffers the request head for up. upgrade is the Upgrade
// field to send, nil for none.
func (c *conn) writeRequestHead(s *Session, up *upConn, hasBody, chunked bool, upgrade []byte) error {
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
	if upgrade != nil {
		buf, err = http1.AppendField(append(buf, "Connection: upgrade\r\n"...), []byte("Upgrade"), upgrade)
		if err != nil {
			return err
		}
	}
	buf = append(buf, "\r\n"...)
	_, err = up.bw.Write(buf)
	return err
}

// maxInterim bounds the interim (1xx) responses read before a final one:
// real origins send one or two (a 100, a 103). net/http's client stops at
// 5; past this many, the origin is cut off with 502.
const maxInterim = 10

// readResponseHead reads the final response head, relaying interim (1xx)
// responses other than 100 and 101. Interim responses count against the
// response-head timeout, and at most maxInterim are read.
func (c *conn) readResponseHead(s *Session, up *upConn, sent time.Duration, hasBody bool) *Error {
	t := &c.srv.opts.Timeouts
	deadline := sent + t.ResponseHeader
	// Wait a short while first; if the upstream is slow, start watching
	// the client so that a client that gives up cancels the request.
	waitShort := true
	watching := false
	defer func() {
		if watching {
			c.stopWatch(up)
		}
	}()
	for interim := 0; ; {
		// The deadline counts from when the request was sent, so the one
		// set for the last response on this connection often still fits.
		d := t.ResponseHeader
		if waitShort && d > watchAfter {
			d = watchAfter
		}
		up.rdl.ensure(up.nc.SetReadDeadline, sent, d, up.limit)
		err := up.rd.ReadResponse(&up.resp, []byte(s.Request.Method))
		if err != nil && up.rdl.interrupted() {
			// The watcher or the body sender ended the exchange: the
			// cause is theirs (exchangeFailed).
			return &Error{Side: Internal, Kind: KindOther, Status: 502, Where: "upstream wait interrupted", Err: err}
		}
		if err != nil && waitShort && isTimeout(err) && mono() < deadline {
			waitShort = false
			// The client is watched once its body, if any, is sent (while
			// it sends one, it is there): by the body sender, if it is
			// still sending; else here.
			switch {
			case !c.canWatch():
				// The watcher's buffer is full: the client sent plenty;
				// it is there.
			case hasBody && c.body.state.CompareAndSwap(sending, watchWanted):
				// The body sender watches once it has sent the body.
			case hasBody:
				// The body sender has finished.
				if be := c.waitBody(up); be != nil && be.Side != Upstream {
					return be
				}
				watching = c.startWatch(up)
			default:
				watching = c.startWatch(up)
			}
			continue
		}
		if err != nil {
			return c.upstreamReadError(err)
		}
		st := up.resp.Status
		if st >= 200 || st == 101 {
			return nil
		}
		// An origin that sends interim responses without end is cut off:
		// by number, and by the head timeout, which the reads alone would
		// not meet while bytes keep coming (raw reads see no deadline).
		if interim++; interim > maxInterim {
			c.srv.counters.UpstreamProtocol.Add(1)
			return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream sent too many interim responses"}
		}
		if mono() >= deadline {
			return &Error{Side: Upstream, Kind: KindTimeout, Status: 504, Where: "upstream response header timeout"}
		}
		if st != 100 && c.req.Minor == 1 {
			// 103 Early Hints and others go to the client as they come.
			stripConnFields(&up.resp.Header, up.resp.Conn)
			if _, err := c.writeResponseHead(&responseHead{status: st, reason: up.resp.Reason, header: &up.resp.Header}); err != nil {
				return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "interim response head", Err: err}
			}
			if err := c.bw.Flush(); err != nil {
				return c.downstreamWriteError(err)
			}
		}
	}
}

func (c *conn) upstreamReadError(err error) *Error {
	var pe *http1.Error
	switch {
	case errors.As(err, &pe):
		c.srv.counters.UpstreamProtocol.Add(1)
		return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream response head", Err: err}
	case isTimeout(err):
		return &Error{Side: Upstream, Kind: KindTimeout, Status: 504, Where: "upstream response header timeout", Err: err}
	case err == io.EOF || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err):
		return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream closed before responding", Err: err}
	}
	return &Error{Side: Upstream, Kind: KindOther, Status: 502, Where: "upstream read", Err: err}
}

// relayResponseBody streams the response body downstream as it arrives,
// flushing each piece so that streams (SSE, long polls) are not held back.
func (c *conn) relayResponseBody(s *Session, up *upConn, framing bodyFraming) *Error {
	body := up.rd.Body()
	down := c.bw
	var w io.Writer = down
	if framing == chunkedBody {
		c.cw.Reset(down)
		w = &c.cw
	}
	filter := c.srv.phases.ResponseBodyFilter
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
			return upstreamBodyError(rerr)
		}
	}
	if framing == chunkedBody {
		copyTrailers(&s.Response.Trailer, &body.Trailer)
		if err := c.cw.Close(&s.Response.Trailer); err != nil {
			return c.downstreamWriteError(err)
		}
	}
	return nil
}

func upstreamBodyError(err error) *Error {
	var pe *http1.Error
	switch {
	case errors.As(err, &pe):
		return &Error{Side: Upstream, Kind: KindProtocol, Status: 502, Where: "upstream response body", Err: err}
	case isTimeout(err):
		return &Error{Side: Upstream, Kind: KindTimeout, Status: 504, Where: "upstream read timeout", Err: err}
	}
	return &Error{Side: Upstream, Kind: KindClosed, Status: 502, Where: "upstream response body", Err: err}
}
