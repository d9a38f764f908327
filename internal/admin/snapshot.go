package admin

import (
	"cmp"
	"math"
	"slices"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/straitproxy/strait/cluster"
)

// The metrics a snapshot reads (docs/admin.md lists them all).
const (
	metricRequests       = "strait_http_requests_total"
	metricDuration       = "strait_http_request_duration_seconds"
	metricConnsActive    = "strait_downstream_connections_active"
	metricRequestsActive = "strait_http_requests_active"
	metricUpstreamConns  = "strait_upstream_connections_total"
	metricPoolIdle       = "strait_upstream_pool_idle_connections"
)

// statusClasses are the values of strait_http_requests_total's code label.
var statusClasses = []string{"1xx", "2xx", "3xx", "4xx", "5xx", "none"}

// A sample is what one reading of the registry and the clusters gives:
// counters as they stand, summed over listeners and routes.
type sample struct {
	at             time.Time
	codes          map[string]float64 // answered requests by status class
	buckets        []bucket           // request durations, cumulative, by upper bound
	observed       float64            // request durations observed (the +Inf bucket)
	connsActive    float64
	requestsActive float64
	poolIdle       float64
	conns          map[string]connCount // upstream connections by cluster
	clusters       []clusterSample
}

// A bucket is one bucket of a cumulative histogram: n observations at or
// below le.
type bucket struct {
	le float64
	n  float64
}

type connCount struct{ reused, fresh float64 }

type clusterSample struct {
	name      string
	endpoints []cluster.Endpoint
	stats     cluster.Stats
}

