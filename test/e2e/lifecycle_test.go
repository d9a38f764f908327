package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// straitRun is a strait started with a pid file, whose pid changes with
// binary upgrades: signals go to the pid the file names, and its output
// goes to a file (a pipe would break when the first process exits, and a
// new one writing to it would die of SIGPIPE).
type straitRun struct {
	first   *proc
	pidFile string
	logPath string
	admin   string // the admin API's base URL
}

func startStraitRun(t *testing.T, bin, configPath, adminAddr string, args []string, env ...string) *straitRun {
	t.Helper()
	dir := t.TempDir()
	s := &straitRun{pidFile: filepath.Join(dir, "strait.pid"), logPath: filepath.Join(dir, "strait.log"), admin: "http://" + adminAddr}
	logf, err := os.Create(s.logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { logf.Close() })
	cmd := exec.Command(bin, append([]string{"run", "-c", configPath, "--pid-file", s.pidFile}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	s.first = startProc(t, cmd)
	t.Cleanup(func() {
		// Processes an upgrade started are in the first one's group, which
		// startProc's cleanup kills; stop the current one gracefully first.
		if pid := s.pidNow(); pid > 0 && alive(pid) {
			syscall.Kill(pid, syscall.SIGTERM)
			waitGone(pid, 10*time.Second)
		}
	})
	waitPort(t, adminAddr, 10*time.Second, s.first.exited)
	s.waitPID(t, 0)
	return s
}

// pidNow is the pid the pid file names, or 0.
func (s *straitRun) pidNow() int {
	b, err := os.ReadFile(s.pidFile)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// waitPID waits until the pid file names a live process other than not,
// and returns it.
func (s *straitRun) waitPID(t *testing.T, not int) int {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if pid := s.pidNow(); pid > 0 && pid != not && alive(pid) {
			return pid
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the pid file names no new process (was %d); log:\n%s", not, tail(s.log(), 30))
	return 0
}

func (s *straitRun) log() string {
	b, _ := os.ReadFile(s.logPath)
	return string(b)
}

func (s *straitRun) signal(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	pid := s.pidNow()
	if err := syscall.Kill(pid, sig); err != nil {
		t.Fatalf("signal %v to %d: %v", sig, pid, err)
	}
	return pid
}

// upgrade sends SIGUSR2 and waits for the new process to be ready; it
// returns the old pid and the new.
func (s *straitRun) upgrade(t *testing.T) (old, now int) {
	t.Helper()
	old = s.signal(t, syscall.SIGUSR2)
	return old, s.waitPID(t, old)
}

// alive reports whether pid runs (a zombie does not).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z")
}

func waitGone(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if !alive(pid) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// reloadStatus is GET /reload.
type reloadStatus struct {
	Time    time.Time `json:"time"`
	OK      bool      `json:"ok"`
	Source  string    `json:"source"`
	Errors  []string  `json:"errors"`
	Changes []string  `json:"changes"`
}

func (s *straitRun) lastReload(t *testing.T) reloadStatus {
	t.Helper()
	code, body := adminDo(t, "GET", s.admin+"/reload", nil)
	var r reloadStatus
	if code == 200 {
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("GET /reload: %v: %s", err, body)
		}
	}
	return r
}

// reload asks for a reload by SIGHUP or POST /reload, and returns its
// result.
func (s *straitRun) reload(t *testing.T, bySignal bool) reloadStatus {
	t.Helper()
	before := s.lastReload(t).Time
	if !bySignal {
		_, body := adminDo(t, "POST", s.admin+"/reload", map[string]string{"X-Strait-Admin": "1"})
		var r reloadStatus
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("POST /reload: %v: %s", err, body)
		}
		return r
	}
	s.signal(t, syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r := s.lastReload(t); r.Time.After(before) {
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("SIGHUP: no reload seen; log:\n%s", tail(s.log(), 20))
	return reloadStatus{}
}

// loadCounts is what the clients of a load saw.
type loadCounts struct {
	ok, failed atomic.Int64
	conns      atomic.Int64 // connections opened
	mu         sync.Mutex
	errs       []string
}

func (c *loadCounts) fail(format string, args ...any) {
	c.failed.Add(1)
	c.mu.Lock()
	if len(c.errs) < 20 {
		c.errs = append(c.errs, fmt.Sprintf(format, args...))
	}
	c.mu.Unlock()
}

// rawClient sends GETs for path over HTTP/1.1 until stop, on one keep-alive
// connection at a time: a new one only when the last response said
// Connection: close (or, with perRequest, for each request). It retries
// nothing: any request without a whole 200 is a failure.
func rawClient(addr, path string, perRequest bool, stop <-chan struct{}, c *loadCounts) {
	var conn net.Conn
	var br *bufio.Reader
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if conn == nil {
			var err error
			if conn, err = net.DialTimeout("tcp", addr, 5*time.Second); err != nil {
				c.fail("dial: %v", err)
				time.Sleep(10 * time.Millisecond)
				continue
			}
			c.conns.Add(1)
			br = bufio.NewReader(conn)
		}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		req := "GET " + path + " HTTP/1.1\r\nHost: load\r\n"
		if perRequest {
			req += "Connection: close\r\n"
		}
		if _, err := io.WriteString(conn, req+"\r\n"); err != nil {
			c.fail("write: %v", err)
			conn.Close()
			conn = nil
			continue
		}
		resp, err := http.ReadResponse(br, nil)
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		switch {
		case err != nil:
			c.fail("response: %v", err)
		case resp.StatusCode != 200:
			c.fail("status %d", resp.StatusCode)
		default:
			c.ok.Add(1)
		}
		if err != nil || resp.Close {
			conn.Close()
			conn = nil
		}
	}
}

// lifecycleConfig is the config of TestReloadAndUpgradeUnderLoad's
// strait: version says what /version answers (a route change), idle is
// timeouts.idle (a change that needs a new server), and policy is the
// cluster's balance (a change that replaces the cluster).
func lifecycleConfig(addr, adminAddr, origin, version, idle, policy string) string {
	return fmt.Sprintf(`listeners:
  - address: %q
    routes:
      - {path: /version, respond: {status: 200, body: %q}}
      - {cluster: origin}
clusters:
  - {name: origin, endpoints: [%q], balance: %s}
timeouts: {idle: %s, grace: 20s}
admin: {address: %q}
`, addr, version, origin, policy, idle, adminAddr)
}

// TestReloadAndUpgradeUnderLoad runs strait under constant load (16
// keep-alive clients, one that opens a connection per request, a long
// streaming response and a WebSocket) through ten reloads (half of them
// changing routes, the others the server's options or the cluster), an
// invalid config, and three binary upgrades, and counts: no request may
// fail, no connection may be reset under a request, and the stream and
// the WebSocket finish on the first process.
func TestReloadAndUpgradeUnderLoad(t *testing.T) {
	const streamLines = 80 // 100 ms apart: 8 s
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			w.Header().Set("Content-Type", "text/plain")
			for i := range streamLines {
				fmt.Fprintf(w, "line %d\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(100 * time.Millisecond)
			}
		case "/ws":
			ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
			if err != nil {
				return
			}
			defer ws.CloseNow()
			for {
				typ, msg, err := ws.Read(r.Context())
				if err != nil {
					return
				}
				if ws.Write(r.Context(), typ, msg) != nil {
					return
				}
			}
		default:
			io.WriteString(w, "ok\n")
		}
	}))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	path := writeFile(t, t.TempDir(), "strait.yaml", []byte(lifecycleConfig(addr, adminAddr, origin, "v0", "75s", "round_robin")))
	s := startStraitRun(t, straitBin, path, adminAddr, nil)
	waitPort(t, addr, 10*time.Second, s.first.exited)
	firstPID := s.pidNow()

	// The load.
	stop := make(chan struct{})
	var keepAlive, perRequest loadCounts
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() { rawClient(addr, "/", false, stop, &keepAlive) })
	}
	wg.Go(func() { rawClient(addr, "/", true, stop, &perRequest) })
	streamDone := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/stream")
		if err != nil {
			streamDone <- err
			return
		}
		defer resp.Body.Close()
		n := 0
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if sc.Text() != fmt.Sprintf("line %d", n) {
				streamDone <- fmt.Errorf("line %d: %q", n, sc.Text())
				return
			}
			n++
		}
		if n != streamLines {
			streamDone <- fmt.Errorf("the stream ended after %d lines of %d: %v", n, streamLines, sc.Err())
			return
		}
		streamDone <- nil
	}()
	wsDone := make(chan error, 1)
	wsSent := 0
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{HTTPClient: newClient(false), CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			wsDone <- err
			return
		}
		defer ws.CloseNow()
		for i := range 80 { // 100 ms apart: 8 s
			msg := fmt.Sprintf("message %d", i)
			if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
				wsDone <- fmt.Errorf("write %d: %w", i, err)
				return
			}
			_, got, err := ws.Read(ctx)
			if err != nil || string(got) != msg {
				wsDone <- fmt.Errorf("echo %d: %q, %v", i, got, err)
				return
			}
			wsSent++
			time.Sleep(100 * time.Millisecond)
		}
		wsDone <- ws.Close(websocket.StatusNormalClosure, "done")
	}()
	time.Sleep(300 * time.Millisecond)

	// Ten reloads, by SIGHUP and by the admin API in turn.
	version, idle, policy := "v0", "75s", "round_robin"
	for i := 1; i <= 10; i++ {
		switch i % 4 {
		case 0, 2: // routes
			version = fmt.Sprintf("v%d", i)
		case 1: // the server's options: a new server takes the socket
			idle = fmt.Sprintf("%ds", 60+i)
		case 3: // the cluster
			policy = map[string]string{"round_robin": "least_request", "least_request": "round_robin"}[policy]
		}
		os.WriteFile(path, []byte(lifecycleConfig(addr, adminAddr, origin, version, idle, policy)), 0o644)
		r := s.reload(t, i%2 == 0)
		if !r.OK {
			t.Fatalf("reload %d refused: %v", i, r.Errors)
		}
		t.Logf("reload %d (%s): %q", i, r.Source, r.Changes)
		want := map[int]string{0: "new routes", 1: "a new server", 2: "new routes", 3: "cluster origin: new"}[i%4]
		if len(r.Changes) == 0 || !strings.Contains(r.Changes[0], want) || i%4 == 3 && len(r.Changes) != 2 {
			t.Errorf("reload %d: changes %q, want %q (and the cluster's retirement) alone", i, r.Changes, want)
		}
		if i%2 == 0 {
			if got := string(mustCurl(t, "-s", "http://"+addr+"/version").Stdout); got != version {
				t.Errorf("after reload %d /version answers %q, want %q", i, got, version)
			}
		}
		time.Sleep(150 * time.Millisecond)
	}

	// An invalid file: refused, the running config stays.
	valid, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(valid), "timeouts: {", "timeouts: {idel: 5s, ", 1)), 0o644)
	r := s.reload(t, true)
	if r.OK || len(r.Errors) == 0 || !strings.Contains(r.Errors[0], "strait.yaml:") || !strings.Contains(r.Errors[0], "idel") {
		t.Errorf("an invalid config's reload: ok=%v errors=%q; want refused, naming file, line and key", r.OK, r.Errors)
	}
	_, metrics := adminDo(t, "GET", s.admin+"/metrics", nil)
	if v := metricValue(metrics, "strait_config_reloads_total", `result="failed"`); v != 1 {
		t.Errorf("strait_config_reloads_total{result=failed} = %v, want 1", v)
	}
	if v := metricValue(metrics, "strait_config_reloads_total", `result="ok"`); v != 10 {
		t.Errorf("strait_config_reloads_total{result=ok} = %v, want 10", v)
	}
	os.WriteFile(path, valid, 0o644)
	defer func() {
		// The counts go on across upgrades.
		_, metrics := adminDo(t, "GET", s.admin+"/metrics", nil)
		for _, c := range []struct {
			name, result string
			want         float64
		}{{"strait_config_reloads_total", "ok", 10}, {"strait_config_reloads_total", "failed", 1}, {"strait_binary_upgrades_total", "ok", 3}} {
			if v := metricValue(metrics, c.name, `result="`+c.result+`"`); v != c.want {
				t.Errorf("after the upgrades %s{result=%s} = %v, want %v", c.name, c.result, v, c.want)
			}
		}
	}()

	// Three binary upgrades.
	var olds []int
	for i := range 3 {
		old, now := s.upgrade(t)
		olds = append(olds, old)
		t.Logf("upgrade %d: pid %d -> %d", i+1, old, now)
		if got := string(mustCurl(t, "-s", "http://"+addr+"/version").Stdout); got != "v10" {
			t.Errorf("after upgrade %d /version answers %q, want v10", i+1, got)
		}
		time.Sleep(time.Second)
	}
	// The stream and the WebSocket began on the first process, and finish
	// there.
	if err := <-streamDone; err != nil {
		t.Errorf("the long stream: %v", err)
	}
	if err := <-wsDone; err != nil {
		t.Errorf("the WebSocket: %v (%d echoes)", err, wsSent)
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	for _, pid := range olds {
		if !waitGone(pid, 25*time.Second) {
			t.Errorf("old process %d still runs after the grace period", pid)
		}
	}
	if firstPID != olds[0] {
		t.Errorf("the first process was %d, the first upgraded %d", firstPID, olds[0])
	}
	for name, c := range map[string]*loadCounts{"keep-alive": &keepAlive, "per-request": &perRequest} {
		t.Logf("%s clients: %d requests ok, %d failed, %d connections", name, c.ok.Load(), c.failed.Load(), c.conns.Load())
		if c.failed.Load() != 0 {
			t.Errorf("%s clients: %d failed: %q", name, c.failed.Load(), c.errs)
		}
		if c.ok.Load() < 100 {
			t.Errorf("%s clients: only %d requests: the load did not run", name, c.ok.Load())
		}
	}
	if t.Failed() {
		t.Logf("strait's log:\n%s", tail(s.log(), 60))
	}
}

