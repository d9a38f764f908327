package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/http1"
)

// conn is one downstream HTTP/1.1 connection. It serves requests one at a
// time: pipelined requests wait in the read buffer (at most one buffer's
// worth is read ahead), and their responses go out in order.
//
// A connection idle for parkAfter gives back everything but this small
// struct: its request state and buffers return to their pools, and it waits
// for the next request on a fresh goroutine with a small stack, holding no
// read buffer (see park). Thousands of idle keep-alive clients then cost a
// few KiB each.
type conn struct {
	srv    *Server
	nc     net.Conn
	open   *atomic.Int64 // the listener's count of open connections
	remote netip.AddrPort
	local  netip.AddrPort
	// trusted: the client may vouch for earlier hops in X-Forwarded-*.
	trusted bool

	waiting   atomic.Bool // in waitParked: Shutdown may end the wait (it only peeks)
	served    int
	busy      bool          // its last wait for a request ended within parkAfter
	idleSince time.Duration // when the connection last became idle (mono)
	idleEnd   time.Duration // when its wait for a request times out (mono)
	readAt    time.Duration // when its request head was read (mono)
	wokeAt    time.Duration // when the parker last woke it (mono; set by the parker)
	ready     readiness     // waits for readability without a buffer
	rdl, wdl  deadline      // the socket's read and write deadlines
	fd        int32         // the socket, for the parker; -1 if unknown
	rawFD     int32         // the socket if plain TCP or Unix, for raw I/O; else -1
	raw       int32         // rawFD while raw I/O is on, else -1 (rawio_linux.go)
	helpers   int           // goroutines using the sockets beside this one's
	hookResp  func(s *Session, status int, body []byte, fields []string) error
	tunnelUp  net.Conn // the upstream of a tunnel in progress; guarded by srv.mu

	// The parker's bookkeeping (park_linux.go): waitState, registered, fired and
	// waitSeq are guarded by its mutex; wake ends a hot wait.
	waitState  uint8
	registered bool // the socket is in the parker's epoll set
	fired      bool // an edge came while it was not waiting
	waitSeq    uint32
	wake       chan uint8

	// The watcher notices a client that goes away while its request waits
	// for a slow upstream (see watch.go). Its fields are written by the
	// watcher and read once it is done.
	watchDone      chan struct{}
	watchBuf       *[watchBufSize]byte // bytes it read ahead; nil when none are kept
	watchR, watchW int                 // watchBuf[watchR:watchW] is not yet parsed
	clientGone     bool                // the watcher saw the client close

	*reqState // nil while parked
}

// reqState is what a connection needs only while it serves requests.
type reqState struct {
	rd   http1.Reader
	bw   *bufio.Writer // nil between requests
	cw   http1.ChunkedWriter
	req  http1.Request
	sess Session
	body bodySender
	// headReq: the client's request is HEAD, so no response body follows
	// (read before filters, which may change Session.Request.Method).
	headReq bool
	scratch header.Header // fields of the answers strait makes itself

	// Read deadlines: before a head starts the idle timeout applies; a
	// second read for the same head arms the head timeout; bodies use a
	// rolling one (readIdle).
	awaitingHead bool
	headPending  bool          // a head has begun; a further read arms the head timeout
	headStart    time.Duration // when a head that took several reads began (mono); else 0
	readIdle     time.Duration
	reqStart     time.Duration // when the current request began (mono)

	continued bool // 100 Continue was sent for this request
}

var reqStatePool = sync.Pool{New: func() any { return &reqState{body: bodySender{result: make(chan *Error, 1)}} }}

// parkAfter is how long a connection waits for its next request holding
// its request state, goroutine and read buffer before it parks. Busy
// keep-alive connections send their next request sooner and never pay for
// parking (a goroutine start); idle ones shed about
// 10 KiB each almost at once, so a burst of connections that go idle
// together never holds much. Measured with 10,000 connections making one
// request each: 20 ms gives 2.7-3.1 KiB RSS per idle connection, 100 ms
// 3.9-4.3 KiB (more were still unparked, with stacks and buffers, at the
// peak the runtime keeps).
const parkAfter = 20 * time.Millisecond

