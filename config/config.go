// Package config is strait's configuration file: its schema, its defaults,
// and validation whose every message names the file, line and key. An
// invalid file is refused whole; nothing of it is used.
package config

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is one configuration file.
type Config struct {
	// Listeners accept client connections; each has its own routes.
	Listeners []Listener `yaml:"listeners"`
	// Clusters are named groups of upstream endpoints.
	Clusters []Cluster `yaml:"clusters"`
	// Timeouts apply to every listener.
	Timeouts Timeouts `yaml:"timeouts"`
	// Limits apply to every listener.
	Limits Limits `yaml:"limits"`
	// Pool bounds the process-wide upstream connection pool.
	Pool Pool `yaml:"upstream_pool"`
	// RequestBuffering says how request bodies are read before an
	// upstream is chosen.
	RequestBuffering RequestBuffering `yaml:"request_buffering"`
	// Forwarding controls X-Forwarded-* and Forwarded.
	Forwarding Forwarding `yaml:"forwarding"`
	// AccessLog is where one line per request goes (default none).
	AccessLog AccessLog `yaml:"access_log"`
	// LogLevel is the least level strait's own log writes: debug (which
	// adds connections opening and closing), info (the default), warn or
	// error.
	LogLevel string `yaml:"log_level"`
	// AccessLogFormat is json (the default) or combined (the Combined
	// Log Format).
	AccessLogFormat string `yaml:"access_log_format"`
	// AccessLogFields are the fields a JSON access log keeps (default
	// all).
	AccessLogFields []string `yaml:"access_log_fields"`
	// Tracing exports OpenTelemetry traces (off by default).
	Tracing Tracing `yaml:"tracing"`
	// Admin is the admin listener: metrics, health, clusters.
	Admin Admin `yaml:"admin"`
	// DemoOrigins are tiny HTTP servers the binary starts itself, each
	// answering with its name: for trying strait on a fresh machine.
	DemoOrigins []DemoOrigin `yaml:"demo_origins"`
}

// Admin is the admin listener: /metrics, /live, /ready, /config,
// /clusters and endpoint drains (docs/config.md).
type Admin struct {
	// Address is host:port, default DefaultAdminAddress; "off" for none.
	Address string `yaml:"address"`
	// Hosts are Host values accepted besides loopback addresses and
	// localhost (a browser's page can reach loopback; its Host is its own).
	Hosts []string `yaml:"hosts"`
	// TokenFile holds the bearer token every request must carry; required
	// when Address is not loopback.
	TokenFile string `yaml:"token_file"`
	// Pprof serves /debug/pprof/ (off by default).
	Pprof bool `yaml:"pprof"`
}

// Tracing is OpenTelemetry tracing: a server span per request, a client
// span per upstream try, exported over OTLP.
type Tracing struct {
	// Exporter is otlp_grpc or otlp_http; empty (the default) is off.
	Exporter string `yaml:"exporter"`
	// Endpoint is the collector's host:port; default 127.0.0.1:4317 for
	// gRPC, 127.0.0.1:4318 for HTTP (plain text: TLS comes later).
	Endpoint string `yaml:"endpoint"`
	// Sampling is the share of traces strait starts that are sampled;
	// default 1.
	Sampling Ratio `yaml:"sampling"`
	// TrustedParents are CIDRs of clients whose traceparent decides
	// sampling; from anyone else a traceparent is continued, but sampled
	// only as Sampling says.
	TrustedParents []string `yaml:"trusted_parents"`
	// ServiceName is the service.name resource attribute; default strait.
	ServiceName string `yaml:"service_name"`
}

// TracingExporters are the values of Tracing.Exporter.
var TracingExporters = []string{"otlp_grpc", "otlp_http"}

// Ratio is a number from 0 to 1; Set tells 0 from left out.
type Ratio struct {
	Value float64
	Set   bool
}

func (r *Ratio) set(n *yaml.Node) bool {
	var v float64
	if (n.ShortTag() != "!!float" && n.ShortTag() != "!!int") || n.Decode(&v) != nil || v < 0 || v > 1 {
		return false
	}
	*r = Ratio{v, true}
	return true
}