// TestUpgradeKeepsTicketKeys checks that a TLS session begun with one
// process resumes with the next: the ticket keys pass in the upgrade.
func TestUpgradeKeepsTicketKeys(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "localhost", 2, "localhost")
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	path := writeFile(t, dir, "strait.yaml", []byte(fmt.Sprintf(`listeners:
  - address: %q
    tls: {certificates: [{cert: %q, key: %q}]}
    routes: [{cluster: origin}]
clusters: [{name: origin, endpoints: [%q]}]
admin: {address: %q}
`, addr, cert, key, origin, adminAddr)))
	s := startStraitRun(t, straitBin, path, adminAddr, nil)
	waitPort(t, addr, 10*time.Second, s.first.exited)
	cache := tls.NewLRUClientSessionCache(4)
	handshake := func() bool {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: ca.pool, ClientSessionCache: cache, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// TLS 1.3 tickets come after the handshake: read a response.
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
		io.ReadAll(c)
		return c.ConnectionState().DidResume
	}
	if handshake() {
		t.Fatal("the first handshake resumed")
	}
	if !handshake() {
		t.Fatal("the second handshake did not resume before the upgrade")
	}
	s.upgrade(t)
	if !handshake() {
		t.Error("a session of the old process did not resume with the new one")
	}
}

