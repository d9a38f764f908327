package observe

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/straitproxy/strait/internal/udpproxy"
	"github.com/straitproxy/strait/internal/udpxdp"
)

// udpCollector exports the flows of udp listeners, read at each scrape.
// A retired server's counts are kept in its listener's totals.
type udpCollector struct {
	mu      sync.Mutex
	live    []namedUDP
	retired map[string]*udpTotals
	xdp     func() udpxdp.Counters // the XDP program's, once loaded
}

type namedUDP struct {
	listener string
	s        *udpproxy.Stats
}

// udpTotals are a listener's counts, of its servers together.
type udpTotals struct {
	active, flows, expired, evicted, refused                   int64
	fullDrops, rateDrops, noUpstream, sendDrops, tooBig        int64
	flowRateDrops, inKernel                                    int64
	in, out, inBytes, outBytes, batches, gsoSends, groReceives int64
}

func (t *udpTotals) add(s *udpproxy.Stats) {
	t.flows += s.Flows.Load()
	t.expired += s.FlowsExpired.Load()
	t.evicted += s.FlowsEvicted.Load()
	t.refused += s.FlowsRefused.Load()
	t.fullDrops += s.FullDrops.Load()
	t.rateDrops += s.RateDrops.Load()
	t.noUpstream += s.NoUpstream.Load()
	t.sendDrops += s.SendDrops.Load()
	t.tooBig += s.TooBig.Load()
	t.in += s.DatagramsIn.Load()
	t.out += s.DatagramsOut.Load()
	t.inBytes += s.BytesIn.Load()
	t.outBytes += s.BytesOut.Load()
	t.batches += s.Batches.Load()
	t.gsoSends += s.GSOSends.Load()
	t.groReceives += s.GROReceives.Load()
	t.flowRateDrops += s.FlowRateDrops.Load()
}

var (
	udpFlows = prometheus.NewDesc("strait_udp_flows_total",
		"Flows (client addresses, each with an upstream socket) a udp listener opened.", []string{"listener"}, nil)
	udpActive = prometheus.NewDesc("strait_udp_active_flows",
		"Flows open now (udp.max_flows bounds them).", []string{"listener"}, nil)
	udpEnded = prometheus.NewDesc("strait_udp_flows_ended_total",
		"Flows ended before shutdown, by reason: idle (udp.idle_timeout), evicted (never answered, to make room in a full table), refused (the endpoint answered ICMP unreachable).",
		[]string{"listener", "reason"}, nil)
	udpDropped = prometheus.NewDesc("strait_udp_datagrams_dropped_total",
		"Datagrams dropped, by reason: table_full (a new flow, and no unanswered flow to evict), prefix_rate (a new flow over udp.new_flows_per_prefix), no_upstream (a new flow no endpoint takes), flow_rate (over udp.flow_rate, in user space), send (a socket's send buffer full, or the send failed), too_big (larger than 64 KiB).",
		[]string{"listener", "reason"}, nil)
	udpDatagrams = prometheus.NewDesc("strait_udp_datagrams_total",
		"Datagrams taken to relay, by direction: in (client to upstream), out (upstream to client); those dropped after are in strait_udp_datagrams_dropped_total.", []string{"listener", "direction"}, nil)
	udpBytes = prometheus.NewDesc("strait_udp_bytes_total",
		"Bytes relayed, by direction.", []string{"listener", "direction"}, nil)
	udpBatches = prometheus.NewDesc("strait_udp_receive_calls_total",
		"Receive calls (recvmmsg) that moved datagrams: datagrams over this is the batch size.", []string{"listener"}, nil)
	udpGSO = prometheus.NewDesc("strait_udp_gso_sends_total",
		"Messages sent with GSO: several datagrams in one.", []string{"listener"}, nil)
	udpGRO = prometheus.NewDesc("strait_udp_gro_receives_total",
		"Messages received coalesced by GRO: several datagrams in one.", []string{"listener"}, nil)
	udpXDPFlows = prometheus.NewDesc("strait_udp_xdp_flows",
		"Flows handed to the XDP program now (udp.xdp): it forwards them where it is attached, while their entries stay in its LRU map.", []string{"listener"}, nil)
	udpXDPDatagrams = prometheus.NewDesc("strait_udp_xdp_datagrams_total",
		"Datagrams the XDP program saw, by action: forwarded (in the kernel), passed (of no flow: to the kernel), fallback (of a flow, but not routable there: to the kernel, and strait's sockets), dropped (over udp.flow_rate).",
		[]string{"action"}, nil)
	udpXDPBytes = prometheus.NewDesc("strait_udp_xdp_forwarded_bytes_total",
		"UDP payload bytes the XDP program forwarded (as strait_udp_bytes_total counts them).", nil, nil)
)

