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
	reloads  *prometheus.CounterVec
	upgrades *prometheus.CounterVec
	servers  serverCollector
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
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_config_reloads_total",
		Help: "Config reloads (SIGHUP, POST /reload, --watch), by result: ok, or failed (the running config stayed).",
	}, []string{"result"})
	m.upgrades = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "strait_binary_upgrades_total",
		Help: "Binary upgrades (SIGUSR2) this process began, by result: ok (the new process took over), or failed (this one serves on).",
	}, []string{"result"})
	for _, r := range []string{"ok", "failed"} {
		m.reloads.WithLabelValues(r)
		m.upgrades.WithLabelValues(r)
	}
	m.reg.MustRegister(m.requests, m.duration, m.upstream, m.conns, m.reloads, m.upgrades, &m.servers, &m.clusters,
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

// Reloaded counts a config reload.
func (m *Metrics) Reloaded(ok bool) { m.reloads.WithLabelValues(result(ok)).Inc() }

// Upgraded counts a binary upgrade.
func (m *Metrics) Upgraded(ok bool) { m.upgrades.WithLabelValues(result(ok)).Inc() }

func result(ok bool) string {
	if ok {
		return "ok"
	}
	return "failed"
}

// AddServer exports the counters of a server of listener. A listener's
// series sum its servers': one a reload replaced keeps counting while it
// drains, and its totals stay in the sum after.
func (m *Metrics) AddServer(listener string, c *proxy.Counters) {
	m.servers.mu.Lock()
	defer m.servers.mu.Unlock()
	m.servers.list = append(m.servers.list, namedCounters{listener, c})
}

// SetClusters exports the state of clusters: per endpoint and per cluster.
func (m *Metrics) SetClusters(cs map[string]*cluster.Cluster) {
	m.clusters.mu.Lock()
	defer m.clusters.mu.Unlock()
	m.clusters.clusters = cs
}

// AddPool exports the idle connections of the upstream pool.
func (m *Metrics) AddPool(p *proxy.Pool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "strait_upstream_pool_idle_connections",
		Help: "Idle upstream connections kept for reuse.",
	}, func() float64 { return float64(p.Idle()) }))
}