// TestUpgradeFails checks that a new binary that exits, or is never
// ready, leaves the old process serving, with the reason logged and
// counted; and that the next upgrade, to a good binary, works.
func TestUpgradeFails(t *testing.T) {
	dir := t.TempDir()
	s, addr, bin := startOKRun(t, dir, true)
	good, err := os.ReadFile(straitBin)
	if err != nil {
		t.Fatal(err)
	}
	pid := s.pidNow()

	// A binary that exits at once.
	replaceBinary(t, bin, []byte("#!/bin/sh\necho 'broken build' >&2\nexit 3\n"))
	s.signal(t, syscall.SIGUSR2)
	waitLog(t, s, "upgrade failed", 10*time.Second)
	if !strings.Contains(s.log(), "exit status 3") {
		t.Errorf("the failed upgrade's log does not say the new process exited with status 3:\n%s", tail(s.log(), 10))
	}
	if got := string(mustCurl(t, "-s", "http://"+addr+"/").Stdout); got != "ok" || s.pidNow() != pid || !alive(pid) {
		t.Fatalf("after a failed upgrade: %q from pid %d (was %d)", got, s.pidNow(), pid)
	}
	_, metrics := adminDo(t, "GET", s.admin+"/metrics", nil)
	if v := metricValue(metrics, "strait_binary_upgrades_total", `result="failed"`); v != 1 {
		t.Errorf("strait_binary_upgrades_total{result=failed} = %v, want 1", v)
	}

	replaceBinary(t, bin, good)
	_, now := s.upgrade(t)
	if !waitGone(pid, 10*time.Second) {
		t.Errorf("the old process %d runs on after a good upgrade", pid)
	}
	if got := string(mustCurl(t, "-s", "http://"+addr+"/").Stdout); got != "ok" || now == pid {
		t.Fatalf("after the upgrade: %q from pid %d", got, now)
	}
}

