// Package tcpproxy relays TCP connections to a cluster's endpoints: the
// cluster picks the endpoint (its balancer, health checks, outlier
// ejection and circuit breakers, as for HTTP), a failed connect is retried
// on another endpoint, and bulk bytes move with splice(2), kernel to
// kernel (a burst's first 16 KiB by read and write: fewer system calls
// for a small message).
//
// Two relays do the same work. A plain connection (no PROXY header to
// take or send, no ClientHello to route by) is accepted, connected and
// relayed by an event loop, one per CPU, over an epoll instance of its
// own (loop.go): no goroutine per connection, and no runtime poller. The
// others, and those a loop hands on (a full cluster's wait, a failed
// connect's retries), go through a goroutine per connection and the
// runtime's poller (relay.go), which the setup's blocking steps need.
//
// The relays are written here rather than left to io.Copy, whose splice
// (TCPConn.ReadFrom) takes a pipe, two descriptors, before it waits for
// data: 10,000 idle relays would hold 40,000 of them. A relay here takes
// a pipe from a shared few only while bytes are on their way. Each
// direction ends on its own: a FIN is passed on as a FIN (half-close) and
// the other direction keeps flowing; a reset is passed on as a reset.
package tcpproxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/internal/fdlimit"
	"github.com/straitproxy/strait/internal/proxyheader"
	"github.com/straitproxy/strait/internal/sockio"
	"github.com/straitproxy/strait/proxy"
)

// Defaults of Options' zero values.
const (
	DefaultConnectTimeout = 5 * time.Second
	DefaultIdleTimeout    = time.Hour
	DefaultHalfClosed     = time.Minute
	DefaultMaxConns       = 100000
	DefaultHelloTimeout   = 5 * time.Second
)

// Options configure a Server.
type Options struct {
	// Name is the listener's, for logs.
	Name string
	// Cluster takes the connections: with Routes, those no route takes
	// (nil: they are refused).
	Cluster *cluster.Cluster
	// Routes, if any, send connections by their TLS ClientHello, which
	// is peeked at, not taken (TLS passthrough): the first that matches.
	Routes []Route
	// HelloTimeout bounds the wait for a whole ClientHello, with Routes.
	HelloTimeout time.Duration
	// ProxyProtocol, if set, takes a PROXY header from the proxies it
	// trusts, and closes other connections; the client is the header's.
	ProxyProtocol *proxy.ProxyProtocol
	// ConnectTimeout bounds each connect to an endpoint.
	ConnectTimeout time.Duration
	// IdleTimeout ends a relay when no byte moved either way for that
	// long, or when a side took none of the bytes waiting for it; -1:
	// never.
	IdleTimeout time.Duration
	// HalfClosedTimeout replaces IdleTimeout, if shorter, once a side has
	// sent its FIN; -1: never.
	HalfClosedTimeout time.Duration
	// MaxConns is how many relays the listener holds at once; a client
	// past it is closed at once.
	MaxConns int
	// Logger gets errors; AccessLog one line per connection (nil: none).
	Logger    *slog.Logger
	AccessLog *slog.Logger
}

// Stats are a Server's counters.
type Stats struct {
	Accepted   atomic.Int64 // connections accepted
	OverLimit  atomic.Int64 // of those, closed at once over MaxConns
	NoUpstream atomic.Int64 // closed for want of an endpoint that connects
	BadHello   atomic.Int64 // closed with Routes: no whole ClientHello in time, or a malformed one
	BadProxy   atomic.Int64 // closed with ProxyProtocol: not from a trusted proxy, or no valid header
	NoRoute    atomic.Int64 // closed with Routes: no route took it, and no Cluster
	Active     atomic.Int64 // relays open now
	BytesIn    atomic.Int64 // client to upstream
	BytesOut   atomic.Int64 // upstream to client
}

// Server relays the connections of the listeners it serves.
type Server struct {
	o     Options
	pipes *pipes
	Stats Stats

	mu        sync.Mutex
	relays    map[*relay]struct{}
	setup     map[conn]struct{}          // clients not yet relayed: being read or connected
	listeners map[net.Listener]*acceptor // nil: ln's own Accept
	loops     []*loop                    // Serve's event loops, running
	closing   bool                       // Shutdown began: no more accepting
	killed    bool                       // Shutdown's time is up: no more relaying
	wg        sync.WaitGroup             // relays being set up or running
}

