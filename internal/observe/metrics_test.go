package observe

import (
	"testing"
	"time"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/proxy"
)

// TestGather: two listeners' counters and the clusters' state gather
// into consistent families, each series with its own labels.
func TestGather(t *testing.T) {
	m := NewMetrics()
	var a, b proxy.Counters
	a.ConnsOpen.Store(3)
	b.ConnsOpen.Store(5)
	m.AddServer("a", &a)
	m.AddServer("b", &b)
	c, err := cluster.New(&config.Cluster{Name: "c", Endpoints: []string{"10.0.0.1:80", "10.0.0.2:80"}}, cluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	m.SetClusters(map[string]*cluster.Cluster{"c": c})
	r := m.Route("a", "0", "c")
	r.Observe(204, time.Millisecond)
	r.Observe(0, time.Millisecond)
	got := gather(t, m)
	for key, want := range map[string]float64{
		"strait_config_reloads_total result=failed":                              0,
		"strait_downstream_connections_active listener=a":                        3,
		"strait_downstream_connections_active listener=b":                        5,
		"strait_http_requests_total cluster=c code=2xx listener=a route=0":       1,
		"strait_http_requests_total cluster=c code=none listener=a route=0":      1,
		"strait_cluster_endpoint_healthy cluster=c endpoint=10.0.0.2:80":         1,
		"strait_cluster_dns_lookups_total cluster=c result=failed":               0,
		"strait_http_requests_refused_total listener=b reason=head_too_large":    0,
		"strait_downstream_connections_refused_total listener=a reason=fd_limit": 0,
	} {
		if v, ok := got[key]; !ok || v != want {
			t.Errorf("%s = %v (present: %v), want %v", key, v, ok, want)
		}
	}
}

// gather returns every series of m, by name and labels ("name k=v k=v").
func gather(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	fams, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, s := range f.Metric {
			key := f.GetName()
			for _, l := range s.Label {
				key += " " + l.GetName() + "=" + l.GetValue()
			}
			switch {
			case s.Gauge != nil:
				got[key] = s.Gauge.GetValue()
			case s.Counter != nil:
				got[key] = s.Counter.GetValue()
			}
		}
	}
	return got
}

// TestLifeCounts: reload and upgrade counts an old process hands over
// go on in the new one.
func TestLifeCounts(t *testing.T) {
	old := NewMetrics()
	old.Reloaded(true)
	old.Reloaded(true)
	old.Reloaded(false)
	old.Upgraded(false)
	m := NewMetrics()
	m.AddLifeCounts(old.LifeCounts())
	m.Upgraded(true)
	got := gather(t, m)
	for key, want := range map[string]float64{
		"strait_config_reloads_total result=ok":      2,
		"strait_config_reloads_total result=failed":  1,
		"strait_binary_upgrades_total result=ok":     1,
		"strait_binary_upgrades_total result=failed": 1,
	} {
		if got[key] != want {
			t.Errorf("%s = %v, want %v", key, got[key], want)
		}
	}
}
