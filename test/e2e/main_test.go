// Package e2e drives strait end to end with real programs: curl as the
// client, nginx (and Go servers where nginx cannot do the job) as origins,
// slowhttptest as an attacker, and the strait binary itself.
//
// Tools that are missing make a test skip, except with CI=true in the
// environment, where they make it fail.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/gateway"
	"github.com/straitproxy/strait/internal/observe"
	"github.com/straitproxy/strait/proxy"
)

var (
	// moduleRoot is the directory holding strait's go.mod.
	moduleRoot string
	// straitBin is the strait binary built once for the CLI tests.
	straitBin string
)

func TestMain(m *testing.M) {
	if addr := os.Getenv("STRAIT_E2E_H2FLOOD"); addr != "" {
		// The test binary run again as a flooding client (TestHTTP2RapidReset).
		os.Exit(h2Flood(addr))
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	raiseNoFile()
	root, err := findModuleRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	moduleRoot = root
	dir, err := os.MkdirTemp("", "strait-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	straitBin = filepath.Join(dir, "strait")
	build := exec.Command("go", "build", "-o", straitBin, "./cmd/strait")
	build.Dir = moduleRoot
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build ./cmd/strait: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// raiseNoFile lifts the open-file limit to its hard maximum: the slowloris
// test holds thousands of connections, each a descriptor on both sides.
func raiseNoFile() {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	}
}

func noFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	return lim.Cur
}

// findModuleRoot walks up from the working directory to strait's go.mod.
func findModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(data, []byte("module github.com/straitproxy/strait\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the module root (go.mod of github.com/straitproxy/strait)")
		}
		dir = parent
	}
}

// inCI reports whether the tests run in CI, where nothing may be skipped
// for want of a tool.
func inCI() bool { return os.Getenv("CI") == "true" }

// needTool returns the path of a program the test needs. Without it the
// test fails in CI and skips elsewhere.
func needTool(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if inCI() {
		t.Fatalf("%s is not installed (CI=true: a missing tool is a failure)", name)
	}
	t.Skipf("%s is not installed; skipping (scripts/test installs it)", name)
	return ""
}

// skipOrFail skips the test, or fails it in CI.
func skipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	if inCI() {
		t.Fatalf(format+" (CI=true: not skipping)", args...)
	}
	t.Skipf(format, args...)
}

// freePort returns a loopback port that was free a moment ago, for
// programs that must be told their port (nginx, the strait binary).
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", freePort(t))
}