func (*Ratio) want() string { return "a number from 0 to 1, like 0.05" }

// UnmarshalYAML lets a Ratio be decoded by the YAML library too.
func (r *Ratio) UnmarshalYAML(n *yaml.Node) error { return unmarshal(r, n) }

// MarshalYAML writes a Ratio as a number, or nothing when left out.
func (r Ratio) MarshalYAML() (any, error) {
	if !r.Set {
		return nil, nil
	}
	return r.Value, nil
}

// DefaultAdminAddress is where the admin listener goes unless the config
// says otherwise.
const DefaultAdminAddress = "127.0.0.1:9901"

// AdminOff is Admin.Address for no admin listener.
const AdminOff = "off"

// Listener is an address strait accepts HTTP/1.1 connections on.
type Listener struct {
	Name    string `yaml:"name"`    // for logs; default: the address
	Address string `yaml:"address"` // host:port, e.g. 127.0.0.1:8080 or [::]:80
	// Kind is http (the default: HTTP/1.1, and HTTP/2 by ALPN or prior
	// knowledge), tcp (connections relayed to Cluster, bytes as they
	// are: docs/tcp.md) or udp (datagrams relayed to Cluster by flows:
	// docs/udp.md). A udp listener may share its address with a tcp or
	// http one.
	Kind string `yaml:"kind"`
	// Cluster is where a tcp listener relays connections (with
	// SNIRoutes, those no route takes; left out: they are refused), and
	// a udp listener datagrams.
	Cluster string `yaml:"cluster"`
	// SNIRoutes send a tcp listener's TLS connections by their
	// ClientHello's server name and ALPN, unterminated (TLS
	// passthrough); the first that matches wins.
	SNIRoutes []SNIRoute `yaml:"sni_routes"`
	// TCP are a tcp listener's timeouts and limits.
	TCP TCPListener `yaml:"tcp"`
	// UDP are a udp listener's.
	UDP UDPListener `yaml:"udp"`
	// ProxyProtocol, if set, takes a PROXY protocol header (v1 or v2)
	// at the start of each connection from the proxies it trusts: the
	// client is the one the header names. Connections from elsewhere, or
	// without a valid header, are closed.
	ProxyProtocol *ListenerProxyProtocol `yaml:"proxy_protocol"`
	Routes        []Route                `yaml:"routes"` // tried in order; the first match wins
	// Upgrades are the protocols a request may switch the connection to
	// with Upgrade, compared without regard to case. nil (left out) means
	// [websocket]; an empty list allows none.
	Upgrades []string `yaml:"upgrades"`
	// Paths says how request paths are normalised before routes see them.
	Paths Paths `yaml:"paths"`
	// TLS, if set, makes the listener serve HTTPS.
	TLS *ListenerTLS `yaml:"tls"`
	// HTTP2 is on (the default: HTTP/2 by ALPN over TLS, and with prior
	// knowledge in cleartext), off (HTTP/1.1 only) or only (HTTP/2 only).
	HTTP2 string `yaml:"http2"`
}

// ListenerTLS is a listener's TLS termination (docs/config.md).
type ListenerTLS struct {
	// Certificates are chosen by SNI among the DNS names each is for;
	// the first is the default.
	Certificates     []CertPair `yaml:"certificates"`
	MinVersion       string     `yaml:"min_version"`       // 1.2 (default) or 1.3
	HandshakeTimeout Duration   `yaml:"handshake_timeout"` // default 10s
	TicketRotation   Duration   `yaml:"ticket_rotation"`   // default 1h
	// SessionTickets is on (the default: clients resume sessions with
	// tickets) or off (every handshake is a full one).
	SessionTickets string `yaml:"session_tickets"`
	// ClientAuth asks clients for certificates: none (the default),
	// optional (verified if given) or required.
	ClientAuth string `yaml:"client_auth"`
	// ClientCA is the PEM bundle client certificates are verified
	// against; required with client_auth.
	ClientCA string `yaml:"client_ca"`
	// ClientCertHeader, if set, names a field that carries a verified
	// client certificate's subject and names upstream; strait removes
	// it from every request first.
	ClientCertHeader string `yaml:"client_cert_header"`
	// ACME gets and renews certificates for the names it lists
	// (docs/acme.md); with it, certificates may be left out.
	ACME *ACME `yaml:"acme"`
}