// What a wait on the parker ends with (sent on conn.wake).
const (
	wokeReadable    uint8 = iota // read the next request
	wokePark                     // idle for parkAfter: give back the state and park
	wokeClose                    // the server is closing
	waitUnavailable              // not waited: read with a deadline instead
)

// aLongTimeAgo is a deadline in the past, to wake a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

func (c *conn) start() {
	c.hookResp = c.respondFromHook
	c.ready.init(c.nc)
	c.fd = connFD(c.ready.rc)
	c.rawFD = plainFD(c.nc, c.fd)
	c.raw = c.rawFD
	c.idleSince = mono()
	c.serve(false)
}

// serve reads and proxies requests until the connection ends or parks.
// readable says the connection is known to have something to read (it
// resumes from parking), so it need not wait first.
func (c *conn) serve(readable bool) {
	srv := c.srv
	var readableAt time.Duration // when the parker saw it readable; 0: unknown
	for {
		if c.reqState == nil {
			c.reqState = reqStatePool.Get().(*reqState)
			c.rd.Reset(c, srv.opts.Limits.Head)
		}
		if srv.shuttingDown() && !readable && !c.hasRequestBytes() {
			// A request that has begun to arrive is served (its response
			// closes the connection); an idle connection ends now.
			break
		}
		c.readIdle = 0
		// Bytes of the next head may have come with the last request (or
		// the watcher read them): that head has begun, and the head
		// timeout bounds it.
		begun := c.rd.Buffered() > 0 || c.watchR < c.watchW
		c.awaitingHead = !begun
		c.headStart = 0
		// A connection that has sent nothing yet gets the head timeout,
		// as nginx's client_header_timeout; one between requests, the
		// keep-alive idle timeout.
		c.idleEnd = c.idleSince + srv.opts.Timeouts.Idle
		if c.served == 0 {
			c.idleEnd = c.idleSince + srv.opts.Timeouts.Header
		}
		if !readable && !begun && c.served > 0 {
			// Wait for the next request on the parker, which wakes
			// connections in the order their requests came. A connection
			// whose last wait was short keeps its buffers; others give
			// them back first, so that many connections going idle at
			// once do not hold them until they park.
			if !c.busy {
				c.release()
			}
			switch srv.getParker().wait(c) {
			case wokeReadable:
				readable, c.busy = true, true
				readableAt = c.wokeAt
			case wokePark:
				c.busy = false
				c.dropState()
				if srv.parker.Load().park(c) {
					return
				}
				readable = true // it came while parking (or the parker closed)
				continue
			case wokeClose:
				if !c.readable() {
					c.close()
					return
				}
				readable = true // a request came as the server began to shut down
			}
		}
		if readable || begun {
			// The head is there, or has begun: the timeout is the head's
			// (a quarter early, at worst), and is seldom moved.
			if readableAt == 0 {
				readableAt = mono()
			}
			if begun {
				c.headStart = readableAt
			}
			c.rdl.ensure(c.nc.SetReadDeadline, readableAt, srv.opts.Timeouts.Header, c.idleEnd)
			readable, readableAt = false, 0
		} else {
			// Park after parkAfter of idleness (three quarters of it, at
			// least). A shutdown meanwhile is noticed when it ends.
			c.rdl.ensure(c.nc.SetReadDeadline, mono(), parkAfter, c.idleEnd)
		}
		err := c.rd.ReadRequest(&c.req)
		c.headPending = false
		if err != nil {
			if c.awaitingHead && c.rd.Buffered() == 0 && errors.Is(err, os.ErrDeadlineExceeded) &&
				mono() < c.idleEnd && !srv.shuttingDown() {
				c.park()
				return
			}
			c.readFailed(err)
			break
		}
		c.served++
		if !c.handle() {
			break
		}
		c.rd.Trim()
	}
	c.close()
}

// hasRequestBytes reports whether bytes of a request have arrived: in the
// read buffer, read ahead by the watcher, or waiting in the socket.
func (c *conn) hasRequestBytes() bool {
	return c.rd.Buffered() > 0 || c.watchR < c.watchW || c.readable()
}

// readable reports whether the socket has something to read (bytes, end of
// file or an error), without waiting. It is a system call: for the rare
// moments, such as shutdown, when an idle connection must be told from one
// whose request is arriving.
func (c *conn) readable() bool {
	return c.fd >= 0 && peek(uintptr(c.fd)) != syscall.EAGAIN
}

