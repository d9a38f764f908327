// Package observe is what strait shows of itself: Prometheus metrics
// (github.com/prometheus/client_golang).
//
// Nothing on the request path resolves a labelled series: the series of a
// route and of a cluster are looked up once, when a config is built, and
// a request adds to them with atomic operations only (no allocation).
// Counters the engine and the clusters keep already (proxy.Counters,
// cluster.Stats, endpoint state) are read when Prometheus scrapes.
package observe

import (
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/proxy"
)

// Metrics is one process's metrics.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	upstream *prometheus.HistogramVec
	conns    *prometheus.CounterVec
	// What changed the running config or binary: carried over to the
	// new process by an upgrade, so that the counts go on.
	life     [4]atomic.Int64            // indexed by reloadOK, reloadFailed, upgradeOK, upgradeFailed
	pool     atomic.Pointer[proxy.Pool] // SetPool's
	servers  serverCollector
	acme     acmeCollector
	tcp      tcpCollector
	udp      udpCollector
	clusters clusterCollector
}

// Buckets of the latency histograms, in seconds: 1 ms to 30 s.
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}

// NewMetrics returns the metrics of a process, with Go's runtime and
// process collectors.
func NewMetrics() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_http_requests_total",
		Help: "HTTP requests answered, by listener, route, cluster and status class (1xx to 5xx; \"none\" when no status was sent).",
	}, []string{"listener", "route", "cluster", "code"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "strait_http_request_duration_seconds",
		Help:    "From the request head's first byte to the response's end, downstream.",
		Buckets: latencyBuckets,
	}, []string{"listener", "route"})
	m.upstream = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "strait_upstream_response_seconds",
		Help:    "From sending a request upstream to its response head, for the try that answered.",
		Buckets: latencyBuckets,
	}, []string{"cluster"})
	m.conns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_upstream_connections_total",
		Help: "Upstream connections requests were sent on, by whether they were reused from the pool.",
	}, []string{"cluster", "reused"})
	for i, c := range []struct{ name, help, result string }{
		{"strait_config_reloads_total", reloadsHelp, "ok"},
		{"strait_config_reloads_total", reloadsHelp, "failed"},
		{"strait_binary_upgrades_total", upgradesHelp, "ok"},
		{"strait_binary_upgrades_total", upgradesHelp, "failed"},
	} {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: c.name, Help: c.help, ConstLabels: prometheus.Labels{"result": c.result},
		}, func() float64 { return float64(m.life[i].Load()) }))
	}
	m.reg.MustRegister(m.requests, m.duration, m.upstream, m.conns, &m.acme, &m.tcp, &m.udp, &m.servers, &m.clusters,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry is where more collectors go.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Route is the series of one route of one listener.
type Route struct {
	codes    [6]prometheus.Counter // none, 1xx ... 5xx
	duration prometheus.Observer
}

// Route returns the series of a route to cluster (empty for a route that
// answers itself, or for requests no route took).
func (m *Metrics) Route(listener, route, cluster string) *Route {
	r := &Route{duration: m.duration.WithLabelValues(listener, route)}
	for i, c := range []string{"none", "1xx", "2xx", "3xx", "4xx", "5xx"} {
		r.codes[i] = m.requests.WithLabelValues(listener, route, cluster, c)
	}
	return r
}

// Observe counts a request that ended with status after total.
func (r *Route) Observe(status int, total time.Duration) {
	class := status / 100
	if class < 1 || class > 5 {
		class = 0
	}
	r.codes[class].Inc()
	r.duration.Observe(total.Seconds())
}

// Cluster is the series of one cluster.
type Cluster struct {
	upstream prometheus.Observer
	fresh    prometheus.Counter
	reused   prometheus.Counter
}

// Cluster returns the series of the cluster named name.
func (m *Metrics) Cluster(name string) *Cluster {
	return &Cluster{
		upstream: m.upstream.WithLabelValues(name),
		fresh:    m.conns.WithLabelValues(name, "false"),
		reused:   m.conns.WithLabelValues(name, "true"),
	}
}

// Observe counts the try that answered a request: its time to the
// response head, and whether its connection was reused.
func (c *Cluster) Observe(s *proxy.Stats) {
	if s.Reused {
		c.reused.Inc()
	} else {
		c.fresh.Inc()
	}
	if s.UpstreamHeader > 0 {
		c.upstream.Observe(s.UpstreamHeader.Seconds())
	}
}

const (
	reloadsHelp  = "Config reloads (SIGHUP, POST /reload, --watch), by result: ok, or failed (the running config stayed); counted across binary upgrades."
	upgradesHelp = "Binary upgrades (SIGUSR2), by result: ok (a new process took over: counted in it), or failed (the old one served on); counted across binary upgrades."
)

const (
	reloadOK = iota
	reloadFailed
	upgradeOK
	upgradeFailed
)

// Reloaded counts a config reload.
func (m *Metrics) Reloaded(ok bool) { m.life[pick(ok, reloadOK, reloadFailed)].Add(1) }

// Upgraded counts a binary upgrade.
func (m *Metrics) Upgraded(ok bool) { m.life[pick(ok, upgradeOK, upgradeFailed)].Add(1) }

func pick(ok bool, yes, no int) int {
	if ok {
		return yes
	}
	return no
}

// LifeCounts are the reload and upgrade counts, as a process hands them
// to the next.
type LifeCounts [4]int64

// LifeCounts returns the reload and upgrade counts.
func (m *Metrics) LifeCounts() LifeCounts {
	var c LifeCounts
	for i := range c {
		c[i] = m.life[i].Load()
	}
	return c
}

// AddLifeCounts adds an old process's counts to this one's.
func (m *Metrics) AddLifeCounts(c LifeCounts) {
	for i, n := range c {
		m.life[i].Add(n)
	}
}

// AddServer exports the counters of a server of listener. A listener's
// series sum its servers': one a reload replaced keeps counting while it
// drains, and its totals stay in the sum after.
func (m *Metrics) AddServer(listener string, c *proxy.Counters) {
	m.servers.mu.Lock()
	defer m.servers.mu.Unlock()
	m.servers.list = append(m.servers.list, namedCounters{listener: listener, c: c})
}

// RetireServer folds the counters of a server of listener that has
// stopped (a reload replaced it) into the listener's totals, and stops
// reading it: a process reloaded all day keeps one set per listener.
func (m *Metrics) RetireServer(listener string, c *proxy.Counters) {
	sc := &m.servers
	sc.mu.Lock()
	defer sc.mu.Unlock()
	i := slices.IndexFunc(sc.list, func(n namedCounters) bool { return n.c == c })
	if i < 0 {
		return
	}
	sc.list = slices.Delete(sc.list, i, i+1)
	j := slices.IndexFunc(sc.list, func(n namedCounters) bool { return n.retired && n.listener == listener })
	if j < 0 {
		sc.list = append(sc.list, namedCounters{listener: listener, c: new(proxy.Counters), retired: true})
		j = len(sc.list) - 1
	}
	into := sc.list[j].c
	for _, sm := range serverMetrics {
		if sm.kind != prometheus.CounterValue {
			continue // gauges: what is open now; none in a stopped server
		}
		to := sm.values(into)
		for k, from := range sm.values(c) {
			to[k].v.Add(from.v.Load())
		}
	}
}

// SetClusters exports the state of clusters: per endpoint and per cluster.
func (m *Metrics) SetClusters(cs map[string]*cluster.Cluster) {
	m.clusters.mu.Lock()
	defer m.clusters.mu.Unlock()
	m.clusters.clusters = cs
}

// SetPool exports the idle connections of the upstream pool p: the one
// a reload with another upstream_pool made, from then on.
func (m *Metrics) SetPool(p *proxy.Pool) {
	if m.pool.Swap(p) != nil {
		return
	}
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strait_upstream_pool_idle_connections",
		Help: "Idle upstream connections kept for reuse.",
	}, func() float64 { return float64(m.pool.Load().Idle()) }))
}
