// Package gateway is strait's config-driven proxy: it turns a config file
// into proxy Phases (routes to clusters, clusters to peers) and Options. It
// is one implementation of the phases; a library user writes another.
package gateway

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/acme"
	"github.com/straitproxy/strait/internal/http1"
	"github.com/straitproxy/strait/internal/observe"
	"github.com/straitproxy/strait/internal/route"
	"github.com/straitproxy/strait/internal/tcpproxy"
	"github.com/straitproxy/strait/internal/tlsconf"
	"github.com/straitproxy/strait/internal/udpproxy"
	"github.com/straitproxy/strait/internal/udpxdp"
	"github.com/straitproxy/strait/proxy"
)

// rule is a compiled config.Route: what it matches, and what it does.
type rule struct {
	match    route.Match
	cluster  *cluster.Cluster // nil for a redirect or direct response
	redirect *route.Redirect
	respond  *directResponse

	prefixRewrite   string // with match.Prefix
	hostRewrite     string
	override        proxy.Override // the route's own timeouts and body limit
	idempotencyKey  string
	requestHeaders  route.Rules
	responseHeaders route.Rules

	name, clusterName string           // for metrics and traces
	metrics           *observe.Route   // nil: no metrics
	clusterMetrics    *observe.Cluster // with cluster and metrics
}

type directResponse struct {
	status int
	body   []byte
	ctype  string
}

// router is one listener's routes, and how it normalises paths.
type router struct {
	name      string // the listener's
	rules     []rule
	unmatched *observe.Route  // requests no rule took; nil: no metrics
	tracer    *observe.Tracer // nil: no traces
	// certFields are the field that carries a verified client
	// certificate's names, then its spelling with underscores: both are
	// removed from requests. Empty: none.
	certFields      []string
	tls             *tlsconf.Server // the listener's TLS; nil for plain text
	paths           route.PathOptions
	forwardOriginal bool
	// acme are the process's ACME managers, whose HTTP-01 validations a
	// plain-HTTP listener answers.
	acme []*acme.Manager
}

// Listener is one configured listener: its address, the phases that
// route its requests, and what it lets requests upgrade to.
type Listener struct {
	Name    string
	Address string
	// Phases route the listener's requests by the routes in Routes.
	Phases proxy.Phases
	// Routes holds the listener's routes; a reload that keeps the
	// listener's server moves the new config's routes into the old
	// listener's Routes (Switch.Take).
	Routes *Switch
	// Upgrades is the listener's proxy.Options.Upgrades: nil for the
	// default.
	Upgrades []string
	// TLS is the listener's TLS, nil for plain HTTP: its Options.TLS
	// and Timeouts.Handshake.
	TLS              *tlsconf.Server
	HandshakeTimeout time.Duration
	// NoHTTP2 and OnlyHTTP2 are proxy.Options.HTTP2's Off and Only.
	NoHTTP2, OnlyHTTP2 bool
	// TCP, for a listener of kind tcp, is its relay's options (no
	// Logger or AccessLog); the fields above are for HTTP.
	TCP *tcpproxy.Options
	// UDP, for a listener of kind udp, is its relay's options (no Logger
	// or AccessLog), and Sockets how many sockets share its address.
	UDP     *udpproxy.Options
	Sockets int
	// DrainTimeout is how long a TCP listener's relays, or a UDP
	// listener's flows, may go on once it stops taking new ones; 0:
	// timeouts.grace.
	DrainTimeout time.Duration
	// ProxyProtocol, for either kind, takes PROXY headers.
	ProxyProtocol *proxy.ProxyProtocol

	// server says what the listener's proxy.Server is made of: the
	// config that goes into its Options and the phases it runs. Two
	// listeners with the same can share one server.
	server  string
	config  string // the listener's config, as JSON
	filters string // the optional phases its routes need
}

// Switch is one listener's routes. A request is routed by the routes
// current when it arrives, and keeps their rule to its end.
type Switch struct{ cur atomic.Pointer[router] }

// Take makes from's routes the current ones.
func (sw *Switch) Take(from *Switch) { sw.cur.Store(from.cur.Load()) }

// SamePhases reports whether n's routes need the phases l's server runs:
// a server a reload retired may then route by the new ones while it
// drains.
func (l *Listener) SamePhases(n *Listener) bool { return l.filters == n.filters }

// SameConfig reports whether n's config is l's, routes included.
func (l *Listener) SameConfig(n *Listener) bool { return l.config == n.config }

// SameServer reports whether n can run on l's server: the same address,
// TLS, options and phases, so that only its routes differ.
func (l *Listener) SameServer(n *Listener) bool { return l.server == n.server }

