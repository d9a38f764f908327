package proxy

import (
	"crypto/tls"
	"log/slog"
	"net/netip"
	"time"

	"github.com/straitproxy/strait/internal/h2"

	"github.com/straitproxy/strait/internal/budget"
	"github.com/straitproxy/strait/internal/fdlimit"
	"github.com/straitproxy/strait/internal/http1"
)

// Default timeouts. Each is named for the side and step it bounds.
const (
	// DefaultHeaderTimeout bounds reading a request head once its first
	// byte has arrived: long enough for any real client on a slow link,
	// short enough that slowloris connections do not pile up.
	DefaultHeaderTimeout = 10 * time.Second
	// DefaultBodyTimeout bounds the wait for each read of a request body.
	DefaultBodyTimeout = 60 * time.Second
	// DefaultWriteTimeout bounds each write to the client: a client that
	// stops reading is cut off after it.
	DefaultWriteTimeout = 60 * time.Second
	// DefaultIdleTimeout bounds the wait for the next request on a
	// keep-alive connection (nginx's keepalive_timeout is 75 s).
	DefaultIdleTimeout = 75 * time.Second
	// DefaultConnectTimeout bounds connecting to a peer.
	DefaultConnectTimeout = 5 * time.Second
	// DefaultUpstreamWriteTimeout bounds each write to a peer.
	DefaultUpstreamWriteTimeout = 60 * time.Second
	// DefaultResponseHeaderTimeout bounds the wait from sending the request
	// to the response head (nginx's proxy_read_timeout is 60 s).
	DefaultResponseHeaderTimeout = 60 * time.Second
	// DefaultUpstreamReadTimeout bounds the wait for each read of a
	// response body. Streams (SSE, long polls) that are quiet for longer
	// must send keep-alive comments or raise it.
	DefaultUpstreamReadTimeout = 60 * time.Second
	// DefaultTunnelIdleTimeout closes an upgraded (WebSocket) tunnel that
	// carried nothing either way for this long.
	DefaultTunnelIdleTimeout = 5 * time.Minute
	// DefaultGracePeriod is how long strait's binary lets requests in
	// flight finish when it stops: the context it gives Server.Shutdown.
	DefaultGracePeriod = 30 * time.Second
	// DefaultDrainIdle is how long Server.Shutdown keeps idle keep-alive
	// connections open for one more request: a client may have sent it
	// before it could know of the shutdown, and it arrives within a
	// round trip. A second covers any link worth serving, and does not
	// hold up a reload whose clients are all idle for long.
	DefaultDrainIdle = 1 * time.Second
)

// Default limits.
const (
	// DefaultMaxRequestBody bounds a request body: 100 MiB, generous for
	// uploads (nginx's 1 MiB default breaks many) yet bounded. Larger
	// bodies get 413.
	DefaultMaxRequestBody = 100 << 20
	// DefaultMaxRequestsPerConn closes a keep-alive connection after this
	// many requests, so long-lived clients rebalance across instances.
	DefaultMaxRequestsPerConn = 10000
	// DefaultMaxConns bounds a listener's open client connections; past it
	// new connections get 503 and are closed. Where the file-descriptor
	// limit allows fewer (see maxConnsForFDs), the default is what it
	// allows.
	DefaultMaxConns = 100000
	// DefaultMaxAttempts is how many times a request may be sent upstream.
	DefaultMaxAttempts = 2
	// DefaultBufferMax is the largest request body read whole before an
	// upstream is chosen (nginx's client_body_buffer_size is 8-16 KiB in
	// memory, the rest on disk; strait keeps it in memory, bounded).
	DefaultBufferMax = 64 << 10
	// DefaultBufferBudget bounds the bytes of request bodies buffered at
	// once in the whole process: 64 MiB, a thousand bodies at
	// DefaultBufferMax.
	DefaultBufferBudget = 64 << 20
)