// readSample sums the families strait's metrics gathered at into a sample.
func readSample(families []*dto.MetricFamily, at time.Time) *sample {
	s := &sample{at: at, codes: map[string]float64{}, conns: map[string]connCount{}}
	byLE := map[float64]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case metricRequests:
				s.codes[label(m, "code")] += m.GetCounter().GetValue()
			case metricDuration:
				h := m.GetHistogram()
				s.observed += float64(h.GetSampleCount())
				for _, b := range h.GetBucket() {
					byLE[b.GetUpperBound()] += float64(b.GetCumulativeCount())
				}
			case metricConnsActive:
				s.connsActive += m.GetGauge().GetValue()
			case metricRequestsActive:
				s.requestsActive += m.GetGauge().GetValue()
			case metricPoolIdle:
				s.poolIdle += m.GetGauge().GetValue()
			case metricUpstreamConns:
				name := label(m, "cluster")
				c := s.conns[name]
				if label(m, "reused") == "true" {
					c.reused += m.GetCounter().GetValue()
				} else {
					c.fresh += m.GetCounter().GetValue()
				}
				s.conns[name] = c
			}
		}
	}
	for le, n := range byLE {
		if math.IsInf(le, +1) { // the count of all, which observed holds
			continue
		}
		s.buckets = append(s.buckets, bucket{le, n})
	}
	slices.SortFunc(s.buckets, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	return s
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// snapshot is what /summary answers and /events sends each second.
type snapshot struct {
	Time int64 `json:"time_ms"` // Unix milliseconds
	// Window is the time the rates and percentiles are over: since the
	// previous sample. 0 for a first sample: no rates, and percentiles of
	// every request since strait started.
	Window   float64         `json:"window_seconds"`
	Requests requests        `json:"requests"`
	Status   map[string]rate `json:"status"` // by class: 1xx … 5xx, "none" (the client left)
	Latency  latency         `json:"latency_seconds"`
	// DownstreamConns are the client connections open.
	DownstreamConns float64       `json:"downstream_connections_active"`
	Upstream        reuse         `json:"upstream_connections"`
	PoolIdle        float64       `json:"upstream_pool_idle"`
	Clusters        []clusterView `json:"clusters"`
}

// A rate is a counter and how fast it went up over the window.
type rate struct {
	Total     float64 `json:"total"`
	PerSecond float64 `json:"per_second"`
}

type requests struct {
	rate
	Active float64 `json:"active"` // being served
}

// latency is of the requests answered in the window, estimated from the
// histogram's buckets as Prometheus' histogram_quantile does. Count 0
// means there was none (the percentiles are then 0).
type latency struct {
	Count float64 `json:"count"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
}

// reuse counts the upstream connections answered requests went on.
type reuse struct {
	Reused rate `json:"reused"` // from the pool
	New    rate `json:"new"`
}

type clusterView struct {
	Name        string             `json:"name"`
	Endpoints   []cluster.Endpoint `json:"endpoints"`
	Stats       cluster.Stats      `json:"stats"`
	Connections reuse              `json:"upstream_connections"`
}

// makeSnapshot computes the snapshot of cur: rates and latency over the
// time since prev, or with prev nil, latency since the start and no rates.
func makeSnapshot(prev, cur *sample) snapshot {
	window := 0.0
	if prev != nil {
		window = cur.at.Sub(prev.at).Seconds()
	} else {
		prev = &sample{}
	}
	r := func(before, now float64) rate {
		x := rate{Total: now}
		if window > 0 {
			x.PerSecond = increase(before, now) / window
		}
		return x
	}
	s := snapshot{
		Time:            cur.at.UnixMilli(),
		Window:          window,
		Status:          make(map[string]rate, len(statusClasses)),
		DownstreamConns: cur.connsActive,
		PoolIdle:        cur.poolIdle,
		Clusters:        make([]clusterView, 0, len(cur.clusters)),
	}
	var before, now float64
	for _, class := range statusClasses {
		s.Status[class] = r(prev.codes[class], cur.codes[class])
		before += prev.codes[class]
		now += cur.codes[class]
	}
	s.Requests = requests{r(before, now), cur.requestsActive}

	buckets, n := windowBuckets(prev.buckets, prev.observed, cur.buckets, cur.observed)
	s.Latency = latency{Count: n}
	if n > 0 {
		s.Latency.P50 = quantile(0.5, buckets, n)
		s.Latency.P90 = quantile(0.9, buckets, n)
		s.Latency.P99 = quantile(0.99, buckets, n)
	}

	var all, allBefore connCount
	for name, c := range cur.conns {
		all.reused += c.reused
		all.fresh += c.fresh
		allBefore.reused += prev.conns[name].reused
		allBefore.fresh += prev.conns[name].fresh
	}
	s.Upstream = reuse{r(allBefore.reused, all.reused), r(allBefore.fresh, all.fresh)}
	for _, c := range cur.clusters {
		was, is := prev.conns[c.name], cur.conns[c.name]
		s.Clusters = append(s.Clusters, clusterView{c.name, c.endpoints, c.stats,
			reuse{r(was.reused, is.reused), r(was.fresh, is.fresh)}})
	}
	return s
}

// increase is how much a counter went up from before to now. A counter
// that went down was reset, and counted now since.
func increase(before, now float64) float64 {
	if now < before {
		return now
	}
	return now - before
}

// windowBuckets returns the buckets of the observations made between
// two readings of a histogram, and how many there were. If any bucket went
// down, the histogram was reset, and the window is cur as it stands.
func windowBuckets(prev []bucket, prevN float64, cur []bucket, curN float64) ([]bucket, float64) {
	if curN < prevN {
		return cur, curN
	}
	out := make([]bucket, len(cur))
	for i, b := range cur {
		was := 0.0
		if j, ok := slices.BinarySearchFunc(prev, b.le, func(x bucket, le float64) int { return cmp.Compare(x.le, le) }); ok {
			was = prev[j].n
		}
		if b.n < was {
			return cur, curN
		}
		out[i] = bucket{b.le, b.n - was}
	}
	return out, curN - prevN
}

// quantile estimates the q-quantile (0 < q < 1) of n observations from
// cumulative buckets sorted by upper bound (the +Inf bucket left out: it
// is n), as Prometheus' histogram_quantile does: linearly within the
// bucket that holds the rank, from 0 for the first bucket; the highest
// finite bound when the rank is beyond it.
func quantile(q float64, buckets []bucket, n float64) float64 {
	if n <= 0 || len(buckets) == 0 {
		return 0
	}
	rank := q * n
	i, _ := slices.BinarySearchFunc(buckets, rank, func(b bucket, rank float64) int {
		if b.n < rank {
			return -1
		}
		return 1
	})
	if i == len(buckets) {
		return buckets[len(buckets)-1].le
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = buckets[i-1].le, buckets[i-1].n
	}
	b := buckets[i] // b.n >= rank > below
	return lower + (b.le-lower)*(rank-below)/(b.n-below)
}
