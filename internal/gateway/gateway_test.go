package gateway

import (
	"errors"
	"log/slog"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/observe"
	"github.com/straitproxy/strait/proxy"
)

func TestRouting(t *testing.T) {
	ls := build(t, `
listeners:
  - address: 127.0.0.1:0
    routes:
      - {host: api.example.com, path_prefix: /v1, cluster: v1}
      - {host: "*.example.com", cluster: wild}
      - {path_prefix: /static, cluster: static}
clusters:
  - {name: v1, endpoints: ["10.0.0.1:80"]}
  - {name: wild, endpoints: ["10.0.0.2:80", "10.0.0.3:80"]}
  - {name: static, endpoints: ["10.0.0.4:80"]}
`)
	ph := ls[0].Phases
	pick := func(s *proxy.Session) (*proxy.Peer, error) {
		if _, err := ph.RequestFilter(s); err != nil {
			return nil, err
		}
		return ph.UpstreamPeer(s)
	}
	for _, tc := range []struct{ authority, path, want string }{
		{"api.example.com", "/v1/users", "10.0.0.1:80"},
		{"API.Example.COM:8443", "/v1", "10.0.0.1:80"},
		{"api.example.com", "/v2", "10.0.0.2:80"}, // falls through to the wildcard
		{"www.example.com", "/", "10.0.0.3:80"},   // round robin
		{"example.com", "/static/a.css", "10.0.0.4:80"},
		{"[::1]:80", "/static/", "10.0.0.4:80"},
		{"other.org", "/", ""},
		{"api.example.com", "*", "10.0.0.2:80"}, // OPTIONS *: only routes for every path take it
		{"example.com", "*", ""},
	} {
		s := &proxy.Session{Request: proxy.Request{Authority: []byte(tc.authority), Path: []byte(tc.path)}}
		peer, err := pick(s)
		if tc.want == "" {
			var pe *proxy.Error
			if !errors.As(err, &pe) || pe.Status != 404 {
				t.Errorf("%s%s: %v %v, want a 404 error", tc.authority, tc.path, peer, err)
			}
			continue
		}
		if err != nil || peer.Addr != tc.want {
			t.Errorf("%s%s: %v %v, want %s", tc.authority, tc.path, peer, err, tc.want)
		}
	}
}

// TestBuildUpgrades checks that each listener carries its own upgrades,
// nil (the proxy's default) where the config leaves them out.
func TestBuildUpgrades(t *testing.T) {
	ls := build(t, `
listeners:
  - {address: "127.0.0.1:1", routes: [{cluster: c}]}
  - {address: "127.0.0.1:2", routes: [{cluster: c}], upgrades: [websocket, h2c]}
  - {address: "127.0.0.1:3", routes: [{cluster: c}], upgrades: []}
clusters:
  - {name: c, endpoints: ["10.0.0.1:80"]}
`)
	if ls[0].Upgrades != nil {
		t.Errorf("listener 0: upgrades %#v, want nil (the default)", ls[0].Upgrades)
	}
	if got := ls[1].Upgrades; len(got) != 2 || got[0] != "websocket" || got[1] != "h2c" {
		t.Errorf("listener 1: upgrades %#v, want [websocket h2c]", got)
	}
	if got := ls[2].Upgrades; got == nil || len(got) != 0 {
		t.Errorf("listener 2: upgrades %#v, want empty (none allowed)", got)
	}
}

// TestRoutingAllocs: routing a request whose path is already normal
// allocates nothing.
func TestRoutingAllocs(t *testing.T) {
	ls := build(t, `
listeners:
  - address: 127.0.0.1:0
    routes:
      - {path_prefix: /admin, respond: {status: 403}}
      - {host: "*.example.com", path_regex: "/v[0-9]+/.*", methods: [GET], headers: [{name: X-Env, exact: prod}], cluster: c}
      - {path_prefix: /, cluster: c}
clusters:
  - {name: c, endpoints: ["10.0.0.1:80"]}
`)
	ph := ls[0].Phases
	s := &proxy.Session{Request: proxy.Request{Method: "GET", Authority: []byte("www.example.com"), Path: []byte("/v1/items?id=3")}}
	s.Request.Header.Add("X-Env", "prod")
	// With metrics (build gives every test them): the route's and the
	// cluster's series are counted.
	s.Stats = proxy.Stats{Status: 200, Peer: "10.0.0.1:80", Total: time.Millisecond, UpstreamHeader: time.Millisecond}
	n := testing.AllocsPerRun(1000, func() {
		s.Ctx = nil
		if answered, err := ph.RequestFilter(s); answered || err != nil {
			t.Fatal(answered, err)
		}
		if _, err := ph.UpstreamPeer(s); err != nil {
			t.Fatal(err)
		}
		ph.Logging(s, nil)
	})
	if n != 0 {
		t.Errorf("%v allocations per routed request, want 0", n)
	}
}

