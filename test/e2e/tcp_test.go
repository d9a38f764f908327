package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/proxytest"
)

// taggedEcho answers each line with tag and the line, and closes its
// half at the end of the client's.
func taggedEcho(tag string) func(c *net.TCPConn) {
	return func(c *net.TCPConn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				c.CloseWrite()
				return
			}
			if _, err := io.WriteString(c, tag+line); err != nil {
				return
			}
		}
	}
}

// procIO reads a process's /proc/PID/io counters.
func procIO(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]int64)
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		m[k], _ = strconv.ParseInt(v, 10, 64)
	}
	return m
}

// startTCPProxy runs strait proxy --listen tcp://… to the endpoints.
func startTCPProxy(t *testing.T, endpoints ...string) (string, *proc) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	args := []string{"proxy", "--listen", "tcp://" + addr, "--access-log"}
	for _, e := range endpoints {
		args = append(args, "--upstream", "tcp://"+e)
	}
	p := startProc(t, exec.Command(straitBin, args...))
	waitPort(t, addr, 10*time.Second, p.exited)
	return addr, p
}

// TestTCPSplice: 256 MiB each way through the quick mode's relay, with
// the client's FIN passed on before the origin answers; the relay's own
// reads and writes (its /proc/PID/io rchar and wchar, which count the
// bytes of read and write calls and not of splice: the first bytes of
// bursts) stay under 1% of what it relayed.
func TestTCPSplice(t *testing.T) {
	const size = 256 << 20
	origin := proxytest.TCPOrigin(t, func(c *net.TCPConn) {
		n, _ := io.Copy(io.Discard, struct{ io.Reader }{c}) // to the client's FIN
		fmt.Fprintf(c, "%d\n", n)
		io.CopyBuffer(struct{ io.Writer }{c}, io.LimitReader(zeroes{}, size), make([]byte, 1<<20))
	})
	addr, p := startTCPProxy(t, origin)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := procIO(t, p.cmd.Process.Pid)
	start := time.Now()
	buf := make([]byte, 1<<20)
	for sent := 0; sent < size; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || line != fmt.Sprintf("%d\n", size) {
		t.Fatalf("the origin counted %q (%v), want %d", line, err, size)
	}
	n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{br}, buf)
	if err != nil || n != size {
		t.Fatalf("read back %d bytes, %v; want %d", n, err, size)
	}
	elapsed := time.Since(start)
	after := procIO(t, p.cmd.Process.Pid)
	user := after["rchar"] - before["rchar"] + after["wchar"] - before["wchar"]
	t.Logf("512 MiB relayed in %v (%.1f Gbit/s); the relay read and wrote %d bytes itself (rchar+wchar: the first bytes of bursts), in %d read and %d write calls",
		elapsed.Round(time.Millisecond), float64(2*size*8)/elapsed.Seconds()/1e9, user,
		after["syscr"]-before["syscr"], after["syscw"]-before["syscw"])
	// A burst's first 16 KiB is read and written (a small message costs
	// fewer system calls so); the bulk must be spliced: under 1% copied.
	if user > 2*size/100 {
		t.Errorf("the relay moved %d bytes through user space for %d relayed: not spliced", user, 2*size)
	}
	c.Close()
	want := fmt.Sprintf(`"bytes_in":%d,"bytes_out":%d,"closed_first":"client"`, size, size+len(line))
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(p.stderr.String(), want) })
}

type zeroes struct{}

