package observe

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/proxy"
)

// serverCollector exports the servers' proxy.Counters, read at each
// scrape.
type serverCollector struct {
	mu   sync.Mutex
	list []namedCounters
}

type namedCounters struct {
	listener string
	c        *proxy.Counters
	retired  bool // the totals of the listener's servers that stopped
}

// A serverMetric is one metric made of proxy.Counters: a value per
// reason, or one value with no reason label.
type serverMetric struct {
	desc   *prometheus.Desc
	kind   prometheus.ValueType
	values func(c *proxy.Counters) []reasonValue
}

type reasonValue struct {
	reason string // "" for a metric without a reason label
	v      *atomic.Int64
}

func one(v *atomic.Int64) []reasonValue { return []reasonValue{{"", v}} }

func metric(name, help string, kind prometheus.ValueType, reasons bool, values func(*proxy.Counters) []reasonValue) serverMetric {
	labels := []string{"listener"}
	if reasons {
		labels = append(labels, "reason")
	}
	return serverMetric{prometheus.NewDesc(name, help, labels, nil), kind, values}
}

// serverMetrics name every counter of proxy.Counters.
var serverMetrics = []serverMetric{
	metric("strait_downstream_connections_active", "Client connections open.", prometheus.GaugeValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.ConnsOpen) }),
	metric("strait_http_requests_active", "Requests being served.", prometheus.GaugeValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.RequestsActive) }),
	metric("strait_downstream_connections_total", "Client connections accepted.", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.ConnsAccepted) }),
	metric("strait_downstream_connections_refused_total", "Client connections refused, by why: with 503, over a limit (max_conns, fd_limit, max_conns_per_client); closed, not from a trusted proxy or without a valid PROXY header (proxy_protocol).", prometheus.CounterValue, true,
		func(c *proxy.Counters) []reasonValue {
			return []reasonValue{{"max_conns", &c.ConnsRejected}, {"fd_limit", &c.ConnsOverFDLimit}, {"max_conns_per_client", &c.ConnsPerClientRejected},
				{"proxy_protocol", &c.ConnsProxyRefused}}
		}),
	metric("strait_http_requests_received_total", "Request heads read.", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.Requests) }),
	metric("strait_http_requests_refused_total", "Requests refused before any upstream, by what was wrong with them.", prometheus.CounterValue, true,
		func(c *proxy.Counters) []reasonValue {
			return []reasonValue{{"malformed", &c.BadRequests}, {"not_implemented", &c.NotImplemented}, {"uri_too_long", &c.URITooLong},
				{"head_too_large", &c.HeadTooLarge}, {"body_too_large", &c.BodyTooLarge}, {"head_timeout", &c.HeaderTimeouts}}
		}),
	metric("strait_upstream_dials_total", "New upstream connections.", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.UpstreamDials) }),
	metric("strait_upstream_stale_connections_total", "Pooled connections found closed before reuse.", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.UpstreamStale) }),
	metric("strait_upstream_unprocessed_total", "Tries an HTTP/2 upstream did not process (streams above its GOAWAY, REFUSED_STREAM), which may go again.", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.UpstreamUnprocessed) }),
	metric("strait_upstream_failures_total", "Requests failed upstream, by what failed: malformed responses (502), timeouts (504), other errors (502), no peer (503).", prometheus.CounterValue, true,
		func(c *proxy.Counters) []reasonValue {
			return []reasonValue{{"protocol", &c.UpstreamProtocol}, {"timeout", &c.UpstreamTimeouts}, {"error", &c.UpstreamErrors}, {"no_peer", &c.NoPeer}}
		}),
	metric("strait_downstream_gone_total", "Clients that left before their response was done.", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.DownstreamGone) }),
	metric("strait_request_bodies_buffered_total", "Request bodies read whole before the exchange.", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.BodiesBuffered) }),
	metric("strait_tls_handshakes_total", "TLS handshakes with clients, by result: ok, failed, plain_http (an HTTP request to the TLS port, answered 400), timeout.", prometheus.CounterValue, true,
		func(c *proxy.Counters) []reasonValue {
			h := &c.Handshakes
			return []reasonValue{{"ok", &h[proxy.HandshakeOK]}, {"failed", &h[proxy.HandshakeFailed]},
				{"plain_http", &h[proxy.HandshakePlainHTTP]}, {"timeout", &h[proxy.HandshakeTimeout]}}
		}),
	metric("strait_http2_connections_total", "HTTP/2 client connections served.", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.HTTP2.Conns) }),
	metric("strait_http2_streams_total", "HTTP/2 streams opened by clients.", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.HTTP2.Streams) }),
	metric("strait_http2_streams_reset_total", "HTTP/2 streams reset before their response was done: by the client, refused past max concurrent streams, or malformed (PROTOCOL_ERROR).", prometheus.CounterValue, true,
		func(c *proxy.Counters) []reasonValue {
			h := &c.HTTP2
			return []reasonValue{{"client", &h.ClientResets}, {"refused", &h.RefusedStreams}, {"malformed", &h.MalformedStream}}
		}),
	metric("strait_http2_goaways_total", "HTTP/2 connections ended with GOAWAY for the client's doing: ENHANCE_YOUR_CALM for too many resets or for a flood of frames that carry no request, or a protocol error.", prometheus.CounterValue, true,
		func(c *proxy.Counters) []reasonValue {
			h := &c.HTTP2
			return []reasonValue{{"reset_flood", &h.ResetFloods}, {"frame_flood", &h.FrameFloods}, {"protocol_error", &h.ProtocolErrors}}
		}),
	metric("strait_http2_header_lists_too_large_total", "HTTP/2 requests whose header list was over the limit (431).", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.HTTP2.HeaderTooLarge) }),
	metric("strait_grpc_calls_total", "gRPC and gRPC-Web calls (by Content-Type).", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.GRPCCalls) }),
	metric("strait_grpc_web_translated_total", "gRPC-Web calls translated to gRPC for the origin.", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.GRPCWebTranslated) }),
	metric("strait_grpc_status_answers_total", "gRPC calls strait answered with a status of its own (UNAVAILABLE, DEADLINE_EXCEEDED, ...; docs/grpc.md).", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.GRPCStatusAnswers) }),
	metric("strait_cors_preflights_refused_total", "CORS preflights for gRPC-Web refused (403): origin or method not allowed.", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.CORSRefused) }),
	metric("strait_request_buffer_over_budget_total", "Request bodies that did not fit the buffering budget (streamed, or 503).", prometheus.CounterValue, false,
		func(c *proxy.Counters) []reasonValue { return one(&c.BufferOverBudget) }),
}

