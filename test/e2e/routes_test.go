package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is an origin that answers every request with what it received
// (method, target, Host and the X- fields), and keeps the targets.
type recorder struct {
	mu      sync.Mutex
	targets []string
}

func startRecorder(t *testing.T, name string) (*recorder, string) {
	rec := &recorder{}
	addr := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.mu.Lock()
		rec.targets = append(rec.targets, r.RequestURI)
		rec.mu.Unlock()
		w.Header().Set("X-Origin", name)
		w.Header().Set("X-Drop-Me", "1")
		fmt.Fprintf(w, "%s %s %s host=%s", name, r.Method, r.RequestURI, r.Host)
		for _, k := range []string{"X-Env", "X-Client", "X-Id", "X-Tag", "X-Secret"} {
			if v := r.Header.Values(k); len(v) > 0 {
				fmt.Fprintf(w, " %s=%s", strings.ToLower(k), strings.Join(v, ","))
			}
		}
	}))
	return rec, addr
}

func (rec *recorder) seen() []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]string(nil), rec.targets...)
}

// rawGet sends one request with target exactly as given (curl would
// clean it) and returns the status, the Location field and the body.
func rawGet(t *testing.T, addr, method, target string, fields ...string) (int, string, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req := method + " " + target + " HTTP/1.1\r\nConnection: close\r\n"
	host := "Host: routes.test\r\n"
	for _, f := range fields {
		req += f + "\r\n"
		if strings.HasPrefix(strings.ToLower(f), "host:") {
			host = ""
		}
	}
	req += host
	io.WriteString(c, req+"\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location"), string(body)
}

// TestRouteBypass sends the tricks that reach an origin's /admin past a
// proxy that matches raw paths, through the binary, at a listener whose
// first route guards /admin: each is refused (400) or taken by the guard
// (403), and the origin behind the other routes never sees a path into
// /admin. With slashes kept, the origin sees exactly the normalised path
// strait matched.
func TestRouteBypass(t *testing.T) {
	app, appAddr := startRecorder(t, "app")
	dir := t.TempDir()
	for _, slashes := range []string{"merge", "keep"} {
		t.Run(slashes, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			p := runConfig(t, dir, slashes+".yaml", fmt.Sprintf(`listeners:
  - address: %s
    paths: {slashes: %s}
    routes:
      - path_prefix: /admin
        respond: {status: 403, body: "guarded\n"}
      - host: admin.example.com
        respond: {status: 403, body: "guarded host\n"}
      - path_prefix: /static
        prefix_rewrite: /public/
        cluster: app
      - cluster: app
clusters:
  - {name: app, endpoints: [%q]}
`, addr, slashes, appAddr), addr)
			before := len(app.seen())
			for _, tc := range []struct {
				target string
				want   int
				merge  int // the status when slashes merge, if another
			}{
				{"/public/../admin", 403, 0},
				{"/public//../admin", 200, 403}, // kept: /public/admin
				{"/admin/..;/", 400, 0},
				{"//admin", 200, 403}, // kept: //admin is not /admin
				{"/%61dmin", 403, 0},
				{"/admin%2f", 400, 0},
				{"/admin%2F..%2Fx", 400, 0},
				{"/./admin", 403, 0},
				{"/public/.%2e/admin", 403, 0},
				{"/public/%2e%2e/%2e%2e/admin", 400, 0}, // above the root
				{"/ADMIN", 200, 0},                      // paths are case-sensitive
				{"/admin?x=1", 403, 0},
				{`/x\..\admin`, 400, 0}, // backslashes, which some origins read as slashes
				{`/x/..\admin`, 400, 0},
				{"/;/admin", 400, 0}, // servlet containers read /;x/ as //
				{"/;x/admin", 400, 0},
				{"http://routes.test/admin", 403, 0}, // absolute-form
				{"/static../secret", 400, 0},         // rewritten to /public/../secret
				{"/static/../admin", 403, 0},
				{"/static/x", 200, 0},
			} {
				want := tc.want
				if slashes == "merge" && tc.merge != 0 {
					want = tc.merge
				}
				if got, _, body := rawGet(t, addr, "GET", tc.target); got != want {
					t.Errorf("GET %s: %d %q, want %d\n%s", tc.target, got, body, want, tail(p.stderr.String(), 5))
				}
			}
			// The host guard, with the trailing dot of a fully qualified
			// name, and in an absolute-form target.
			for _, tc := range []struct{ target, host string }{
				{"/", "Host: admin.example.com"},
				{"/", "Host: ADMIN.example.com.:80"},
				{"http://admin.example.com./x", "Host: other"},
			} {
				if got, _, body := rawGet(t, addr, "GET", tc.target, tc.host); got != 403 {
					t.Errorf("GET %s %s: %d %q, want 403", tc.target, tc.host, got, body)
				}
			}
			for _, target := range app.seen()[before:] {
				// What the origin received is normal: no dot-segments,
				// no encodings of unreserved bytes, nothing into /admin.
				if strings.Contains(target, "/.") || strings.Contains(target, "%2") || strings.Contains(target, "%6") ||
					strings.HasPrefix(target, "/admin") || slashes == "merge" && strings.Contains(target, "//") {
					t.Errorf("the origin received %q", target)
				}
			}
			t.Logf("the origin received %q", app.seen()[before:])
		})
	}
}