// ListenerProxyProtocol says who may send PROXY protocol headers.
type ListenerProxyProtocol struct {
	// Trusted are the load balancers' addresses or CIDRs; required.
	Trusted []string `yaml:"trusted"`
	// Timeout bounds the wait for a header; default 5s.
	Timeout Duration `yaml:"timeout"`
}

// SNIRoute is a TLS passthrough route: connections whose ClientHello
// names one of Names (exact, or *.example.com for one label more) and,
// if ALPN is set, offers one of its protocols go to Cluster.
type SNIRoute struct {
	Names   []string `yaml:"names"`
	ALPN    []string `yaml:"alpn"`
	Cluster string   `yaml:"cluster"`
}

// TCPListener are a tcp listener's timeouts and limits.
type TCPListener struct {
	// IdleTimeout ends a relay when no byte moved either way for that
	// long, or when one side took none of the bytes waiting for it;
	// default 1h.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// HalfClosedTimeout replaces it, if shorter, once one side has sent
	// its FIN (a client that connects and closes must not hold a relay
	// to a server that waits for it to speak); default 1m.
	HalfClosedTimeout Duration `yaml:"half_closed_timeout"`
	// DrainTimeout is how long relays may go on once the listener stops
	// accepting (a reload that replaces it, an upgrade, a stop) before
	// they are closed; default timeouts.grace.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// MaxConns bounds the relays open at once; past it a client is
	// closed at once. Default limits.max_conns.
	MaxConns int `yaml:"max_conns"`
	// HelloTimeout bounds the wait for a whole ClientHello, with
	// sni_routes; default 5s.
	HelloTimeout Duration `yaml:"hello_timeout"`
}

// UDPListener are a udp listener's timeouts and limits (docs/udp.md).
type UDPListener struct {
	// IdleTimeout ends a flow (a client address and its upstream
	// socket) that moved no datagram either way for that long; default
	// 1m.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxFlows bounds the flows open at once; default 10000. A full
	// table makes room by ending a flow its endpoint never answered, or
	// drops the new flow's datagram.
	MaxFlows int `yaml:"max_flows"`
	// NewFlowsPerPrefix is how many flows a second the clients of one
	// /24 (IPv4) or /56 (IPv6) may open; default 1000; -1: no limit.
	NewFlowsPerPrefix int `yaml:"new_flows_per_prefix"`
	// BatchDelay, when datagrams come often, is how long strait waits
	// after moving a few before it looks again, so that more gather and
	// move together: less CPU per datagram, at most that much latency
	// added. Default 50us; 0: none.
	BatchDelay *Duration `yaml:"batch_delay"`
	// DrainTimeout is how long flows may still take replies once the
	// listener stops reading (a reload that changes it, an upgrade, a
	// stop); default timeouts.grace.
	DrainTimeout Duration `yaml:"drain_timeout"`
	// Sockets is how many sockets share the address (SO_REUSEPORT), each
	// read by a loop of its own; default the CPUs strait may use, at
	// most 8.
	Sockets int `yaml:"sockets"`
	// FlowRate, if set, is how many datagrams a second a flow may send
	// each way, in bursts of up to FlowBurst (default a tenth of the
	// rate, at least 16); the rest are dropped and counted, in user
	// space and in the XDP program alike. Default none.
	FlowRate  int `yaml:"flow_rate"`
	FlowBurst int `yaml:"flow_burst"`
	// XDP forwards the datagrams of answered flows inside the kernel
	// (docs/udp.md); default off.
	XDP *UDPXDP `yaml:"xdp"`
}

// UDPXDP is where a udp listener's XDP program attaches.
type UDPXDP struct {
	// Interfaces are the client-facing and the upstream-facing ones
	// (replies arrive on the second), by name.
	Interfaces []string `yaml:"interfaces"`
	// Mode is native (in the driver; the default) or generic (any
	// interface, slower).
	Mode string `yaml:"mode"`
}