func (zeroes) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not so within %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTCPRedis: redis-benchmark through strait to a real redis-server:
// no errors, and its figures beside those of a direct run.
func TestTCPRedis(t *testing.T) {
	server := needTool(t, "redis-server")
	bench := needTool(t, "redis-benchmark")
	port := freePort(t)
	redis := startProc(t, exec.Command(server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"))
	redisAddr := fmt.Sprintf("127.0.0.1:%d", port)
	waitPort(t, redisAddr, 10*time.Second, redis.exited)
	dir := t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, dir, "strait.yaml", fmt.Sprintf(`listeners:
  - address: %q
    kind: tcp
    cluster: redis
clusters:
  - name: redis
    endpoints: [%q]
    health_check: {kind: tcp, interval: 1s}
`, addr, redisAddr), addr)
	run := func(target string) map[string]float64 {
		host, port, _ := net.SplitHostPort(target)
		out, err := exec.Command(bench, "-h", host, "-p", port, "-n", "20000", "-c", "20", "-t", "set,get,incr,lpush", "--csv").CombinedOutput()
		if err != nil {
			t.Fatalf("redis-benchmark: %v\n%s", err, out)
		}
		if bytes.Contains(bytes.ToLower(out), []byte("error")) {
			t.Fatalf("redis-benchmark reports errors:\n%s", out)
		}
		got := make(map[string]float64)
		re := regexp.MustCompile(`^"([A-Z]+)[^"]*","([0-9.]+)"`)
		for _, l := range strings.Split(string(out), "\n") {
			if m := re.FindStringSubmatch(l); m != nil {
				got[m[1]], _ = strconv.ParseFloat(m[2], 64)
			}
		}
		if len(got) != 4 {
			t.Fatalf("redis-benchmark's output has %d of 4 tests:\n%s", len(got), out)
		}
		return got
	}
	direct, through := run(redisAddr), run(addr)
	for _, k := range []string{"SET", "GET", "INCR", "LPUSH"} {
		t.Logf("redis-benchmark %-5s -c 20: %8.0f req/s through strait, %8.0f direct (%.2f×)", k, through[k], direct[k], through[k]/direct[k])
	}
	_, metrics := adminDo(t, "GET", "http://"+adminAddrOf(t, p)+"/metrics", nil)
	if v := metricValue(metrics, "strait_tcp_connections_total", `listener="`+addr+`"`); v < 20*4 {
		t.Errorf("strait_tcp_connections_total = %v, want at least 80", v)
	}
	if v := metricValue(metrics, "strait_tcp_bytes_total", `direction="in"`); v < 20000*4*20 {
		t.Errorf("strait_tcp_bytes_total{direction=in} = %v", v)
	}
}

// TestTCPRefusingOrigin: an endpoint that refuses is passed over for the
// one that answers; with none answering, the client is closed, and the
// cause logged and counted.
func TestTCPRefusingOrigin(t *testing.T) {
	good := proxytest.TCPOrigin(t, taggedEcho("ok:"))
	addr, p := startTCPProxy(t, closedAddr(t), good)
	for i := range 20 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "hi\n")
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "ok:hi\n" {
			t.Fatalf("client %d got %q", i, b)
		}
	}
	addr2, p2 := startTCPProxy(t, closedAddr(t))
	c, err := net.Dial("tcp", addr2)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || os.IsTimeout(err) {
		t.Fatalf("with no endpoint up: read %d, %v; want the connection closed", n, err)
	}
	c.Close()
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(p2.stderr.String(), "tcp: no endpoint could be connected") })
	if !strings.Contains(p2.stderr.String(), "connection refused") {
		t.Errorf("the cause is not logged:\n%s", tail(p2.stderr.String(), 5))
	}
	_ = p
}

