// Package gateway is strait's config-driven proxy: it turns a config file
// into proxy Phases (routes to clusters, clusters to peers) and Options. It
// is one implementation of the phases; a library user writes another.
package gateway

import (
	"bytes"
	"log/slog"
	"strings"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/balance"
	"github.com/straitproxy/strait/internal/http1"
	"github.com/straitproxy/strait/proxy"
)

// Cluster is a named set of peers with a balancing policy.
type Cluster struct {
	Name  string
	peers []proxy.Peer
	rr    *balance.RoundRobin
}

// NewCluster returns a round-robin cluster over endpoints (host:port).
func NewCluster(name string, endpoints []string) *Cluster {
	c := &Cluster{Name: name, rr: balance.NewRoundRobin(len(endpoints))}
	for _, ep := range endpoints {
		c.peers = append(c.peers, proxy.Peer{Addr: ep, Name: name + "/" + ep})
	}
	return c
}

// Pick returns the next peer.
func (c *Cluster) Pick() *proxy.Peer { return &c.peers[c.rr.Pick()] }

// route is a compiled config.Route.
type route struct {
	host       string // lower case, without "*." when wildcard
	wildcard   bool
	pathPrefix string
	cluster    *Cluster
}

func (r *route) matches(req *proxy.Request) bool {
	if r.host != "" {
		host := hostOnly(req.Authority)
		if r.wildcard {
			// "*.example.com" matches a.example.com, not example.com.
			if len(host) <= len(r.host)+1 || host[len(host)-len(r.host)-1] != '.' ||
				!header.EqualFold(host[len(host)-len(r.host):], r.host) {
				return false
			}
		} else if !header.EqualFold(host, r.host) {
			return false
		}
	}
	// OPTIONS * asks about the server, not a path: the routes for every
	// path take it.
	if req.PathIs("*") {
		return r.pathPrefix == "/"
	}
	return req.HasPathPrefix(r.pathPrefix)
}

// hostOnly strips the port from an authority.
func hostOnly(a []byte) []byte {
	if len(a) > 0 && a[0] == '[' {
		if i := bytes.IndexByte(a, ']'); i > 0 {
			return a[:i+1]
		}
		return a
	}
	if i := bytes.LastIndexByte(a, ':'); i >= 0 {
		return a[:i]
	}
	return a
}

// Listener is one configured listener: its address, the phases that
// route its requests, and what it lets requests upgrade to.
type Listener struct {
	Name    string
	Address string
	Phases  proxy.Phases
	// Upgrades is the listener's proxy.Options.Upgrades: nil for the
	// default.
	Upgrades []string
}

// Build compiles a config into listeners sharing one set of clusters, and
// the options every listener's server uses. The access log goes to logger;
// a caller that honours access_log's stdout or file sets AccessLogger.
func Build(c *config.Config, logger *slog.Logger) ([]Listener, proxy.Options) {
	clusters := make(map[string]*Cluster)
	for _, cc := range c.Clusters {
		clusters[cc.Name] = NewCluster(cc.Name, cc.Endpoints)
	}
	var ls []Listener
	for _, lc := range c.Listeners {
		var routes []route
		for _, rc := range lc.Routes {
			r := route{host: strings.ToLower(rc.Host), pathPrefix: rc.PathPrefix, cluster: clusters[rc.Cluster]}
			if strings.HasPrefix(r.host, "*.") {
				r.host, r.wildcard = r.host[2:], true
			}
			if r.pathPrefix == "" {
				r.pathPrefix = "/"
			}
			routes = append(routes, r)
		}
		name := lc.Name
		if name == "" {
			name = lc.Address
		}
		ls = append(ls, Listener{Name: name, Address: lc.Address, Phases: phases(routes), Upgrades: lc.Upgrades})
	}
	return ls, options(c, logger)
}

var errNoRoute = &proxy.Error{Side: proxy.Downstream, Kind: proxy.KindRequestRejected, Status: 404, Where: "no route matches"}

func phases(routes []route) proxy.Phases {
	return proxy.Phases{
		UpstreamPeer: func(s *proxy.Session) (*proxy.Peer, error) {
			for i := range routes {
				if routes[i].matches(&s.Request) {
					return routes[i].cluster.Pick(), nil
				}
			}
			return nil, errNoRoute
		},
	}
}

func options(c *config.Config, logger *slog.Logger) proxy.Options {
	t, l := c.Timeouts, c.Limits
	d := func(x config.Duration) time.Duration { return time.Duration(x) }
	o := proxy.Options{
		Timeouts: proxy.Timeouts{
			Header: d(t.Header), Body: d(t.Body), Write: d(t.Write), Idle: d(t.Idle),
			Connect: d(t.Connect), UpstreamWrite: d(t.UpstreamWrite), ResponseHeader: d(t.ResponseHeader),
			UpstreamRead: d(t.UpstreamRead), UpstreamTotal: d(t.UpstreamTotal), TunnelIdle: d(t.TunnelIdle),
		},
		Limits: proxy.Limits{
			Head: http1.Limits{MaxRequestLine: int(l.MaxRequestLine), MaxHeaderBytes: int(l.MaxHeaderBytes), MaxHeaderCount: l.MaxHeaderCount},
			// One pair of keys bounds heads both ways (docs/config.md);
			// max_request_line has no meaning for a status line.
			UpstreamHead:       http1.Limits{MaxHeaderBytes: int(l.MaxHeaderBytes), MaxHeaderCount: l.MaxHeaderCount},
			MaxRequestBody:     int64(l.MaxRequestBody),
			MaxRequestsPerConn: l.MaxRequestsPerConn,
			MaxConns:           l.MaxConns,
			MaxAttempts:        l.MaxAttempts,
		},
		Forwarding: proxy.Forwarding{Forwarded: c.Forwarding.Forwarded},
		Logger:     logger,
		AccessLog:  c.AccessLog != "",
		Pool: proxy.NewPool(proxy.PoolLimits{
			MaxIdlePerPeer: c.Pool.MaxIdlePerEndpoint,
			MaxIdle:        c.Pool.MaxIdle,
			IdleTimeout:    d(c.Pool.IdleTimeout),
			MaxLifetime:    d(c.Pool.MaxLifetime),
		}),
	}
	for _, s := range c.Forwarding.TrustedProxies {
		if p, err := config.ParsePrefix(s); err == nil { // validated already
			o.Forwarding.TrustedProxies = append(o.Forwarding.TrustedProxies, p)
		}
	}
	return o
}