// TestRouteMatchers checks each way a route matches, and its precedence
// (the first route that matches, in the file's order), through the
// binary: every route answers with its own name.
func TestRouteMatchers(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	answer := func(name string) string { return fmt.Sprintf("respond: {status: 200, body: %q}", name) }
	runConfig(t, t.TempDir(), "m.yaml", fmt.Sprintf(`listeners:
  - address: %s
    routes:
      - {host: api.example.com, path: /exact, %s}
      - {host: "*.example.com", path_prefix: /w/, %s}
      - {path_regex: "/v[0-9]+/items", %s}
      - {path_prefix: /m/, methods: [PUT, DELETE], %s}
      - {path_prefix: /h/, headers: [{name: X-Env, exact: prod}], %s}
      - {path_prefix: /h/, headers: [{name: X-Env, regex: "stag(e|ing)"}], %s}
      - {path_prefix: /h/, headers: [{name: X-Debug}], %s}
      - {path_prefix: /q/, query: [{name: v, exact: "a b"}], %s}
      - {path_prefix: /q/, query: [{name: flag}], %s}
      - {path_prefix: /q/, query: [{name: id, regex: "[0-9]{3}"}], %s}
      - {path_prefix: /, %s}
`, addr, answer("exact"), answer("wild"), answer("regex"), answer("methods"), answer("h-exact"), answer("h-regex"),
		answer("h-present"), answer("q-exact"), answer("q-present"), answer("q-regex"), answer("default")), addr)
	for _, tc := range []struct {
		method, target string
		fields         []string
		want           string
	}{
		{"GET", "/exact", []string{"Host: API.example.com:8080"}, "exact"},
		{"GET", "/exact/", []string{"Host: api.example.com"}, "default"},
		{"GET", "/exact", nil, "default"}, // another host
		{"GET", "/w/x", []string{"Host: a.example.com"}, "wild"},
		{"GET", "/w/x", []string{"Host: example.com"}, "default"},
		{"GET", "/v12/items", nil, "regex"},
		{"GET", "/v12/items/x", nil, "default"}, // the regex matches the whole path
		{"GET", "/%76%31/items", nil, "regex"},  // on the normalised path
		{"PUT", "/m/1", nil, "methods"},
		{"GET", "/m/1", nil, "default"},
		{"GET", "/h/", []string{"X-Env: prod"}, "h-exact"},
		{"GET", "/h/", []string{"X-Env: staging"}, "h-regex"},
		{"GET", "/h/", []string{"X-Env: staging2"}, "default"},
		{"GET", "/h/", []string{"X-Env: dev", "X-Env: prod"}, "h-exact"}, // any of its values
		{"GET", "/h/", []string{"x-debug: "}, "h-present"},
		{"GET", "/q/?v=a+b", nil, "q-exact"},
		{"GET", "/q/?x=1&v=a%20b", nil, "q-exact"},
		{"GET", "/q/?flag", nil, "q-present"},
		{"GET", "/q/?id=123", nil, "q-regex"},
		{"GET", "/q/?id=1234", nil, "default"},
		{"GET", "/other", nil, "default"},
	} {
		if got, _, body := rawGet(t, addr, tc.method, tc.target, tc.fields...); got != 200 || body != tc.want {
			t.Errorf("%s %s %q: %d %q, want %q", tc.method, tc.target, tc.fields, got, body, tc.want)
		}
	}
}