// Buffering says how request bodies are read before an upstream is
// chosen. A body read whole first costs no upstream connection while a
// slow client sends it, and can be sent again on a retry.
type Buffering struct {
	// Max is the largest body read whole first; a larger one streams
	// upstream as it comes (a chunked body past Max streams from there).
	// 0 means DefaultBufferMax; negative, no buffering.
	Max int64
	// Budget bounds the bytes buffered at once; give every Server the
	// same. nil: one of DefaultBufferBudget for this Server.
	Budget *Budget
	// RefuseOverBudget answers a body that does not fit the budget with
	// 503; by default it streams instead, unbuffered.
	RefuseOverBudget bool
}

// Budget is a number of bytes shared by every request of a process.
type Budget = budget.Budget

// NewBudget returns a budget of limit bytes.
func NewBudget(limit int64) *Budget { return budget.New(limit) }

// Timeouts name every wait. A zero field means its default; a negative one
// means no limit (UpstreamTotal has no limit by default).
type Timeouts struct {
	Header         time.Duration // downstream: reading a request head after its first byte
	Body           time.Duration // downstream: each read of a request body
	Write          time.Duration // downstream: each write of a response
	Idle           time.Duration // downstream: between requests on a keep-alive connection
	Connect        time.Duration // upstream: connecting
	UpstreamWrite  time.Duration // upstream: each write of a request
	ResponseHeader time.Duration // upstream: from request sent to response head
	UpstreamRead   time.Duration // upstream: each read of a response body
	UpstreamTotal  time.Duration // upstream: the whole exchange; default none
	TunnelIdle     time.Duration // an upgraded tunnel with no traffic either way
	Handshake      time.Duration // downstream: a TLS handshake; default 10 s
	// DrainIdle is how long Shutdown lets a keep-alive connection idle
	// at shutdown carry one more request (answered with Connection:
	// close) before it closes it; default DefaultDrainIdle. Negative:
	// idle connections close at once.
	DrainIdle time.Duration
}

// Limits bound what one connection or request may use. Zero means the
// default; a negative value means no limit where that makes sense
// (MaxRequestBody, MaxRequestsPerConn).
type Limits struct {
	Head               http1.Limits // request line, head size and field count
	UpstreamHead       http1.Limits // the same for responses from upstreams
	MaxRequestBody     int64        // bytes
	MaxRequestsPerConn int
	MaxConns           int // per listener
	// MaxConnsPerClient bounds the connections one client address may
	// hold open (at every Server sharing Options.ClientConns); past it a
	// new one gets 503. 0: no limit.
	MaxConnsPerClient int
	MaxAttempts       int // upstream attempts per request, retries included
}

// Forwarding says how strait tells the upstream about the client.
type Forwarding struct {
	// TrustedProxies are the client addresses whose X-Forwarded-For,
	// X-Forwarded-Proto, X-Forwarded-Host and Forwarded fields are kept
	// (and extended); from anyone else they are replaced.
	TrustedProxies []netip.Prefix
	// Forwarded adds an RFC 7239 Forwarded field besides the X-Forwarded-*
	// ones.
	Forwarded bool
}