// Gateway is a config compiled: listeners sharing one set of clusters,
// and the options every listener's server uses.
type Gateway struct {
	Listeners []Listener
	// Options' access log goes to the logger Build was given; a caller
	// that honours access_log's stdout or file sets AccessLogger.
	Options  proxy.Options
	Clusters map[string]*cluster.Cluster

	clusterConfigs map[string]string           // each cluster's config, as JSON: what a reload compares
	poolTags       map[*cluster.Cluster]string // each cluster's cluster.Options.PoolTag
	tls            map[string]*listenerTLS     // by listener address
	budget         string                      // the request_buffering budget Options.Buffering.Budget holds
	pool           string                      // the upstream_pool config Options.Pool was made with
	gen            int                         // which Build of the process this is: the pool tag of its new clusters
}

// listenerTLS is a listener's TLS and the config it was made of; stop
// ends its certificate reloads and ticket rotations.
type listenerTLS struct {
	srv        *tlsconf.Server
	acme       *acme.Manager // nil: no ACME
	config     string
	clientAuth string // client_auth and client_ca, as JSON
	stop       context.CancelFunc
}

// Observe is what a gateway reports to: metrics and traces, each nil when
// off.
type Observe struct {
	Metrics *observe.Metrics
	Tracer  *observe.Tracer
}

// Build compiles a config, which config.Parse has validated, reporting
// to obs. The clusters' health checks and DNS discovery run until Stop.
//
// With prev, the gateway running now, Build makes what a reload needs:
// clusters whose config is unchanged are prev's own (their health,
// ejections and pooled connections go on), as are unchanged listeners'
// TLS, the pool and the buffering budget; a listener whose TLS changed
// starts with prev's session-ticket keys, so that resumption survives.
func Build(c *config.Config, logger *slog.Logger, obs Observe, prev *Gateway) (*Gateway, error) {
	m := obs.Metrics
	g := &Gateway{Clusters: make(map[string]*cluster.Cluster), clusterConfigs: make(map[string]string),
		poolTags: make(map[*cluster.Cluster]string), tls: make(map[string]*listenerTLS), gen: 1}
	if prev != nil {
		g.gen = prev.gen + 1
	}
	tcp := make(map[string]int)  // clusters of tcp and udp listeners: their max_conns and max_flows
	udp := make(map[string]bool) // clusters of udp listeners
	for _, lc := range c.Listeners {
		if lc.Kind == "udp" {
			tcp[lc.Cluster] += cmp.Or(lc.UDP.MaxFlows, udpproxy.DefaultMaxFlows)
			udp[lc.Cluster] = true
		}
		if lc.Kind == "tcp" {
			n := cmp.Or(lc.TCP.MaxConns, c.Limits.MaxConns, tcpproxy.DefaultMaxConns)
			tcp[lc.Cluster] += n
			for _, r := range lc.SNIRoutes {
				tcp[r.Cluster] += n
			}
		}
	}
	for i := range c.Clusters {
		cc := &c.Clusters[i]
		if n := tcp[cc.Name]; n > 0 && cc.Limits.MaxRequests == 0 {
			// A relay or a flow holds its slot for as long as it is
			// open: a TCP or UDP cluster is bounded by its listeners'
			// max_conns and max_flows, not by HTTP's 1024 requests in
			// flight, unless it says so.
			copied := *cc
			copied.Limits.MaxRequests = n
			cc = &copied
		}
		if udp[cc.Name] && cc.Balance == "" {
			// A client keeps its endpoint when its flow expires and
			// comes back (QUIC, a game session): hash its address.
			copied := *cc
			copied.Balance = "maglev"
			cc = &copied
		}
		conf := jsonOf(cc, c.Limits.MaxAttempts)
		g.clusterConfigs[cc.Name] = conf
		if prev != nil && prev.clusterConfigs[cc.Name] == conf {
			cl := prev.Clusters[cc.Name]
			g.Clusters[cc.Name], g.poolTags[cl] = cl, prev.poolTags[cl]
			continue
		}
		// Unique in the process: a cluster and its successor never share
		// a pooled connection.
		tag := fmt.Sprintf("gen=%d cluster=%s", g.gen, cc.Name)
		cl, err := cluster.New(cc, cluster.Options{Logger: logger, MaxAttempts: c.Limits.MaxAttempts, PoolTag: tag})
		if err != nil {
			g.Retire(prev)
			return nil, err
		}
		g.Clusters[cl.Name], g.poolTags[cl] = cl, tag
	}
	var plain []*router // the plain-HTTP listeners'
	global := jsonOf(c.Timeouts, c.Limits, c.Pool, c.RequestBuffering, c.Forwarding, c.AccessLog, c.AccessLogFormat,
		c.AccessLogFields, c.LogLevel, obs.Tracer != nil)
	for _, lc := range c.Listeners {
		if lc.Kind == "tcp" {
			g.Listeners = append(g.Listeners, g.tcpListener(c, &lc))
			continue
		}
		if lc.Kind == "udp" {
			g.Listeners = append(g.Listeners, g.udpListener(&lc))
			continue
		}
		rt := &router{
			paths: route.PathOptions{
				MergeSlashes:     lc.Paths.Slashes != "keep",
				KeepEncodedSlash: lc.Paths.EncodedSlashes == "keep",
			},
			forwardOriginal: lc.Paths.Forward == "original",
		}
		name := lc.Name
		if name == "" {
			name = lc.Address
		}
		rt.name, rt.tracer = name, obs.Tracer
		for i := range lc.Routes {
			rc := &lc.Routes[i]
			r := compile(rc, g.Clusters)
			r.name, r.clusterName = rc.Name, rc.Cluster
			if r.name == "" {
				r.name = strconv.Itoa(i)
			}
			if m != nil {
				r.metrics = m.Route(name, r.name, rc.Cluster)
				if r.cluster != nil {
					r.clusterMetrics = m.Cluster(rc.Cluster)
				}
			}
			rt.rules = append(rt.rules, r)
		}
		if m != nil {
			rt.unmatched = m.Route(name, "", "")
		}
		sw := new(Switch)
		sw.cur.Store(rt)
		phases, filters := sw.phases(rt)
		l := Listener{Name: name, Address: lc.Address, Phases: phases, Routes: sw, Upgrades: lc.Upgrades,
			NoHTTP2: lc.HTTP2 == "off", OnlyHTTP2: lc.HTTP2 == "only", ProxyProtocol: proxyProtocol(lc.ProxyProtocol)}
		if t := lc.TLS; t != nil {
			lt, err := g.listenerTLS(name, &lc, logger, prev)
			if err != nil {
				g.Retire(prev)
				return nil, fmt.Errorf("listener %s: %w", name, err)
			}
			rt.tls = lt.srv
			if f := t.ClientCertHeader; f != "" {
				// Some origins read X_Client_Cert as X-Client-Cert (CGI).
				rt.certFields = []string{f, strings.ReplaceAll(f, "-", "_")}
			}
			l.TLS, l.HandshakeTimeout = lt.srv, time.Duration(t.HandshakeTimeout)
		}
		// Its TLS server by pointer: an unchanged TLS config is prev's own.
		l.server = fmt.Sprintf("%s %s %v %p %s", jsonOf(lc.Address, lc.Upgrades, lc.HTTP2, lc.ProxyProtocol), filters, lc.TLS != nil, l.TLS, global)
		l.config, l.filters = jsonOf(lc), filters
		g.Listeners = append(g.Listeners, l)
		if rt.tls == nil {
			plain = append(plain, rt)
		}
	}
	for addr, lt := range g.tls {
		if lt.acme != nil && lt.acme.OffersHTTP() && len(plain) == 0 {
			logger.Warn("acme: http-01 is offered but no listener is plain HTTP to answer it; only tls-alpn-01 can succeed",
				"listener", addr)
		}
		if lt.acme != nil {
			for _, rt := range plain {
				rt.acme = append(rt.acme, lt.acme)
			}
		}
	}
	g.Options = options(c, logger)
	g.budget, g.pool = jsonOf(c.RequestBuffering.Budget), jsonOf(c.Pool)
	if prev != nil {
		// Process-wide: what bounds the process stays one thing.
		g.Options.ClientConns = prev.Options.ClientConns
		if g.budget == prev.budget {
			g.Options.Buffering.Budget = prev.Options.Buffering.Budget
		}
		if g.pool == prev.pool {
			g.Options.Pool = prev.Options.Pool
		}
	}
	return g, nil
}