// waitPort polls addr until it accepts a connection, or fails the test at
// the deadline. alive, if not nil, reports whether the process that should
// open the port is still running.
func waitPort(t testing.TB, addr string, timeout time.Duration, alive func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		if alive != nil {
			if aerr := alive(); aerr != nil {
				t.Fatalf("waiting for %s: the process ended: %v", addr, aerr)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer within %v: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// randomBytes returns n random bytes.
func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// writeFile writes data to dir/name and returns the path.
func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// ---- processes ----

// proc is a program started by a test, in its own process group so that
// it and its children can be stopped together.
type proc struct {
	cmd    *exec.Cmd
	done   chan struct{}
	err    error // from Wait, once done is closed
	stdout *syncBuffer
	stderr *syncBuffer
}

// startProc starts cmd in a new process group and stops the group when
// the test ends.
func startProc(t testing.TB, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, done: make(chan struct{}), stdout: &syncBuffer{}, stderr: &syncBuffer{}}
	if cmd.Stdout == nil {
		cmd.Stdout = p.stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", cmd.Path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop() })
	return p
}

// exited returns nil while the process runs, else why it ended.
func (p *proc) exited() error {
	select {
	case <-p.done:
		if p.err == nil {
			return errors.New("exit status 0")
		}
		return fmt.Errorf("%v; stderr: %s", p.err, p.stderr.String())
	default:
		return nil
	}
}

// signal sends sig to the whole process group.
func (p *proc) signal(sig syscall.Signal) {
	syscall.Kill(-p.cmd.Process.Pid, sig)
}

// wait waits for the process to end, up to timeout, and reports whether it
// did.
func (p *proc) wait(timeout time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(timeout):
		return false
	}
}

// stop ends the process group: SIGTERM, then SIGKILL if it lingers.
func (p *proc) stop() {
	select {
	case <-p.done:
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) // stragglers in the group
		return
	default:
	}
	p.signal(syscall.SIGTERM)
	if !p.wait(5 * time.Second) {
		p.signal(syscall.SIGKILL)
		p.wait(5 * time.Second)
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// syncBuffer is a bytes.Buffer safe for concurrent use.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.b.Bytes()...)
}

// ---- nginx ----

// nginxOrigin is a running nginx serving files from Root.
type nginxOrigin struct {
	Addr string // 127.0.0.1:port
	Root string // document root
	Dir  string // prefix: config, logs, temp files
	p    *proc
}

// startNginx runs nginx on a free loopback port, serving files (path
// relative to the root → contents). httpExtra is added to the http block
// (e.g. "keepalive_timeout 1s;").
func startNginx(t testing.TB, files map[string][]byte, httpExtra string) *nginxOrigin {
	t.Helper()
	return startNginxServer(t, files, httpExtra, "", "")
}

// startNginxServer is startNginx with listenOpts after the listen
// directive's address (" ssl") and serverExtra in the server block.
func startNginxServer(t testing.TB, files map[string][]byte, httpExtra, listenOpts, serverExtra string) *nginxOrigin {
	t.Helper()
	bin := needTool(t, "nginx")
	dir := t.TempDir()
	root := filepath.Join(dir, "www")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		writeFile(t, root, name, data)
	}
	// Ask for a port until nginx gets one: another program may take the
	// port between our probe and nginx's bind.
	for attempt := 0; ; attempt++ {
		port := freePort(t)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 4096; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/tmp_body;
    proxy_temp_path %[1]s/tmp_proxy;
    fastcgi_temp_path %[1]s/tmp_fastcgi;
    uwsgi_temp_path %[1]s/tmp_uwsgi;
    scgi_temp_path %[1]s/tmp_scgi;
    default_type application/octet-stream;
    sendfile on;
    %[2]s
    server {
        listen %[3]s%[5]s;
        root %[4]s;
        %[6]s
    }
}
`, dir, httpExtra, addr, root, listenOpts, serverExtra)
		confPath := writeFile(t, dir, "nginx.conf", []byte(conf))
		cmd := exec.Command(bin, "-c", confPath, "-p", dir, "-e", filepath.Join(dir, "error.log"))
		p := startProc(t, cmd)
		n := &nginxOrigin{Addr: addr, Root: root, Dir: dir, p: p}
		if err := n.waitUp(10 * time.Second); err != nil {
			p.stop()
			logs, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			if attempt < 3 && bytes.Contains(logs, []byte("Address already in use")) {
				continue
			}
			t.Fatalf("nginx did not start: %v\nerror.log:\n%s", err, logs)
		}
		return n
	}
}

func (n *nginxOrigin) waitUp(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", n.Addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if e := n.p.exited(); e != nil {
			return e
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ---- strait in process ----

// strait is a strait Server running in the test process.
type strait struct {
	Srv  *proxy.Server
	Addr string // 127.0.0.1:port
	URL  string // http://127.0.0.1:port
	log  *syncBuffer
}

// clusterYAML is a config with one listener routing everything to one
// cluster of endpoints, with the access log on.
func clusterYAML(endpoints ...string) string {
	var b strings.Builder
	b.WriteString("listeners:\n  - name: e2e\n    address: 127.0.0.1:0\n    routes:\n      - cluster: origin\n")
	b.WriteString("clusters:\n  - name: origin\n    endpoints:\n")
	for _, ep := range endpoints {
		fmt.Fprintf(&b, "      - %q\n", ep)
	}
	b.WriteString("access_log: true\n")
	return b.String()
}

// startStrait parses yamlText (through config.Parse, as the binary does),
// builds its first listener with gateway.Build, lets tweak change the
// options, and serves it on a free loopback port until the test ends. The
// JSON log (access log included) goes to a buffer.
func startStrait(t testing.TB, yamlText string, tweak func(*proxy.Options)) *strait {
	t.Helper()
	cfg, err := config.Parse(t.Name()+".yaml", []byte(yamlText))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yamlText)
	}
	return startStraitConfig(t, cfg, tweak)
}

func startStraitConfig(t testing.TB, cfg *config.Config, tweak func(*proxy.Options)) *strait {
	t.Helper()
	buf := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// Metrics on, as the binary has them by default: every in-process
	// test runs the data path with them.
	gw, err := gateway.Build(cfg, logger, gateway.Observe{Metrics: observe.NewMetrics()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gw.Stop)
	listeners, opts := gw.Listeners, gw.Options
	if len(listeners) == 0 {
		t.Fatal("gateway.Build returned no listeners")
	}
	opts.Upgrades = listeners[0].Upgrades
	if tweak != nil {
		tweak(&opts)
	}
	srv, err := proxy.New(listeners[0].Phases, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		opts.Pool.CloseIdle() // the gateway's: shared, so not the server's to close
		select {
		case err := <-served:
			if !errors.Is(err, proxy.ErrServerClosed) {
				t.Errorf("Serve returned %v, want ErrServerClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Serve did not return after Shutdown")
		}
		if t.Failed() {
			t.Logf("strait log:\n%s", tail(buf.String(), 40))
		}
	})
	addr := ln.Addr().String()
	return &strait{Srv: srv, Addr: addr, URL: "http://" + addr, log: buf}
}

// accessEntry is one access-log line.
type accessEntry struct {
	Msg      string `json:"msg"`
	Level    string `json:"level"`
	Method   string `json:"method"`
	Path     string `json:"path"`
	Status   int    `json:"status"`
	Upstream string `json:"upstream"`
	Reused   bool   `json:"reused"`
	Attempts int    `json:"attempts"`
	BytesIn  int64  `json:"bytes_in"`
	BytesOut int64  `json:"bytes_out"`
	Error    string `json:"error"`
	Side     string `json:"error_side"`
	// Durations, logged in milliseconds.
	TotalMs          float64 `json:"total_ms"`
	RequestReadMs    float64 `json:"request_read_ms"`
	UpstreamDialMs   float64 `json:"upstream_dial_ms"`
	UpstreamHeaderMs float64 `json:"upstream_header_ms"`
	// The same as durations: the whole request, and its parts: reading
	// the head, connecting upstream, waiting for the response head.
	Total, RequestRead, UpstreamDial, UpstreamHeader time.Duration
}

func msDuration(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

// accessLog returns the access-log lines written so far.
func (s *strait) accessLog(t testing.TB) []accessEntry {
	t.Helper()
	var out []accessEntry
	sc := bufio.NewScanner(bytes.NewReader(s.log.Bytes()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var e accessEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, sc.Text())
		}
		if e.Msg == "request" {
			if !bytes.Contains(sc.Bytes(), []byte(`"total_ms":`)) {
				t.Fatalf("access-log line without total_ms (has the format changed?): %s", sc.Text())
			}
			e.Total, e.RequestRead = msDuration(e.TotalMs), msDuration(e.RequestReadMs)
			e.UpstreamDial, e.UpstreamHeader = msDuration(e.UpstreamDialMs), msDuration(e.UpstreamHeaderMs)
			out = append(out, e)
		}
	}
	return out
}

// waitAccessLog waits until the access log has at least n lines and
// returns them. strait writes a request's line after the response has
// gone out, so a client can finish before the line is written.
func (s *strait) waitAccessLog(t testing.TB, n int) []accessEntry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		log := s.accessLog(t)
		if len(log) >= n || time.Now().After(deadline) {
			return log
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// counters formats the server's counters for a test log.
func counters(s *proxy.Server) string {
	c := s.Counters()
	return fmt.Sprintf("accepted=%d open=%d requests=%d upstream_dials=%d upstream_stale=%d upstream_errors=%d upstream_timeouts=%d header_timeouts=%d downstream_gone=%d",
		c.ConnsAccepted.Load(), c.ConnsOpen.Load(), c.Requests.Load(), c.UpstreamDials.Load(), c.UpstreamStale.Load(),
		c.UpstreamErrors.Load(), c.UpstreamTimeouts.Load(), c.HeaderTimeouts.Load(), c.DownstreamGone.Load())
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// ---- Go origins ----

// startGoOrigin serves h on a free loopback port until the test ends, and
// returns its address.
func startGoOrigin(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
	})
	return ln.Addr().String()
}

// startRawOrigin accepts connections on a free loopback port and hands
// each to handle on its own goroutine, until the test ends.
func startRawOrigin(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// ---- clients ----

// curlResult is what one curl run gave.
type curlResult struct {
	Stdout   []byte
	Stderr   string
	ExitCode int
	Elapsed  time.Duration
}

// runCurl runs curl with args (after -sS and a bound on time; proxies
// from the environment are ignored).
func runCurl(t testing.TB, args ...string) curlResult {
	t.Helper()
	return runCurlStdin(t, nil, args...)
}

// runCurlStdin is runCurl with stdin fed from in.
func runCurlStdin(t testing.TB, in io.Reader, args ...string) curlResult {
	t.Helper()
	bin := needTool(t, "curl")
	full := append([]string{"-sS", "--noproxy", "*", "--max-time", "30"}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Stdin = in
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	start := time.Now()
	err := cmd.Run()
	r := curlResult{Stdout: stdout.Bytes(), Stderr: stderr.String(), Elapsed: time.Since(start)}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("curl: %v", err)
		}
		r.ExitCode = ee.ExitCode()
	}
	return r
}

// mustCurl runs curl and fails the test unless it exits 0.
func mustCurl(t testing.TB, args ...string) curlResult {
	t.Helper()
	r := runCurl(t, args...)
	if r.ExitCode != 0 {
		t.Fatalf("curl %s: exit %d: %s", strings.Join(args, " "), r.ExitCode, r.Stderr)
	}
	return r
}

// newClient returns an HTTP client that talks straight to the address it
// is given (no proxy from the environment).
func newClient(keepAlive bool) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			DisableKeepAlives:   !keepAlive,
			MaxIdleConnsPerHost: 16,
			DisableCompression:  true,
		},
		Timeout: 30 * time.Second,
	}
}

// getOK does a GET and requires 200 and, if want is not nil, that body.
func getOK(t testing.TB, c *http.Client, url string, want []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d, want 200; body %q", url, resp.StatusCode, trunc(body))
	}
	if want != nil && !bytes.Equal(body, want) {
		t.Fatalf("GET %s: body differs: got %d bytes %q, want %d bytes %q", url, len(body), trunc(body), len(want), trunc(want))
	}
}

func trunc(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…(" + strconv.Itoa(len(b)) + " bytes)"
	}
	return string(b)
}