func (sc *serverCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range serverMetrics {
		ch <- m.desc
	}
}

func (sc *serverCollector) Collect(ch chan<- prometheus.Metric) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	// A reload may give a listener a new server while the old one
	// drains: a listener's series are the sum of its servers', so that
	// counters never go back.
	var order []string
	sums := make(map[string][][]float64)
	for _, srv := range sc.list {
		sum, ok := sums[srv.listener]
		if !ok {
			order = append(order, srv.listener)
			sum = make([][]float64, len(serverMetrics))
		}
		for i, m := range serverMetrics {
			vals := m.values(srv.c)
			if sum[i] == nil {
				sum[i] = make([]float64, len(vals))
			}
			for j, rv := range vals {
				sum[i][j] += float64(rv.v.Load())
			}
		}
		sums[srv.listener] = sum
	}
	var zero proxy.Counters
	for _, listener := range order {
		for i, m := range serverMetrics {
			for j, rv := range m.values(&zero) {
				labels := []string{listener}
				if rv.reason != "" {
					labels = append(labels, rv.reason)
				}
				ch <- prometheus.MustNewConstMetric(m.desc, m.kind, sums[listener][i][j], labels...)
			}
		}
	}
}

// clusterCollector exports the clusters' state, read at each scrape.
type clusterCollector struct {
	mu       sync.Mutex
	clusters map[string]*cluster.Cluster
}

var (
	endpointLabels = []string{"cluster", "endpoint"}
	descHealthy    = prometheus.NewDesc("strait_cluster_endpoint_healthy", "1 if the endpoint passes its active health checks (always, without checks).", endpointLabels, nil)
	descEjected    = prometheus.NewDesc("strait_cluster_endpoint_ejected", "1 while outlier detection keeps the endpoint out.", endpointLabels, nil)
	descDraining   = prometheus.NewDesc("strait_cluster_endpoint_draining", "1 while the endpoint drains: it takes no new requests.", endpointLabels, nil)
	descEPActive   = prometheus.NewDesc("strait_cluster_endpoint_requests_active", "Requests in flight at the endpoint.", endpointLabels, nil)

	clusterLabels   = []string{"cluster"}
	descActive      = prometheus.NewDesc("strait_cluster_requests_active", "Requests in flight to the cluster.", clusterLabels, nil)
	descRetrying    = prometheus.NewDesc("strait_cluster_retries_active", "Requests in flight that retried.", clusterLabels, nil)
	descRefused     = prometheus.NewDesc("strait_cluster_retry_budget_exhausted_total", "Retries not made because the retry budget was spent.", clusterLabels, nil)
	descOverflows   = prometheus.NewDesc("strait_cluster_circuit_breaker_rejections_total", "Requests refused (503) over the cluster's limits.", clusterLabels, nil)
	descEjections   = prometheus.NewDesc("strait_cluster_ejections_total", "Endpoints ejected by outlier detection.", clusterLabels, nil)
	descDNS         = prometheus.NewDesc("strait_cluster_dns_lookups_total", "DNS lookups of the cluster's names, by result (ok, or failed: the last endpoints were kept).", []string{"cluster", "result"}, nil)
	clusterDescList = []*prometheus.Desc{descHealthy, descEjected, descDraining, descEPActive, descActive, descRetrying, descRefused, descOverflows, descEjections, descDNS}
)

func (cc *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range clusterDescList {
		ch <- d
	}
}

func (cc *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for name, c := range cc.clusters {
		for _, e := range c.Endpoints() {
			ch <- prometheus.MustNewConstMetric(descHealthy, prometheus.GaugeValue, b(e.Healthy), name, e.Addr)
			ch <- prometheus.MustNewConstMetric(descEjected, prometheus.GaugeValue, b(e.Ejected), name, e.Addr)
			ch <- prometheus.MustNewConstMetric(descDraining, prometheus.GaugeValue, b(e.Draining), name, e.Addr)
			ch <- prometheus.MustNewConstMetric(descEPActive, prometheus.GaugeValue, float64(e.Active), name, e.Addr)
		}
		s := c.Stats()
		ch <- prometheus.MustNewConstMetric(descActive, prometheus.GaugeValue, float64(s.Active), name)
		ch <- prometheus.MustNewConstMetric(descRetrying, prometheus.GaugeValue, float64(s.Retrying), name)
		ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(s.RetriesRefused), name)
		ch <- prometheus.MustNewConstMetric(descOverflows, prometheus.CounterValue, float64(s.Overflows), name)
		ch <- prometheus.MustNewConstMetric(descEjections, prometheus.CounterValue, float64(s.Ejections), name)
		ch <- prometheus.MustNewConstMetric(descDNS, prometheus.CounterValue, float64(s.DNSRefreshes), name, "ok")
		ch <- prometheus.MustNewConstMetric(descDNS, prometheus.CounterValue, float64(s.DNSFailures), name, "failed")
	}
}