// tcpListener compiles a listener of kind tcp. Its server is new when
// its config or its cluster (a new one, after a reload) changed.
// udpListener compiles a listener of kind udp. Its server is new when
// its config or its cluster object is.
func (g *Gateway) udpListener(lc *config.Listener) Listener {
	name := cmp.Or(lc.Name, lc.Address)
	cl := g.Clusters[lc.Cluster]
	u := &lc.UDP
	o := &udpproxy.Options{Name: name, Cluster: cl, IdleTimeout: time.Duration(u.IdleTimeout),
		MaxFlows: u.MaxFlows, NewFlowsPerPrefix: u.NewFlowsPerPrefix}
	if u.BatchDelay != nil {
		o.BatchDelay = cmp.Or(time.Duration(*u.BatchDelay), -1)
	}
	o.FlowRate, o.FlowBurst = float64(u.FlowRate), u.FlowBurst
	if u.XDP != nil {
		o.XDPInterfaces, o.XDPMode = u.XDP.Interfaces, udpxdp.Mode(u.XDP.Mode)
	}
	sockets := u.Sockets
	if sockets == 0 {
		sockets = min(runtime.GOMAXPROCS(0), 8)
	}
	l := Listener{Name: name, Address: lc.Address, UDP: o, Sockets: sockets, DrainTimeout: time.Duration(u.DrainTimeout)}
	l.config = jsonOf(lc)
	l.server = fmt.Sprintf("udp %s %p", l.config, cl)
	return l
}

