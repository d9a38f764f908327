package admin

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/observe"
	"github.com/straitproxy/strait/proxy"
)

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

// The latency histogram's buckets up to 50 ms, cumulative.
func ms(counts ...float64) []bucket {
	les := []float64{.001, .0025, .005, .01, .025, .05}
	out := make([]bucket, len(counts))
	for i, n := range counts {
		out[i] = bucket{les[i], n}
	}
	return out
}

func TestDashboardQuantile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		buckets []bucket
		n, q    float64
		want    float64
	}{
		{"none", nil, 0, .5, 0},
		{"no observations", ms(0, 0, 0), 0, .99, 0},
		{"first bucket starts at 0", []bucket{{.1, 10}}, 10, .5, .05},
		{"within a bucket", []bucket{{1, 0}, {2, 10}}, 10, .5, 1.5},
		{"rank on a bound", []bucket{{1, 5}, {2, 10}}, 10, .5, 1},
		{"empty buckets below", []bucket{{1, 0}, {2, 0}, {4, 8}}, 8, .25, 2.5},
		{"beyond the last finite bound", []bucket{{.1, 5}}, 10, .9, .1},
		{"p50 of mostly fast", ms(0, 0, 90, 99, 99, 100), 100, .5, .0025 + .0025*50/90},
		{"p90 of mostly fast", ms(0, 0, 90, 99, 99, 100), 100, .9, .005},
		{"p99 of mostly fast", ms(0, 0, 90, 99, 99, 100), 100, .99, .01},
		{"p99 in the slow tail", ms(0, 0, 90, 99, 99, 100), 100, .995, .025 + .025*.5},
	} {
		if got := quantile(tc.q, tc.buckets, tc.n); !near(got, tc.want) {
			t.Errorf("%s: quantile(%v) = %v, want %v", tc.name, tc.q, got, tc.want)
		}
	}
}

func TestDashboardWindowBuckets(t *testing.T) {
	for _, tc := range []struct {
		name         string
		prev         []bucket
		prevN        float64
		cur          []bucket
		curN         float64
		want         []bucket
		wantN        float64
		wantP50InWin float64
	}{
		{"first", nil, 0, ms(1, 2, 3), 4, ms(1, 2, 3), 4, .0025},
		{"difference", ms(1, 2, 3), 4, ms(1, 2, 13), 14, ms(0, 0, 10), 10, .00375},
		{"nothing new", ms(1, 2, 3), 4, ms(1, 2, 3), 4, ms(0, 0, 0), 0, 0},
		{"reset: the count fell", ms(5, 5, 5), 5, ms(1, 1, 1), 1, ms(1, 1, 1), 1, .0005},
		{"reset: a bucket fell", ms(5, 5, 5), 5, ms(1, 1, 9), 9, ms(1, 1, 9), 9, .0025 + .0025*3.5/8},
	} {
		got, n := windowBuckets(tc.prev, tc.prevN, tc.cur, tc.curN)
		if n != tc.wantN || len(got) != len(tc.want) {
			t.Errorf("%s: %v, %v; want %v, %v", tc.name, got, n, tc.want, tc.wantN)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: %v; want %v", tc.name, got, tc.want)
				break
			}
		}
		if p := quantile(.5, got, n); !near(p, tc.wantP50InWin) {
			t.Errorf("%s: p50 %v, want %v", tc.name, p, tc.wantP50InWin)
		}
	}
}