// TestPrefixRewriteNormalized: a prefix is rewritten on the normalised
// path the route matched, even where the listener forwards the original.
func TestPrefixRewriteNormalized(t *testing.T) {
	ls := build(t, `
listeners:
  - address: 127.0.0.1:0
    paths: {forward: original}
    routes:
      - {path_prefix: /api/, prefix_rewrite: /v2/, cluster: c}
      - {cluster: c}
clusters:
  - {name: c, endpoints: ["10.0.0.1:80"]}
`)
	for in, want := range map[string]string{
		"/%61pi/x?q=%61": "/v2/x?q=%61",
		"/a/../api/y":    "/v2/y",
		"/other/./z":     "/other/./z", // forwarded as it came
	} {
		s := &proxy.Session{Request: proxy.Request{Method: "GET", Path: []byte(in)}}
		if _, err := ls[0].Phases.RequestFilter(s); err != nil || string(s.Request.Path) != want {
			t.Errorf("%s: path %q (%v), want %q", in, s.Request.Path, err, want)
		}
	}
}

// build parses a config and builds its listeners.
func build(t *testing.T, yaml string) []Listener {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	g, err := Build(cfg, slog.Default(), Observe{Metrics: observe.NewMetrics()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Stop)
	return g.Listeners
}

// TestClusterPick: hashing policies send a key to one endpoint, every
// time, and a retry elsewhere; the others go elsewhere on a retry too.
func TestClusterPick(t *testing.T) {
	for _, tc := range []struct{ balance, key string }{
		{"ring_hash", "header:X-User"}, {"maglev", "cookie:sid"}, {"ring_hash", "query:k"}, {"maglev", "client_addr"},
		{"round_robin", ""}, {"random", ""}, {"least_request", ""},
	} {
		keyLine := ""
		if tc.key != "" {
			keyLine = ", hash_key: \"" + tc.key + "\""
		}
		ls := build(t, `
listeners:
  - {address: 127.0.0.1:0, routes: [{cluster: c}]}
clusters:
  - {name: c, endpoints: ["10.0.0.1:80", "10.0.0.2:80 weight=2", "10.0.0.3:80"], balance: `+tc.balance+keyLine+`}
`)
		ph := ls[0].Phases
		pick := func(user string, attempt int) string {
			s := &proxy.Session{Request: proxy.Request{Method: "GET", Path: []byte("/x?k=" + user)}}
			s.ClientAddr = netip.MustParseAddrPort("192.0.2.7:5555")
			s.Request.Header.Add("X-User", user)
			s.Request.Header.Add("Cookie", "a=b; sid="+user)
			if _, err := ph.RequestFilter(s); err != nil {
				t.Fatal(err)
			}
			var p *proxy.Peer
			for s.Stats.Attempts = 1; s.Stats.Attempts <= attempt; s.Stats.Attempts++ {
				p, _ = ph.UpstreamPeer(s)
			}
			ph.Logging(s, nil)
			return p.Addr
		}
		hashed := tc.key != ""
		for _, user := range []string{"alice", "bob", "carol"} {
			first := pick(user, 1)
			if hashed && pick(user, 1) != first {
				t.Errorf("%s: %s went to two endpoints", tc.balance, user)
			}
			// A retry goes elsewhere (with the same state as the first try).
			s := &proxy.Session{Request: proxy.Request{Method: "GET", Path: []byte("/x?k=" + user)}}
			s.ClientAddr = netip.MustParseAddrPort("192.0.2.7:5555")
			s.Request.Header.Add("X-User", user)
			s.Request.Header.Add("Cookie", "sid="+user)
			ph.RequestFilter(s)
			s.Stats.Attempts = 1
			p1, _ := ph.UpstreamPeer(s)
			s.Stats.Attempts = 2
			p2, _ := ph.UpstreamPeer(s)
			ph.Logging(s, nil)
			if p1.Addr == p2.Addr {
				t.Errorf("%s: %s's retry went to the same endpoint %s", tc.balance, user, p1.Addr)
			}
		}
	}
}

// TestRetryBudget: of 10 requests in flight whose connections fail, 3
// may retry (a fifth of 10, but never fewer than 3); the rest may not,
// and are counted. Once they end, retries are allowed again.
func TestRetryBudget(t *testing.T) {
	ls := build(t, `
listeners:
  - {address: 127.0.0.1:0, routes: [{cluster: c}]}
clusters:
  - {name: c, endpoints: ["10.0.0.1:80", "10.0.0.2:80"], outlier: {enabled: off}}
limits: {max_attempts: 2}
`)
	ph := ls[0].Phases
	var sessions []*proxy.Session
	for range 10 {
		s := &proxy.Session{Request: proxy.Request{Method: "GET", Path: []byte("/")}}
		ph.RequestFilter(s)
		s.Stats.Attempts = 1
		if _, err := ph.UpstreamPeer(s); err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	retries := 0
	for _, s := range sessions {
		e := ph.FailToConnect(s, nil, &proxy.Error{Side: proxy.Upstream, Kind: proxy.KindConnect, Status: 502})
		if e.Retry {
			retries++
		}
	}
	if retries != 3 {
		t.Errorf("%d of 10 failing requests may retry, want 3", retries)
	}
	c := sessions[0].Ctx.(*attempt).rule.cluster
	if n := c.Stats().RetriesRefused; n != 7 {
		t.Errorf("RetriesRefused = %d, want 7", n)
	}
	for _, s := range sessions {
		ph.Logging(s, nil)
	}
	if st := c.Stats(); st.Active != 0 || st.Retrying != 0 {
		t.Errorf("after every request ended: %d in flight, %d retrying", st.Active, st.Retrying)
	}
}

// TestEjectedTrafficSpreads: the requests an ejected endpoint would have
// taken spread over the others, not all onto its neighbour in the list.
func TestEjectedTrafficSpreads(t *testing.T) {
	for _, policy := range []string{"round_robin", "random", "least_request"} {
		ls := build(t, `
listeners:
  - {address: 127.0.0.1:0, routes: [{cluster: c}]}
clusters:
  - {name: c, endpoints: ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"], balance: `+policy+`, outlier: {failures: 1}}
`)
		ph := ls[0].Phases
		get := func() (*proxy.Session, string) {
			s := &proxy.Session{Request: proxy.Request{Method: "GET", Path: []byte("/")}}
			ph.RequestFilter(s)
			s.Stats.Attempts = 1
			p, err := ph.UpstreamPeer(s)
			if err != nil {
				t.Fatal(err)
			}
			return s, p.Addr
		}
		// Eject 10.0.0.1 with one failure.
		for {
			s, addr := get()
			if addr == "10.0.0.1:80" {
				ph.FailToConnect(s, nil, &proxy.Error{Side: proxy.Upstream, Kind: proxy.KindConnect})
				ph.Logging(s, &proxy.Error{Side: proxy.Upstream})
				break
			}
			ph.Logging(s, nil)
		}
		counts := map[string]int{}
		for range 3000 {
			s, addr := get()
			counts[addr]++
			ph.Logging(s, nil)
		}
		if counts["10.0.0.1:80"] != 0 {
			t.Errorf("%s: the ejected endpoint took %d requests", policy, counts["10.0.0.1:80"])
		}
		// About a third each; least-request also weighs the (here
		// meaningless) response times, so only a share is asked of it.
		low, high := 800, 1200
		if policy == "least_request" {
			low, high = 500, 1500
		}
		for _, a := range []string{"10.0.0.2:80", "10.0.0.3:80", "10.0.0.4:80"} {
			if counts[a] < low || counts[a] > high {
				t.Errorf("%s: %s took %d of 3000, want %d to %d: %v", policy, a, counts[a], low, high, counts)
			}
		}
	}
}

// TestBuildForReload checks what Build keeps of the gateway running: an
// unchanged cluster is the same one, a changed one is new; a listener
// whose routes alone changed may run on the old server, one whose
// timeouts changed may not; the swapped routes answer at once.
func TestBuildForReload(t *testing.T) {
	conf := func(target, idle, policy string) *config.Config {
		cfg, err := config.Parse("t.yaml", []byte(`
listeners:
  - address: 127.0.0.1:0
    routes: [{path: /v, cluster: `+target+`}, {cluster: c}]
clusters:
  - {name: c, endpoints: ["10.0.0.1:80"]}
  - {name: d, endpoints: ["10.0.0.2:80"], balance: `+policy+`}
timeouts: {idle: `+idle+`}
`))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	obs := Observe{Metrics: observe.NewMetrics()}
	g1, err := Build(conf("c", "75s", "round_robin"), slog.Default(), obs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g1.Stop()
	g2, err := Build(conf("d", "75s", "least_request"), slog.Default(), obs, g1)
	if err != nil {
		t.Fatal(err)
	}
	if g2.Clusters["c"] != g1.Clusters["c"] {
		t.Error("an unchanged cluster was rebuilt")
	}
	if g2.Clusters["d"] == g1.Clusters["d"] {
		t.Error("a changed cluster was kept")
	}
	if g2.Options.Pool != g1.Options.Pool || g2.Options.Buffering.Budget != g1.Options.Buffering.Budget || g2.Options.ClientConns != g1.Options.ClientConns {
		t.Error("the pool, budget or client count is not the running one")
	}
	l1, l2 := &g1.Listeners[0], &g2.Listeners[0]
	if !l1.SameServer(l2) {
		t.Fatal("a change of routes alone needs a new server")
	}
	// Where the old server's phases send /v.
	peer := func(l *Listener) string {
		s := &proxy.Session{Request: proxy.Request{Method: "GET", Path: []byte("/v")}}
		if _, err := l.Phases.RequestFilter(s); err != nil {
			t.Fatal(err)
		}
		defer l.Phases.Logging(s, nil)
		p, err := l.Phases.UpstreamPeer(s)
		if err != nil {
			t.Fatal(err)
		}
		return p.Addr
	}
	if got := peer(l1); got != "10.0.0.1:80" {
		t.Fatalf("before the swap /v goes to %s", got)
	}
	l1.Routes.Take(l2.Routes)
	if got := peer(l1); got != "10.0.0.2:80" {
		t.Errorf("after the swap the old server's phases send /v to %s, want 10.0.0.2:80", got)
	}
	g1.Retire(g2)

	g3, err := Build(conf("d", "60s", "least_request"), slog.Default(), obs, g2)
	if err != nil {
		t.Fatal(err)
	}
	defer g3.Stop()
	if g3.Listeners[0].SameServer(l2) {
		t.Error("a change of timeouts.idle runs on the old server")
	}
	if g3.Clusters["d"] != g2.Clusters["d"] {
		t.Error("an unchanged cluster was rebuilt")
	}
	g2.Retire(g3)
}

// BenchmarkRoute is the gateway's share of a request: routing through the
// listener's Switch, choosing a peer, and the logging phase. It must not
// allocate.
func BenchmarkRoute(b *testing.B) {
	cfg, err := config.Parse("t.yaml", []byte(`
listeners:
  - address: 127.0.0.1:0
    routes: [{path_prefix: /api/, cluster: c}, {cluster: d}]
clusters:
  - {name: c, endpoints: ["10.0.0.1:80", "10.0.0.2:80"]}
  - {name: d, endpoints: ["10.0.0.3:80"]}
`))
	if err != nil {
		b.Fatal(err)
	}
	g, err := Build(cfg, slog.Default(), Observe{Metrics: observe.NewMetrics()}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer g.Stop()
	ph := g.Listeners[0].Phases
	path := []byte("/api/users/42")
	s := &proxy.Session{}
	b.ReportAllocs()
	for b.Loop() {
		s.Request = proxy.Request{Method: "GET", Path: path}
		if _, err := ph.RequestFilter(s); err != nil {
			b.Fatal(err)
		}
		if _, err := ph.UpstreamPeer(s); err != nil {
			b.Fatal(err)
		}
		ph.Logging(s, nil)
	}
}

// TestBuildACMEFailureLeavesNothing: a config whose TLS cannot be built
// after its ACME manager was made (here, a client_ca that is not there)
// is refused, and the manager's goroutines end with it.
func TestBuildACMEFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Parse("t.yaml", []byte(`
listeners:
  - address: 127.0.0.1:0
    routes: [{respond: {status: 200}}]
    tls:
      acme: {directory: "https://127.0.0.1:1/dir", names: [a.example], storage: "`+dir+`/acme"}
      client_auth: required
      client_ca: "`+dir+`/missing.pem"
`))
	if err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	for range 5 {
		if _, err := Build(cfg, slog.New(slog.DiscardHandler), Observe{}, nil); err == nil {
			t.Fatal("built with a client_ca that is not there")
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after 5 refused builds\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestBuildTCPForReload: a tcp listener whose config and clusters are
// unchanged keeps its server through a reload; a changed cluster needs a
// new one.
func TestBuildTCPForReload(t *testing.T) {
	conf := func(endpoint string) *config.Config {
		cfg, err := config.Parse("t.yaml", []byte(`
listeners:
  - {address: 127.0.0.1:0, kind: tcp, cluster: c, sni_routes: [{names: [a.example], cluster: d}]}
clusters:
  - {name: c, endpoints: ["10.0.0.1:80"]}
  - {name: d, endpoints: ["`+endpoint+`"]}
`))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	g1, err := Build(conf("10.0.0.2:80"), slog.Default(), Observe{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g1.Stop()
	g2, err := Build(conf("10.0.0.2:80"), slog.Default(), Observe{}, g1)
	if err != nil {
		t.Fatal(err)
	}
	if !g1.Listeners[0].SameServer(&g2.Listeners[0]) {
		t.Error("an unchanged tcp listener needs a new server")
	}
	g1.Retire(g2)
	g3, err := Build(conf("10.0.0.3:80"), slog.Default(), Observe{}, g2)
	if err != nil {
		t.Fatal(err)
	}
	defer g3.Stop()
	if g2.Listeners[0].SameServer(&g3.Listeners[0]) {
		t.Error("a tcp listener whose route's cluster changed keeps its server")
	}
	g2.Retire(g3)
}
