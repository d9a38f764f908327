package h1

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/fdlimit"
	"github.com/straitproxy/strait/internal/h2"
	"github.com/straitproxy/strait/internal/http1"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/park"
	"github.com/straitproxy/strait/internal/sockio"
	"github.com/straitproxy/strait/internal/stream"
)

// Server is what the HTTP/1 connections of one proxy share: their
// settings, the Handler of their requests, the parker and workers that
// hold and run them, and the set of them that Shutdown and Close end. Set
// the exported fields before the first Serve.
type Server struct {
	Handler            stream.Handler
	Timeouts           Timeouts
	Head               http1.Limits // request heads
	MaxRequestsPerConn int          // 0: no limit
	Logger             *slog.Logger
	// Open counts the server's open connections, for its owner's metrics.
	Open *atomic.Int64
	// Closed, if set, is told the client address of each connection that
	// closes.
	Closed func(remote netip.AddrPort)
	// TLS, if set, makes every connection TLS: the handshake comes first,
	// within HandshakeTimeout (default 10 s).
	TLS              *tls.Config
	HandshakeTimeout time.Duration
	// Handshakes counts TLS handshakes by result (TLSOK, TLSFailed,
	// TLSPlainHTTP, TLSTimeout), for metrics; nil: not counted.
	Handshakes *[4]atomic.Int64
	// H2, if set, serves the connections that speak HTTP/2: by ALPN
	// after a TLS handshake, or by the client preface on a cleartext one.
	H2 *h2.Server
	// H2Only hands every connection to H2 (after its TLS handshake).
	H2Only bool

	shutting atomic.Bool
	// drainEnd is when idle connections close once shutting (mono):
	// until then one idle at shutdown may still carry a request. Stored
	// before shutting.
	drainEnd   atomic.Int64
	idleClosed atomic.Bool // the parked connections were closed (Drain)
	workers    park.Workers

	parker    atomic.Pointer[park.Parker] // nil until made, or while it cannot be
	parkMu    sync.Mutex                  // guards the two below
	parkTried time.Duration               // when making the parker last failed (mono)
	parkDone  bool                        // closing, or unsupported: no parker is made

	mu      sync.Mutex
	conns   map[*conn]struct{}
	closing bool // Close has run: new tunnels must not start
}

// Timeouts are the waits of a server connection (proxy.Timeouts).
type Timeouts struct {
	Header time.Duration // a request head, once begun (and a new connection's first)
	Body   time.Duration // each read of a request body
	Write  time.Duration // each write of a response
	Idle   time.Duration // between requests
}

// Serve serves the HTTP/1.1 connection nc, from the client at remote to
// local (nc's own addresses, or a PROXY header's), on a worker goroutine.
// listener counts the open connections of the listener it came from. When nc
// closes it is uncounted from listener and Open, and its socket from
// fdlimit's count, which the caller took.
func (srv *Server) Serve(nc net.Conn, listener *atomic.Int64, remote, local netip.AddrPort) {
	c := &conn{srv: srv, listener: listener}
	c.remote, c.local = remote, local
	fd := c.ready.Init(nc)
	if srv.TLS != nil {
		// The handshake runs on a worker; its bytes are TLS's, so the
		// connection is served through the tls.Conn, and its socket is
		// only waited on.
		under := sockio.NewUnderlay(nc)
		c.sock.InitWrapped(tls.Server(under, srv.TLS), under)
	} else {
		c.sock.Init(nc, fd)
	}
	c.wait.Init(fd, c)
	c.wait.IdleSince = mono.Now()
	c.opened = c.wait.IdleSince
	srv.Open.Add(1)
	if l := srv.Logger; l != nil && l.Enabled(context.Background(), slog.LevelDebug) {
		srv.Logger.Debug("connection open", "client", c.remote.String(), "local", c.local.String())
	}
	srv.mu.Lock()
	if srv.conns == nil {
		srv.conns = make(map[*conn]struct{})
	}
	srv.conns[c] = struct{}{}
	srv.mu.Unlock()
	if srv.TLS != nil {
		srv.workers.Run((*handshakeTask)(c))
		return
	}
	srv.workers.Run((*startTask)(c))
}

// Kinds of TLS handshake results (Server.Handshakes).
const (
	TLSOK = iota
	TLSFailed
	TLSPlainHTTP // an HTTP request came to the TLS port
	TLSTimeout
)

type handshakeTask conn