func TestDashboardSnapshot(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(d time.Duration, codes map[string]float64, buckets []bucket, n float64, conns connCount) *sample {
		return &sample{at: t0.Add(d), codes: codes, buckets: buckets, observed: n,
			conns: map[string]connCount{"c": conns}, clusters: []clusterSample{{name: "c"}}}
	}
	base := at(0, map[string]float64{"2xx": 100, "5xx": 4}, ms(50, 100, 104), 104, connCount{90, 10})
	type want struct {
		window, total, rps, rate2xx, rate5xx float64
		count, p50                           float64
		reusedRate, newRate                  float64
	}
	for _, tc := range []struct {
		name      string
		prev, cur *sample
		want      want
	}{
		{"first: no rates, latency since the start", nil, base,
			want{0, 104, 0, 0, 0, 104, .001 + .0015*2/50, 0, 0}},
		{"a second later", base,
			at(time.Second, map[string]float64{"2xx": 120, "5xx": 5, "4xx": 3}, ms(50, 100, 128), 128, connCount{110, 12}),
			want{1, 128, 24, 20, 1, 24, .0025 + .0025*12/24, 20, 2}},
		{"half a second later", base,
			at(500*time.Millisecond, map[string]float64{"2xx": 110, "5xx": 4}, ms(60, 110, 114), 114, connCount{95, 10}),
			want{.5, 114, 20, 20, 0, 10, .0005, 10, 0}},
		{"idle", base, at(time.Second, base.codes, base.buckets, base.observed, connCount{90, 10}),
			want{1, 104, 0, 0, 0, 0, 0, 0, 0}},
		{"counters reset", base,
			at(time.Second, map[string]float64{"2xx": 6}, ms(6, 6, 6), 6, connCount{1, 1}),
			want{1, 6, 6, 6, 0, 6, .0005, 1, 1}},
	} {
		s := makeSnapshot(tc.prev, tc.cur)
		got := want{s.Window, s.Requests.Total, s.Requests.PerSecond, s.Status["2xx"].PerSecond, s.Status["5xx"].PerSecond,
			s.Latency.Count, s.Latency.P50, s.Upstream.Reused.PerSecond, s.Upstream.New.PerSecond}
		for i, pair := range [][2]float64{{got.window, tc.want.window}, {got.total, tc.want.total}, {got.rps, tc.want.rps},
			{got.rate2xx, tc.want.rate2xx}, {got.rate5xx, tc.want.rate5xx}, {got.count, tc.want.count}, {got.p50, tc.want.p50},
			{got.reusedRate, tc.want.reusedRate}, {got.newRate, tc.want.newRate}} {
			if !near(pair[0], pair[1]) {
				t.Errorf("%s: got %+v\nwant %+v (field %d differs)", tc.name, got, tc.want, i)
				break
			}
		}
		if len(s.Clusters) != 1 || s.Clusters[0].Connections.Reused.PerSecond != s.Upstream.Reused.PerSecond {
			t.Errorf("%s: clusters %+v", tc.name, s.Clusters)
		}
	}
}

// TestDashboardReadSample reads what strait's own metrics export.
func TestDashboardReadSample(t *testing.T) {
	m := observe.NewMetrics()
	for _, r := range []struct{ listener, route string }{{"web", "api"}, {"web", "static"}, {"other", ""}} {
		route := m.Route(r.listener, r.route, "c")
		for range 10 {
			route.Observe(200, 3*time.Millisecond)
		}
		route.Observe(503, 40*time.Millisecond)
	}
	c := m.Cluster("c")
	c.Observe(&proxy.Stats{Reused: false})
	for range 3 {
		c.Observe(&proxy.Stats{Reused: true})
	}
	var a, b proxy.Counters
	a.ConnsOpen.Store(3)
	b.ConnsOpen.Store(2)
	a.RequestsActive.Store(1)
	m.AddServer("web", &a)
	m.AddServer("other", &b)
	families, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	s := readSample(families, time.Now())
	if s.codes["2xx"] != 30 || s.codes["5xx"] != 3 || s.observed != 33 {
		t.Errorf("codes %v, %v observed; want 30 2xx, 3 5xx, 33", s.codes, s.observed)
	}
	if s.connsActive != 5 || s.requestsActive != 1 {
		t.Errorf("%v connections, %v requests active; want 5, 1", s.connsActive, s.requestsActive)
	}
	if s.conns["c"] != (connCount{reused: 3, fresh: 1}) {
		t.Errorf("upstream connections %+v", s.conns)
	}
	if p := quantile(.5, s.buckets, s.observed); p <= .0025 || p > .005 {
		t.Errorf("p50 %v, want in (2.5ms, 5ms]", p)
	}
	if p := quantile(.99, s.buckets, s.observed); p <= .025 || p > .05 {
		t.Errorf("p99 %v, want in (25ms, 50ms]", p)
	}
}