// Options configure a Server. The zero value is ready to use.
type Options struct {
	Timeouts   Timeouts
	Limits     Limits
	Forwarding Forwarding
	// Logger receives errors and, if AccessLog is set and AccessLogger is
	// nil, one line per request. nil means slog.Default().
	Logger    *slog.Logger
	AccessLog bool
	// AccessLogger receives the access log's lines when AccessLog is set;
	// nil means Logger.
	AccessLogger *slog.Logger
	// TLS, if set, makes the server's connections TLS (its certificates,
	// versions and ALPN); a client that sends plain HTTP gets 400.
	TLS *tls.Config
	// ProxyProtocol, if set, takes a PROXY protocol header (v1 or v2) at
	// the start of each connection, from the proxies it trusts only: the
	// client's address is the header's. A connection from elsewhere, or
	// without a header, is closed.
	ProxyProtocol *ProxyProtocol
	// Buffering says how request bodies are buffered.
	Buffering Buffering
	// HTTP2 says how clients may speak HTTP/2: over TLS when TLS's
	// NextProtos offers "h2", and in cleartext with prior knowledge (the
	// client preface) unless HTTP2.Off.
	HTTP2 HTTP2
	// Upgrades are the protocols an Upgrade request may switch to, compared
	// without regard to case (Envoy's upgrade_configs); nil means
	// {"websocket"}. A request asking for another protocol goes upstream
	// as a plain request, without its Upgrade field.
	Upgrades []string
	// Pool holds idle upstream connections; nil gives the Server its own.
	// Give every Server in a process the same one.
	Pool *Pool
	// ClientConns counts connections by client for
	// Limits.MaxConnsPerClient; nil gives the Server its own. Give every
	// Server in a process the same one.
	ClientConns *ClientConns
}

func (o Options) withDefaults() Options {
	t := &o.Timeouts
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&t.Header, DefaultHeaderTimeout)
	def(&t.Body, DefaultBodyTimeout)
	def(&t.Write, DefaultWriteTimeout)
	def(&t.Idle, DefaultIdleTimeout)
	def(&t.Connect, DefaultConnectTimeout)
	def(&t.UpstreamWrite, DefaultUpstreamWriteTimeout)
	def(&t.ResponseHeader, DefaultResponseHeaderTimeout)
	def(&t.UpstreamRead, DefaultUpstreamReadTimeout)
	def(&t.TunnelIdle, DefaultTunnelIdleTimeout)
	def(&t.DrainIdle, DefaultDrainIdle)
	l := &o.Limits
	if l.MaxRequestBody == 0 {
		l.MaxRequestBody = DefaultMaxRequestBody
	}
	if l.MaxRequestsPerConn == 0 {
		l.MaxRequestsPerConn = DefaultMaxRequestsPerConn
	}
	if l.MaxConns <= 0 {
		l.MaxConns = DefaultMaxConns
		if lim := maxConnsForFDs(); lim > 0 && lim < DefaultMaxConns {
			l.MaxConns = int(lim)
		}
	}
	if l.MaxAttempts <= 0 {
		l.MaxAttempts = DefaultMaxAttempts
	}
	if o.Buffering.Max == 0 {
		o.Buffering.Max = DefaultBufferMax
	}
	if o.Buffering.Budget == nil {
		o.Buffering.Budget = NewBudget(DefaultBufferBudget)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.AccessLogger == nil {
		o.AccessLogger = o.Logger
	}
	if o.Upgrades == nil {
		o.Upgrades = []string{"websocket"}
	}
	return o
}

// maxConnsForFDs is how many client connections fit the process's
// file-descriptor limit: three quarters of it. The last quarter is for
// upstream connections (the pool keeps at most an eighth of the limit
// idle; a request in flight holds one more) and the process's own
// descriptors. An idle keep-alive client, the common case at the edge,
// holds one descriptor; were most clients in flight at once, dials could
// still run out, and get 503 (Counters.ConnsOverFDLimit). 0 if the limit
// is not known.
func maxConnsForFDs() int64 {
	n := fdlimit.Limit()
	if n <= 0 {
		return 0
	}
	return max(n-n/4, 1)
}

// HTTP2 is how a Server serves HTTP/2 clients.
type HTTP2 struct {
	// Off serves HTTP/1.1 only: the preface gets 505.
	Off bool
	// Only serves HTTP/2 only: a cleartext client must begin with the
	// preface, and TLS offers "h2" alone (a gRPC port, say).
	Only   bool
	Limits h2.Limits
}

// ProxyProtocol says who may send a PROXY protocol header, and how long
// one may take.
type ProxyProtocol struct {
	// Trusted are the proxies (load balancers) that send headers.
	Trusted []netip.Prefix
	// Timeout bounds the wait for a header; 0: 5s.
	Timeout time.Duration
}
