// Package cluster is a set of upstream endpoints that a proxy's phases pick
// from: a balancing policy, active health checks, passive outlier
// ejection, draining, retries within a budget and circuit breakers, over
// endpoints that are static or discovered through DNS.
//
// strait's config-driven gateway is built on it, and a program written on
// package proxy uses it the same way: make a Cluster from a config.Cluster,
// keep a Call per request (in Session.Ctx), and call the cluster from the
// phases UpstreamPeer, FailToConnect, ErrorWhileProxy and Logging. The
// policies themselves have no HTTP types (internal/balance and
// internal/health), so TCP and UDP proxies reuse them.
package cluster

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/balance"
	"github.com/straitproxy/strait/internal/grpcwire"
	"github.com/straitproxy/strait/internal/health"
	"github.com/straitproxy/strait/internal/mono"
	"github.com/straitproxy/strait/proxy"
)

// Options are what a cluster takes from outside its config.Cluster.
type Options struct {
	// Logger gets health, ejection and discovery events; slog.Default()
	// if nil.
	Logger *slog.Logger
	// MaxAttempts is the server's Limits.MaxAttempts: no retry is counted
	// against the budget past it. Zero means proxy.DefaultMaxAttempts.
	MaxAttempts int
	// PoolTag, if set, is part of the pool key of every connection to
	// the cluster's endpoints: a cluster a reload replaces keeps its
	// connections apart from its successor's, and its idle ones can be
	// closed by their tag (proxy.Pool.CloseIdleMatching).
	PoolTag string
}

// Cluster is a named set of endpoints with a balancing policy. Its methods
// are safe for concurrent use.
type Cluster struct {
	Name string

	policy    string
	key       hashKey
	failAll   bool  // with every endpoint down, fail rather than use them
	retryOn   []int // statuses a try is retried on
	retryGRPC []int // gRPC statuses a try is retried on
	ejects    bool  // passive outlier detection is on
	outlier   health.OutlierConfig
	check     *health.CheckConfig // nil: no active checks
	static    []balance.Endpoint  // endpoints from the config
	logger    *slog.Logger
	tls       *tls.Config // to the endpoints; nil for plain text
	tlsKey    string      // what tells its connections from others' in the pool
	protocol  string      // proxy.Peer.Protocol
	proxyHdr  byte        // PROXY protocol version sent to the endpoints; 0: none
	poolTag   string      // Options.PoolTag

	// set is the endpoints requests pick from now. A change (a DNS
	// answer) swaps in a new set; calls in flight finish on theirs.
	set     atomic.Pointer[set]
	mu      sync.Mutex      // guards drained, and swapping sets
	drained map[string]bool // addresses marked draining, kept across sets
	dns     *discovery      // nil: static endpoints only

	// The retry budget: retries in flight stay within retryRatio of the
	// requests in flight, or minRetries.
	retryRatio  float64
	minRetries  int64
	maxAttempts int
	active      atomic.Int64 // requests in flight
	retrying    atomic.Int64 // of those, ones that retried

	// Circuit breaking: a request holds one of slots while in flight, or
	// waits for one, one of at most maxPending, for up to pendingTimeout.
	slots          chan struct{}
	pending        atomic.Int64
	maxPending     int64
	pendingTimeout time.Duration

	retriesRefused, overflows, ejections atomic.Int64
}

// set is one version of a cluster's endpoints, with the state that is
// kept per endpoint: the policy's, ejections, health, draining.
type set struct {
	peers    []proxy.Peer
	eps      []balance.Endpoint
	rr       *balance.SmoothWeighted
	random   *balance.Random
	least    *balance.LeastRequest
	ring     *balance.Ring
	maglev   *balance.Maglev
	outlier  *health.Outlier // nil: off
	checker  *health.Checker // nil: no active checks
	draining []atomic.Bool
	active   []atomic.Int64 // requests in flight at each endpoint
}

// Circuit breakers' defaults (Envoy's, and a second's wait).
const (
	defaultMaxRequests    = 1024
	defaultMaxPending     = 1024
	defaultPendingTimeout = time.Second
)

// The retry budget's defaults (Envoy's): a fifth of the requests in
// flight may be retries, and three always may.
const (
	defaultRetryPercent = 20
	defaultMinRetries   = 3
)