// startOKRun starts strait with a pid file in front of an origin that
// answers "ok", from a copy of the binary in dir (which a test may
// replace, as a package manager would) when ownBinary; it returns strait,
// its listener's address, and the binary's path.
func startOKRun(t *testing.T, dir string, ownBinary bool, env ...string) (*straitRun, string, string) {
	t.Helper()
	bin := straitBin
	if ownBinary {
		good, err := os.ReadFile(straitBin)
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(dir, "strait")
		replaceBinary(t, bin, good)
	}
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	path := writeFile(t, dir, "strait.yaml", []byte(listenerYAML(addr, []string{fmt.Sprintf("%q", origin)},
		fmt.Sprintf("admin: {address: %q}\n", adminAddr))))
	s := startStraitRun(t, bin, path, adminAddr, nil, env...)
	waitPort(t, addr, 10*time.Second, s.first.exited)
	return s, addr, bin
}

// replaceBinary puts content at path by rename, as package managers do:
// a running process keeps its old file.
func replaceBinary(t *testing.T, path string, content []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", content, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

func waitLog(t *testing.T, s *straitRun, what string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(s.log(), what) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", what, tail(s.log(), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSystemdNotify checks what strait tells systemd, on a NOTIFY_SOCKET
// the test listens on: READY=1, RELOADING=1 with MONOTONIC_USEC then
// READY=1 on SIGHUP, MAINPID= after an upgrade, STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	next := func() string {
		t.Helper()
		ln.SetReadDeadline(time.Now().Add(15 * time.Second))
		buf := make([]byte, 4096)
		n, err := ln.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	s, _, _ := startOKRun(t, dir, false, "NOTIFY_SOCKET="+sock)
	if got := next(); !strings.HasPrefix(got, "READY=1") {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	s.signal(t, syscall.SIGHUP)
	got := next()
	usec, ok := strings.CutPrefix(got, "RELOADING=1\nMONOTONIC_USEC=")
	if n, err := strconv.ParseInt(strings.TrimSpace(usec), 10, 64); !ok || err != nil || n <= 0 {
		t.Errorf("on SIGHUP %q, want RELOADING=1 and MONOTONIC_USEC=", got)
	}
	if got := next(); !strings.HasPrefix(got, "READY=1") {
		t.Errorf("after the reload %q, want READY=1", got)
	}
	old, now := s.upgrade(t)
	if got := next(); got != fmt.Sprintf("MAINPID=%d", now) {
		t.Errorf("after the upgrade %q, want MAINPID=%d", got, now)
	}
	if !waitGone(old, 10*time.Second) {
		t.Errorf("old process %d runs on", old)
	}
	s.signal(t, syscall.SIGTERM)
	if got := next(); got != "STOPPING=1" {
		t.Errorf("on SIGTERM %q, want STOPPING=1", got)
	}
	if !waitGone(now, 10*time.Second) {
		t.Errorf("process %d did not stop on SIGTERM", now)
	}
}

// TestDrainDelay checks SIGTERM with timeouts.drain_delay: /ready turns
// 503 at once while new connections are still served for the delay, then
// strait stops, exit 0.
func TestDrainDelay(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "c.yaml", listenerYAML(addr, []string{fmt.Sprintf("%q", origin)}, "timeouts: {drain_delay: 1500ms}\n"), addr)
	api := "http://" + adminAddrOf(t, p)
	start := time.Now()
	p.signal(syscall.SIGTERM)
	deadline := time.Now().Add(time.Second)
	for {
		if code, _ := adminDo(t, "GET", api+"/ready", nil); code == 503 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("/ready did not turn 503")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A new connection during the delay is served.
	time.Sleep(500 * time.Millisecond)
	if got := string(mustCurl(t, "-s", "http://"+addr+"/").Stdout); got != "ok" {
		t.Errorf("a request during the drain delay got %q", got)
	}
	if !p.wait(10 * time.Second) {
		t.Fatal("strait did not stop")
	}
	if p.err != nil {
		t.Errorf("exit: %v", p.err)
	}
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Errorf("stopped %v after SIGTERM, before the drain delay", d)
	}
}

// TestReloadListenersAndClusters checks what a reload keeps and changes:
// a listener added serves, one removed stops accepting, a cluster left
// unchanged keeps its state (an endpoint drained through the admin API
// stays drained), and a reload whose new listener cannot bind is refused
// whole, the running config serving on.
func TestReloadListenersAndClusters(t *testing.T) {
	a := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "a") }))
	bOrigin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "b") }))
	addr1 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	addr2 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	config := func(addrs ...string) string {
		var b strings.Builder
		b.WriteString("listeners:\n")
		for _, addr := range addrs {
			fmt.Fprintf(&b, "  - address: %q\n    routes: [{cluster: origin}]\n", addr)
		}
		return b.String() + fmt.Sprintf("clusters: [{name: origin, endpoints: [%q, %q]}]\nadmin: {address: %q}\n", a, bOrigin, adminAddr)
	}
	path := writeFile(t, t.TempDir(), "strait.yaml", []byte(config(addr1)))
	s := startStraitRun(t, straitBin, path, adminAddr, nil)
	waitPort(t, addr1, 10*time.Second, s.first.exited)

	// Drain endpoint a: every request goes to b, before and after.
	if code, body := adminDo(t, "POST", s.admin+"/clusters/origin/endpoints/"+a+"/drain", map[string]string{"X-Strait-Admin": "1"}); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	os.WriteFile(path, []byte(config(addr2)), 0o644)
	if r := s.reload(t, true); !r.OK {
		t.Fatalf("reload: %v", r.Errors)
	}
	for range 4 {
		if got := string(mustCurl(t, "-s", "http://"+addr2+"/").Stdout); got != "b" {
			t.Fatalf("the added listener answered %q, want b (a stays drained)", got)
		}
	}
	if res := runCurl(t, "-s", "--max-time", "2", "http://"+addr1+"/"); res.ExitCode != 7 {
		t.Errorf("the removed listener: curl exit %d (%q), want 7 (refused)", res.ExitCode, res.Stdout)
	}

	// A listener that cannot bind refuses the reload whole.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	os.WriteFile(path, []byte(config(addr2, taken.Addr().String())), 0o644)
	r := s.reload(t, false)
	if r.OK || len(r.Errors) == 0 || !strings.Contains(r.Errors[0], "address already in use") {
		t.Errorf("a reload with a port taken: ok=%v errors=%q", r.OK, r.Errors)
	}
	if got := string(mustCurl(t, "-s", "http://"+addr2+"/").Stdout); got != "b" {
		t.Errorf("after the refused reload the listener answered %q", got)
	}
	_, shown := adminDo(t, "GET", s.admin+"/config", nil)
	if strings.Contains(shown, taken.Addr().String()) {
		t.Errorf("/config shows the refused config:\n%s", shown)
	}
}

