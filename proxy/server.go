package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/internal/fdlimit"
	"github.com/straitproxy/strait/internal/h1"
	"github.com/straitproxy/strait/internal/h2"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/internal/park"
	"github.com/straitproxy/strait/internal/pool"
	"github.com/straitproxy/strait/internal/proxyheader"
	"github.com/straitproxy/strait/internal/sockio"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("proxy: server closed")

// Server proxies HTTP/1.1 requests through a set of Phases. Many listeners
// may share one Server, and so its upstream connection pool.
type Server struct {
	phases   Phases
	opts     Options
	pool     *Pool
	ownPool  bool // made by New: its idle connections close with the server
	dialer   net.Dialer
	ids      *idSource
	counters Counters
	h1       h1.Server    // the HTTP/1.1 connections from clients
	h2       h2.Server    // and the HTTP/2 ones, handed over by h1
	senders  park.Workers // the goroutines of request bodies being sent (body.go)
	fdWarned atomic.Int64 // when running out of descriptors was last logged (mono)

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	shutting  atomic.Bool
	clients   *ClientConns // with Limits.MaxConnsPerClient; else nil
}

// New returns a Server that runs p with the options o. p must choose a
// peer (UpstreamPeer), or answer requests itself (RequestFilter), or both.
func New(p Phases, o Options) (*Server, error) {
	if p.UpstreamPeer == nil && p.RequestFilter == nil {
		return nil, errors.New("proxy: Phases needs UpstreamPeer or RequestFilter")
	}
	if p.UpstreamPeer == nil {
		p.UpstreamPeer = func(*Session) (*Peer, error) {
			return nil, &Error{Side: Internal, Kind: KindNoPeer, Status: 502, Where: "no UpstreamPeer phase"}
		}
	}
	o = o.withDefaults()
	ownPool := o.Pool == nil
	if ownPool {
		o.Pool = NewPool(PoolLimits{})
	}
	srv := &Server{
		phases:    p,
		opts:      o,
		pool:      o.Pool,
		ownPool:   ownPool,
		dialer:    net.Dialer{KeepAlive: 30 * time.Second},
		ids:       newIDSource(),
		listeners: make(map[net.Listener]struct{}),
	}
	t := &o.Timeouts
	srv.h1.Handler = (*handler)(srv)
	srv.h1.Timeouts = h1.Timeouts{Header: t.Header, Body: t.Body, Write: t.Write, Idle: t.Idle}
	srv.h1.Head = o.Limits.Head
	srv.h1.MaxRequestsPerConn = o.Limits.MaxRequestsPerConn
	srv.h1.Logger = o.Logger
	srv.h1.Open = &srv.counters.ConnsOpen
	srv.h1.TLS, srv.h1.HandshakeTimeout = o.TLS, t.Handshake
	srv.h1.Handshakes = &srv.counters.Handshakes
	if !o.HTTP2.Off {
		srv.h2.Handler = (*handler)(srv)
		srv.h2.Timeouts = h2.Timeouts{Idle: t.Idle, Body: t.Body, Write: t.Write, Frame: t.Header}
		srv.h2.Limits = o.HTTP2.Limits
		srv.h2.Logger = o.Logger
		srv.h2.Counters = &srv.counters.HTTP2
		srv.h2.Parker = srv.h1.Parker
		srv.h1.H2, srv.h1.H2Only = &srv.h2, o.HTTP2.Only
	}
	if o.Limits.MaxConnsPerClient > 0 {
		srv.clients = o.ClientConns
		if srv.clients == nil {
			srv.clients = NewClientConns()
		}
		srv.h1.Closed = srv.clients.left
	}
	return srv, nil
}

// Pool is a set of upstream connections kept for reuse. Servers given the
// same Pool share it: one per process is the intent.
type Pool struct {
	p *pool.Pool[upstreamConn]

	mu    sync.Mutex
	dials map[string]*dialing // multiplexed connections being dialled, by key
}

// dialing is a dial of a multiplexed connection under way; done is closed
// when it ends, and err is then its failure, or nil.
type dialing struct {
	done chan struct{}
	err  *Error
}

// startDial returns the dial under way for key, or starts one, which the
// caller makes (mine) and ends with endDial.
func (p *Pool) startDial(key string) (d *dialing, mine bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if d := p.dials[key]; d != nil {
		return d, false
	}
	if p.dials == nil {
		p.dials = make(map[string]*dialing)
	}
	d = &dialing{done: make(chan struct{})}
	p.dials[key] = d
	return d, true
}

func (p *Pool) endDial(key string, d *dialing, err *Error) {
	p.mu.Lock()
	delete(p.dials, key)
	p.mu.Unlock()
	d.err = err
	close(d.done)
}