// New returns the cluster cc describes (zero fields mean the defaults
// docs/config.md gives). Its active health checks and DNS discovery, if
// any, run until Stop. With DNS, New waits for the first answers (a
// failure is logged, and requests get 503 until an answer comes).
func New(cc *config.Cluster, o Options) (*Cluster, error) {
	c := &Cluster{Name: cc.Name, policy: cc.Balance, failAll: cc.WhenAllEjected == "fail",
		retryOn: cc.RetryOn, logger: o.Logger, drained: make(map[string]bool)}
	for _, name := range cc.RetryOnGRPC {
		code, ok := grpcwire.ParseCode(name)
		if !ok {
			return nil, fmt.Errorf("cluster %q: retry_on_grpc: unknown gRPC status %q", cc.Name, name)
		}
		c.retryGRPC = append(c.retryGRPC, int(code))
	}
	if c.logger == nil {
		c.logger = slog.Default()
	}
	c.logger = c.logger.With("cluster", cc.Name)
	switch c.policy {
	case "":
		c.policy = "round_robin"
	case "round_robin", "random", "least_request", "ring_hash", "maglev":
	default:
		return nil, fmt.Errorf("cluster %q: unknown balance %q", cc.Name, cc.Balance)
	}
	var err error
	if c.key, err = parseHashKey(cc.HashKey); err != nil {
		return nil, fmt.Errorf("cluster %q: %w", cc.Name, err)
	}
	for _, e := range cc.Endpoints {
		addr, w, err := config.ParseEndpoint(e)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", cc.Name, err)
		}
		c.static = append(c.static, balance.Endpoint{Name: addr, Weight: w})
	}
	if oc := cc.Outlier; oc.Enabled != "off" {
		c.ejects = true
		c.outlier = health.OutlierConfig{Failures: oc.Failures, Base: time.Duration(oc.BaseEjection),
			Max: time.Duration(oc.MaxEjection), MaxEjectedPercent: oc.MaxEjectedPercent}
	}
	if hc := cc.HealthCheck; hc.Kind != "" {
		c.check = &health.CheckConfig{Kind: hc.Kind, Interval: time.Duration(hc.Interval),
			Timeout: time.Duration(hc.Timeout), Healthy: hc.Healthy, Unhealthy: hc.Unhealthy, Method: hc.Method,
			Path: hc.Path, Host: hc.Host, Statuses: hc.Statuses, BodyContains: hc.BodyContains, Service: hc.Service}
	}
	l := cc.Limits
	c.slots = make(chan struct{}, cmpOr(l.MaxRequests, defaultMaxRequests))
	c.maxPending = int64(cmpOr(l.MaxPending, defaultMaxPending))
	c.pendingTimeout = cmpOr(time.Duration(l.PendingTimeout), defaultPendingTimeout)
	c.maxAttempts = cmpOr(o.MaxAttempts, proxy.DefaultMaxAttempts)
	c.retryRatio, c.minRetries = defaultRetryPercent/100.0, defaultMinRetries
	if b := cc.RetryBudget; b.Percent > 0 {
		c.retryRatio = float64(b.Percent) / 100
	}
	if b := cc.RetryBudget; b.Min > 0 {
		c.minRetries = int64(b.Min)
	}
	c.protocol, c.poolTag = cc.Protocol, o.PoolTag
	switch cc.ProxyProtocol {
	case "v1":
		c.proxyHdr = 1
	case "v2":
		c.proxyHdr = 2
	}
	if cc.TLS != nil {
		if c.tls, err = clientTLS(cc.TLS, cc.Protocol == "h2"); err != nil {
			return nil, fmt.Errorf("cluster %q: tls: %w", cc.Name, err)
		}
		if cc.TLS.InsecureSkipVerify {
			c.logger.Warn("tls: insecure_skip_verify: the endpoints' certificates are not verified")
		}
		t := cc.TLS
		c.tlsKey = fmt.Sprintf(" tls sni=%s ca=%s cert=%s alpn=%v min=%s insecure=%v protocol=%s", t.ServerName, t.CAFile, t.Cert, t.ALPN, t.MinVersion, t.InsecureSkipVerify, cc.Protocol)
	}
	if c.check != nil && c.check.Kind == "grpc" {
		c.check.TLS = c.tls
	}
	if d := cc.DNS; len(d.Names) > 0 || len(d.SRV) > 0 {
		if c.dns, err = newDiscovery(&d); err != nil {
			return nil, fmt.Errorf("cluster %q: dns: %w", cc.Name, err)
		}
		c.swap(c.static)
		c.dns.start(c)
		return c, nil
	}
	if len(c.static) == 0 {
		return nil, fmt.Errorf("cluster %q has no endpoints", cc.Name)
	}
	c.swap(c.static)
	return c, nil
}