// park gives back the request state and hands the connection to the
// server's parker, which holds it without a goroutine (Linux). Failing
// that, it waits for the next request on a new goroutine, whose stack
// starts small: the one that served requests grew deep and would keep it.
func (c *conn) park() {
	c.dropState()
	if p := c.srv.getParker(); p != nil && p.park(c) {
		return
	}
	go c.waitParked()
}

// dropState gives back the request state and its buffers.
func (c *conn) dropState() {
	c.release()
	c.rd.Reset(nil, http1.Limits{})
	reqStatePool.Put(c.reqState)
	c.reqState = nil
}

// waitParked waits for the next request without the parker. Shutdown ends
// the wait by moving its deadline into the past: it only waits for
// readability, so no request bytes are lost by it.
func (c *conn) waitParked() {
	c.rdl.set(c.nc.SetReadDeadline, wallOf(c.idleEnd))
	c.waiting.Store(true)
	var err error
	if !c.srv.shuttingDown() {
		err = c.ready.wait()
	}
	c.waiting.Store(false)
	if (err != nil || c.srv.shuttingDown()) && !c.readable() {
		c.close() // idle timeout, or shutdown, with nothing to read
		return
	}
	c.serve(true)
}

// readFailed answers a request head that could not be read, if there is
// anyone to answer, and logs the answer.
func (c *conn) readFailed(err error) {
	srv := c.srv
	var e *Error
	var pe *http1.Error
	switch {
	case errors.As(err, &pe):
		srv.counters.rejected(pe.Status)
		e = &Error{Side: Downstream, Kind: KindProtocol, Status: pe.Status, Where: "request head", Err: err}
	case errors.Is(err, os.ErrDeadlineExceeded) && !c.awaitingHead:
		// A head started but did not finish in time (RFC 9110 §15.5.9).
		srv.counters.HeaderTimeouts.Add(1)
		e = &Error{Side: Downstream, Kind: KindTimeout, Status: 408, Where: "request head timeout", Err: err}
	default:
		return // io.EOF, an idle timeout or a reset: the client is gone or done
	}
	// Nothing of the request may be trusted: it may refer to a buffer the
	// connection no longer holds, or to an earlier request.
	c.req = http1.Request{Header: c.req.Header, Minor: 1}
	c.req.Header.Reset()
	c.startSession() // an empty request: no method, so not HEAD either
	detail := ""
	if pe != nil {
		detail = pe.Reason
	}
	c.writeError(e.Status, detail)
	c.endRequest(&c.sess, e)
}

func (c *conn) release() {
	if c.bw != nil && c.bw.Buffered() == 0 {
		c.bw.Reset(nil)
		bufWriterPool.Put(c.bw)
		c.bw = nil
	}
	c.rd.Release()
}

func (c *conn) close() {
	c.nc.Close()
	if c.registered {
		c.srv.parker.Load().forget(c)
	}
	c.watchR = c.watchW
	c.dropWatchBuf()
	if c.reqState != nil {
		if c.bw != nil {
			c.bw.Reset(nil)
			bufWriterPool.Put(c.bw)
			c.bw = nil
		}
		c.rd.Release()
		c.rd.Reset(nil, http1.Limits{})
		reqStatePool.Put(c.reqState)
		c.reqState = nil
	}
	c.srv.untrack(c)
}

var bufWriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

func (c *conn) writer() *bufio.Writer {
	if c.bw == nil {
		c.bw = bufWriterPool.Get().(*bufio.Writer)
		c.bw.Reset(c)
	}
	return c.bw
}