// ACME is a listener's automatic certificates.
type ACME struct {
	// Directory is the CA's ACME directory URL; default Let's Encrypt's.
	Directory string `yaml:"directory"`
	// Email is the account's contact (the CA's expiry notices).
	Email string `yaml:"email"`
	// Names are the DNS names certificates are ordered for: those only,
	// whatever SNI a client sends.
	Names []string `yaml:"names"`
	// Storage is the folder that keeps the account, keys and
	// certificates (0700, files 0600), shared by old and new processes.
	Storage string `yaml:"storage"`
	// CARoot is a PEM bundle the directory's own TLS is verified against
	// (a private CA's; default the system's roots).
	CARoot string `yaml:"ca_root"`
	// RenewAt is the part of a certificate's lifetime after which it is
	// renewed; default 2/3.
	RenewAt Ratio `yaml:"renew_at"`
	// HTTPPort and TLSPort are where the CA validates challenges
	// (HTTP-01 and TLS-ALPN-01); default 80 and 443. strait answers them
	// on its own listeners there.
	HTTPPort int `yaml:"http_port"`
	TLSPort  int `yaml:"tls_port"`
	// CheckInterval is how often the certificates are looked at for
	// renewal; default 10m.
	CheckInterval Duration `yaml:"check_interval"`
	// Challenges are the validations offered to the CA: http-01 (on a
	// plain listener at http_port) and tls-alpn-01 (on the listener at
	// tls_port); default both.
	Challenges []string `yaml:"challenges"`
}

// CertPair is a certificate chain and its private key, PEM files.
type CertPair struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Paths says how request paths are normalised (docs/config.md).
type Paths struct {
	Slashes        string `yaml:"slashes"`         // merge (default) or keep
	EncodedSlashes string `yaml:"encoded_slashes"` // reject (default, 400) or keep
	Forward        string `yaml:"forward"`         // normalized (default) or original
}

// Route takes the requests it matches (every condition set must hold) and
// sends them to a cluster, redirects them, or answers them itself.
type Route struct {
	// Name labels the route's metrics; default its index in the
	// listener's routes ("0", "1", ...).
	Name string `yaml:"name"`
	// Host matches the request's host without port, without regard to
	// case: "api.example.com", or "*.example.com" for any subdomain. Empty
	// matches any host.
	Host string `yaml:"host"`
	// Path matches the whole normalised path; PathPrefix its start;
	// PathRegex (RE2) the whole of it. At most one is set; none matches
	// every path.
	Path       string       `yaml:"path"`
	PathPrefix string       `yaml:"path_prefix"`
	PathRegex  string       `yaml:"path_regex"`
	Methods    []string     `yaml:"methods"` // any of them
	Headers    []FieldMatch `yaml:"headers"` // all of them
	Query      []FieldMatch `yaml:"query"`   // all of them

	// What the route does: exactly one of these.
	Cluster  string         `yaml:"cluster"`
	Redirect Redirect       `yaml:"redirect"`
	Respond  DirectResponse `yaml:"respond"`

	// With a cluster: what changes on the way.
	PrefixRewrite   string      `yaml:"prefix_rewrite"` // replaces the matched path_prefix
	HostRewrite     string      `yaml:"host_rewrite"`   // the Host sent upstream
	RequestHeaders  HeaderRules `yaml:"request_headers"`
	ResponseHeaders HeaderRules `yaml:"response_headers"`
	// Timeouts and MaxRequestBody replace the process-wide ones for the
	// route's requests; left out, those apply.
	Timeouts       RouteTimeouts `yaml:"timeouts"`
	MaxRequestBody Size          `yaml:"max_request_body"`
	// RequestBuffering is on (the default: bodies up to
	// request_buffering.max are read whole first) or off (they stream).
	RequestBuffering string `yaml:"request_buffering"`
	// IdempotencyKey names a field (Idempotency-Key) whose presence lets
	// a request of any method be retried as an idempotent one.
	IdempotencyKey string `yaml:"idempotency_key"`
	// GRPCWeb, if set, translates the route's gRPC-Web calls to gRPC for
	// the cluster, and answers CORS for them (docs/grpc.md).
	GRPCWeb *GRPCWeb `yaml:"grpc_web"`
}