func (c *udpCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{udpFlows, udpActive, udpEnded, udpDropped, udpDatagrams, udpBytes, udpBatches, udpGSO, udpGRO, udpXDPFlows, udpXDPDatagrams, udpXDPBytes} {
		ch <- d
	}
}

func (c *udpCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	by := make(map[string]*udpTotals)
	for l, t := range c.retired {
		copied := *t
		by[l] = &copied
	}
	for _, n := range c.live {
		t := by[n.listener]
		if t == nil {
			t = new(udpTotals)
			by[n.listener] = t
		}
		t.add(n.s)
		t.active += n.s.FlowsActive.Load()
		t.inKernel += n.s.FlowsXDP.Load()
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for l, t := range by {
		counter(udpFlows, t.flows, l)
		ch <- prometheus.MustNewConstMetric(udpActive, prometheus.GaugeValue, float64(t.active), l)
		counter(udpEnded, t.expired, l, "idle")
		counter(udpEnded, t.evicted, l, "evicted")
		counter(udpEnded, t.refused, l, "refused")
		counter(udpDropped, t.fullDrops, l, "table_full")
		counter(udpDropped, t.rateDrops, l, "prefix_rate")
		counter(udpDropped, t.noUpstream, l, "no_upstream")
		counter(udpDropped, t.sendDrops, l, "send")
		counter(udpDropped, t.tooBig, l, "too_big")
		counter(udpDatagrams, t.in, l, "in")
		counter(udpDatagrams, t.out, l, "out")
		counter(udpBytes, t.inBytes, l, "in")
		counter(udpBytes, t.outBytes, l, "out")
		counter(udpBatches, t.batches, l)
		counter(udpGSO, t.gsoSends, l)
		counter(udpGRO, t.groReceives, l)
		counter(udpDropped, t.flowRateDrops, l, "flow_rate")
		if c.xdp != nil {
			ch <- prometheus.MustNewConstMetric(udpXDPFlows, prometheus.GaugeValue, float64(t.inKernel), l)
		}
	}
	if c.xdp != nil {
		x := c.xdp()
		for _, a := range []struct {
			name string
			n    uint64
		}{{"forwarded", x.Forwarded}, {"passed", x.Passed}, {"fallback", x.Fallback}, {"dropped", x.Dropped}} {
			ch <- prometheus.MustNewConstMetric(udpXDPDatagrams, prometheus.CounterValue, float64(a.n), a.name)
		}
		ch <- prometheus.MustNewConstMetric(udpXDPBytes, prometheus.CounterValue, float64(x.ForwardedBytes))
	}
}

// SetXDP exports the counters of the UDP fast path's XDP program.
func (m *Metrics) SetXDP(counters func() udpxdp.Counters) {
	m.udp.mu.Lock()
	defer m.udp.mu.Unlock()
	m.udp.xdp = counters
}

// AddUDP exports the counters of a udp listener's server.
func (m *Metrics) AddUDP(listener string, s *udpproxy.Stats) {
	m.udp.mu.Lock()
	defer m.udp.mu.Unlock()
	m.udp.live = append(m.udp.live, namedUDP{listener, s})
}

// RetireUDP keeps the counts of a server that stopped in its listener's
// totals.
func (m *Metrics) RetireUDP(listener string, s *udpproxy.Stats) {
	c := &m.udp
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.IndexFunc(c.live, func(n namedUDP) bool { return n.s == s })
	if i < 0 {
		return
	}
	c.live = slices.Delete(c.live, i, i+1)
	if c.retired == nil {
		c.retired = make(map[string]*udpTotals)
	}
	t := c.retired[listener]
	if t == nil {
		t = new(udpTotals)
		c.retired[listener] = t
	}
	t.add(s)
}