// PoolLimits bound a Pool; zero values mean the defaults (MaxIdle: an
// eighth of the file-descriptor limit, at least 8, so that idle upstream
// connections leave descriptors for clients; 1,024 idle
// connections per peer, closed after 60 s idle, no lifetime limit).
type PoolLimits = pool.Limits

// NewPool returns an empty Pool.
func NewPool(l PoolLimits) *Pool {
	if n := fdlimit.Limit(); l.MaxIdle == 0 && n > 0 {
		l.MaxIdle = int(max(n/8, 8))
	}
	return &Pool{p: pool.New[upstreamConn](l)}
}

// CloseIdle closes the pool's idle connections: when the servers that
// share it are done.
func (p *Pool) CloseIdle() { p.p.CloseIdle() }

// Idle returns how many idle connections the pool holds.
func (p *Pool) Idle() int { return p.p.Len() }

// CloseIdleMatching closes the idle connections whose key (Peer.Key, or
// Peer.Addr) match reports true for, and busy HTTP/2 ones once their
// streams are done; match is called with the pool locked.
func (p *Pool) CloseIdleMatching(match func(key string) bool) { p.p.CloseIdleMatching(match) }

// Counters returns the server's counters, live.
func (srv *Server) Counters() *Counters { return &srv.counters }

func (srv *Server) shuttingDown() bool { return srv.shutting.Load() }

// Listen listens on a TCP address for Serve. Unlike net.Listen it leaves
// TCP keep-alive probes off on accepted connections: turning them on costs
// four setsockopt calls per connection (a quarter of the system calls of a
// one-request connection), and the idle and header timeouts already end
// the connections of clients that vanished.
func Listen(ctx context.Context, network, address string) (net.Listener, error) {
	lc := net.ListenConfig{KeepAlive: -1}
	return lc.Listen(ctx, network, address)
}

