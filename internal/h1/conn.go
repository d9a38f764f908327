package h1

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/internal/h2"
	"github.com/straitproxy/strait/internal/http1"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/park"
	"github.com/straitproxy/strait/internal/sockio"
	"github.com/straitproxy/strait/internal/stream"
)

// conn is one HTTP/1.1 connection from a client. It serves requests one
// at a time: pipelined requests wait in the read buffer (at most a
// buffer's worth is read ahead, and what the watcher read while a
// response was awaited), and their responses go out in order.
//
// A connection idle for park.After gives back everything but this struct:
// its request state and buffers return to their pools, and the parker
// holds it without a goroutine until its next request (see serve).
// Thousands of idle keep-alive clients then cost a few KiB each.
type conn struct {
	srv      *Server
	listener *atomic.Int64 // the listener's count of open connections
	sock     sockio.Socket
	remote   netip.AddrPort
	local    netip.AddrPort

	// Waiting for the next request.
	wait    park.Waiter          // on the parker (IdleSince, IdleEnd)
	ready   sockio.Readiness     // without the parker, on a goroutine of its own
	waiting atomic.Bool          // in waitParked: Drain may end the wait (it only peeks)
	busy    bool                 // its last wait for a request ended within park.After
	served  int                  // requests read
	opened  time.Duration        // when it was accepted (mono)
	tls     *tls.ConnectionState // after the handshake; nil for plain text

	watch    watcher  // reads the client while a response is awaited (watch.go)
	tunnelUp net.Conn // the upstream of a tunnel in progress; guarded by srv.mu

	*reqState // nil while parked
}

// reqState is what a connection needs only while it serves requests.
type reqState struct {
	rd   http1.Reader
	req  http1.Request
	head stream.RequestHead // req, as the forwarding path sees it

	// The response.
	bw      *bufio.Writer // given back while the connection waits idle (release)
	cw      http1.ChunkedWriter
	framing bodyFraming // of the response body being written
	// headReq: the request is HEAD, so no response body follows (read
	// before filters, which may change the method the upstream sees).
	headReq   bool
	answered  bool // a final (or 101) response head was written
	continued bool // 100 Continue was sent

	// Read deadlines: before a head starts the idle timeout applies; a
	// second read for the same head arms the head timeout; bodies use a
	// rolling one (readIdle).
	awaitingHead bool
	headPending  bool          // a head has begun; a further read arms the head timeout
	headStart    time.Duration // when a head that took several reads began (mono); else 0
	readIdle     time.Duration
}

var reqStatePool = sync.Pool{New: func() any { return new(reqState) }}