func testAPI(t *testing.T) *API {
	t.Helper()
	c, err := cluster.New(&config.Cluster{Name: "c", Endpoints: []string{"10.0.0.1:80", "10.0.0.2:80"}}, cluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	m := observe.NewMetrics()
	m.SetClusters(map[string]*cluster.Cluster{"c": c})
	return &API{Metrics: m, Clusters: map[string]*cluster.Cluster{"c": c}}
}

// TestDashboardEndpoints: the page, /summary, and the guard over both.
func TestDashboardEndpoints(t *testing.T) {
	api := testAPI(t)
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	get := func(path, host string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", srv.URL+path, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	resp, page := get("/", "")
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, id := range []string{`id="rps"`, `id="total"`, `id="clusters"`, `new EventSource("events")`} {
		if !strings.Contains(page, id) {
			t.Errorf("the page has no %s", id)
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); strings.Count(csp, "'sha256-") != 2 || strings.Contains(csp, "unsafe") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if len(dashboardHTML) > 15<<10 {
		t.Errorf("the page is %d bytes; keep it under 15 KiB", len(dashboardHTML))
	}
	if resp, _ := get("/nowhere", ""); resp.StatusCode != 404 {
		t.Errorf("GET /nowhere: %d, want 404 (the page is at / alone)", resp.StatusCode)
	}
	for _, path := range []string{"/", "/events", "/summary"} {
		if resp, _ := get(path, "rebound.example"); resp.StatusCode != 403 {
			t.Errorf("GET %s under a rebound name: %d, want 403", path, resp.StatusCode)
		}
	}
	for i := range 2 {
		resp, body := get("/summary", "")
		var s snapshot
		if err := json.Unmarshal([]byte(body), &s); resp.StatusCode != 200 || err != nil {
			t.Fatalf("/summary: %d %v %s", resp.StatusCode, err, body)
		}
		if len(s.Clusters) != 1 || len(s.Clusters[0].Endpoints) != 2 || !s.Clusters[0].Endpoints[0].Healthy {
			t.Errorf("/summary's clusters: %+v", s.Clusters)
		}
		if (i == 0) != (s.Window == 0) {
			t.Errorf("/summary %d: window %v", i, s.Window)
		}
	}
}

// readEvent reads one event's data from an event stream.
func readEvent(t *testing.T, r *bufio.Reader) snapshot {
	t.Helper()
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			var s snapshot
			if err := json.Unmarshal([]byte(data), &s); err != nil {
				t.Fatalf("event %q: %v", data, err)
			}
			return s
		}
	}
}

// TestDashboardEvents: a stream sends a snapshot at once and then once a second;
// streams over the limit get 503; and a stream ends when its client goes.
func TestDashboardEvents(t *testing.T) {
	api := testAPI(t)
	srv := httptest.NewServer(api.Handler())
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(ctx context.Context) *http.Response {
		req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/events", nil)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}

	var cancels []context.CancelFunc
	defer func() {
		for _, c := range cancels {
			c()
		}
	}()
	var first *bufio.Reader
	for i := range maxEventStreams {
		ctx, cancel := context.WithCancel(ctx)
		cancels = append(cancels, cancel)
		resp := open(ctx)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("stream %d: %d %s", i, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		r := bufio.NewReader(resp.Body)
		if s := readEvent(t, r); s.Window != 0 || len(s.Clusters) != 1 {
			t.Errorf("stream %d's first event: %+v", i, s)
		}
		if first == nil {
			first = r
		}
	}
	resp := open(ctx)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || !strings.Contains(string(body), "event streams") {
		t.Errorf("stream %d: %d %q, want 503", maxEventStreams+1, resp.StatusCode, body)
	}
	if s := readEvent(t, first); s.Window < .5 || s.Window > 3 {
		t.Errorf("second event's window %v s, want about 1", s.Window)
	}

	for _, c := range cancels {
		c()
	}
	deadline := time.Now().Add(5 * time.Second)
	for api.streams.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams still open after their clients left", api.streams.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if resp := open(ctx); resp.StatusCode != 200 {
		t.Errorf("after the others closed, a stream: %d", resp.StatusCode)
	} else {
		resp.Body.Close()
	}
}

// TestDashboardOtherSites: a page of another site or origin cannot use the
// API, though its requests name a loopback Host (an iframe holding
// /events streams, a fetch); the dashboard's own requests and a typed-in
// address can.
func TestDashboardOtherSites(t *testing.T) {
	srv := httptest.NewServer(testAPI(t).Handler())
	defer srv.Close()
	for _, tc := range []struct {
		site, origin string
		want         int
	}{
		{"cross-site", "", 403},
		{"same-site", "", 403},
		{"", "http://evil.example", 403},
		{"same-origin", srv.URL, 200},
		{"none", "", 200},
		{"", "", 200}, // curl, Prometheus
	} {
		req, _ := http.NewRequest("GET", srv.URL+"/summary", nil)
		if tc.site != "" {
			req.Header.Set("Sec-Fetch-Site", tc.site)
		}
		if tc.origin != "" {
			req.Header.Set("Origin", tc.origin)
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Sec-Fetch-Site %q, Origin %q: %d, want %d", tc.site, tc.origin, resp.StatusCode, tc.want)
		}
	}
}

// TestDashboardSummaryWindow: however often /summary is asked, its rates
// span at least a second once it has one.
func TestDashboardSummaryWindow(t *testing.T) {
	srv := httptest.NewServer(testAPI(t).Handler())
	defer srv.Close()
	window := func() float64 {
		resp, err := srv.Client().Get(srv.URL + "/summary")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var s struct {
			Window float64 `json:"window_seconds"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			t.Fatal(err)
		}
		return s.Window
	}
	window()
	time.Sleep(1100 * time.Millisecond)
	for i := range 20 {
		if w := window(); w < 1 || w > 2.5 {
			t.Fatalf("call %d: a window of %.3f s, want 1 to 2", i, w)
		}
	}
}