// GRPCWeb is a route's gRPC-Web bridge and its CORS allow-list.
type GRPCWeb struct {
	// AllowOrigins are the origins ("https://app.example.com") browsers
	// may call from; "*" for any (then without credentials).
	AllowOrigins     []string `yaml:"allow_origins"`
	AllowCredentials bool     `yaml:"allow_credentials"`
	AllowHeaders     []string `yaml:"allow_headers"`  // beyond gRPC-Web's own
	ExposeHeaders    []string `yaml:"expose_headers"` // beyond grpc-status, grpc-message
	MaxAge           Duration `yaml:"max_age"`        // of a preflight's answer; default 10m
}

// RequestBuffering bounds the request bodies read whole before an
// upstream is chosen; zero means the default.
type RequestBuffering struct {
	Max        Size   `yaml:"max"`         // default 64KiB; larger bodies stream
	Budget     Size   `yaml:"budget"`      // all bodies buffered at once; default 64MiB
	OverBudget string `yaml:"over_budget"` // stream (default) or refuse (503)
}

// RouteTimeouts are the upstream timeouts a route may set for itself.
type RouteTimeouts struct {
	Connect        Duration `yaml:"connect"`
	ResponseHeader Duration `yaml:"response_header"`
	UpstreamRead   Duration `yaml:"upstream_read"`
	UpstreamTotal  Duration `yaml:"upstream_total"`
}

// FieldMatch matches a header field or query parameter by name: equal to
// Exact, matched whole by Regex, or (neither set) present.
type FieldMatch struct {
	Name  string `yaml:"name"`
	Exact string `yaml:"exact"`
	Regex string `yaml:"regex"`
}

// Redirect answers with a redirect; the parts set replace the request's.
type Redirect struct {
	Status        int    `yaml:"status"` // 301, 302, 303, 307 or 308; required
	Scheme        string `yaml:"scheme"`
	Host          string `yaml:"host"`
	Path          string `yaml:"path"`
	PrefixRewrite string `yaml:"prefix_rewrite"`
	StripQuery    bool   `yaml:"strip_query"`
}

// DirectResponse answers without an upstream.
type DirectResponse struct {
	Status      int    `yaml:"status"` // required
	Body        string `yaml:"body"`
	ContentType string `yaml:"content_type"` // default text/plain; charset=utf-8
}

// HeaderRules change header fields: remove, then set, then add. Values
// may use ${client_addr}, ${request_id} and ${host}.
type HeaderRules struct {
	Remove []string      `yaml:"remove"`
	Set    []HeaderValue `yaml:"set"`
	Add    []HeaderValue `yaml:"add"`
}

// HeaderValue is a field to write.
type HeaderValue struct {
	Name  string `yaml:"name"`
	Value string `yaml:"value"`
}

// Cluster is a group of endpoints requests are balanced across.
type Cluster struct {
	Name string `yaml:"name"`
	// Endpoints are "host:port", or "host:port weight=N" (default 1).
	Endpoints []string `yaml:"endpoints"`
	// Balance is the load-balancing policy: round_robin (the default;
	// smooth weighted), random, least_request, ring_hash or maglev.
	Balance string `yaml:"balance"`
	// HashKey is what ring_hash and maglev hash: client_addr (the
	// default), path, header:NAME, cookie:NAME or query:NAME.
	HashKey string `yaml:"hash_key"`
	// Outlier ejects endpoints that fail in a row (on by default).
	Outlier Outlier `yaml:"outlier"`
	// WhenAllEjected is panic (the default: spread over every endpoint
	// anyway, as Envoy does) or fail (503).
	WhenAllEjected string `yaml:"when_all_ejected"`
	// RetryOn are final statuses that send an idempotent request to
	// another endpoint while tries remain (limits.max_attempts).
	RetryOn []int `yaml:"retry_on"`
	// RetryOnGRPC are gRPC statuses (unavailable, resource_exhausted, or
	// their numbers) that, in an origin's trailers-only response, send a
	// gRPC call to another endpoint while tries remain (docs/grpc.md).
	RetryOnGRPC []string `yaml:"retry_on_grpc"`
	// RetryBudget bounds the retries in flight.
	RetryBudget RetryBudget `yaml:"retry_budget"`
	// HealthCheck checks the endpoints actively (off when left out).
	HealthCheck HealthCheck `yaml:"health_check"`
	// Limits are the cluster's circuit breakers.
	Limits ClusterLimits `yaml:"limits"`
	// DNS discovers more endpoints, beside Endpoints.
	DNS DNS `yaml:"dns"`
	// TLS, if set, makes connections to the endpoints TLS.
	TLS *ClusterTLS `yaml:"tls"`
	// ProxyProtocol, v1 or v2, sends a PROXY protocol header with the
	// client's address at the start of each connection to the endpoints;
	// tcp listeners' clusters only (an HTTP connection is pooled, and
	// carries many clients' requests).
	ProxyProtocol string `yaml:"proxy_protocol"`
	// Protocol is how strait speaks to the endpoints: h1 (the default:
	// HTTP/1.1), h2 (HTTP/2 over TLS, by ALPN; needs tls) or h2c (HTTP/2
	// in cleartext, with prior knowledge).
	Protocol string `yaml:"protocol"`
}