// serve reads and serves requests until the connection ends or parks.
// readable says the connection is known to have something to read (it
// resumes from parking), so it need not wait first.
func (c *conn) serve(readable bool) {
	srv := c.srv
	var readableAt time.Duration // when the parker saw it readable; 0: unknown
	for {
		if c.reqState == nil {
			c.reqState = reqStatePool.Get().(*reqState)
			c.rd.Reset(c, srv.Head)
		}
		if srv.closingIdle() && !readable && !c.hasRequestBytes() {
			// A request that has begun to arrive is served (its response
			// closes the connection); an idle connection ends now. (Until
			// the shutdown's drain is over, it waits for one more.)
			break
		}
		c.readIdle = 0
		// Bytes of the next head may have come with the last request (or
		// the watcher read them): that head has begun, and the head
		// timeout bounds it.
		begun := c.rd.Buffered() > 0 || c.watch.holds() || !readable && c.tlsHolds()
		c.awaitingHead = !begun
		c.headStart = 0
		// A connection that has sent nothing yet gets the head timeout,
		// as nginx's client_header_timeout; one between requests, the
		// keep-alive idle timeout.
		c.wait.IdleEnd = c.wait.IdleSince + srv.Timeouts.Idle
		if c.served == 0 {
			c.wait.IdleEnd = c.wait.IdleSince + srv.Timeouts.Header
		}
		if !readable && !begun && c.served > 0 && c.sock.FD >= 0 {
			// Wait for the next request on the parker, which wakes
			// connections in the order their requests came. A connection
			// whose last wait was short keeps its buffers; others give
			// them back first, so that many connections going idle at
			// once do not hold them until they park.
			if !c.busy {
				c.release()
			}
			switch srv.Parker().Wait(&c.wait) {
			case park.Readable:
				readable, c.busy = true, true
				readableAt = c.wait.WokeAt
			case park.Idle:
				c.busy = false
				c.dropState()
				if srv.parker.Load().Park(&c.wait) {
					return
				}
				readable = true // it came while parking (or the parker closed)
				continue
			case park.Closing:
				if !sockio.Readable(c.sock.FD) {
					c.Close()
					return
				}
				readable = true // a request came as the server began to shut down
			}
		}
		if readable || begun {
			// The head is there, or has begun: the timeout is the head's
			// (a quarter early, at worst), and is seldom moved.
			if readableAt == 0 {
				readableAt = mono.Now()
			}
			if begun {
				c.headStart = readableAt
			}
			c.sock.EnsureReadDeadline(readableAt, srv.Timeouts.Header, c.wait.IdleEnd)
			readable, readableAt = false, 0
		} else if c.sock.FD < 0 {
			// A connection with no descriptor cannot park: it waits in its
			// read for the whole idle time (before its first request, the
			// head timeout), which Drain may end.
			if srv.closingIdle() {
				break
			}
			now := mono.Now()
			c.sock.EnsureReadDeadline(now, c.wait.IdleEnd-now, c.wait.IdleEnd)
			c.waiting.Store(true)
		} else {
			// Park after park.After of idleness (three quarters of it, at
			// least). A shutdown meanwhile is noticed when it ends.
			c.sock.EnsureReadDeadline(mono.Now(), park.After, c.wait.IdleEnd)
		}
		err := c.rd.ReadRequest(&c.req)
		c.waiting.Store(false)
		c.headPending = false
		if err != nil {
			if c.awaitingHead && c.rd.Buffered() == 0 && errors.Is(err, os.ErrDeadlineExceeded) &&
				mono.Now() < c.wait.IdleEnd && !srv.closingIdle() {
				if c.tlsHolds() {
					// Part of a TLS record came, and no byte of a head yet:
					// the head has begun, and its timeout applies.
					continue
				}
				c.park()
				return
			}
			if c.served == 0 && c.tls == nil && c.srv.H2 != nil && c.isH2Preface() {
				c.handOff(c.rd.TakeBuffered())
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
	c.Close()
}

// isH2Preface reports whether what the client sent first, which did not
// parse as HTTP/1.1, is the HTTP/2 preface (prior knowledge: RFC 9113
// §3.3). Its first line parses as a head with version HTTP/2.0.
func (c *conn) isH2Preface() bool {
	b := c.rd.Peek()
	return len(b) >= len(h2.ClientPreface)-6 && string(b[:min(len(b), len(h2.ClientPreface))]) == h2.ClientPreface[:min(len(b), len(h2.ClientPreface))]
}

// hasRequestBytes reports whether bytes of a request have arrived: in the
// read buffer, read ahead by the watcher, held by TLS, or waiting in the
// socket.
func (c *conn) hasRequestBytes() bool {
	return c.rd.Buffered() > 0 || c.watch.holds() || c.tlsHolds() || sockio.Readable(c.sock.FD)
}

// tlsHolds reports whether TLS holds bytes of a request (or the
// connection's end) that the socket no longer shows: crypto/tls reads
// whole records, several at once, and a request may sit decrypted in it
// while the socket is empty. Such bytes move to the watch buffer, which
// the parser reads first; the connection must not wait for the socket
// while they are there.
func (c *conn) tlsHolds() bool {
	under := c.sock.Under()
	if under == nil {
		return false
	}
	if under.MidRecord() {
		return true // a record has begun: the head timeout bounds the rest
	}
	if !c.CanWatch() {
		return false
	}
	w := &c.watch
	under.Held = true
	n, err := c.sock.NC.Read(w.buf[w.w:])
	under.Held = false
	w.w += n
	w.drop()
	// Any error but "nothing held" (a close_notify, a bad record) is
	// for the next read to report.
	return n > 0 || err != sockio.ErrWouldBlock
}

// park gives back the request state and hands the connection to the
// server's parker, which holds it without a goroutine (Linux). Failing
// that, it waits for the next request on a new goroutine, whose stack
// starts small: the one that served requests grew deep and would keep it.
func (c *conn) park() {
	c.dropState()
	if c.srv.Parker().Park(&c.wait) {
		return
	}
	go c.waitParked()
}

// Resume serves the parked connection, whose next request is readable,
// on a worker (park.Conn).
func (c *conn) Resume() { c.srv.workers.Run((*resumeTask)(c)) }

// dropState gives back the request state and its buffers.
func (c *conn) dropState() {
	c.release()
	c.rd.Reset(nil, http1.Limits{})
	reqStatePool.Put(c.reqState)
	c.reqState = nil
}

// waitParked waits for the next request without the parker. A shutdown
// ends the wait once its drain is over, by moving its deadline into the
// past (Server.Drain): it only waits for readability, so no request bytes
// are lost by it.
func (c *conn) waitParked() {
	c.sock.SetReadDeadline(mono.Wall(c.wait.IdleEnd))
	c.waiting.Store(true)
	var err error
	if !c.srv.closingIdle() {
		err = c.ready.Wait()
	}
	// Under the server's lock: a Drain that saw the wait moves the
	// deadline before this goes on, never after serve has set its own.
	c.srv.mu.Lock()
	c.waiting.Store(false)
	c.srv.mu.Unlock()
	if (err != nil || c.srv.closingIdle()) && !sockio.Readable(c.sock.FD) {
		c.Close() // idle timeout, or shutdown, with nothing to read
		return
	}
	c.serve(true)
}

// readFailed answers a request head that could not be read, if there is
// anyone to answer.
func (c *conn) readFailed(err error) {
	r := &stream.Rejection{Err: err}
	var pe *http1.Error
	switch {
	case errors.As(err, &pe):
		r.Status, r.Detail = pe.Status, pe.Reason
	case errors.Is(err, os.ErrDeadlineExceeded) && !c.awaitingHead:
		// A head started but did not finish in time (RFC 9110 §15.5.9).
		r.Status, r.Timeout = 408, true
	default:
		return // io.EOF, an idle timeout or a reset: the client is gone or done
	}
	// Nothing of the request may be trusted: it may refer to a buffer the
	// connection no longer holds, or to an earlier request. The answer
	// closes the connection.
	c.req = http1.Request{Header: c.req.Header, Minor: 1}
	c.req.Header.Reset()
	c.startRequest()
	c.head.Proto = ""
	c.srv.Handler.Reject(c, r)
}

// handle serves one request and reports whether the connection may carry
// another.
func (c *conn) handle() bool {
	c.startRequest()
	if n := c.srv.MaxRequestsPerConn; n > 0 && c.served >= n || c.srv.shuttingDown() {
		c.req.KeepAlive = false // this response says Connection: close
	}
	end := c.srv.Handler.Serve(c)
	c.wait.IdleSince = mono.Now() // idle from now, if it goes on
	// A response that went out before the shutdown said keep-alive: its
	// client may reuse the connection as any idle one, until the drain
	// is over. One written since says close (WriteHead).
	keep := c.req.KeepAlive && !c.srv.closingIdle()
	switch end {
	case stream.Gone:
		return false
	case stream.Cut:
		// What of the response was written goes out, and the
		// connection's end tells the client it is incomplete.
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
	return keep && c.answered
}

// startRequest makes the request head the forwarding path sees from the
// one parsed.
func (c *conn) startRequest() {
	t := mono.Now()
	h := &c.head
	h.Began, h.Read = c.headStart, t
	if h.Began == 0 { // the head came in one read (or was already buffered)
		h.Began = t
	}
	req := &c.req
	h.Method, h.Scheme, h.Proto = req.Method, "http", "HTTP/1.1"
	if c.srv.TLS != nil {
		h.Scheme = "https"
	}
	if req.Minor == 0 {
		h.Proto = "HTTP/1.0"
	}
	h.Authority, h.Path, h.AuthorityFirst = req.Host, req.Target, false
	if req.Form == http1.AbsoluteForm || req.Form == http1.AuthorityForm {
		h.Authority = req.Authority
		h.Path = pathOfAbsolute(req.Target)
		h.AuthorityFirst = req.Form == http1.AbsoluteForm
	}
	h.Header, h.Conn = &req.Header, req.Conn
	h.Client, h.Local, h.TLS = c.remote, c.local, c.tls
	switch req.Framing {
	case http1.LengthBody:
		h.ContentLength = req.ContentLength
	case http1.ChunkedBody:
		h.ContentLength = -1
	default:
		h.ContentLength = 0
	}
	// An HTTP/1.0 request's Upgrade is ignored (RFC 9110 §7.8).
	h.Upgrade = nil
	if req.Minor == 1 {
		h.Upgrade = req.Upgrade
	}
	c.headReq = string(req.Method) == "HEAD"
	c.readIdle = c.srv.Timeouts.Body
	c.answered, c.continued = false, false
}

// discardBody reads and drops what is left of a request body, up to a
// bound, so the connection can be reused.
func (c *conn) discardBody() bool {
	const maxDiscard = 256 << 10
	n, err := io.CopyN(io.Discard, c.rd.Body(), maxDiscard)
	return n < maxDiscard && (err == nil || err == io.EOF) && c.rd.Body().Done()
}

func (c *conn) release() {
	if c.bw != nil && c.bw.Buffered() == 0 {
		c.bw.Reset(nil)
		bufWriterPool.Put(c.bw)
		c.bw = nil
	}
	c.rd.Release()
}

// Close closes the connection (park.Conn). Only the goroutine serving it,
// or the parker while none does, calls it.
func (c *conn) Close() {
	if under := c.sock.Under(); under != nil {
		under.NoWait = true // a close_notify goes if it fits; Close does not wait
	}
	c.sock.NC.Close()
	if c.wait.Registered() {
		c.srv.parker.Load().Forget(&c.wait)
	}
	c.watch.discard()
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

func (c *conn) flush() error {
	if c.bw == nil || c.bw.Buffered() == 0 {
		return nil
	}
	return c.bw.Flush()
}

// Read is the client reader under the codec: it hands on bytes the
// watcher read ahead, and keeps the read deadline.
func (c *conn) Read(p []byte) (int, error) {
	if c.watch.holds() {
		n := c.watch.take(p)
		c.onFirstByte()
		return n, nil
	}
	if c.headPending {
		// The head did not come in one read: from now on the head timeout
		// bounds it. (Most heads arrive whole, and never pay for this.)
		c.headPending = false
		c.headStart = mono.Now()
		c.sock.SetReadDeadline(mono.Wall(c.headStart + c.srv.Timeouts.Header))
	}
	// A new connection's first request seldom follows its handshake at
	// once: its first read would only fail, then be made again.
	if c.served > 0 || !c.awaitingHead {
		if n := c.sock.ReadRaw(p); n > 0 {
			c.onFirstByte()
			return n, nil
		}
	}
	if c.readIdle > 0 {
		c.sock.EnsureReadDeadline(mono.Now(), c.readIdle, 0)
	}
	if c.sock.Interrupted(false) { // the body sender is being stopped
		return 0, sockio.ErrInterrupted
	}
	n, err := c.sock.NC.Read(p)
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

// Write is the client writer under the buffered writer: it keeps a
// rolling write deadline, so a client that stops reading is cut off.
func (c *conn) Write(p []byte) (int, error) {
	n := c.sock.WriteRaw(p)
	if n == len(p) {
		return n, nil // no wait, so no deadline needed
	}
	c.sock.EnsureWriteDeadline(mono.Now(), c.srv.Timeouts.Write, 0)
	m, err := c.sock.NC.Write(p[n:])
	return n + m, err
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