func (g *Gateway) tcpListener(c *config.Config, lc *config.Listener) Listener {
	name := cmp.Or(lc.Name, lc.Address)
	cl := g.Clusters[lc.Cluster]
	o := &tcpproxy.Options{Name: name, Cluster: cl, ConnectTimeout: time.Duration(c.Timeouts.Connect),
		IdleTimeout: time.Duration(lc.TCP.IdleTimeout), HalfClosedTimeout: time.Duration(lc.TCP.HalfClosedTimeout),
		MaxConns:     cmp.Or(lc.TCP.MaxConns, c.Limits.MaxConns),
		HelloTimeout: time.Duration(lc.TCP.HelloTimeout)}
	clusters := fmt.Sprintf("%p", cl) // which cluster objects: a reload's new one needs a new server
	for _, r := range lc.SNIRoutes {
		names := make([]string, len(r.Names))
		for i, n := range r.Names {
			names[i] = strings.ToLower(n)
		}
		o.Routes = append(o.Routes, tcpproxy.Route{Names: names, ALPN: r.ALPN, Cluster: g.Clusters[r.Cluster]})
		clusters += fmt.Sprintf(" %p", g.Clusters[r.Cluster])
	}
	l := Listener{Name: name, Address: lc.Address, TCP: o, DrainTimeout: time.Duration(lc.TCP.DrainTimeout),
		ProxyProtocol: proxyProtocol(lc.ProxyProtocol)}
	l.config = jsonOf(lc)
	l.server = fmt.Sprintf("tcp %s %s %s", l.config, clusters, jsonOf(c.Timeouts.Connect, c.Limits.MaxConns))
	return l
}

// proxyProtocol is a listener's proxy_protocol, validated, for its
// server; nil when off.
func proxyProtocol(pp *config.ListenerProxyProtocol) *proxy.ProxyProtocol {
	if pp == nil {
		return nil
	}
	o := &proxy.ProxyProtocol{Timeout: time.Duration(pp.Timeout)}
	for _, t := range pp.Trusted {
		p, _ := config.ParsePrefix(t)
		o.Trusted = append(o.Trusted, p)
	}
	return o
}

// listenerTLS returns the TLS of listener lc: prev's if its config is
// unchanged, else a new one, started, with prev's ticket keys.
func (g *Gateway) listenerTLS(name string, lc *config.Listener, logger *slog.Logger, prev *Gateway) (*listenerTLS, error) {
	t := lc.TLS
	conf := jsonOf(t, lc.HTTP2)
	var old *listenerTLS
	if prev != nil {
		old = prev.tls[lc.Address]
	}
	if old != nil && old.config == conf {
		g.tls[lc.Address] = old
		return old, nil
	}
	tc := tlsconf.Config{TicketRotation: time.Duration(t.TicketRotation), NoTickets: t.SessionTickets == "off",
		Logger: logger.With("listener", name), NextProtos: []string{"h2", "http/1.1"}}
	switch lc.HTTP2 {
	case "off":
		tc.NextProtos = []string{"http/1.1"}
	case "only":
		tc.NextProtos, tc.RequireALPN = []string{"h2"}, true
	}
	for _, p := range t.Certificates {
		tc.Pairs = append(tc.Pairs, tlsconf.Pair{Cert: p.Cert, Key: p.Key})
	}
	if t.MinVersion == "1.3" {
		tc.MinVersion = tls.VersionTLS13
	}
	switch t.ClientAuth {
	case "optional":
		tc.ClientAuth, tc.ClientCA = tls.VerifyClientCertIfGiven, t.ClientCA
	case "required":
		tc.ClientAuth, tc.ClientCA = tls.RequireAndVerifyClientCert, t.ClientCA
	}
	var am *acme.Manager
	if a := t.ACME; a != nil {
		var err error
		am, err = acme.New(acme.Config{Directory: a.Directory, Email: a.Email, Names: a.Names, Storage: a.Storage,
			CARoot: a.CARoot, RenewAt: a.RenewAt.Value, HTTPPort: a.HTTPPort, TLSPort: a.TLSPort,
			CheckInterval: time.Duration(a.CheckInterval), Challenges: a.Challenges,
			Logger: logger.With("listener", name)})
		if err != nil {
			return nil, err
		}
		tc.Managed = am
	}
	ts, err := tlsconf.New(tc)
	if err != nil {
		if am != nil {
			am.Stop()
		}
		return nil, err
	}
	if old != nil && old.clientAuth == jsonOf(t.ClientAuth, t.ClientCA) {
		// Not with another client_ca: a session begun under the old one
		// must not resume past the new.
		ts.SetTicketKeys(old.srv.TicketKeys())
	}
	ctx, cancel := context.WithCancel(context.Background())
	go ts.Run(ctx)
	stop := cancel
	if am != nil {
		am.Start(ctx)
		stop = func() { cancel(); am.Stop() }
	}
	lt := &listenerTLS{srv: ts, config: conf, clientAuth: jsonOf(t.ClientAuth, t.ClientCA), stop: stop, acme: am}
	g.tls[lc.Address] = lt
	return lt, nil
}