// TestTCPIdleRelays: 10,000 idle relays to redis-server (or as many as
// the open-file limit lets strait hold: two sockets each): descriptors,
// strait's memory and the kernel's slab per relay, reported; no pipe is
// held.
func TestTCPIdleRelays(t *testing.T) {
	server := needTool(t, "redis-server")
	n := 10000
	if limit := int(noFileLimit()); 2*n+256 > limit {
		// The test machines' hard limit is 20000, and a process without
		// CAP_SYS_RESOURCE cannot raise it.
		n = (limit - 256) / 2
		t.Logf("the open-file limit is %d: %d relays", limit, n)
	}
	port := freePort(t)
	redis := startProc(t, exec.Command(server, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--maxclients", strconv.Itoa(n+100), "--tcp-backlog", "4096"))
	redisAddr := fmt.Sprintf("127.0.0.1:%d", port)
	waitPort(t, redisAddr, 10*time.Second, redis.exited)
	addr, p := startTCPProxy(t, redisAddr)
	pid := p.cmd.Process.Pid
	// One PING relayed first: strait serves, with its event loops'
	// duplicates of the listener, before anything is counted.
	if c, err := net.Dial("tcp", addr); err != nil {
		t.Fatal(err)
	} else {
		io.WriteString(c, "PING\r\n")
		b := make([]byte, 7)
		_, err := io.ReadFull(c, b)
		c.Close()
		if err != nil || string(b) != "+PONG\r\n" {
			t.Fatalf("PING through strait: %q, %v", b, err)
		}
	}
	time.Sleep(100 * time.Millisecond) // its relay closed in strait too
	fdsBefore, rssBefore, slabBefore := countFDs(t, pid), rssKiB(t, pid), slabKiB(t)
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	// In batches, so that no accept queue overflows (the kernel would
	// drop the connections it cannot queue, here or at redis). A PING
	// each way on each, so that each relay took a pipe once.
	buf := make([]byte, 7)
	for len(conns) < n {
		first := len(conns)
		for range min(500, n-first) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("after %d relays: %v", len(conns), err)
			}
			io.WriteString(c, "PING\r\n")
			conns = append(conns, c)
		}
		for i, c := range conns[first:] {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "+PONG\r\n" {
				t.Fatalf("relay %d: %q, %v\n%s", first+i, buf, err, tail(p.stderr.String(), 5))
			}
		}
	}
	time.Sleep(500 * time.Millisecond)
	fds, rss, slab := countFDs(t, pid), rssKiB(t, pid), slabKiB(t)
	t.Logf("%d idle relays: %.2f sockets and %.3f pipe descriptors each in strait; strait's RSS %.1f KiB each; kernel slab %.1f KiB each (machine-wide: the relay's four sockets, redis's included)",
		n, float64(fds.sockets-fdsBefore.sockets)/float64(n), float64(fds.pipes-fdsBefore.pipes)/float64(n),
		float64(rss-rssBefore)/float64(n), float64(slab-slabBefore)/float64(n))
	// waitPort's probe may have been relayed still when counted before.
	if got := fds.sockets - fdsBefore.sockets; got < 2*n-2 || got > 2*n {
		t.Errorf("%d more sockets in strait for %d relays, want %d", got, n, 2*n)
	}
	if got := fds.pipes - fdsBefore.pipes; got > 2*64 {
		t.Errorf("%d more pipe descriptors in strait for idle relays, want at most the 64 spare pipes", got)
	}
	if per := float64(rss-rssBefore) / float64(n); per > 8 {
		t.Errorf("strait's RSS grew %.1f KiB per idle relay, want under 8 (no goroutine holds an idle relay)", per)
	}
}

type fdCount struct{ sockets, pipes int }

func countFDs(t *testing.T, pid int) fdCount {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var f fdCount
	for _, e := range ents {
		l, _ := os.Readlink(filepath.Join(dir, e.Name()))
		switch {
		case strings.HasPrefix(l, "socket:"):
			f.sockets++
		case strings.HasPrefix(l, "pipe:"):
			f.pipes++
		}
	}
	return f
}

// slabKiB is the kernel's slab memory, machine-wide.
func slabKiB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Slab:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no Slab in /proc/meminfo")
	return 0
}

