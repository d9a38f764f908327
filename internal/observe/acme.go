package observe

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/straitproxy/strait/internal/acme"
)

// acmeCollector exports the ACME managers' orders and certificates, read
// at each scrape.
type acmeCollector struct {
	mu       sync.Mutex
	managers map[string]*acme.Manager // by listener
}

var (
	acmeOrders = prometheus.NewDesc("strait_acme_orders_total",
		"ACME certificate orders, by listener and result: obtained, renewed, failed (retried with backoff; the stored certificate is served meanwhile; a stored certificate found unusable counts too).",
		[]string{"listener", "result"}, nil)
	acmeExpiry = prometheus.NewDesc("strait_acme_certificate_expiry_timestamp_seconds",
		"When the certificate served for an ACME name expires (Unix time), whether obtained or loaded from storage.",
		[]string{"listener", "name"}, nil)
	acmeRefused = prometheus.NewDesc("strait_acme_challenges_refused_total",
		"TLS-ALPN-01 handshakes (ALPN acme-tls/1) for a managed name that no pending validation explains, refused.",
		[]string{"listener"}, nil)
)

func (c *acmeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- acmeOrders
	ch <- acmeExpiry
	ch <- acmeRefused
}

func (c *acmeCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for listener, m := range c.managers {
		for _, r := range []struct {
			result string
			n      int64
		}{{"obtained", m.Stats.Obtained.Load()}, {"renewed", m.Stats.Renewed.Load()}, {"failed", m.Stats.Failed.Load()}} {
			ch <- prometheus.MustNewConstMetric(acmeOrders, prometheus.CounterValue, float64(r.n), listener, r.result)
		}
		ch <- prometheus.MustNewConstMetric(acmeRefused, prometheus.CounterValue, float64(m.Stats.ChallengesRefused.Load()), listener)
		for name, t := range m.Expiry() {
			ch <- prometheus.MustNewConstMetric(acmeExpiry, prometheus.GaugeValue, float64(t.Unix()), listener, name)
		}
	}
}

// SetACME exports the ACME managers of the running config, by listener.
func (m *Metrics) SetACME(managers map[string]*acme.Manager) {
	m.acme.mu.Lock()
	defer m.acme.mu.Unlock()
	m.acme.managers = managers
}
