package h2

import (
	"crypto/tls"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/internal/park"
	"github.com/straitproxy/strait/internal/sockio"
	istream "github.com/straitproxy/strait/internal/stream"
)

// Server is what the HTTP/2 connections of one proxy share: their
// settings and limits, the Handler of their streams, the workers that run
// them, and the set of connections Shutdown and Close end.
type Server struct {
	Handler  istream.Handler
	Timeouts Timeouts
	Limits   Limits
	Logger   *slog.Logger
	Counters *Counters // nil: not counted
	// Parker, if set, returns the parker idle connections wait on
	// without a goroutine (HTTP/1's, park.Parker); nil: they wait in
	// their reads.
	Parker func() *park.Parker

	workers  park.Workers
	shutting atomic.Bool

	mu    sync.Mutex
	conns map[*conn]struct{}
}

// Timeouts are the waits of an HTTP/2 connection and its streams.
type Timeouts struct {
	Idle  time.Duration // a connection with no stream open; default 60 s
	Body  time.Duration // each wait for a piece of a request body; default 60 s
	Write time.Duration // each wait to write (flow control included); default 60 s
	// Settings is how long the client has to acknowledge strait's
	// SETTINGS; default 10 s.
	Settings time.Duration
	// Frame bounds how long a frame, once begun, may take to come whole
	// while no stream is open (HTTP/1's header timeout); default 10 s.
	// Otherwise half a frame would hold a connection, which cannot park
	// with it, for the idle timeout.
	Frame time.Duration
	// CalmHold is how long the connection of a flooding client is held,
	// unread, after GOAWAY with ENHANCE_YOUR_CALM, so that it does not
	// reconnect at once to flood again; default 1 s.
	CalmHold time.Duration
}

// Limits bound what one connection may hold or ask for. Zero values mean
// the defaults.
type Limits struct {
	MaxConcurrentStreams uint32 // default 100
	MaxHeaderListSize    uint32 // decoded size (RFC 9113 §6.5.2), default 64 KiB
	StreamWindow         uint32 // request body bytes buffered per stream, default 64 KiB
	ConnWindow           uint32 // and per connection, default 1 MiB
	// ResetBurst and ResetRate bound the streams a client may have reset
	// (by itself, or by strait for its errors) before they finished:
	// ResetBurst at once, then ResetRate a second. Past it, GOAWAY with
	// ENHANCE_YOUR_CALM. Defaults 200 and 100.
	ResetBurst, ResetRate int
	// FrameBurst and FrameRate bound the frames that cost strait work
	// but carry no request: PING, SETTINGS, PRIORITY, empty DATA,
	// HEADERS and CONTINUATION, and frames strait answers with a reset
	// (DATA on a closed stream, a WINDOW_UPDATE of 0). Defaults 1000 and
	// 500 a second.
	FrameBurst, FrameRate int
}

func (l *Limits) withDefaults() Limits {
	d := *l
	if d.MaxConcurrentStreams == 0 {
		d.MaxConcurrentStreams = 100
	}
	if d.MaxHeaderListSize == 0 {
		d.MaxHeaderListSize = 64 << 10
	}
	if d.StreamWindow == 0 {
		d.StreamWindow = 64 << 10
	}
	if d.ConnWindow == 0 {
		d.ConnWindow = 1 << 20
	}
	if d.ConnWindow < d.StreamWindow {
		d.ConnWindow = d.StreamWindow
	}
	if d.ResetBurst == 0 {
		d.ResetBurst = 200
	}
	if d.ResetRate == 0 {
		d.ResetRate = 100
	}
	if d.FrameBurst == 0 {
		d.FrameBurst = 1000
	}
	if d.FrameRate == 0 {
		d.FrameRate = 500
	}
	return d
}

// Counters count what HTTP/2 connections refused, for metrics.
type Counters struct {
	Conns           atomic.Int64 // HTTP/2 connections served
	Streams         atomic.Int64 // streams opened by clients
	ClientResets    atomic.Int64 // streams the client reset before their response was done
	RefusedStreams  atomic.Int64 // over MaxConcurrentStreams: REFUSED_STREAM
	MalformedStream atomic.Int64 // malformed requests: RST_STREAM PROTOCOL_ERROR
	ResetFloods     atomic.Int64 // GOAWAY ENHANCE_YOUR_CALM: too many resets
	FrameFloods     atomic.Int64 // GOAWAY ENHANCE_YOUR_CALM: too many control or empty frames
	HeaderTooLarge  atomic.Int64 // header lists over MaxHeaderListSize: 431
	ProtocolErrors  atomic.Int64 // connections ended with GOAWAY for a protocol error
}

// Conn is a connection handed to ServeConn.
type Conn struct {
	NC net.Conn
	// Read holds bytes already read from NC: the start of the client's
	// preface.
	Read          []byte
	Client, Local netip.AddrPort
	TLS           *tls.ConnectionState // nil for cleartext (h2c)
	// Under is the socket under NC when NC is TLS, for its reads that
	// take only what TLS holds already (sockio.Underlay.Held).
	Under *sockio.Underlay
	// Tracked, if set, is called once the connection counts among the
	// server's (Open), before it is served: its caller may stop counting
	// it then, and a shutdown never finds it in neither count.
	Tracked func()
	// Done is called once the connection is closed.
	Done func()
}

// ServeConn serves an HTTP/2 connection on the calling goroutine, which
// reads its frames, until it ends or parks (idle, held by Parker without a
// goroutine; another resumes it). cn.Done is called once it is closed.
func (srv *Server) ServeConn(cn Conn) {
	c := newConn(srv, cn)
	srv.mu.Lock()
	if srv.conns == nil {
		srv.conns = make(map[*conn]struct{})
	}
	srv.conns[c] = struct{}{}
	srv.mu.Unlock()
	if cn.Tracked != nil {
		cn.Tracked()
	}
	c.ctr.Conns.Add(1)
	c.serve()
}

// Shutdown begins a graceful shutdown of every connection (RFC 9113
// §6.8): GOAWAY with the last stream id 2^31-1 and a PING first, so that
// streams the client opened before it saw the GOAWAY are still served;
// once the PING is acknowledged (or drainWait has passed), a second
// GOAWAY with the real last stream id, after which new streams are
// refused. Streams open go on, and each connection closes once they are
// done. Each connection is told on a goroutine of its own: one whose
// client does not read holds up no other.
func (srv *Server) Shutdown() {
	srv.shutting.Store(true)
	srv.mu.Lock()
	for c := range srv.conns {
		go c.startDrain()
	}
	srv.mu.Unlock()
}

// Open returns how many HTTP/2 connections are open.
func (srv *Server) Open() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.conns)
}

// Close closes every connection at once.
func (srv *Server) Close() {
	srv.shutting.Store(true)
	srv.mu.Lock()
	for c := range srv.conns {
		// A past deadline first: tls.Conn.Close would wait to write its
		// close_notify.
		c.nc.SetDeadline(sockio.Past)
		c.nc.Close()
	}
	srv.mu.Unlock()
	srv.workers.Close()
}