// ProxyProtocol is the version of the PROXY protocol header a TCP relay
// sends the endpoints first (config.Cluster.ProxyProtocol), 0 for none.
func (c *Cluster) ProxyProtocol() byte { return c.proxyHdr }

// Stop ends the cluster's active health checks and DNS discovery.
func (c *Cluster) Stop() {
	if c.dns != nil {
		c.dns.stop()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.set.Load(); st.checker != nil {
		st.checker.Stop()
	}
}

// swap makes eps the cluster's endpoints, unless they are what it has.
// An endpoint the old set has too keeps its ejection, failures in a row
// and health; new ones start healthy; draining marks go by address.
func (c *Cluster) swap(eps []balance.Endpoint) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.set.Load()
	if old != nil && slices.Equal(old.eps, eps) {
		return false
	}
	st := &set{eps: eps, draining: make([]atomic.Bool, len(eps)), active: make([]atomic.Int64, len(eps))}
	addrs := make([]string, len(eps))
	for i, e := range eps {
		addrs[i] = e.Name
		peer := proxy.Peer{Addr: e.Name, Name: c.Name + "/" + e.Name, Protocol: c.protocol}
		if c.protocol == "h2c" {
			peer.Key = e.Name + " h2c" // not an HTTP/1.1 connection to the same address
		}
		if c.tls != nil {
			peer.TLS = c.tls
			if c.tls.ServerName == "" {
				// The endpoint's own host name is its SNI and the name
				// its certificate must hold (an IP address: no SNI, and
				// an IP SAN).
				peer.TLS = c.tls.Clone()
				peer.TLS.ServerName, _, _ = net.SplitHostPort(e.Name)
			}
			peer.Key = e.Name + c.tlsKey
		}
		if c.poolTag != "" {
			peer.Key = cmp.Or(peer.Key, e.Name) + " " + c.poolTag
		}
		st.peers = append(st.peers, peer)
		st.draining[i].Store(c.drained[e.Name])
	}
	if len(eps) > 0 {
		switch c.policy {
		case "random":
			st.random = balance.NewRandom(eps)
		case "least_request":
			st.least = balance.NewLeastRequest(eps, true)
		case "ring_hash":
			st.ring = balance.NewRing(eps)
		case "maglev":
			st.maglev = balance.NewMaglev(eps)
		default:
			st.rr = balance.NewSmoothWeighted(eps)
		}
		was := make(map[string]int) // index in old of the addresses it has
		if old != nil {
			for i, e := range old.eps {
				was[e.Name] = i
			}
		}
		if c.ejects {
			st.outlier = health.NewOutlier(len(eps), c.outlier)
			for j, e := range eps {
				if i, ok := was[e.Name]; ok && old.outlier != nil {
					st.outlier.Carry(j, old.outlier, i)
				}
			}
		}
		if c.check != nil {
			healthy := make([]bool, len(eps))
			for j, e := range eps {
				i, ok := was[e.Name]
				healthy[j] = !ok || old.checker == nil || old.checker.Healthy(i)
			}
			st.checker = health.StartChecker(addrs, healthy, *c.check, c.logger)
		}
	}
	c.set.Store(st)
	if old != nil && old.checker != nil {
		old.checker.Stop()
	}
	return true
}

// Endpoint is the state of one endpoint, for operators.
type Endpoint struct {
	Addr     string `json:"address"`
	Weight   int    `json:"weight"`
	Healthy  bool   `json:"healthy"`         // it passes its active checks (true without checks)
	Ejected  bool   `json:"ejected"`         // outlier detection took it out for a while
	Draining bool   `json:"draining"`        // it takes no new requests
	Active   int64  `json:"requests_active"` // requests in flight at it
}

// Endpoints returns the cluster's endpoints now.
func (c *Cluster) Endpoints() []Endpoint {
	st := c.set.Load()
	now := mono.Now()
	out := make([]Endpoint, len(st.eps))
	for i, e := range st.eps {
		out[i] = Endpoint{Addr: e.Name, Weight: max(e.Weight, 1),
			Healthy:  st.checker == nil || st.checker.Healthy(i),
			Ejected:  st.outlier != nil && st.outlier.Ejected(i, now),
			Draining: st.draining[i].Load(), Active: st.active[i].Load()}
	}
	return out
}