// ACME returns the ACME managers of the gateway's listeners, by address.
func (g *Gateway) ACME() map[string]*acme.Manager {
	m := make(map[string]*acme.Manager)
	for addr, lt := range g.tls {
		if lt.acme != nil {
			m[addr] = lt.acme
		}
	}
	return m
}

// TLS returns the TLS servers of the gateway's listeners, by address.
func (g *Gateway) TLS() map[string]*tlsconf.Server {
	m := make(map[string]*tlsconf.Server, len(g.tls))
	for addr, lt := range g.tls {
		m[addr] = lt.srv
	}
	return m
}

// jsonOf is the JSON of vs, for comparing configs.
func jsonOf(vs ...any) string {
	b, err := json.Marshal(vs)
	if err != nil {
		panic("gateway: a config that does not marshal: " + err.Error())
	}
	return string(b)
}

// Stop ends the clusters' health checks and DNS discovery, and the
// listeners' certificate reloads.
func (g *Gateway) Stop() { g.Retire(nil) }

// Retire stops what g has that next does not: clusters (their health
// checks and discovery; their idle pooled connections close) and
// listeners' TLS. With next nil, it stops everything.
func (g *Gateway) Retire(next *Gateway) {
	if g == nil {
		return
	}
	var kept map[*cluster.Cluster]bool
	if next != nil {
		kept = make(map[*cluster.Cluster]bool, len(next.Clusters))
		for _, cl := range next.Clusters {
			kept[cl] = true
		}
	}
	for _, cl := range g.Clusters {
		if !kept[cl] {
			cl.Stop()
		}
	}
	for addr, lt := range g.tls {
		if next == nil || next.tls[addr] != lt {
			lt.stop()
		}
	}
	if next != nil && g.Options.Pool != nil && g.Options.Pool != next.Options.Pool {
		// A new upstream_pool: the old one's idle connections go.
		g.Options.Pool.CloseIdle()
	} else if next != nil && g.Options.Pool != nil {
		// The retired clusters' connections: each cluster tags its own.
		tags := make(map[string]bool)
		for _, cl := range g.Clusters {
			if !kept[cl] {
				tags[" "+g.poolTags[cl]] = true
			}
		}
		if len(tags) > 0 {
			g.Options.Pool.CloseIdleMatching(func(key string) bool {
				for tag := range tags {
					if strings.HasSuffix(key, tag) {
						return true
					}
				}
				return false
			})
		}
	}
}

// compile turns a validated config.Route into a rule.
func compile(rc *config.Route, clusters map[string]*cluster.Cluster) rule {
	r := rule{
		match: route.Match{
			Host:    strings.ToLower(rc.Host),
			Path:    rc.Path,
			Prefix:  rc.PathPrefix,
			Methods: rc.Methods,
		},
		cluster:       clusters[rc.Cluster],
		prefixRewrite: rc.PrefixRewrite,
		hostRewrite:   rc.HostRewrite,
		override: proxy.Override{
			Connect:        time.Duration(rc.Timeouts.Connect),
			ResponseHeader: time.Duration(rc.Timeouts.ResponseHeader),
			UpstreamRead:   time.Duration(rc.Timeouts.UpstreamRead),
			UpstreamTotal:  time.Duration(rc.Timeouts.UpstreamTotal),
			MaxRequestBody: int64(rc.MaxRequestBody),
		},
	}
	r.idempotencyKey = rc.IdempotencyKey
	if g := rc.GRPCWeb; g != nil {
		r.override.GRPCWeb = &proxy.GRPCWeb{AllowOrigins: g.AllowOrigins, AllowCredentials: g.AllowCredentials,
			AllowHeaders: g.AllowHeaders, ExposeHeaders: g.ExposeHeaders, MaxAge: time.Duration(g.MaxAge)}
	}
	if rc.RequestBuffering == "off" {
		r.override.BufferMax = -1
	}
	if rc.PathRegex != "" {
		r.match.Regex = mustWhole(rc.PathRegex)
	}
	r.match.Headers = fields(rc.Headers)
	r.match.Query = fields(rc.Query)
	if rc.Redirect != (config.Redirect{}) {
		rd := rc.Redirect
		r.redirect = &route.Redirect{Status: rd.Status, Scheme: rd.Scheme, Host: rd.Host, Path: rd.Path,
			PrefixRewrite: rd.PrefixRewrite, StripQuery: rd.StripQuery}
	}
	if rc.Respond != (config.DirectResponse{}) {
		ct := rc.Respond.ContentType
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		}
		r.respond = &directResponse{status: rc.Respond.Status, body: []byte(rc.Respond.Body), ctype: ct}
	}
	r.requestHeaders = rules(&rc.RequestHeaders)
	r.responseHeaders = rules(&rc.ResponseHeaders)
	return r
}