// Run shakes hands, then serves the connection; a failed handshake closes
// it, and plain HTTP gets a clear answer first (as net/http gives).
func (t *handshakeTask) Run() {
	c := (*conn)(t)
	srv := c.srv
	tc := c.sock.NC.(*tls.Conn)
	timeout := srv.HandshakeTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	tc.SetDeadline(time.Now().Add(timeout))
	err := tc.Handshake()
	kind := TLSOK
	if err != nil {
		var rh tls.RecordHeaderError
		switch {
		case errors.As(err, &rh) && rh.Conn != nil && looksLikeHTTP(rh.RecordHeader[:]):
			kind = TLSPlainHTTP
			srv.answer(rh.Conn, 400, "This port speaks TLS: use https://.\n", nil)
		case errors.Is(err, os.ErrDeadlineExceeded):
			kind = TLSTimeout
		default:
			kind = TLSFailed
		}
		if l := srv.Logger; l != nil && l.Enabled(context.Background(), slog.LevelDebug) {
			l.Debug("tls handshake failed", "client", c.remote.String(), "err", err)
		}
	}
	if srv.Handshakes != nil {
		srv.Handshakes[kind].Add(1)
	}
	if err != nil {
		c.Close()
		return
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	c.tls = &st
	switch st.NegotiatedProtocol {
	case "", "http/1.1", "h2":
	default:
		// Not HTTP: a CA's TLS-ALPN-01 validation (acme-tls/1), after
		// which no data may follow (RFC 8737 §3). Nothing is served.
		c.Close()
		return
	}
	if srv.H2 != nil && (st.NegotiatedProtocol == "h2" || srv.H2Only) {
		c.handOff(nil)
		return
	}
	// The first request's head timeout runs from here, not from accept.
	c.wait.IdleSince = mono.Now()
	c.serve(false)
}

// looksLikeHTTP reports whether a first record header is the start of an
// HTTP request line.
func looksLikeHTTP(b []byte) bool {
	for _, m := range []string{"GET ", "HEAD ", "POST ", "PUT ", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE"} {
		if strings.HasPrefix(m, string(b)) || strings.HasPrefix(string(b), m) {
			return true
		}
	}
	return false
}

// startTask starts a new connection; resumeTask resumes a parked one whose
// next request is readable.
type (
	startTask  conn
	resumeTask conn
)

func (t *startTask) Run() {
	c := (*conn)(t)
	if c.srv.H2Only && c.srv.H2 != nil {
		c.handOff(nil)
		return
	}
	c.serve(false)
}
func (t *resumeTask) Run() { (*conn)(t).serve(true) }

// shuttingDown reports whether responses close their connections.
func (srv *Server) shuttingDown() bool { return srv.shutting.Load() }

// closingIdle reports whether idle connections close now rather than wait
// for a request: the server is shutting down and the drain is over.
func (srv *Server) closingIdle() bool {
	return srv.shutting.Load() && mono.Now() >= time.Duration(srv.drainEnd.Load())
}

// Parker returns the server's parker, made on first use (call it before
// the first Serve, while descriptors are plenty). Should making it fail
// (out of descriptors, say), idle connections wait on goroutines of their
// own, and it is tried again a second later.
func (srv *Server) Parker() *park.Parker {
	if p := srv.parker.Load(); p != nil {
		return p
	}
	srv.parkMu.Lock()
	defer srv.parkMu.Unlock()
	now := mono.Now()
	if p := srv.parker.Load(); p != nil || srv.parkDone || srv.parkTried != 0 && now-srv.parkTried < time.Second {
		return p
	}
	p, err := park.New()
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		srv.parkDone = true
		return nil
	case err != nil:
		srv.parkTried = now
		srv.Logger.Warn("idle connections wait on goroutines until the parker can be made", "err", err)
		return nil
	}
	srv.parker.Store(p)
	return p
}

// closeParked closes the parked connections, which are all idle; with
// serve, those whose next request has begun to arrive are served first.
func (srv *Server) closeParked(serve bool) {
	srv.parkMu.Lock()
	srv.parkDone = true // no parker is made after this
	p := srv.parker.Load()
	srv.parkMu.Unlock()
	if p != nil {
		p.CloseAll(serve)
	}
}

// Shutdown begins a graceful shutdown: every response from now on closes
// its connection, and requests in flight finish. For drainIdle, an idle
// keep-alive connection may still carry one more request: its client may
// have sent it already, and closing the connection under it would fail
// it (RFC 9112 §9.5). Then (at once if drainIdle <= 0) idle connections
// close; one whose request has begun to arrive is served first. Call
// Drain until it reports none are left.
func (srv *Server) Shutdown(drainIdle time.Duration) {
	srv.drainEnd.Store(int64(mono.Now() + max(drainIdle, 0)))
	srv.shutting.Store(true)
	srv.workers.Close()
	srv.Drain()
}