// TestRouteActions checks what a route does besides choosing a cluster,
// through the binary: rewrites of the path prefix and the host, request
// and response field rules (with variables), redirects followed by curl
// -L, a direct response, and 404 where no route matches.
func TestRouteActions(t *testing.T) {
	app, appAddr := startRecorder(t, "app")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "a.yaml", fmt.Sprintf(`listeners:
  - address: %s
    routes:
      - path_prefix: /api/
        cluster: app
        prefix_rewrite: /v2/
        host_rewrite: backend.internal
        request_headers:
          remove: [X-Secret]
          set: [{name: X-Env, value: prod}]
          add: [{name: X-Client, value: "${client_addr}"}, {name: X-Tag, value: "h=${host}"}, {name: X-Id, value: "${request_id}"}]
        response_headers:
          remove: [X-Drop-Me]
          set: [{name: X-Origin, value: hidden}]
          add: [{name: X-Route, value: api}, {name: X-Request-Id, value: "${request_id}"}]
      - path_prefix: /old/
        redirect: {status: 301, prefix_rewrite: /api/}
      - path_prefix: /found/
        redirect: {status: 302, prefix_rewrite: /api/}
      - path_prefix: /moved/
        redirect: {status: 308, prefix_rewrite: /api/}
      - path: /elsewhere
        redirect: {status: 307, scheme: https, host: example.org, path: /there, strip_query: true}
      - path: /health
        respond: {status: 200, body: "ok\n", content_type: text/plain}
      - path_prefix: /raw/
        cluster: app
    paths: {forward: original}
clusters:
  - {name: app, endpoints: [%q]}
`, addr, appAddr), addr)

	r := mustCurl(t, "-s", "-D", "-", "-H", "X-Secret: s", "-H", "X-Env: dev", "http://"+addr+"/api/users?id=7")
	out := string(r.Stdout)
	for _, want := range []string{"app GET /v2/users?id=7 host=backend.internal", "x-env=prod", "x-client=127.0.0.1", "x-tag=h=127.0.0.1", "X-Route: api"} {
		if !strings.Contains(out, want) {
			t.Errorf("/api/users: response lacks %q:\n%s", want, out)
		}
	}
	for _, unwanted := range []string{"x-secret", "X-Drop-Me", "x-env=dev", "X-Origin: app"} {
		if strings.Contains(out, unwanted) {
			t.Errorf("/api/users: response holds %q:\n%s", unwanted, out)
		}
	}
	if n := strings.Count(out, "X-Origin: "); n != 1 || !strings.Contains(out, "X-Origin: hidden") {
		t.Errorf("/api/users: X-Origin set %d times:\n%s", n, out)
	}
	// ${request_id}: the same in the request the origin saw and in the
	// response, and another for the next request.
	requestID := func(out string) string {
		m := regexp.MustCompile(`x-id=(\S+)`).FindStringSubmatch(out)
		r := regexp.MustCompile(`X-Request-Id: (\S+)`).FindStringSubmatch(out)
		if m == nil || r == nil || m[1] != r[1] {
			t.Errorf("request id: upstream %q, response %q:\n%s", m, r, out)
			return ""
		}
		return m[1]
	}
	first := requestID(out)
	if second := requestID(string(mustCurl(t, "-s", "-D", "-", "http://"+addr+"/api/users").Stdout)); first == "" || first == second {
		t.Errorf("request ids %q and %q, want two different ones", first, second)
	}

	// A redirect, followed: /old/x becomes /api/x, which goes upstream as
	// /v2/x.
	r = mustCurl(t, "-s", "-L", "-w", " %{http_code} %{num_redirects}", "http://"+addr+"/old/x?q=1")
	if got := string(r.Stdout); !strings.HasPrefix(got, "app GET /v2/x?q=1") || !strings.HasSuffix(got, " 200 1") {
		t.Errorf("curl -L /old/x?q=1: %q", got)
	}
	// 302: curl -L follows with GET; 308: the method and body go on.
	r = mustCurl(t, "-s", "-L", "-w", " %{http_code} %{num_redirects}", "http://"+addr+"/found/y")
	if got := string(r.Stdout); !strings.HasPrefix(got, "app GET /v2/y host=") || !strings.HasSuffix(got, " 200 1") {
		t.Errorf("curl -L /found/y: %q", got)
	}
	r = mustCurl(t, "-s", "-L", "-d", "body", "-w", " %{http_code} %{num_redirects}", "http://"+addr+"/moved/z")
	if got := string(r.Stdout); !strings.HasPrefix(got, "app POST /v2/z host=") || !strings.HasSuffix(got, " 200 1") {
		t.Errorf("curl -L -d /moved/z: %q", got)
	}
	for target, want := range map[string]int{"/found/y": 302, "/moved/z": 308} {
		if code, loc, _ := rawGet(t, addr, "GET", target); code != want || loc != "http://routes.test/api/"+target[len(target)-1:] {
			t.Errorf("%s: %d Location %q, want %d to http://routes.test/api/…", target, code, loc, want)
		}
	}
	if code, loc, _ := rawGet(t, addr, "GET", "/elsewhere?a=b"); code != 307 || loc != "https://example.org/there" {
		t.Errorf("/elsewhere: %d Location %q", code, loc)
	}
	if code, _, body := rawGet(t, addr, "GET", "/health"); code != 200 || body != "ok\n" {
		t.Errorf("/health: %d %q", code, body)
	}
	if code, _, _ := rawGet(t, addr, "GET", "/nothing"); code != 404 {
		t.Errorf("/nothing: %d, want 404", code)
	}
	// forward: original sends the path as the client wrote it, once a
	// route matched the normalised one.
	before := len(app.seen())
	if code, _, _ := rawGet(t, addr, "GET", "/raw/%61/./b"); code != 200 {
		t.Errorf("/raw/%%61/./b: %d", code)
	}
	if got := app.seen()[before:]; len(got) != 1 || got[0] != "/raw/%61/./b" {
		t.Errorf("forward original: the origin received %q\n%s", got, tail(p.stderr.String(), 5))
	}
}