// ClusterTLS is TLS to a cluster's endpoints (docs/config.md).
type ClusterTLS struct {
	CAFile     string   `yaml:"ca_file"`     // roots to verify against; default the system's
	ServerName string   `yaml:"server_name"` // SNI and the name verified; default the endpoint's host
	Cert       string   `yaml:"cert"`        // a client certificate (PEM), with Key
	Key        string   `yaml:"key"`
	MinVersion string   `yaml:"min_version"` // 1.2 (default) or 1.3
	ALPN       []string `yaml:"alpn"`        // default http/1.1
	// InsecureSkipVerify accepts any certificate: for tests only; logged
	// at start.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// DNS discovers a cluster's endpoints: names are looked up at start and
// again when their TTL runs out (at most every Refresh, at least every
// second), never on the request path; a lookup that fails or answers
// nothing keeps the endpoints the cluster has.
type DNS struct {
	// Names are "host:port" or "host:port weight=N": each A and AAAA
	// address of host becomes an endpoint on port with weight N.
	Names []string `yaml:"names"`
	// SRV are SRV names ("_http._tcp.example.com"): the targets of the
	// lowest priority become endpoints, with the records' ports and
	// weights (0 counts as 1).
	SRV []string `yaml:"srv"`
	// Nameservers are "ip" or "ip:port"; the default is /etc/resolv.conf's.
	Nameservers []string `yaml:"nameservers"`
	Refresh     Duration `yaml:"refresh"` // the longest wait between lookups; default 30s
	Family      string   `yaml:"family"`  // any (the default), ipv4 or ipv6
}

// ClusterLimits bound what one cluster may hold, so that a slow one
// cannot take what the others need; zero means the default.
type ClusterLimits struct {
	MaxRequests    int      `yaml:"max_requests"`    // in flight; default 1024
	MaxPending     int      `yaml:"max_pending"`     // waiting for one of those; default 1024
	PendingTimeout Duration `yaml:"pending_timeout"` // the longest wait; default 1s
}

// HealthCheck is an active health check; zero fields mean the defaults.
type HealthCheck struct {
	Kind         string   `yaml:"kind"`          // http, grpc or tcp; required
	Interval     Duration `yaml:"interval"`      // default 5s, ±10%
	Timeout      Duration `yaml:"timeout"`       // default 2s
	Healthy      int      `yaml:"healthy"`       // passes in a row; default 2
	Unhealthy    int      `yaml:"unhealthy"`     // failures in a row; default 3
	Method       string   `yaml:"method"`        // http: default GET
	Path         string   `yaml:"path"`          // http: default /
	Host         string   `yaml:"host"`          // http: default the endpoint's address
	Statuses     []int    `yaml:"statuses"`      // http: default 200 to 399
	BodyContains string   `yaml:"body_contains"` // http: the body must hold it
	Service      string   `yaml:"service"`       // grpc: the service asked after; default "" (the server)
}

// RetryBudget bounds a cluster's retries in flight: Percent of its
// requests in flight (default 20), but never fewer than Min (default 3).
type RetryBudget struct {
	Percent int `yaml:"percent"`
	Min     int `yaml:"min"`
}

// Outlier is passive outlier detection; zero fields mean the defaults.
type Outlier struct {
	Enabled           string   `yaml:"enabled"`             // on (default) or off
	Failures          int      `yaml:"failures"`            // in a row; default 5
	BaseEjection      Duration `yaml:"base_ejection"`       // default 30s, doubling on repeats
	MaxEjection       Duration `yaml:"max_ejection"`        // default 5m
	MaxEjectedPercent int      `yaml:"max_ejected_percent"` // default 50
}

// Policies are the values of Cluster.Balance.
var Policies = []string{"round_robin", "random", "least_request", "ring_hash", "maglev"}

// ParseEndpoint splits an endpoint entry into its address and weight.
func ParseEndpoint(s string) (addr string, weight int, err error) {
	addr, opt, _ := strings.Cut(strings.TrimSpace(s), " ")
	weight = 1
	if opt = strings.TrimSpace(opt); opt != "" {
		w, ok := strings.CutPrefix(opt, "weight=")
		if weight, err = strconv.Atoi(w); !ok || err != nil || weight < 1 || weight > 1000 {
			return "", 0, fmt.Errorf("%q: want host:port, or host:port weight=N with N from 1 to 1000", s)
		}
	}
	return addr, weight, checkHostPort(addr)
}

// Timeouts name every wait; see docs/config.md for defaults. Zero means the
// default.
type Timeouts struct {
	Header         Duration `yaml:"header"`          // default 10s
	Body           Duration `yaml:"body"`            // default 60s
	Write          Duration `yaml:"write"`           // default 60s
	Idle           Duration `yaml:"idle"`            // default 75s
	Connect        Duration `yaml:"connect"`         // default 5s
	UpstreamWrite  Duration `yaml:"upstream_write"`  // default 60s
	ResponseHeader Duration `yaml:"response_header"` // default 60s
	UpstreamRead   Duration `yaml:"upstream_read"`   // default 60s
	UpstreamTotal  Duration `yaml:"upstream_total"`  // default none
	TunnelIdle     Duration `yaml:"tunnel_idle"`     // default 5m
	Grace          Duration `yaml:"grace"`           // default 30s
	// DrainDelay is how long a stopping strait keeps accepting after
	// /ready turns 503, so that load balancers notice first (default 0).
	DrainDelay Duration `yaml:"drain_delay"`
	// DrainIdle is how long, once draining, an idle HTTP/1 connection
	// may still carry one more request (answered with Connection: close)
	// before it is closed (default 1s).
	DrainIdle Duration `yaml:"drain_idle"`
}

// Limits bound requests and connections; zero means the default.
type Limits struct {
	MaxRequestLine     Size `yaml:"max_request_line"`      // default 16KiB (414)
	MaxHeaderBytes     Size `yaml:"max_header_bytes"`      // default 64KiB (431)
	MaxHeaderCount     int  `yaml:"max_header_count"`      // default 100 (431)
	MaxRequestBody     Size `yaml:"max_request_body"`      // default 100MiB (413)
	MaxRequestsPerConn int  `yaml:"max_requests_per_conn"` // default 10000
	MaxConns           int  `yaml:"max_conns"`             // per listener; default 100000 (503)
	MaxConnsPerClient  int  `yaml:"max_conns_per_client"`  // per client address; default none (503)
	MaxAttempts        int  `yaml:"max_attempts"`          // upstream attempts per request; default 2
}

// Pool bounds the upstream connection pool; zero means the default.
type Pool struct {
	MaxIdlePerEndpoint int      `yaml:"max_idle_per_endpoint"` // default 128
	MaxIdle            int      `yaml:"max_idle"`              // in all; default an eighth of the file-descriptor limit
	IdleTimeout        Duration `yaml:"idle_timeout"`          // default 60s
	MaxLifetime        Duration `yaml:"max_lifetime"`          // default none
}

// Forwarding controls the fields that tell upstreams about the client.
type Forwarding struct {
	// TrustedProxies are CIDRs (or single addresses) whose X-Forwarded-*
	// and Forwarded fields are kept and extended; anyone else's are
	// replaced.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// Forwarded adds an RFC 7239 Forwarded field (default false).
	Forwarded bool `yaml:"forwarded"`
}

// DemoOrigin is a built-in origin answering "<name>\n".
type DemoOrigin struct {
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
}

// AccessLog is where the access log goes: "" for nowhere, "stderr",
// "stdout", or the path of a file. In YAML it is written true (stderr),
// false, stderr, stdout, or a path, which must have a / in it so that a
// misspelt word is not taken for a file name.
type AccessLog string

// AccessLogFormats are the values of access_log_format.
var AccessLogFormats = []string{"json", "combined"}

// AccessLogFields are the fields of an access log line, as proxy writes
// them (docs/proxy.md), which access_log_fields may choose from.
var AccessLogFields = []string{"method", "authority", "path", "proto", "status", "client", "request_id", "total_ms",
	"request_read_ms", "upstream_dial_ms", "upstream_header_ms", "bytes_in", "bytes_out", "upstream",
	"reused", "attempts", "referer", "user_agent", "error", "error_side"}

// The access log's standard places.
const (
	AccessLogStderr AccessLog = "stderr"
	AccessLogStdout AccessLog = "stdout"
)

func (a *AccessLog) set(n *yaml.Node) bool {
	var on bool
	switch {
	case n.Decode(&on) == nil:
		*a = ""
		if on {
			*a = AccessLogStderr
		}
	case n.Value == string(AccessLogStderr) || n.Value == string(AccessLogStdout) || strings.Contains(n.Value, "/"):
		*a = AccessLog(n.Value)
	default:
		return false
	}
	return true
}

func (*AccessLog) want() string {
	return "true, false, stderr, stdout or a file path (like /var/log/strait/access.log or ./access.log)"
}

// UnmarshalYAML lets an AccessLog be decoded by the YAML library too.
func (a *AccessLog) UnmarshalYAML(n *yaml.Node) error { return unmarshal(a, n) }

// Duration is a time.Duration written as "10s", "1m30s" or "250ms".
type Duration time.Duration

// MarshalYAML writes a Duration as the config file does: "1m30s".
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

func (d *Duration) set(n *yaml.Node) bool {
	v, err := time.ParseDuration(n.Value)
	*d = Duration(v)
	return err == nil
}

func (*Duration) want() string { return "a duration like 10s, 1m30s or 250ms" }

// UnmarshalYAML lets a Duration be decoded by the YAML library too.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error { return unmarshal(d, n) }

// Size is a byte count written as a number or with a unit: "64KiB",
// "1MiB", "512" (KiB, MiB and GiB are powers of 1024).
type Size int64

func (s *Size) set(n *yaml.Node) bool {
	v := strings.TrimSpace(n.Value)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(v, u.suffix) {
			v, mult = strings.TrimSpace(strings.TrimSuffix(v, u.suffix)), u.mult
			break
		}
	}
	x, err := strconv.ParseInt(v, 10, 64)
	if err != nil || x < 0 || x > (1<<62)/mult {
		return false
	}
	*s = Size(x * mult)
	return true
}

func (*Size) want() string { return "a size like 512, 64KiB or 1MiB" }

// UnmarshalYAML lets a Size be decoded by the YAML library too.
func (s *Size) UnmarshalYAML(n *yaml.Node) error { return unmarshal(s, n) }

// unmarshal reports a bad value as the YAML decoder reports its own, so
// that decoding goes on and every problem is listed.
func unmarshal(s scalar, n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || !s.set(n) {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want %s, got %s", n.Line, s.want(), got(n))}}
	}
	return nil
}

//go:embed default.yaml
var defaultYAML []byte

// DefaultName is how errors name the embedded default config.
const DefaultName = "(embedded default config)"

// Default returns the embedded default config: one listener on
// 127.0.0.1:8080 balancing round robin across two demo origins.
func Default() *Config {
	c, err := Parse(DefaultName, defaultYAML)
	if err != nil {
		panic("config: the embedded default is invalid: " + err.Error())
	}
	return c
}