// Read is the downstream reader under the codec: it hands on bytes the
// watcher read ahead, and keeps the read deadline.
func (c *conn) Read(p []byte) (int, error) {
	if c.watchR < c.watchW {
		n := copy(p, c.watchBuf[c.watchR:c.watchW])
		c.watchR += n
		c.dropWatchBuf()
		c.onFirstByte()
		return n, nil
	}
	if c.headPending {
		// The head did not come in one read: from now on the head timeout
		// bounds it. (Most heads arrive whole, and never pay for this.)
		c.headPending = false
		c.headStart = mono()
		c.rdl.set(c.nc.SetReadDeadline, wallOf(c.headStart+c.srv.opts.Timeouts.Header))
	}
	// A new connection's first request seldom follows its handshake at
	// once: its first read would only fail, then be made again.
	if c.served > 0 || !c.awaitingHead {
		if n := rawRead(c.raw, p); n > 0 {
			c.onFirstByte()
			return n, nil
		}
	}
	if c.readIdle > 0 {
		c.rdl.ensure(c.nc.SetReadDeadline, mono(), c.readIdle, 0)
	}
	if c.rdl.interrupted() { // the body sender is being stopped
		return 0, errInterrupted
	}
	n, err := c.nc.Read(p)
	if n > 0 {
		c.onFirstByte()
	}
	return n, err
}

func (c *conn) onFirstByte() {
	if c.awaitingHead {
		c.awaitingHead, c.headPending = false, true
	}
}

// Write is the downstream writer under the buffered writer: it keeps a
// rolling write deadline, so a client that stops reading is cut off.
func (c *conn) Write(p []byte) (int, error) {
	n := rawWrite(c.raw, p)
	if n == len(p) {
		return n, nil // no wait, so no deadline needed
	}
	c.wdl.ensure(c.nc.SetWriteDeadline, mono(), c.srv.opts.Timeouts.Write, 0)
	m, err := c.nc.Write(p[n:])
	return n + m, err
}

// handle proxies one request and reports whether the connection may carry
// another.
func (c *conn) handle() bool {
	srv := c.srv
	s := &c.sess
	c.startSession()
	srv.counters.Requests.Add(1)
	if max := srv.opts.Limits.MaxRequestsPerConn; max > 0 && c.served >= max || srv.shuttingDown() {
		c.req.KeepAlive = false // this response says Connection: close
	}

	e := c.run(s)
	keep := c.finish(s, e)
	c.endRequest(s, e)
	return keep
}

// endRequest logs a request strait answered, by proxying it or itself, and
// ends its context.
func (c *conn) endRequest(s *Session, e *Error) {
	c.idleSince = mono() // idle from now, if it goes on
	s.Stats.Total = c.idleSince - c.reqStart
	c.srv.logRequest(s, e)
	s.end(context.Canceled)
	c.endSession()
}

// run takes the request through the phases.
func (c *conn) run(s *Session) *Error {
	srv := c.srv
	ph := &srv.phases
	if string(c.req.Method) == "CONNECT" {
		return &Error{Side: Downstream, Kind: KindRequestRejected, Status: 405, Where: "CONNECT is not served"}
	}
	if max := srv.opts.Limits.MaxRequestBody; max > 0 && c.req.ContentLength > max {
		srv.counters.BodyTooLarge.Add(1)
		return &Error{Side: Downstream, Kind: KindLimit, Status: 413, Where: "request body over the limit"}
	}
	if ph.NewCtx != nil {
		s.Ctx = ph.NewCtx()
	}
	if ph.RequestFilter != nil {
		answered, err := ph.RequestFilter(s)
		if err != nil {
			return asError(err, Internal, KindFilter, 500, "request filter")
		}
		if answered || s.answered {
			return nil
		}
	}
	c.prepareUpstreamRequest(s)
	return c.proxy(s)
}

// finish answers a failed request if nothing was sent yet, and decides
// whether the connection goes on.
func (c *conn) finish(s *Session, e *Error) bool {
	keep := c.req.KeepAlive && !c.srv.shuttingDown()
	if e != nil {
		c.srv.counters.failed(e)
		if e.Kind == KindDownstreamGone || c.clientGone {
			return false
		}
		if !s.answered {
			status := e.Status
			if c.srv.phases.FailToProxy != nil {
				status = c.srv.phases.FailToProxy(s, e)
			}
			if status < 200 || status > 999 {
				status = 502
			}
			// The request body may be unread: the connection cannot go on
			// unless there was none. Nor after a CONNECT, whose client may
			// already be sending tunnel bytes.
			c.req.KeepAlive = keep && c.rd.Body().Done() && status < 500 && string(c.req.Method) != "CONNECT"
			c.writeError(status, "")
			return c.req.KeepAlive
		}
		// The response was cut short: what of it was written goes out,
		// and the connection's end tells the client it is incomplete.
		c.flush()
		return false
	}
	if !c.rd.Body().Done() {
		// Answered without reading the body (a hook, or an early upstream
		// response): discard a small rest, else close. A client that
		// expects 100-continue and did not get it may never send the body.
		keep = keep && (!c.req.ExpectContinue || c.continued) && c.discardBody()
	}
	if err := c.flush(); err != nil {
		return false
	}
	return keep && s.Stats.Status != 0
}

