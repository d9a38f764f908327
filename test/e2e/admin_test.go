package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// adminAddrOf waits for p to say where its admin API listens.
func adminAddrOf(t *testing.T, p *proc) string {
	t.Helper()
	re := regexp.MustCompile(`admin API on http://(\S+)`)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m := re.FindStringSubmatch(p.stderr.String()); m != nil {
			return m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no admin address in:\n%s", tail(p.stderr.String(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// adminDo sends a request to the admin API and returns its status and body.
func adminDo(t *testing.T, method, url string, header map[string]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metricValue returns the value of the series of name whose labels
// include every one of labels ("k=\"v\""), or -1.
func metricValue(text, name string, labels ...string) float64 {
	if vs := metricValues(text, name, labels...); len(vs) > 0 {
		return vs[0]
	}
	return -1
}

// metricValues returns the values of every sample of name that has all
// of labels, in order.
func metricValues(text, name string, labels ...string) []float64 {
	var vs []float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if ok {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			vs = append(vs, v)
		}
	}
	return vs
}

// TestAdminAPI: the metrics count what was served, by route, cluster and
// status class; /clusters shows the endpoints; a drain through the API
// takes an endpoint out; and the API refuses what a browser's page could
// send it.
func TestAdminAPI(t *testing.T) {
	named := func(name string) string {
		return startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
	}
	a, b := named("a"), named("b")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "admin.yaml", fmt.Sprintf(`listeners:
  - name: web
    address: %s
    routes:
      - {name: api, path_prefix: /api/, cluster: c, request_headers: {set: [{name: Authorization, value: "Bearer UPSTREAM-SECRET"}]}}
      - {path: /teapot, respond: {status: 418}}
clusters:
  - {name: c, endpoints: [%q, %q]}
`, addr, a, b), addr)
	api := "http://" + adminAddrOf(t, p)
	client := newClient(true)
	get := func(path string) (int, string) {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for range 10 {
		get("/api/x")
	}
	get("/teapot")
	get("/nowhere")

	code, metrics := adminDo(t, "GET", api+"/metrics", nil)
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"strait_http_requests_total", []string{`listener="web"`, `route="api"`, `cluster="c"`, `code="2xx"`}, 10},
		{"strait_http_requests_total", []string{`route="1"`, `cluster=""`, `code="4xx"`}, 1},
		{"strait_http_requests_total", []string{`route=""`, `code="4xx"`}, 1}, // no route: 404
		{"strait_http_request_duration_seconds_count", []string{`listener="web"`, `route="api"`}, 10},
		{"strait_upstream_response_seconds_count", []string{`cluster="c"`}, 10},
		{"strait_http_requests_received_total", []string{`listener="web"`}, 12},
		{"strait_downstream_connections_active", []string{`listener="web"`}, 1},
		{"strait_cluster_endpoint_healthy", []string{`cluster="c"`, `endpoint="` + a + `"`}, 1},
		{"strait_cluster_endpoint_draining", []string{`cluster="c"`, `endpoint="` + b + `"`}, 0},
	} {
		if got := metricValue(metrics, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	fresh := metricValue(metrics, "strait_upstream_connections_total", `cluster="c"`, `reused="false"`)
	reused := metricValue(metrics, "strait_upstream_connections_total", `cluster="c"`, `reused="true"`)
	if fresh != 2 || reused != 8 {
		t.Errorf("upstream connections: %v new, %v reused; want 2 and 8 (one per endpoint, then reused)", fresh, reused)
	}

	for path, want := range map[string]int{"/live": 200, "/ready": 200, "/config": 200, "/debug/pprof/": 404} {
		if code, body := adminDo(t, "GET", api+path, nil); code != want {
			t.Errorf("GET %s: %d %q, want %d", path, code, body, want)
		}
	}
	if _, shown := adminDo(t, "GET", api+"/config", nil); strings.Contains(shown, "UPSTREAM-SECRET") || !strings.Contains(shown, "(redacted)") {
		t.Errorf("/config shows a header rule's value:\n%s", shown)
	}
	code, body := adminDo(t, "GET", api+"/clusters", nil)
	var clusters map[string]struct {
		Endpoints []struct {
			Address  string `json:"address"`
			Draining bool   `json:"draining"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal([]byte(body), &clusters); code != 200 || err != nil || len(clusters["c"].Endpoints) != 2 {
		t.Fatalf("/clusters: %d %v %s", code, err, body)
	}

	drain := api + "/clusters/c/endpoints/" + a + "/drain"
	// Refusals: a Host a page under another name would send; a change
	// without the admin field (a page's form or fetch without preflight);
	// a change by GET.
	for _, r := range []struct {
		method string
		header map[string]string
		want   int
	}{
		{"POST", map[string]string{"Host": "evil.example", "X-Strait-Admin": "1"}, 403},
		{"POST", map[string]string{"Host": "127.0.0.1.evil.example:80", "X-Strait-Admin": "1"}, 403},
		{"POST", nil, 403},
		{"GET", map[string]string{"X-Strait-Admin": "1"}, 405},
	} {
		if code, body := adminDo(t, r.method, drain, r.header); code != r.want {
			t.Errorf("%s drain with %v: %d %q, want %d", r.method, r.header, code, body, r.want)
		}
	}
	if code, body := adminDo(t, "GET", api+"/metrics", map[string]string{"Host": "rebound.example"}); code != 403 {
		t.Errorf("GET /metrics under a rebound name: %d %q, want 403", code, body)
	}
	for range 4 {
		if _, got := get("/api/x"); got == "" {
			t.Fatal("no answer")
		}
	}
	if code, body := adminDo(t, "POST", drain, map[string]string{"X-Strait-Admin": "1", "Host": "localhost"}); code != 200 || !strings.Contains(body, `"draining": true`) {
		t.Fatalf("drain: %d %s", code, body)
	}
	for range 6 {
		if _, got := get("/api/x"); got != "b" {
			t.Errorf("with a draining, answered by %q", got)
		}
	}
	if code, _ := adminDo(t, "POST", api+"/clusters/c/endpoints/10.9.9.9:1/drain", map[string]string{"X-Strait-Admin": "1"}); code != 404 {
		t.Errorf("draining an unknown endpoint: %d, want 404", code)
	}
	if code, _ := adminDo(t, "POST", api+"/clusters/c/endpoints/"+a+"/undrain", map[string]string{"X-Strait-Admin": "1"}); code != 200 {
		t.Errorf("undrain: %d", code)
	}
	seen := map[string]bool{}
	for range 4 {
		_, got := get("/api/x")
		seen[got] = true
	}
	if !seen["a"] {
		t.Errorf("undrained, a took none of 4 requests")
	}
}

// TestAdminToken: with a token file, every admin request needs the token;
// beyond loopback, a config without one is refused.
func TestAdminToken(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	dir := t.TempDir()
	token := writeFile(t, dir, "token", []byte("s3cret-token\n"))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, dir, "admin.yaml", listenerYAML(addr, []string{fmt.Sprintf("%q", origin)},
		fmt.Sprintf("admin: {address: \"127.0.0.1:0\", token_file: %s}\n", token)), addr)
	api := "http://" + adminAddrOf(t, p)
	for _, c := range []struct {
		auth string
		want int
	}{{"", 401}, {"Bearer wrong", 401}, {"Basic s3cret-token", 401}, {"Bearer s3cret-token", 200},
		{"bearer s3cret-token", 200}, {"BEARER  s3cret-token ", 200}, {"Bearers3cret-token", 401}} {
		if code, _ := adminDo(t, "GET", api+"/metrics", map[string]string{"Authorization": c.auth}); code != c.want {
			t.Errorf("Authorization %q: %d, want %d", c.auth, code, c.want)
		}
	}

	bad := writeFile(t, dir, "open.yaml", []byte(listenerYAML(addr, []string{fmt.Sprintf("%q", origin)}, "admin: {address: \"0.0.0.0:9901\"}\n")))
	_, stderr, code := runStrait(t, "validate", "-c", bad)
	if code != 1 || !strings.Contains(stderr, "admin.token_file") || !strings.Contains(stderr, filepath.Base(bad)) {
		t.Errorf("an admin listener beyond loopback without a token: exit %d, %q", code, stderr)
	}
	_, stderr, code = runStrait(t, "proxy", "--listen", addr, "--upstream", "http://"+origin, "--admin", "0.0.0.0:9901")
	if code != 2 || !strings.Contains(stderr, "--admin") {
		t.Errorf("quick mode with --admin beyond loopback: exit %d, %q", code, stderr)
	}
	q := startProc(t, exec.Command(straitBin, "proxy", "--listen", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--upstream", "http://"+origin, "--admin", "127.0.0.1:0"))
	if code, _ := adminDo(t, "GET", "http://"+adminAddrOf(t, q)+"/ready", nil); code != 200 {
		t.Errorf("quick mode's /ready: %d", code)
	}
}

// TestReadyWhileDraining: after SIGTERM, while a request in flight
// finishes, /ready answers 503 (a load balancer stops sending) and /live
// 200.
func TestReadyWhileDraining(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(1500 * time.Millisecond)
		io.WriteString(w, "slow")
	}))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "c.yaml", listenerYAML(addr, []string{fmt.Sprintf("%q", origin)}, ""), addr)
	api := "http://" + adminAddrOf(t, p)
	if code, _ := adminDo(t, "GET", api+"/ready", nil); code != 200 {
		t.Fatalf("/ready before: %d", code)
	}
	done := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	time.Sleep(300 * time.Millisecond) // the request is in flight
	p.signal(syscall.SIGTERM)
	deadline := time.Now().Add(time.Second)
	for {
		code, _ := adminDo(t, "GET", api+"/ready", nil)
		if code == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/ready while draining: %d, want 503", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := adminDo(t, "GET", api+"/live", nil); code != 200 {
		t.Errorf("/live while draining: %d", code)
	}
	if code := <-done; code != 200 {
		t.Errorf("the request in flight got %d, want 200", code)
	}
}