func fields(ms []config.FieldMatch) []route.Field {
	var out []route.Field
	for _, m := range ms {
		f := route.Field{Name: m.Name, Exact: m.Exact}
		if m.Regex != "" {
			f.Regex = mustWhole(m.Regex)
		}
		out = append(out, f)
	}
	return out
}

// mustWhole compiles a regex config.Parse has checked.
func mustWhole(expr string) *regexp.Regexp {
	re, err := config.WholeRegexp(expr)
	if err != nil {
		panic("gateway: a regex config.Parse let through: " + err.Error())
	}
	return re
}

func rules(h *config.HeaderRules) route.Rules {
	r := route.Rules{Remove: h.Remove}
	for _, list := range []struct {
		in  []config.HeaderValue
		out *[]route.Value
	}{{h.Set, &r.Set}, {h.Add, &r.Add}} {
		for _, hv := range list.in {
			v, err := route.ParseValue(hv.Name, hv.Value)
			if err != nil {
				panic("gateway: a header value config.Parse let through: " + err.Error())
			}
			*list.out = append(*list.out, v)
		}
	}
	return r
}

var errMisdirected = &proxy.Error{Side: proxy.Downstream, Kind: proxy.KindRequestRejected, Status: 421,
	Where: "the request's Host is served with another certificate than the handshake's SNI"}

// hostOf is the host of an authority, without its port.
func hostOf(authority []byte) string {
	h := string(authority)
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}

// acmeChallengePath is where a CA asks for HTTP-01 validations.
var acmeChallengePath = []byte("/.well-known/acme-challenge/")

var errNoRoute = &proxy.Error{Side: proxy.Downstream, Kind: proxy.KindRequestRejected, Status: 404, Where: "no route matches"}

// pathErrors answer paths that cannot be normalised safely: 400.
var pathErrors = map[error]*proxy.Error{}

func init() {
	for _, err := range []error{route.ErrEncoding, route.ErrEncodedSlash, route.ErrNUL, route.ErrEscapesRoot, route.ErrDotParams,
		route.ErrRewriteEscapes, route.ErrNoHost} {
		pathErrors[err] = &proxy.Error{Side: proxy.Downstream, Kind: proxy.KindRequestRejected, Status: 400, Where: "request path", Err: err}
	}
}

// phases returns the phases that route each request by sw's current
// routes, and which optional filters they have (rt's rules need them).
// A request's path is normalised, the first rule that matches takes it
// (in the order of the config), and the request goes upstream with the
// normalised path unless the listener forwards the original.
func (sw *Switch) phases(rt *router) (proxy.Phases, string) {
	ph := proxy.Phases{
		RequestFilter:   sw.route,
		UpstreamPeer:    upstreamPeer,
		FailToConnect:   failToConnect,
		ErrorWhileProxy: errorWhileProxy,
		Logging:         sw.logging,
	}
	filters := ""
	for i := range rt.rules {
		r := &rt.rules[i]
		if !r.requestHeaders.Empty() || r.hostRewrite != "" || rt.tracer != nil {
			ph.UpstreamRequestFilter = upstreamRequest
		}
		if !r.responseHeaders.Empty() || rt.tracer != nil {
			ph.ResponseFilter = response
		}
	}
	if ph.UpstreamRequestFilter != nil {
		filters += "request"
	}
	if ph.ResponseFilter != nil {
		filters += "response"
	}
	return ph, filters
}

func (sw *Switch) route(s *proxy.Session) (bool, error) { return sw.cur.Load().route(s) }