// discardBody reads and drops what is left of a request body, up to a
// bound, so the connection can be reused.
func (c *conn) discardBody() bool {
	const maxDiscard = 256 << 10
	n, err := io.CopyN(io.Discard, c.rd.Body(), maxDiscard)
	return n < maxDiscard && (err == nil || err == io.EOF) && c.rd.Body().Done()
}

func (c *conn) flush() error {
	if c.bw == nil || c.bw.Buffered() == 0 {
		return nil
	}
	return c.bw.Flush()
}

func (c *conn) startSession() {
	s := &c.sess
	t := mono()
	c.readAt = t
	c.reqStart = c.headStart
	if c.reqStart == 0 { // the head came in one read (or was already buffered)
		c.reqStart = t
	}
	s.Stats = Stats{Start: wallOf(c.reqStart), RequestRead: t - c.reqStart}
	s.Ctx = nil
	s.answered = false
	s.ClientAddr, s.LocalAddr = c.remote, c.local
	s.begin()
	s.respond = c.hookResp
	c.clientGone = false

	r := &s.Request
	r.Method = internMethod(c.req.Method)
	c.headReq = r.Method == "HEAD"
	r.Scheme = "http"
	r.Authority = c.req.Host
	r.Path = c.req.Target
	if c.req.Form == http1.AbsoluteForm || c.req.Form == http1.AuthorityForm {
		r.Authority = c.req.Authority
		r.Path = pathOfAbsolute(c.req.Target)
	}
	// The session's header takes over the parsed fields (no copy); they are
	// handed back in endSession so their memory is reused.
	r.Header, c.req.Header = c.req.Header, r.Header
	r.Trailer.Reset()
	switch c.req.Framing {
	case http1.LengthBody:
		r.ContentLength = c.req.ContentLength
	case http1.ChunkedBody:
		r.ContentLength = -1
	default:
		r.ContentLength = 0
	}
	s.Response.Status = 0
	s.Response.Header.Reset()
	s.Response.Trailer.Reset()
	// The first well-formed X-Request-Id the client sent names the request;
	// else strait makes one. Every answer, strait's own included, is
	// logged with it.
	if id := r.Header.Get("x-request-id"); validRequestID(id) {
		s.RequestID = id
	} else {
		s.RequestID = c.srv.ids.next(s.reqIDBuf[:0])
	}
	c.readIdle = c.srv.opts.Timeouts.Body
	c.continued = false
}

func (c *conn) endSession() {
	s := &c.sess
	r := &s.Request
	r.Header, c.req.Header = c.req.Header, r.Header
	r.Header.Reset()
	r.Authority, r.Path = nil, nil
	s.Ctx = nil
}

// pathOfAbsolute returns the path and query of an absolute-form target.
func pathOfAbsolute(t []byte) []byte {
	// After "scheme://authority".
	i := 0
	for i < len(t) && t[i] != ':' {
		i++
	}
	rest := t[min(i+3, len(t)):]
	for j, ch := range rest {
		if ch == '/' || ch == '?' {
			if ch == '?' {
				return append([]byte{'/'}, rest[j:]...)
			}
			return rest[j:]
		}
	}
	return []byte{'/'}
}

func internMethod(m []byte) string {
	switch string(m) {
	case "GET":
		return "GET"
	case "HEAD":
		return "HEAD"
	case "POST":
		return "POST"
	case "PUT":
		return "PUT"
	case "DELETE":
		return "DELETE"
	case "OPTIONS":
		return "OPTIONS"
	case "PATCH":
		return "PATCH"
	case "CONNECT":
		return "CONNECT"
	case "TRACE":
		return "TRACE"
	}
	return string(m)
}