// TestReloadWatch checks --watch: a change to the file is loaded within
// a few seconds; an invalid one is refused, the running config serving
// on.
func TestReloadWatch(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	path := writeFile(t, t.TempDir(), "strait.yaml", []byte(lifecycleConfig(addr, adminAddr, origin, "one", "75s", "round_robin")))
	s := startStraitRun(t, straitBin, path, adminAddr, []string{"--watch"})
	waitPort(t, addr, 10*time.Second, s.first.exited)
	version := func() string { return string(mustCurl(t, "-s", "http://"+addr+"/version").Stdout) }
	if got := version(); got != "one" {
		t.Fatalf("/version: %q", got)
	}
	os.WriteFile(path, []byte(lifecycleConfig(addr, adminAddr, origin, "two", "75s", "round_robin")), 0o644)
	deadline := time.Now().Add(10 * time.Second)
	for version() != "two" {
		if time.Now().After(deadline) {
			t.Fatalf("the changed file was not loaded; log:\n%s", tail(s.log(), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := s.lastReload(t); !r.OK || r.Source != "watch" {
		t.Errorf("GET /reload: %+v, want ok from watch", r)
	}
	os.WriteFile(path, []byte("listeners: [\n"), 0o644)
	deadline = time.Now().Add(10 * time.Second)
	for s.lastReload(t).OK {
		if time.Now().After(deadline) {
			t.Fatal("the invalid file was not looked at")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := version(); got != "two" {
		t.Errorf("after an invalid file /version answers %q", got)
	}
}

// TestReloadLeavesNothing reloads forty times, each replacing the
// listener's server (timeouts.idle) and the cluster (its policy) while
// HTTP/1.1 and HTTP/2 clients run and slow requests are in flight on the
// cluster being retired: goroutines, descriptors and pooled upstream
// connections come back to what they were, as the retired servers and
// clusters drain.
func TestReloadLeavesNothing(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(300 * time.Millisecond)
		}
		io.WriteString(w, "ok")
	}))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := func(i int) []byte {
		policy := []string{"round_robin", "least_request"}[i%2]
		return []byte(lifecycleConfig(addr, adminAddr, origin, "v", fmt.Sprintf("%ds", 60+i%2), policy))
	}
	path := writeFile(t, t.TempDir(), "strait.yaml", conf(0))
	s := startStraitRun(t, straitBin, path, adminAddr, nil)
	waitPort(t, addr, 10*time.Second, s.first.exited)
	pid := s.pidNow()
	h1, h2 := newClient(true), h2cClient()
	traffic := func() {
		var wg sync.WaitGroup
		for i := range 8 {
			c := h1
			if i%2 == 1 {
				c = h2
			}
			wg.Go(func() {
				p := "/"
				if i < 4 {
					p = "/slow"
				}
				resp, err := c.Get("http://" + addr + p)
				if err != nil {
					t.Errorf("GET %s: %v", p, err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		}
		wg.Wait()
	}
	type usage struct{ goroutines, idle, fds float64 }
	measure := func() usage {
		_, m := adminDo(t, "GET", s.admin+"/metrics", nil)
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		return usage{metricValue(m, "go_goroutines"), metricValue(m, "strait_upstream_pool_idle_connections"), float64(len(fds))}
	}
	reload := func(i int) {
		os.WriteFile(path, conf(i), 0o644)
		done := make(chan struct{})
		go func() { traffic(); close(done) }() // slow requests in flight across the reload
		time.Sleep(50 * time.Millisecond)
		if r := s.reload(t, false); !r.OK {
			t.Fatalf("reload %d: %v", i, r.Errors)
		}
		<-done
	}
	for i := 1; i <= 4; i++ {
		reload(i)
	}
	settle := func() usage {
		// The retired servers' drains (drain_idle 1 s) and the clients'
		// idle connections' closing.
		h1.CloseIdleConnections()
		h2.CloseIdleConnections()
		time.Sleep(2500 * time.Millisecond)
		return measure()
	}
	before := settle()
	for i := 5; i <= 44; i++ {
		reload(i)
	}
	after := settle()
	t.Logf("after 4 reloads: %+v; after 44: %+v", before, after)
	if after.goroutines > before.goroutines+10 {
		t.Errorf("goroutines: %v after 40 more reloads, %v before", after.goroutines, before.goroutines)
	}
	if after.fds > before.fds+10 {
		t.Errorf("descriptors: %v after 40 more reloads, %v before", after.fds, before.fds)
	}
	if after.idle > before.idle+8 {
		t.Errorf("idle pooled connections: %v after 40 more reloads, %v before: the retired clusters' stay", after.idle, before.idle)
	}
}

// TestUpgradeStoppedMidway: SIGTERM while a new binary is not yet ready
// (a wrapper script that never is) turns /ready 503 at once, kills the
// new process and what it started, and stops within a few seconds; a
// reload asked meanwhile is refused at once, not held for the upgrade.
func TestUpgradeStoppedMidway(t *testing.T) {
	dir := t.TempDir()
	s, addr, bin := startOKRun(t, dir, true)
	pid := s.pidNow()
	sleepPID := filepath.Join(dir, "sleep.pid")
	replaceBinary(t, bin, []byte("#!/bin/sh\nsleep 300 &\necho $! > "+sleepPID+"\nwait\n"))
	s.signal(t, syscall.SIGUSR2)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(sleepPID); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the new binary did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	r := s.reload(t, false)
	if r.OK || !strings.Contains(strings.Join(r.Errors, " "), "upgrade is under way") || time.Since(start) > 2*time.Second {
		t.Errorf("a reload during the upgrade: %+v after %v; want refused at once", r, time.Since(start))
	}
	start = time.Now()
	syscall.Kill(pid, syscall.SIGTERM)
	for {
		code := 0
		if resp, err := http.Get(s.admin + "/ready"); err == nil {
			code = resp.StatusCode
			resp.Body.Close()
		}
		if code != 200 {
			break
		}
		if time.Since(start) > time.Second {
			t.Fatal("/ready still 200 a second after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !waitGone(pid, 5*time.Second) {
		t.Fatalf("strait did not stop within 5 s of SIGTERM during an upgrade")
	}
	b, _ := os.ReadFile(sleepPID)
	sp, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if sp <= 0 || !waitGone(sp, 5*time.Second) {
		t.Errorf("the new binary's child %d outlived the stop", sp)
	}
	if res := runCurl(t, "-s", "--max-time", "2", "http://"+addr+"/"); res.ExitCode != 7 {
		t.Errorf("after the stop, the listener: curl exit %d, want 7 (refused: nobody holds the socket)", res.ExitCode)
	}
}

// TestSignalRightAfterUpgrade sends SIGHUP to the new process the moment
// the pid file names it (as systemd's ExecReload or logrotate may): it
// is a reload, and the new process serves on; Go's default for SIGHUP
// before the process catches it would be to exit.
func TestSignalRightAfterUpgrade(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	path := writeFile(t, t.TempDir(), "strait.yaml", []byte(lifecycleConfig(addr, adminAddr, origin, "v", "75s", "round_robin")))
	s := startStraitRun(t, straitBin, path, adminAddr, nil)
	waitPort(t, addr, 10*time.Second, s.first.exited)
	for i := range 5 {
		old := s.signal(t, syscall.SIGUSR2)
		var now int
		deadline := time.Now().Add(10 * time.Second)
		for now = s.pidNow(); now == old || now == 0; now = s.pidNow() {
			if time.Now().After(deadline) {
				t.Fatal("no new process")
			}
		}
		syscall.Kill(now, syscall.SIGHUP)
		time.Sleep(200 * time.Millisecond)
		if !alive(now) {
			t.Fatalf("round %d: the new process %d died of a SIGHUP sent as it became ready; log:\n%s", i, now, tail(s.log(), 20))
		}
		if got := string(mustCurl(t, "-s", "http://"+addr+"/").Stdout); got != "ok" {
			t.Fatalf("round %d: %q", i, got)
		}
		if !waitGone(old, 10*time.Second) {
			t.Fatalf("round %d: the old process %d runs on", i, old)
		}
	}
}

// TestReloadRotatesCertificate: a reload that names another certificate
// serves it to new connections at once, while a connection opened before
// goes on with its own (its server drains); a session begun before the
// reload resumes after it (the ticket keys carry over).
func TestReloadRotatesCertificate(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certA, keyA := ca.issue(t, dir, "a", 10, "localhost")
	certB, keyB := ca.issue(t, dir, "b", 11, "localhost")
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := func(cert, key string) []byte {
		return []byte(fmt.Sprintf(`listeners:
  - address: %q
    tls: {certificates: [{cert: %q, key: %q}]}
    routes: [{cluster: origin}]
clusters: [{name: origin, endpoints: [%q]}]
admin: {address: %q}
`, addr, cert, key, origin, adminAddr))
	}
	path := writeFile(t, dir, "strait.yaml", conf(certA, keyA))
	s := startStraitRun(t, straitBin, path, adminAddr, nil)
	waitPort(t, addr, 10*time.Second, s.first.exited)
	cache := tls.NewLRUClientSessionCache(4)
	dial := func(sessions tls.ClientSessionCache) *tls.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: ca.pool, ClientSessionCache: sessions, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	get := func(c *tls.Conn, br *bufio.Reader) {
		t.Helper()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	serial := func(c *tls.Conn) int64 { return c.ConnectionState().PeerCertificates[0].SerialNumber.Int64() }
	open := dial(cache)
	defer open.Close()
	openBR := bufio.NewReader(open)
	get(open, openBR) // and the session ticket with it
	if serial(open) != 10 {
		t.Fatalf("before the reload: certificate %d", serial(open))
	}
	os.WriteFile(path, conf(certB, keyB), 0o644)
	if r := s.reload(t, true); !r.OK {
		t.Fatalf("reload: %v", r.Errors)
	}
	fresh := dial(nil)
	defer fresh.Close()
	if serial(fresh) != 11 {
		t.Errorf("a new connection after the reload got certificate %d, want 11", serial(fresh))
	}
	resumed := dial(cache)
	defer resumed.Close()
	if !resumed.ConnectionState().DidResume {
		t.Error("a session begun before the reload did not resume after it")
	}
	// The connection opened before still serves its request (with
	// Connection: close: its server drains).
	get(open, openBR)
}