// TestRouteDirectOnly runs a config with no clusters at all: direct
// responses need no upstream.
func TestRouteDirectOnly(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, t.TempDir(), "d.yaml", fmt.Sprintf(`listeners:
  - address: %s
    routes:
      - respond: {status: 503, body: "down for maintenance\n"}
`, addr), addr)
	r := runCurl(t, "-s", "-w", " %{http_code} %{content_type}", "http://"+addr+"/any")
	if got := string(r.Stdout); got != "down for maintenance\n 503 text/plain; charset=utf-8" {
		t.Errorf("got %q", got)
	}
}

// TestRouteOverrides: a route's own timeouts and body limit replace the
// process-wide ones for its requests only, through the binary.
func TestRouteOverrides(t *testing.T) {
	slow := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/slow" {
			time.Sleep(700 * time.Millisecond)
		}
		io.WriteString(w, "done")
	}))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, t.TempDir(), "o.yaml", fmt.Sprintf(`listeners:
  - address: %s
    routes:
      - {path: /slow, cluster: o, timeouts: {response_header: 200ms}}
      - {path: /small, cluster: o, max_request_body: 10}
      - {path: /big, cluster: o, max_request_body: 1MiB}
      - {cluster: o}
clusters:
  - {name: o, endpoints: [%q]}
limits: {max_request_body: 100}
`, addr, slow), addr)
	start := time.Now()
	if code := curlStatus(t, "http://"+addr+"/slow"); code != 504 || time.Since(start) > 600*time.Millisecond {
		t.Errorf("/slow: %d after %v, want 504 after the route's 200ms", code, time.Since(start))
	}
	body := strings.Repeat("b", 200)
	for _, tc := range []struct {
		path string
		want int
	}{{"/small", 413}, {"/big", 200}, {"/other", 413}} {
		if code := curlStatus(t, "--data-binary", body, "http://"+addr+tc.path); code != tc.want {
			t.Errorf("POST %d bytes to %s: %d, want %d", len(body), tc.path, code, tc.want)
		}
	}
	if code := curlStatus(t, "--data-binary", "12345", "http://"+addr+"/small"); code != 200 {
		t.Errorf("POST 5 bytes to /small: %d, want 200", code)
	}
	// Chunked, the body is counted as it streams.
	for _, tc := range []struct {
		path string
		want int
	}{{"/small", 413}, {"/big", 200}} {
		if code := curlStatus(t, "-H", "Transfer-Encoding: chunked", "--data-binary", body, "http://"+addr+tc.path); code != tc.want {
			t.Errorf("POST %d chunked bytes to %s: %d, want %d", len(body), tc.path, code, tc.want)
		}
	}
}

func curlStatus(t *testing.T, args ...string) int {
	t.Helper()
	r := mustCurl(t, append([]string{"-s", "-o", "/dev/null", "-w", "%{http_code}"}, args...)...)
	var code int
	fmt.Sscanf(string(r.Stdout), "%d", &code)
	return code
}

// TestMaxConnsPerClientAcrossListeners: the per-client cap counts a
// client's connections at every listener of the process.
func TestMaxConnsPerClientAcrossListeners(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	a, b := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	p := runConfig(t, dir, "c.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o}]}
  - {address: %s, routes: [{cluster: o}]}
clusters:
  - {name: o, endpoints: [%q]}
limits: {max_conns_per_client: 2}
`, a, b, origin), a)
	waitPort(t, b, 5*time.Second, p.exited)
	open := func(addr string) int {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: e2e\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode
	}
	// waitPort's probe connections count until strait has seen them close,
	// which a loaded machine may take a moment to do: within the cap, a 503
	// is retried for a while.
	openWithin := func(addr string) int {
		deadline := time.Now().Add(3 * time.Second)
		for {
			s := open(addr)
			if s != 503 || time.Now().After(deadline) {
				return s
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if s1, s2 := openWithin(a), openWithin(b); s1 != 200 || s2 != 200 {
		t.Fatalf("within the cap: %d, %d", s1, s2)
	}
	if s := open(b); s != 503 {
		t.Errorf("a third connection, at the other listener: %d, want 503", s)
	}
	if s := open(a); s != 503 {
		t.Errorf("a fourth connection: %d, want 503", s)
	}
}