// ErrNoEndpoint is Drain's and Undrain's answer for an address the
// cluster does not have.
var ErrNoEndpoint = errors.New("no such endpoint")

// Drain stops new requests going to the endpoint at addr ("host:port");
// requests in flight there finish. The mark outlives changes of the
// endpoints (a DNS answer without addr, then with it again) until Undrain.
// Watch Endpoints' Active fall to 0 to know when it is idle.
func (c *Cluster) Drain(addr string) error { return c.mark(addr, true) }

// Undrain lets the endpoint at addr take requests again, or clears the
// mark of one the cluster does not have now.
func (c *Cluster) Undrain(addr string) error { return c.mark(addr, false) }

func (c *Cluster) mark(addr string, draining bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.set.Load()
	found := !draining && c.drained[addr]
	changed := c.drained[addr] != draining
	for i, e := range st.eps {
		if e.Name == addr {
			if st.draining[i].Swap(draining) != draining {
				changed = true
			}
			found = true
		}
	}
	if !found {
		return fmt.Errorf("cluster %q: %s: %w", c.Name, addr, ErrNoEndpoint)
	}
	if draining {
		c.drained[addr] = true
	} else {
		delete(c.drained, addr)
	}
	if changed {
		c.logger.Info("endpoint draining", "endpoint", addr, "draining", draining)
	}
	return nil
}

// Stats are a cluster's counters.
type Stats struct {
	Active         int64 `json:"requests_active"`    // requests in flight
	Retrying       int64 `json:"retries_active"`     // of those, ones that retried
	RetriesRefused int64 `json:"retries_refused"`    // retries the budget refused
	Overflows      int64 `json:"overflows"`          // requests refused (503) over the circuit breakers
	Ejections      int64 `json:"ejections"`          // endpoints ejected by outlier detection
	DNSRefreshes   int64 `json:"dns_lookups_ok"`     // DNS lookups that gave a usable answer
	DNSFailures    int64 `json:"dns_lookups_failed"` // DNS lookups that failed or answered nothing (the last set was kept)
}

// Stats returns the cluster's counters now.
func (c *Cluster) Stats() Stats {
	s := Stats{Active: c.active.Load(), Retrying: c.retrying.Load(),
		RetriesRefused: c.retriesRefused.Load(), Overflows: c.overflows.Load(), Ejections: c.ejections.Load()}
	if c.dns != nil {
		s.DNSRefreshes, s.DNSFailures = c.dns.refreshes.Load(), c.dns.failures.Load()
	}
	return s
}

func cmpOr[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

// hashKey is what ring_hash and maglev hash (config.Cluster.HashKey).
type hashKey struct {
	kind string // client_addr, path, header, cookie or query
	name string
}

func parseHashKey(s string) (hashKey, error) {
	kind, name, _ := strings.Cut(s, ":")
	switch {
	case kind == "":
		return hashKey{kind: "client_addr"}, nil
	case (kind == "client_addr" || kind == "path") && name == "",
		(kind == "header" || kind == "cookie" || kind == "query") && name != "":
		return hashKey{kind, name}, nil
	}
	return hashKey{}, fmt.Errorf("hash_key: want client_addr, path, header:NAME, cookie:NAME or query:NAME, got %q", s)
}

// clientTLS is the TLS config t describes, with a session cache shared by
// the cluster's connections. With h2, ALPN offers HTTP/2 first unless t
// says what to offer.
func clientTLS(t *config.ClusterTLS, h2 bool) (*tls.Config, error) {
	cfg := &tls.Config{
		ServerName:         t.ServerName,
		MinVersion:         tls.VersionTLS12,
		NextProtos:         t.ALPN,
		InsecureSkipVerify: t.InsecureSkipVerify,
		ClientSessionCache: tls.NewLRUClientSessionCache(256),
	}
	switch {
	case len(cfg.NextProtos) > 0:
	case h2:
		cfg.NextProtos = []string{"h2", "http/1.1"}
	default:
		cfg.NextProtos = []string{"http/1.1"}
	}
	if t.MinVersion == "1.3" {
		cfg.MinVersion = tls.VersionTLS13
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", t.CAFile)
		}
	}
	if t.Cert != "" {
		pair, err := tls.LoadX509KeyPair(t.Cert, t.Key)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return cfg, nil
}