// TestTCPReloadAndUpgrade: relays opened before a reload that changes
// the cluster, and before a binary upgrade, go on where they were until
// the listener's drain_timeout; new connections go by the new config, to
// the new process.
func TestTCPReloadAndUpgrade(t *testing.T) {
	originA, originB := proxytest.TCPOrigin(t, taggedEcho("A:")), proxytest.TCPOrigin(t, taggedEcho("B:"))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := func(origin string) []byte {
		return fmt.Appendf(nil, `listeners:
  - address: %q
    kind: tcp
    cluster: c
    tcp: {drain_timeout: 3s}
clusters:
  - name: c
    endpoints: [%q]
admin: {address: %q}
access_log: stderr
`, addr, origin, adminAddr)
	}
	path := writeFile(t, t.TempDir(), "strait.yaml", conf(originA))
	s := startStraitRun(t, straitBin, path, adminAddr, nil)
	waitPort(t, addr, 10*time.Second, s.first.exited)

	type relayConn struct {
		c  net.Conn
		br *bufio.Reader
	}
	open := func() *relayConn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return &relayConn{c, bufio.NewReader(c)}
	}
	ask := func(r *relayConn) (string, error) {
		r.c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(r.c, "ping\n"); err != nil {
			return "", err
		}
		return r.br.ReadString('\n')
	}
	long := open()
	if got, err := ask(long); got != "A:ping\n" {
		t.Fatalf("before the reload: %q, %v", got, err)
	}

	// A reload to origin B: the long relay stays on A.
	os.WriteFile(path, conf(originB), 0o644)
	s.signal(t, syscall.SIGHUP)
	waitFor(t, 10*time.Second, func() bool { return s.lastReload(t).OK })
	if got, _ := ask(open()); got != "B:ping\n" {
		t.Errorf("a new connection after the reload: %q, want B", got)
	}
	if got, err := ask(long); got != "A:ping\n" {
		t.Errorf("the relay opened before the reload: %q, %v; want it on A still", got, err)
	}

	// A binary upgrade: both relays go on in the old process until its
	// drain timeout; a new connection is the new process's.
	mid := open()
	if got, _ := ask(mid); got != "B:ping\n" {
		t.Fatalf("%q", got)
	}
	oldPID, newPID := s.upgrade(t)
	upgradedAt := time.Now()
	if got, _ := ask(open()); got != "B:ping\n" {
		t.Errorf("a new connection after the upgrade: %q", got)
	}
	for time.Since(upgradedAt) < 2*time.Second {
		for _, r := range []*relayConn{long, mid} {
			if got, err := ask(r); !strings.HasSuffix(got, ":ping\n") {
				t.Fatalf("a relay from before the upgrade, %v after it: %q, %v", time.Since(upgradedAt), got, err)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !alive(oldPID) {
		t.Fatal("the old process left before its relays' drain timeout")
	}
	// The drain timeout (3 s): the old process closes them and exits.
	long.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := long.br.ReadString('\n'); err != io.EOF {
		t.Errorf("after the drain timeout: %v, want the relay closed", err)
	}
	if !waitGone(oldPID, 10*time.Second) {
		t.Error("the old process did not exit after the drain timeout")
	}
	if got, _ := ask(open()); got != "B:ping\n" || s.pidNow() != newPID {
		t.Errorf("after the old process left: %q, pid %d (new %d)", got, s.pidNow(), newPID)
	}
	if !strings.Contains(s.log(), `"closed_first":"drain"`) {
		t.Errorf("no access log line for the relays the drain closed:\n%s", tail(s.log(), 10))
	}
}

// TestTLSPassthrough: two TLS origins with their own certificates behind
// one tcp listener with sni_routes; curl reaches each by name (--resolve)
// and verifies the origin's own certificate; a name no route takes goes
// to the default cluster, and without one is refused.
func TestTLSPassthrough(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	var conns atomic.Int32
	originA := startTLSOrigin(t, ca, dir, &conns, "a.test")
	originB := startTLSOrigin(t, other, dir, &conns, "b.test", "x.b.test")
	originDefault := startTLSOrigin(t, ca, dir, &conns, "default.test")
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	otherFile := writeFile(t, dir, "other.pem", other.pem)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	_, port, _ := net.SplitHostPort(addr)
	p := runConfig(t, dir, "strait.yaml", fmt.Sprintf(`listeners:
  - address: %q
    kind: tcp
    sni_routes:
      - {names: [a.test], cluster: a}
      - {names: [b.test, "*.b.test"], cluster: b}
    cluster: fallback
clusters:
  - {name: a, endpoints: [%q]}
  - {name: b, endpoints: [%q]}
  - {name: fallback, endpoints: [%q]}
access_log: stderr
`, addr, originA, originB, originDefault), addr)
	for _, tc := range []struct{ name, caFile, want string }{
		{"a.test", caFile, "tls-origin a.test"},
		{"b.test", otherFile, "tls-origin b.test"},
		{"x.b.test", otherFile, "tls-origin x.b.test"},
		{"default.test", caFile, "tls-origin default.test"},
	} {
		for _, h := range []string{"--http1.1", "--http2"} {
			res := runCurl(t, "-s", h, "--cacert", tc.caFile, "--resolve", tc.name+":"+port+":127.0.0.1", "https://"+tc.name+":"+port+"/")
			if res.ExitCode != 0 || string(res.Stdout) != tc.want {
				t.Errorf("curl %s https://%s: exit %d, %q, %s", h, tc.name, res.ExitCode, res.Stdout, res.Stderr)
			}
		}
	}
	// The certificate is the origin's: a.test's CA does not vouch for b.test's.
	res := runCurl(t, "-s", "--cacert", caFile, "--resolve", "b.test:"+port+":127.0.0.1", "https://b.test:"+port+"/")
	if res.ExitCode == 0 {
		t.Error("b.test verified against a.test's CA: the certificate is not the origin's")
	}
	if !strings.Contains(p.stderr.String(), `"sni":"x.b.test"`) {
		t.Errorf("no access log line with the SNI:\n%s", tail(p.stderr.String(), 5))
	}
}

// TestProxyProtocol: a tcp listener sends PROXY v2 to nginx (listen …
// proxy_protocol), which logs the real client (127.0.0.2) rather than
// strait; a second strait's HTTP listener takes PROXY headers from the
// first, and tells the origin the real client (X-Forwarded-For), and
// refuses a connection from an address it does not trust.
func TestProxyProtocol(t *testing.T) {
	nginx := startNginxServer(t, map[string][]byte{"index.html": []byte("nginx\n")},
		`log_format pp '$proxy_protocol_addr:$proxy_protocol_port via $remote_addr';`, " proxy_protocol", "access_log pp.log pp;")
	dir := t.TempDir()
	front := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, dir, "front.yaml", fmt.Sprintf(`listeners:
  - {address: %q, kind: tcp, cluster: nginx}
clusters:
  - {name: nginx, endpoints: [%q], proxy_protocol: v2}
`, front, nginx.Addr), front)
	res := runCurl(t, "-s", "--interface", "127.0.0.2", "http://"+front+"/")
	if res.ExitCode != 0 || string(res.Stdout) != "nginx\n" {
		t.Fatalf("curl through strait to nginx: exit %d, %q %s", res.ExitCode, res.Stdout, res.Stderr)
	}
	var logged string
	waitFor(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(nginx.Dir, "pp.log"))
		logged = string(b)
		return strings.Contains(logged, "127.0.0.2:")
	})
	if !strings.Contains(logged, "via 127.0.0.1") {
		t.Errorf("nginx's log: %q", logged)
	}

	// PROXY in, on an HTTP listener: from the front strait (v1 this time).
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("X-Forwarded-For"))
	}))
	back := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, dir, "back.yaml", fmt.Sprintf(`listeners:
  - address: %q
    proxy_protocol: {trusted: [127.0.0.1/32]}
    routes: [{cluster: origin}]
clusters:
  - {name: origin, endpoints: [%q]}
`, back, origin), back)
	front2 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, dir, "front2.yaml", fmt.Sprintf(`listeners:
  - {address: %q, kind: tcp, cluster: back}
clusters:
  - {name: back, endpoints: [%q], proxy_protocol: v1}
`, front2, back), front2)
	for range 3 {
		res := runCurl(t, "-s", "--interface", "127.0.0.3", "http://"+front2+"/")
		if res.ExitCode != 0 || string(res.Stdout) != "127.0.0.3" {
			t.Errorf("X-Forwarded-For through two straits: exit %d, %q %s", res.ExitCode, res.Stdout, res.Stderr)
		}
	}
	// Straight to the back from 127.0.0.3, which it does not trust.
	res = runCurl(t, "-s", "--interface", "127.0.0.3", "http://"+back+"/")
	if res.ExitCode == 0 {
		t.Errorf("an untrusted client was served: %q", res.Stdout)
	}
	_, metrics := adminDo(t, "GET", "http://"+adminAddrOf(t, p)+"/metrics", nil)
	if v := metricValue(metrics, "strait_downstream_connections_refused_total", `reason="proxy_protocol"`); v < 1 {
		t.Errorf("strait_downstream_connections_refused_total{reason=proxy_protocol} = %v", v)
	}

	// PROXY in and out on a tcp listener: a client at 127.0.0.4, through
	// a strait that sends v1 to one that takes it and sends v2 to nginx.
	mid := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, dir, "mid.yaml", fmt.Sprintf(`listeners:
  - {address: %q, kind: tcp, cluster: nginx, proxy_protocol: {trusted: [127.0.0.1]}}
clusters:
  - {name: nginx, endpoints: [%q], proxy_protocol: v2}
`, mid, nginx.Addr), mid)
	front3 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, dir, "front3.yaml", fmt.Sprintf(`listeners:
  - {address: %q, kind: tcp, cluster: mid}
clusters:
  - {name: mid, endpoints: [%q], proxy_protocol: v1}
`, front3, mid), front3)
	if res := runCurl(t, "-s", "--interface", "127.0.0.4", "http://"+front3+"/"); res.ExitCode != 0 || string(res.Stdout) != "nginx\n" {
		t.Fatalf("curl through two tcp straits: exit %d, %q %s", res.ExitCode, res.Stdout, res.Stderr)
	}
	waitFor(t, 5*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(nginx.Dir, "pp.log"))
		return strings.Contains(string(b), "127.0.0.4:")
	})
}