// New returns a Server with o.
func New(o Options) *Server {
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = DefaultConnectTimeout
	}
	if o.IdleTimeout == 0 {
		o.IdleTimeout = DefaultIdleTimeout
	} else if o.IdleTimeout < 0 {
		o.IdleTimeout = 0
	}
	if o.HalfClosedTimeout == 0 {
		o.HalfClosedTimeout = DefaultHalfClosed
	} else if o.HalfClosedTimeout < 0 {
		o.HalfClosedTimeout = 0
	}
	if o.MaxConns <= 0 {
		o.MaxConns = DefaultMaxConns
	}
	if o.HelloTimeout <= 0 {
		o.HelloTimeout = DefaultHelloTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Server{o: o, pipes: &pipes{max: 64}, relays: make(map[*relay]struct{}), setup: make(map[conn]struct{}), listeners: make(map[net.Listener]*acceptor)}
}

// Serve accepts connections on ln and relays them, until Shutdown; then
// it returns proxy.ErrServerClosed. A TCP listener's socket is accepted
// on through a duplicate descriptor of Serve's own, so closing ln alone
// does not end Serve: Shutdown does.
func (s *Server) Serve(ln net.Listener) error {
	if s.o.ProxyProtocol == nil && len(s.o.Routes) == 0 {
		if sc, ok := ln.(syscall.Conn); ok && s.serveLoops(sc) {
			return proxy.ErrServerClosed
		}
	}
	acc := newAcceptor(ln)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		if acc != nil {
			acc.close()
		}
		return proxy.ErrServerClosed
	}
	s.listeners[ln] = acc
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		if acc != nil {
			acc.close()
		}
	}()
	var backoff time.Duration
	for {
		c, err := accept(ln, acc)
		if err != nil {
			if s.shuttingDown() {
				return proxy.ErrServerClosed
			}
			var ne net.Error
			if fdlimit.Exhausted(err) || errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.o.Logger.Warn("accept failed; retrying", "listener", s.o.Name, "err", err, "retry_in", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		if c == nil {
			continue // not TCP
		}
		s.Stats.Accepted.Add(1)
		if s.Stats.Active.Add(1) > int64(s.o.MaxConns) {
			s.Stats.Active.Add(-1)
			s.Stats.OverLimit.Add(1)
			c.SetLinger(0)
			c.Close()
			continue
		}
		s.mu.Lock()
		if s.closing {
			// Accepted as Shutdown began: Shutdown waits for none but
			// those counted before.
			s.mu.Unlock()
			s.Stats.Active.Add(-1)
			c.Close()
			continue
		}
		s.wg.Add(1)
		s.setup[c] = struct{}{}
		s.mu.Unlock()
		go s.serve(c)
	}
}

// accept takes ln's next connection, through acc if ln has one; nil if
// it is no TCP connection.
func accept(ln net.Listener, acc *acceptor) (conn, error) {
	if acc != nil {
		sk, err := acc.next()
		if err != nil {
			return nil, err
		}
		return sk, nil
	}
	nc, err := ln.Accept()
	if err != nil {
		return nil, err
	}
	c, ok := nc.(*net.TCPConn)
	if !ok {
		nc.Close()
		return nil, nil
	}
	return c, nil
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// serve connects c to an endpoint and relays.
func (s *Server) serve(c conn) {
	defer s.wg.Done()
	defer s.Stats.Active.Add(-1)
	start := time.Now()
	sess := &proxy.Session{ClientAddr: remoteAddr(c)}
	if pp := s.o.ProxyProtocol; pp != nil {
		src, dst, err := proxyheader.Accept(c, pp.Trusted, pp.Timeout)
		if err != nil {
			s.setupDone(c)
			s.refuse(c, &s.Stats.BadProxy, sess, start, "", &proxy.Error{Side: proxy.Downstream, Kind: proxy.KindRequestRejected, Err: err, Where: "proxy_protocol"})
			return
		}
		sess.ClientAddr, sess.LocalAddr = src, dst
	}
	cl, sni := s.o.Cluster, ""
	if len(s.o.Routes) > 0 {
		info, err := peekHello(c, s.o.HelloTimeout)
		if err != nil {
			s.setupDone(c)
			s.refuse(c, &s.Stats.BadHello, sess, start, "", &proxy.Error{Side: proxy.Downstream, Kind: proxy.KindRequestRejected, Err: err, Where: "reading the TLS ClientHello"})
			return
		}
		sni = info.ServerName
		if i := slices.IndexFunc(s.o.Routes, func(r Route) bool { return r.matches(info.ServerName, info.Protocols) }); i >= 0 {
			cl = s.o.Routes[i].Cluster
		}
		if cl == nil {
			s.setupDone(c)
			s.refuse(c, &s.Stats.NoRoute, sess, start, sni, &proxy.Error{Side: proxy.Downstream, Kind: proxy.KindNoPeer, Where: "no SNI route takes the server name"})
			return
		}
	}
	var call cluster.Call
	s.finish(c, cl, sess, &call, start, sni, resume{})
}

// resume is where a connection's setup goes on from, handed over by an
// event loop: the endpoint picked, or the connect that failed; the zero
// value is from the start.
type resume struct {
	peer   *proxy.Peer
	addr   string       // of the connect that failed
	failed *proxy.Error // to count, and retry if the cluster allows
}

// finish connects c, which is among s.setup, to an endpoint of cl and
// relays.
func (s *Server) finish(c conn, cl *cluster.Cluster, sess *proxy.Session, call *cluster.Call, start time.Time, sni string, from resume) {
	relayed := false // else c is still among s.setup at the end
	defer func() {
		if !relayed {
			s.setupDone(c)
		}
	}()
	up, peer, perr := s.connect(cl, sess, call, from)
	if up == nil {
		s.Stats.NoUpstream.Add(1)
		c.Close()
		cl.Done(sess, call, perr)
		s.o.Logger.Warn("tcp: no endpoint could be connected; the client is closed", "listener", s.o.Name,
			"client", sess.ClientAddr, "attempts", sess.Stats.Attempts, "err", perr)
		s.log(sess, start, nil, peer, sni, perr)
		return
	}
	if v := cl.ProxyProtocol(); v != 0 {
		if !sess.LocalAddr.IsValid() {
			sess.LocalAddr = localAddr(c)
		}
		if err := proxyheader.Write(up, v, sess.ClientAddr, sess.LocalAddr); err != nil {
			e := &proxy.Error{Side: proxy.Upstream, Kind: proxy.KindClosed, Err: err, Where: "sending the PROXY header to " + peer}
			c.Close()
			up.Close()
			cl.Done(sess, call, e)
			s.log(sess, start, nil, peer, sni, e)
			return
		}
	}
	r, err := newRelay(s.pipes, c, up, s.o.IdleTimeout, s.o.HalfClosedTimeout, &s.Stats.BytesIn, &s.Stats.BytesOut)
	if err != nil {
		c.Close()
		up.Close()
		cl.Done(sess, call, nil)
		return
	}
	s.mu.Lock()
	killed := s.killed
	s.relays[r] = struct{}{}
	delete(s.setup, c)
	s.mu.Unlock()
	relayed = true
	if killed {
		r.stop(closedDrain, false)
	}
	r.run()
	s.mu.Lock()
	delete(s.relays, r)
	s.mu.Unlock()
	cl.Done(sess, call, nil)
	s.log(sess, start, &outcome{in: r.bytes[0].Load(), out: r.bytes[1].Load(), first: r.firstClosed()}, peer, sni, nil)
}

// outcome is what a relay moved, and how it began to end, for its log.
type outcome struct {
	in, out int64
	first   string
}

// total is the server's count of bytes moved in direction dir.
func (s *Server) total(dir int) *atomic.Int64 {
	if dir == 0 {
		return &s.Stats.BytesIn
	}
	return &s.Stats.BytesOut
}

// remoteAddr and localAddr are c's addresses.
func remoteAddr(c conn) netip.AddrPort {
	if sk, ok := c.(*sock); ok {
		return sk.remote
	}
	return sockio.AddrPort(c.RemoteAddr())
}

func localAddr(c conn) netip.AddrPort {
	if sk, ok := c.(*sock); ok {
		return sk.localAddr()
	}
	return sockio.AddrPort(c.LocalAddr())
}

// setupDone forgets c as a connection being set up, if it still was.
func (s *Server) setupDone(c conn) {
	s.mu.Lock()
	delete(s.setup, c)
	s.mu.Unlock()
}

// refuse resets c, which is not relayed for e, counted in n.
func (s *Server) refuse(c conn, n *atomic.Int64, sess *proxy.Session, start time.Time, sni string, e *proxy.Error) {
	n.Add(1) // before the client can see the reset
	c.SetLinger(0)
	c.Close()
	s.log(sess, start, nil, "", sni, e)
}

// connect dials endpoints the cluster picks until one answers or no try
// is left, going on from from.
func (s *Server) connect(cl *cluster.Cluster, sess *proxy.Session, call *cluster.Call, from resume) (conn, string, *proxy.Error) {
	// No keep-alive probes (HAProxy's default too): three fewer system
	// calls a connection, and an upstream that vanished is found by the
	// idle timeout.
	d := net.Dialer{Timeout: s.o.ConnectTimeout, KeepAlive: -1}
	peer, addr, failed := from.peer, from.addr, from.failed
	for {
		if failed != nil {
			if failed.Kind == proxy.KindLimit {
				// strait's want, not the endpoint's failure: nothing is
				// counted against it, and no other is tried.
				return nil, addr, failed
			}
			if failed = cl.FailToConnect(sess, call, failed); !failed.Retry {
				return nil, addr, failed
			}
			failed = nil
		}
		if peer == nil {
			sess.Stats.Attempts++
			p, err := cl.Peer(sess, call)
			if err != nil {
				var pe *proxy.Error
				if !errors.As(err, &pe) {
					pe = &proxy.Error{Side: proxy.Internal, Kind: proxy.KindNoPeer, Err: err}
				}
				return nil, "", pe
			}
			peer = p
		}
		addr = peer.Addr
		peer = nil
		up, err := s.dial(&d, addr)
		if err == nil {
			return up, addr, nil
		}
		failed = connectError(addr, err)
	}
}

// connectError is the error of a connect to addr that failed with err.
func connectError(addr string, err error) *proxy.Error {
	if fdlimit.Exhausted(err) {
		return &proxy.Error{Side: proxy.Internal, Kind: proxy.KindLimit, Err: err, Where: "out of file descriptors, connecting to " + addr}
	}
	return &proxy.Error{Side: proxy.Upstream, Kind: proxy.KindConnect, Err: err, Where: "connecting to " + addr}
}

// dial connects to addr: by connectTCP if it is an address, else (a name,
// or an address with a zone, which net maps to its interface) by d.
func (s *Server) dial(d *net.Dialer, addr string) (conn, error) {
	if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Zone() == "" {
		sk, err := connectTCP(ap, s.o.ConnectTimeout)
		if err != nil {
			return nil, err
		}
		return sk, nil
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return nc.(*net.TCPConn), nil
}

// log writes the connection's access log line.
func (s *Server) log(sess *proxy.Session, start time.Time, r *outcome, upstream, sni string, e *proxy.Error) {
	if s.o.AccessLog == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("listener", s.o.Name),
		slog.String("client", sess.ClientAddr.String()),
		slog.String("upstream", upstream),
		slog.Int("attempts", sess.Stats.Attempts),
		slog.Int64("duration_ms", time.Since(start).Milliseconds()),
	}
	if len(s.o.Routes) > 0 {
		attrs = append(attrs, slog.String("sni", sni))
	}
	if r != nil {
		attrs = append(attrs, slog.Int64("bytes_in", r.in), slog.Int64("bytes_out", r.out),
			slog.String("closed_first", r.first))
	}
	if e != nil {
		attrs = append(attrs, slog.String("error", e.Error()))
	}
	s.o.AccessLog.LogAttrs(context.Background(), slog.LevelInfo, "tcp", attrs...)
}

// Shutdown stops accepting, lets the relays run until ctx is done, and
// then closes those still open. It returns ctx's error if it had to.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	for ln, acc := range s.listeners {
		ln.Close()
		if acc != nil {
			acc.close()
		}
	}
	for _, l := range s.loops {
		l.notify()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		s.killed = true
		for _, l := range s.loops {
			l.notify()
		}
		for r := range s.relays {
			r.stop(closedDrain, false)
		}
		for c := range s.setup {
			c.Close() // its hello, header or connect fails now
		}
		s.mu.Unlock()
		<-done
	}
	s.pipes.closeAll()
	return err
}