// route is the RequestFilter: it finds the request's rule, and answers
// what the rule answers itself.
func (rt *router) route(s *proxy.Session) (bool, error) {
	a := attempts.Get().(*attempt)
	a.rt = rt
	s.Ctx = a
	if rt.tracer != nil {
		a.span = rt.tracer.Start(s, rt.name)
	}
	if len(rt.acme) > 0 && bytes.HasPrefix(s.Request.Path, acmeChallengePath) {
		for _, m := range rt.acme {
			if status, body, ok := m.AnswerHTTP(s.Request.Method, string(s.Request.Authority), string(s.Request.Path)); ok {
				return true, s.Respond(status, body, "Content-Type", "text/plain")
			}
		}
	}
	if rt.tls != nil && s.TLS != nil && !header.EqualFold(s.Request.Authority, []byte(s.TLS.ServerName)) &&
		rt.tls.For(hostOf(s.Request.Authority)) != rt.tls.For(s.TLS.ServerName) {
		// The handshake was for another certificate: a client must not
		// shake hands as one name and ask for another (RFC 9110 §15.5.20).
		return false, errMisdirected
	}
	if len(rt.certFields) > 0 {
		// Only strait says who a client certificate names.
		for _, f := range rt.certFields {
			s.Request.Header.Del(f)
		}
		if s.TLS != nil && len(s.TLS.VerifiedChains) > 0 {
			s.Request.Header.Set(rt.certFields[0], certNames(s.TLS.VerifiedChains[0][0]))
		}
	}
	target, err := route.Normalize(s.Request.Path, rt.paths)
	if err != nil {
		return false, pathErrors[err]
	}
	path, query := target, []byte(nil)
	if i := bytes.IndexByte(target, '?'); i >= 0 {
		path, query = target[:i], target[i:]
	}
	var r *rule
	for i := range rt.rules {
		if rt.rules[i].match.Matches(&s.Request, path, bytes.TrimPrefix(query, []byte{'?'})) {
			r = &rt.rules[i]
			break
		}
	}
	if r == nil {
		return false, errNoRoute
	}
	s.Override = r.override
	a.rule = r
	if a.span != nil {
		a.span.Routed(r.name, r.clusterName)
	}
	switch {
	case r.respond != nil:
		return true, s.Respond(r.respond.status, r.respond.body, "Content-Type", r.respond.ctype)
	case r.redirect != nil:
		loc, err := r.redirect.Location(&s.Request, path, query, r.match.Prefix, rt.paths)
		if err != nil {
			return false, pathErrors[err]
		}
		return true, s.Respond(r.redirect.Status, nil, "Location", loc)
	}
	switch {
	case r.prefixRewrite != "":
		// From the path the prefix matched, whatever the listener forwards.
		p, err := route.RewritePrefix(target, r.match.Prefix, r.prefixRewrite, rt.paths)
		if err != nil {
			return false, pathErrors[err]
		}
		s.Request.Path = p
	case !rt.forwardOriginal:
		s.Request.Path = target
	}
	s.Override.IdempotencyKey = r.idempotencyKey
	s.Override.StripFields = rt.certFields
	return false, nil
}

// upstreamRequest writes the try's trace context, and applies a rule's
// request header rules and host rewrite, once: on a retry the request
// already carries them.
func upstreamRequest(s *proxy.Session, req *proxy.Request) error {
	a := s.Ctx.(*attempt)
	if a.span != nil {
		a.span.Inject(req)
	}
	if s.Stats.Attempts > 1 {
		return nil
	}
	r := a.rule
	if r.hostRewrite != "" {
		req.Header.Set("Host", r.hostRewrite)
	}
	r.requestHeaders.Apply(&req.Header, s)
	return nil
}

func response(s *proxy.Session, resp *proxy.Response) error {
	a := s.Ctx.(*attempt)
	if a.span != nil {
		a.span.Response(resp.Status)
	}
	a.rule.responseHeaders.Apply(&resp.Header, s)
	return nil
}

func options(c *config.Config, logger *slog.Logger) proxy.Options {
	t, l := c.Timeouts, c.Limits
	d := func(x config.Duration) time.Duration { return time.Duration(x) }
	o := proxy.Options{
		Timeouts: proxy.Timeouts{
			Header: d(t.Header), Body: d(t.Body), Write: d(t.Write), Idle: d(t.Idle),
			Connect: d(t.Connect), UpstreamWrite: d(t.UpstreamWrite), ResponseHeader: d(t.ResponseHeader),
			UpstreamRead: d(t.UpstreamRead), UpstreamTotal: d(t.UpstreamTotal), TunnelIdle: d(t.TunnelIdle),
			DrainIdle: d(t.DrainIdle),
		},
		Limits: proxy.Limits{
			Head: http1.Limits{MaxRequestLine: int(l.MaxRequestLine), MaxHeaderBytes: int(l.MaxHeaderBytes), MaxHeaderCount: l.MaxHeaderCount},
			// One pair of keys bounds heads both ways (docs/config.md);
			// max_request_line has no meaning for a status line.
			UpstreamHead:       http1.Limits{MaxHeaderBytes: int(l.MaxHeaderBytes), MaxHeaderCount: l.MaxHeaderCount},
			MaxRequestBody:     int64(l.MaxRequestBody),
			MaxRequestsPerConn: l.MaxRequestsPerConn,
			MaxConns:           l.MaxConns,
			MaxConnsPerClient:  l.MaxConnsPerClient,
			MaxAttempts:        l.MaxAttempts,
		},
		Forwarding: proxy.Forwarding{Forwarded: c.Forwarding.Forwarded},
		Buffering: proxy.Buffering{
			Max:              int64(c.RequestBuffering.Max),
			RefuseOverBudget: c.RequestBuffering.OverBudget == "refuse",
		},
		Logger:    logger,
		AccessLog: c.AccessLog != "",
		Pool: proxy.NewPool(proxy.PoolLimits{
			MaxIdlePerPeer: c.Pool.MaxIdlePerEndpoint,
			MaxIdle:        c.Pool.MaxIdle,
			IdleTimeout:    d(c.Pool.IdleTimeout),
			MaxLifetime:    d(c.Pool.MaxLifetime),
		}),
	}
	// One budget and one count of clients for every listener: they bound
	// the process.
	budget := int64(c.RequestBuffering.Budget)
	if budget <= 0 {
		budget = proxy.DefaultBufferBudget
	}
	o.Buffering.Budget = proxy.NewBudget(budget)
	o.ClientConns = proxy.NewClientConns()
	for _, s := range c.Forwarding.TrustedProxies {
		if p, err := config.ParsePrefix(s); err == nil { // validated already
			o.Forwarding.TrustedProxies = append(o.Forwarding.TrustedProxies, p)
		}
	}
	return o
}

