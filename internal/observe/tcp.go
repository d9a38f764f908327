package observe

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/straitproxy/strait/internal/tcpproxy"
)

// tcpCollector exports the relays of tcp listeners, read at each scrape.
// A retired server's counts are folded into its listener's totals.
type tcpCollector struct {
	mu   sync.Mutex
	list []namedTCP
}

type namedTCP struct {
	listener string
	s        *tcpproxy.Stats
	retired  bool
}

var (
	tcpConns = prometheus.NewDesc("strait_tcp_connections_total",
		"Connections a tcp listener accepted.", []string{"listener"}, nil)
	tcpRefused = prometheus.NewDesc("strait_tcp_connections_refused_total",
		"Connections a tcp listener closed unrelayed, by reason: max_conns (tcp.max_conns), no_upstream (no endpoint could be connected), bad_hello (sni_routes: no whole ClientHello within tcp.hello_timeout, or a malformed or oversized one), no_route (sni_routes: no route took the name, and no cluster), proxy_protocol (not from a trusted proxy, or no valid PROXY header).",
		[]string{"listener", "reason"}, nil)
	tcpActive = prometheus.NewDesc("strait_tcp_active_connections",
		"Relays open now (tcp.max_conns bounds them).", []string{"listener"}, nil)
	tcpBytes = prometheus.NewDesc("strait_tcp_bytes_total",
		"Bytes relayed, by direction: in (client to upstream), out (upstream to client).", []string{"listener", "direction"}, nil)
)

func (c *tcpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{tcpConns, tcpRefused, tcpActive, tcpBytes} {
		ch <- d
	}
}

func (c *tcpCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	type totals struct{ accepted, overLimit, noUpstream, badHello, noRoute, badProxy, active, in, out int64 }
	by := make(map[string]*totals)
	for _, n := range c.list {
		t := by[n.listener]
		if t == nil {
			t = new(totals)
			by[n.listener] = t
		}
		t.accepted += n.s.Accepted.Load()
		t.overLimit += n.s.OverLimit.Load()
		t.noUpstream += n.s.NoUpstream.Load()
		t.badHello += n.s.BadHello.Load()
		t.noRoute += n.s.NoRoute.Load()
		t.badProxy += n.s.BadProxy.Load()
		t.in += n.s.BytesIn.Load()
		t.out += n.s.BytesOut.Load()
		if !n.retired {
			t.active += n.s.Active.Load()
		}
	}
	for l, t := range by {
		ch <- prometheus.MustNewConstMetric(tcpConns, prometheus.CounterValue, float64(t.accepted), l)
		ch <- prometheus.MustNewConstMetric(tcpRefused, prometheus.CounterValue, float64(t.overLimit), l, "max_conns")
		ch <- prometheus.MustNewConstMetric(tcpRefused, prometheus.CounterValue, float64(t.noUpstream), l, "no_upstream")
		ch <- prometheus.MustNewConstMetric(tcpRefused, prometheus.CounterValue, float64(t.badHello), l, "bad_hello")
		ch <- prometheus.MustNewConstMetric(tcpRefused, prometheus.CounterValue, float64(t.noRoute), l, "no_route")
		ch <- prometheus.MustNewConstMetric(tcpRefused, prometheus.CounterValue, float64(t.badProxy), l, "proxy_protocol")
		ch <- prometheus.MustNewConstMetric(tcpActive, prometheus.GaugeValue, float64(t.active), l)
		ch <- prometheus.MustNewConstMetric(tcpBytes, prometheus.CounterValue, float64(t.in), l, "in")
		ch <- prometheus.MustNewConstMetric(tcpBytes, prometheus.CounterValue, float64(t.out), l, "out")
	}
}

// AddTCP exports the counters of a tcp listener's server.
func (m *Metrics) AddTCP(listener string, s *tcpproxy.Stats) {
	m.tcp.mu.Lock()
	defer m.tcp.mu.Unlock()
	m.tcp.list = append(m.tcp.list, namedTCP{listener: listener, s: s})
}

// RetireTCP folds the counters of a server that stopped into its
// listener's totals.
func (m *Metrics) RetireTCP(listener string, s *tcpproxy.Stats) {
	c := &m.tcp
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.list, func(n namedTCP) bool { return n.s == s })
	if i < 0 {
		return
	}
	c.list = slices.Delete(c.list, i, i+1)
	j := slices.IndexFunc(c.list, func(n namedTCP) bool { return n.retired && n.listener == listener })
	if j < 0 {
		c.list = append(c.list, namedTCP{listener: listener, s: new(tcpproxy.Stats), retired: true})
		j = len(c.list) - 1
	}
	into := c.list[j].s
	into.Accepted.Add(s.Accepted.Load())
	into.OverLimit.Add(s.OverLimit.Load())
	into.NoUpstream.Add(s.NoUpstream.Load())
	into.BadHello.Add(s.BadHello.Load())
	into.NoRoute.Add(s.NoRoute.Load())
	into.BadProxy.Add(s.BadProxy.Load())
	into.BytesIn.Add(s.BytesIn.Load())
	into.BytesOut.Add(s.BytesOut.Load())
}