// Drain returns how many connections are open. Once the drain of idle
// connections is over, it closes the parked ones (the first time), and
// ends the waits of those waiting for their next request on a goroutine
// of their own (the others notice within park.After, or after their
// request).
func (srv *Server) Drain() int {
	closing := srv.closingIdle()
	if closing && srv.idleClosed.CompareAndSwap(false, true) {
		srv.closeParked(true)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if closing {
		for c := range srv.conns {
			// Such a wait is only for readability: ending it loses
			// nothing. Its deadline is not in the Socket's cache
			// (waitParked set it with SetReadDeadline, which forgets),
			// so serve sets its own.
			if c.waiting.Load() {
				c.sock.NC.SetReadDeadline(sockio.Past)
			}
		}
	}
	return len(srv.conns)
}

// Close closes every connection at once, tunnels included.
func (srv *Server) Close() {
	srv.drainEnd.Store(0)
	srv.shutting.Store(true)
	srv.mu.Lock()
	srv.closing = true
	for c := range srv.conns {
		// Shut down, not closed: the serving goroutine closes it (see
		// sockio's raw path). A TLS connection's socket is shut down
		// under it: no close_notify is written under the lock.
		var nc net.Conn = c.sock.NC
		if under := c.sock.Under(); under != nil {
			nc = under
		}
		if !sockio.Shutdown(nc) {
			nc.Close()
		}
		if c.tunnelUp != nil && !sockio.Shutdown(c.tunnelUp) {
			c.tunnelUp.Close()
		}
	}
	srv.mu.Unlock()
	srv.closeParked(false)
	srv.workers.Close()
}

func (srv *Server) untrack(c *conn) {
	if l := srv.Logger; l != nil && l.Enabled(context.Background(), slog.LevelDebug) {
		srv.Logger.Debug("connection closed", "client", c.remote.String(), "requests", c.served,
			"lifetime_ms", float64((mono.Now()-c.opened).Microseconds())/1000)
	}
	srv.mu.Lock()
	delete(srv.conns, c)
	srv.mu.Unlock()
	srv.uncount(c)
}

// uncount uncounts a closed connection.
func (srv *Server) uncount(c *conn) {
	fdlimit.ReleaseSocket()
	srv.Open.Add(-1)
	c.listener.Add(-1)
	if srv.Closed != nil {
		srv.Closed(c.remote)
	}
}

// handOff serves the connection as HTTP/2 from now on, on this goroutine;
// read holds the bytes of it already read. It stays counted until the
// HTTP/2 connection closes.
func (c *conn) handOff(read []byte) {
	srv := c.srv
	if c.wait.Registered() {
		srv.parker.Load().Forget(&c.wait)
	}
	read = append([]byte(nil), read...)
	c.watch.discard()
	if c.reqState != nil {
		c.dropState()
	}
	srv.H2.ServeConn(h2.Conn{NC: c.sock.NC, Under: c.sock.Under(), Read: read, Client: c.remote, Local: c.local, TLS: c.tls,
		Tracked: func() {
			srv.mu.Lock()
			delete(srv.conns, c)
			srv.mu.Unlock()
		},
		Done: func() { srv.uncount(c) }})
}

// Refuse answers a connection that cannot be served (over a limit) with
// 503 and closes it, within a second.
func (srv *Server) Refuse(nc net.Conn) {
	var h header.Header
	h.Add("Retry-After", "1")
	srv.answer(nc, 503, "Service Unavailable\n", &h)
	nc.Close()
}

// answer writes a response with a text body to a connection no request
// was read from, within a second. It goes through WriteHead like every
// other, as to an HTTP/1.1 request that asked to close.
func (srv *Server) answer(nc net.Conn, status int, text string, h *header.Header) {
	c := &conn{srv: srv, reqState: &reqState{req: http1.Request{Minor: 1}}}
	var out bytes.Buffer
	c.bw = bufio.NewWriterSize(&out, 256)
	if h == nil {
		h = new(header.Header)
	}
	h.Add("Content-Type", "text/plain; charset=utf-8")
	if body, err := c.WriteHead(&stream.ResponseHead{Status: status, Header: h, Length: int64(len(text))}); err == nil && body {
		c.WriteBody([]byte(text))
	}
	c.bw.Flush()
	nc.SetWriteDeadline(time.Now().Add(time.Second))
	nc.Write(out.Bytes())
}