// attempt is what the gateway keeps of one request while it is proxied to
// a cluster: its rule, and its call of the cluster. Pooled: held in
// Session.Ctx from routing to Logging.
type attempt struct {
	rt   *router
	rule *rule // nil until a rule took the request
	call cluster.Call
	span *observe.Span // nil without tracing
}

var attempts = sync.Pool{New: func() any { return new(attempt) }}

func upstreamPeer(s *proxy.Session) (*proxy.Peer, error) {
	a := s.Ctx.(*attempt)
	p, err := a.rule.cluster.Peer(s, &a.call)
	if err == nil && a.span != nil {
		a.span.Try(s, p.Addr)
	}
	return p, err
}

func failToConnect(s *proxy.Session, _ *proxy.Peer, e *proxy.Error) *proxy.Error {
	a := s.Ctx.(*attempt)
	if a.span != nil {
		a.span.Failed(e)
	}
	return a.rule.cluster.FailToConnect(s, &a.call, e)
}

func errorWhileProxy(s *proxy.Session, _ *proxy.Peer, e *proxy.Error) *proxy.Error {
	a := s.Ctx.(*attempt)
	if a.span != nil {
		a.span.Failed(e)
	}
	return a.rule.cluster.ErrorWhileProxy(s, &a.call, e)
}

// logging counts the request in its route's metrics, ends its call of
// its cluster, and gives the attempt back.
func (sw *Switch) logging(s *proxy.Session, e *proxy.Error) {
	a, ok := s.Ctx.(*attempt)
	rt := sw.cur.Load() // refused before routing: counted as the current routes'
	if ok {
		rt = a.rt
	}
	if !ok || a.rule == nil { // refused before routing, or no rule took it
		if rt.unmatched != nil {
			rt.unmatched.Observe(s.Stats.Status, s.Stats.Total)
		}
		if ok {
			a.end(s, e)
		}
		return
	}
	r := a.rule
	if r.metrics != nil {
		r.metrics.Observe(s.Stats.Status, s.Stats.Total)
		if r.clusterMetrics != nil && s.Stats.Peer != "" {
			r.clusterMetrics.Observe(&s.Stats)
		}
	}
	if r.cluster != nil {
		r.cluster.Done(s, &a.call, e)
	}
	a.end(s, e)
}

// end ends the request's spans and gives the attempt back.
func (a *attempt) end(s *proxy.Session, e *proxy.Error) {
	if a.span != nil {
		a.span.End(s, e)
	}
	*a = attempt{}
	attempts.Put(a)
	s.Ctx = nil
}

// certNames describes a verified client certificate for upstreams, as
// Envoy's X-Forwarded-Client-Cert does: Subject="CN=…";DNS=…;URI=….
func certNames(c *x509.Certificate) string {
	// Values are quoted: a name holding ; , or = must not read as
	// parts of its own (a URI SAN of "x;URI=spiffe://corp/admin").
	quote := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	var b strings.Builder
	b.WriteString(`Subject="` + quote.Replace(c.Subject.String()) + `"`)
	for _, n := range c.DNSNames {
		b.WriteString(`;DNS="` + quote.Replace(n) + `"`)
	}
	for _, u := range c.URIs {
		b.WriteString(`;URI="` + quote.Replace(u.String()) + `"`)
	}
	// A certificate's names are the issuer's to choose: no byte of them
	// may break the field (a CR or LF would end it).
	out := []byte(b.String())
	for i, ch := range out {
		if ch < 0x20 || ch == 0x7f {
			out[i] = '?'
		}
	}
	return string(out)
}