// Serve accepts connections on ln until Shutdown or Close, and returns
// ErrServerClosed then. Listeners are not shared between Serve calls: each
// gets Options.Limits.MaxConns.
func (srv *Server) Serve(ln net.Listener) error {
	if ln == nil {
		return errors.New("proxy: Serve: nil listener")
	}
	srv.mu.Lock()
	if srv.shuttingDown() {
		srv.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	srv.listeners[ln] = struct{}{}
	srv.mu.Unlock()
	defer func() {
		srv.mu.Lock()
		delete(srv.listeners, ln)
		srv.mu.Unlock()
	}()

	var open atomic.Int64
	maxConns := int64(srv.opts.Limits.MaxConns)
	if lim := maxConnsForFDs(); lim > 0 && maxConns > lim {
		srv.opts.Logger.Warn("limits.max_conns is more than the file descriptor limit allows; clients past it get 503",
			"max_conns", maxConns, "fd_limit", fdlimit.Limit(), "allows", lim)
	}
	srv.h1.Parker() // now, while descriptors are plenty
	spare := fdlimit.Reserve()
	defer spare.Release()
	backoff := time.Duration(0)
	for {
		nc, err := ln.Accept()
		if err != nil {
			if srv.shuttingDown() {
				return ErrServerClosed
			}
			if fdlimit.Exhausted(err) {
				srv.outOfFDs(ln, &spare, &open, maxConns)
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporaryAccept(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				srv.opts.Logger.Warn("accept failed; retrying", "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		srv.accepted(nc, &open, maxConns)
	}
}

// fdRetry is how often accept is tried again while every file descriptor
// is held: clients wait in the backlog meanwhile, so not long.
const fdRetry = 5 * time.Millisecond

// outOfFDs answers a client waiting in ln's backlog after accept ran out
// of file descriptors, with the spare one given up for the moment: 503,
// rather than leave it hanging. (Idle upstream connections are kept: the
// clients being served need them.) Without the spare, as when another
// goroutine took the descriptor it freed, it waits fdRetry for one to come
// back, and takes it as the spare.
func (srv *Server) outOfFDs(ln net.Listener, spare *fdlimit.Spare, open *atomic.Int64, maxConns int64) {
	if now := mono.Now(); now-time.Duration(srv.fdWarned.Load()) >= time.Second {
		srv.fdWarned.Store(int64(now))
		srv.opts.Logger.Warn("out of file descriptors: new clients get 503", "fd_limit", fdlimit.Limit())
	}
	if !spare.Release() {
		time.Sleep(fdRetry)
		*spare = fdlimit.Reserve()
		return
	}
	nc, err := ln.Accept()
	*spare = fdlimit.Reserve()
	switch {
	case err != nil:
	case spare.Held():
		// Short only for a moment: Linux can report EMFILE before it
		// finds the backlog empty, and this client came later. Serve it.
		srv.accepted(nc, open, maxConns)
	default:
		srv.counters.ConnsAccepted.Add(1)
		srv.counters.ConnsOverFDLimit.Add(1)
		srv.reject(nc, sockio.AddrPort(nc.RemoteAddr()), "out of file descriptors")
		*spare = fdlimit.Reserve()
	}
}

// accepted serves a new connection, or refuses it over Limits.MaxConns
// or the process's socket budget.
func (srv *Server) accepted(nc net.Conn, open *atomic.Int64, maxConns int64) {
	srv.counters.ConnsAccepted.Add(1)
	remote, local := sockio.AddrPort(nc.RemoteAddr()), sockio.AddrPort(nc.LocalAddr())
	if pp := srv.opts.ProxyProtocol; pp != nil {
		if open.Load() >= maxConns {
			srv.counters.ConnsRejected.Add(1)
			go srv.reject(nc, remote, "over limits.max_conns")
			return
		}
		open.Add(1) // while its header comes
		go srv.proxied(nc, pp, remote, open, maxConns)
		return
	}
	srv.admit(nc, remote, local, open, maxConns)
}

// proxied takes the PROXY header of a connection from a trusted proxy,
// and serves it as the client's the header names. The connection counts
// against maxConns in open while its header comes.
func (srv *Server) proxied(nc net.Conn, pp *ProxyProtocol, remote netip.AddrPort, open *atomic.Int64, maxConns int64) {
	src, dst, err := proxyheader.Accept(nc, pp.Trusted, pp.Timeout)
	open.Add(-1) // admit counts it anew
	if err != nil {
		srv.counters.ConnsProxyRefused.Add(1)
		level := slog.LevelWarn // a trusted proxy that sent no valid header
		if errors.Is(err, proxyheader.ErrUntrusted) {
			level = slog.LevelDebug // anyone can: counted, not logged
		}
		srv.opts.Logger.Log(context.Background(), level, "connection refused: proxy_protocol", "client", remote.String(), "err", err)
		nc.Close()
		return
	}
	srv.admit(nc, src, dst, open, maxConns)
}

// admit serves a connection from the client at remote, or refuses it
// over Limits.MaxConns or the process's socket budget.
func (srv *Server) admit(nc net.Conn, remote, local netip.AddrPort, open *atomic.Int64, maxConns int64) {
	if open.Load() >= maxConns {
		srv.counters.ConnsRejected.Add(1)
		go srv.reject(nc, remote, "over limits.max_conns")
		return
	}
	if srv.clients != nil && !srv.clients.came(remote, srv.opts.Limits.MaxConnsPerClient) {
		srv.counters.ConnsPerClientRejected.Add(1)
		go srv.reject(nc, remote, "over limits.max_conns_per_client")
		return
	}
	if !fdlimit.TakeSocket() {
		srv.counters.ConnsOverFDLimit.Add(1)
		if srv.clients != nil {
			srv.clients.left(remote)
		}
		go srv.reject(nc, remote, "out of file descriptors")
		return
	}
	open.Add(1)
	srv.h1.Serve(nc, open, remote, local)
}

// ClientConns counts open connections by client address, for
// Limits.MaxConnsPerClient. Servers given the same one (Options.ClientConns)
// share the limit: give every Server of a process the same.
type ClientConns struct {
	mu sync.Mutex
	m  map[netip.Addr]int
}

// NewClientConns returns an empty count.
func NewClientConns() *ClientConns { return &ClientConns{m: make(map[netip.Addr]int)} }

// came counts a connection against its client's limit, and reports false,
// counting nothing, if the client has that many already.
func (c *ClientConns) came(remote netip.AddrPort, limit int) bool {
	addr := remote.Addr().Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m[addr] >= limit {
		return false
	}
	c.m[addr]++
	return true
}

// left uncounts a closed connection.
func (c *ClientConns) left(remote netip.AddrPort) {
	addr := remote.Addr().Unmap()
	c.mu.Lock()
	if c.m[addr]--; c.m[addr] <= 0 {
		delete(c.m, addr)
	}
	c.mu.Unlock()
}

func isTemporaryAccept(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// reject answers a connection strait cannot serve with 503, closes it,
// and logs the answer like any other.
func (srv *Server) reject(nc net.Conn, remote netip.AddrPort, why string) {
	start := time.Now()
	s := &Session{ClientAddr: remote, LocalAddr: sockio.AddrPort(nc.LocalAddr())}
	if srv.opts.TLS != nil {
		// A plain-text 503 would be garbage to a TLS client, and a
		// handshake is what the limit is there to spare: a close.
		nc.Close()
	} else {
		srv.h1.Refuse(nc)
	}
	s.RequestID = srv.ids.next(s.reqIDBuf[:0])
	s.Stats = Stats{Start: start, Status: 503, Total: time.Since(start)}
	s.Response.Status = 503
	s.answered = true
	srv.logRequest(s, &Error{Side: Internal, Kind: KindLimit, Status: 503, Where: "connection refused: " + why})
}

// Shutdown stops accepting and lets requests in flight finish; every
// response from then on closes its connection. An idle HTTP/1 connection
// may carry one more request for Timeouts.DrainIdle, then closes (one
// whose request has begun to arrive is served first); HTTP/2 connections
// are told with GOAWAY in two steps, so that streams their clients opened
// meanwhile are served. Shutdown returns once all connections are gone
// or ctx is done, when the rest are closed with Close. Upgraded tunnels
// run until then.
func (srv *Server) Shutdown(ctx context.Context) error {
	srv.shutting.Store(true)
	srv.closeListeners()
	srv.h1.Shutdown(srv.opts.Timeouts.DrainIdle)
	srv.h2.Shutdown()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for srv.h1.Drain()+srv.h2.Open() > 0 {
		select {
		case <-ctx.Done():
			srv.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
	srv.h1.Close() // the parker, should the drain of idle connections not be over
	srv.h2.Close() // its idle workers: a server a reload retired must leave nothing behind
	srv.closePool()
	srv.senders.Close()
	return nil
}

// closePool closes the idle connections of the server's own pool; a pool
// given in Options is its giver's to close (other servers use it: after a
// reload, the server that replaced this one).
func (srv *Server) closePool() {
	if srv.ownPool {
		srv.pool.p.CloseIdle()
	}
}

// Close closes every listener and connection at once, tunnels included.
func (srv *Server) Close() error {
	srv.shutting.Store(true)
	srv.closeListeners()
	srv.h1.Close()
	srv.h2.Close()
	srv.closePool()
	srv.senders.Close()
	return nil
}

func (srv *Server) closeListeners() {
	srv.mu.Lock()
	for ln := range srv.listeners {
		ln.Close()
	}
	srv.mu.Unlock()
}

// logRequest runs the Logging phase and writes the access log line for a
// request strait answered, by proxying it or itself.
func (srv *Server) logRequest(s *Session, e *Error) {
	if srv.phases.Logging != nil {
		srv.phases.Logging(s, e)
	}
	switch {
	case srv.opts.AccessLog:
		srv.logAccess(s, e) // failures included, at warn
	case e != nil && e.Side != Downstream:
		// Without an access log, what failed on strait's side or the
		// upstream's is still logged, with which side and why; a client's
		// own failures (malformed requests, leaving early) are counted
		// only, as anyone can cause them.
		srv.opts.Logger.LogAttrs(context.Background(), slog.LevelWarn, "request failed",
			slog.String("error_side", e.Side.String()), slog.String("error", e.Error()),
			slog.Int("status", s.Stats.Status), slog.String("method", s.Request.Method),
			slog.String("path", string(s.Request.Path)), slog.String("upstream", s.Stats.Peer),
			slog.Int("attempts", s.Stats.Attempts), slog.String("request_id", string(s.RequestID)))
	}
}

// logAccess writes one access-log line for a finished request.
func (srv *Server) logAccess(s *Session, e *Error) {
	attrs := []slog.Attr{
		slog.String("method", s.Request.Method),
		slog.String("authority", string(s.Request.Authority)),
		slog.String("path", string(s.Request.Path)),
		slog.String("proto", s.Request.Proto),
		slog.Int("status", s.Stats.Status),
		slog.String("client", s.ClientAddr.String()),
		slog.String("request_id", string(s.RequestID)),
		ms("total_ms", s.Stats.Total),
		ms("request_read_ms", s.Stats.RequestRead),
		ms("upstream_dial_ms", s.Stats.UpstreamDial),
		ms("upstream_header_ms", s.Stats.UpstreamHeader),
		slog.Int64("bytes_in", s.Stats.BytesIn),
		slog.Int64("bytes_out", s.Stats.BytesOut),
		slog.String("upstream", s.Stats.Peer),
		slog.Bool("reused", s.Stats.Reused),
		slog.Int("attempts", s.Stats.Attempts),
	}
	if v := s.Request.Header.Get("Referer"); v != nil {
		attrs = append(attrs, slog.String("referer", string(v)))
	}
	if v := s.Request.Header.Get("User-Agent"); v != nil {
		attrs = append(attrs, slog.String("user_agent", string(v)))
	}
	level := slog.LevelInfo
	if e != nil {
		attrs = append(attrs, slog.String("error", e.Error()), slog.String("error_side", e.Side.String()))
		if e.Side != Downstream {
			level = slog.LevelWarn
		}
	}
	srv.opts.AccessLogger.LogAttrs(context.Background(), level, "request", attrs...)
}

// ms is a duration in milliseconds, to the microsecond.
func ms(key string, d time.Duration) slog.Attr {
	return slog.Float64(key, float64(d.Microseconds())/1000)
}

// Counters count what the server did and every limit it enforced. They are
// read while the server runs (for metrics); only the server writes them.
type Counters struct {
	ConnsAccepted          atomic.Int64 // client connections accepted
	ConnsRejected          atomic.Int64 // refused with 503: over Limits.MaxConns
	ConnsOverFDLimit       atomic.Int64 // refused with 503: out of file descriptors
	ConnsPerClientRejected atomic.Int64 // refused with 503: over Limits.MaxConnsPerClient
	ConnsProxyRefused      atomic.Int64 // closed: not from a trusted proxy, or no valid PROXY header (Options.ProxyProtocol)
	ConnsOpen              atomic.Int64 // client connections open now
	Requests               atomic.Int64 // request heads read
	RequestsActive         atomic.Int64 // requests being served now
	BadRequests            atomic.Int64 // 400 and 505: malformed requests
	NotImplemented         atomic.Int64 // 501: transfer codings other than chunked
	URITooLong             atomic.Int64 // 414: request line over Limits.Head.MaxRequestLine
	HeadTooLarge           atomic.Int64 // 431: head over Limits.Head.MaxHeaderBytes or MaxHeaderCount
	BodyTooLarge           atomic.Int64 // 413: body over Limits.MaxRequestBody
	HeaderTimeouts         atomic.Int64 // 408: head not read within Timeouts.Header
	UpstreamDials          atomic.Int64 // new upstream connections
	UpstreamStale          atomic.Int64 // pooled connections found closed before reuse
	UpstreamUnprocessed    atomic.Int64 // tries an HTTP/2 upstream did not process (GOAWAY, REFUSED_STREAM)
	UpstreamProtocol       atomic.Int64 // malformed upstream responses (502)
	UpstreamTimeouts       atomic.Int64 // 504s
	UpstreamErrors         atomic.Int64 // other upstream failures (502)
	NoPeer                 atomic.Int64 // 503s: no peer could take the request
	HTTP2                  h2.Counters  // what HTTP/2 connections refused
	DownstreamGone         atomic.Int64 // clients that left before their response was done
	BodiesBuffered         atomic.Int64 // request bodies read whole before the exchange
	BufferOverBudget       atomic.Int64 // bodies that did not fit Buffering.Budget (streamed, or 503)
	GRPCCalls              atomic.Int64 // gRPC and gRPC-Web calls (by Content-Type)
	GRPCWebTranslated      atomic.Int64 // gRPC-Web calls sent upstream as gRPC
	GRPCStatusAnswers      atomic.Int64 // gRPC calls strait answered with a status of its own (trailers-only or in trailers)
	CORSRefused            atomic.Int64 // CORS preflights refused (403): origin or method not allowed
	// Handshakes count TLS handshakes by result, indexed by HandshakeOK,
	// HandshakeFailed, HandshakePlainHTTP and HandshakeTimeout.
	Handshakes [4]atomic.Int64
}

// The results of TLS handshakes (Counters.Handshakes).
const (
	HandshakeOK        = h1.TLSOK
	HandshakeFailed    = h1.TLSFailed
	HandshakePlainHTTP = h1.TLSPlainHTTP // plain HTTP sent to the TLS port: 400
	HandshakeTimeout   = h1.TLSTimeout
)

func (c *Counters) rejected(status int) {
	switch status {
	case 414:
		c.URITooLong.Add(1)
	case 431:
		c.HeadTooLarge.Add(1)
	case 501:
		c.NotImplemented.Add(1)
	default:
		c.BadRequests.Add(1)
	}
}

func (c *Counters) failed(e *Error) {
	switch {
	case e.Kind == KindDownstreamGone:
		c.DownstreamGone.Add(1)
	case e.Kind == KindNoPeer:
		c.NoPeer.Add(1)
	case e.Side == Upstream && e.Kind == KindTimeout:
		c.UpstreamTimeouts.Add(1)
	case e.Side == Upstream && e.Kind != KindProtocol:
		c.UpstreamErrors.Add(1)
	}
}
