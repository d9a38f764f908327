package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/config"
)

// TestAccessLogCombined: the Combined Log Format, to a file that SIGUSR1
// reopens after logrotate has moved it.
func TestAccessLogCombined(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, dir, "c.yaml", listenerYAML(addr, []string{fmt.Sprintf("%q", origin)},
		"access_log: "+logPath+"\naccess_log_format: combined\n"), addr)
	get := func(path string) {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Header.Set("User-Agent", "e2e \"agent\"")
		req.Header.Set("Referer", "http://example.com/")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	lines := func(path string, n int) []string {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for {
			b, _ := os.ReadFile(path)
			got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if len(b) > 0 && len(got) >= n {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %q, want %d lines\n%s", path, b, n, tail(p.stderr.String(), 10))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	get("/one")
	line := regexp.MustCompile(`^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /one HTTP/1\.1" 200 5 "http://example\.com/" "e2e \\x22agent\\x22"$`)
	if got := lines(logPath, 1); !line.MatchString(got[0]) {
		t.Errorf("line %q does not match %v", got[0], line)
	}
	os.Rename(logPath, logPath+".1")
	get("/two") // still to the moved file
	// Its line is written once the response has gone: wait for it, or
	// the reopen may come first.
	if got := lines(logPath+".1", 2); !strings.Contains(got[1], "GET /two ") {
		t.Errorf("the moved file: %q", got)
	}
	p.signal(syscall.SIGUSR1)
	// The reopen is asynchronous (and the new file exists a moment before
	// lines go to it): requests go on until one is in the new file.
	deadline := time.Now().Add(3 * time.Second)
	for {
		get("/three")
		if b, _ := os.ReadFile(logPath); len(b) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := lines(logPath, 1); !strings.Contains(got[0], "GET /three ") {
		t.Errorf("the new file: %q", got)
	}
}

// TestAccessLogFields: a JSON access log keeps the fields it is given,
// and every field docs and config name is one strait writes.
func TestAccessLogFields(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	fields := `["` + strings.Join(config.AccessLogFields, `", "`) + `"]`
	runConfig(t, dir, "c.yaml", listenerYAML(addr, []string{fmt.Sprintf("%q", origin), closedAddr(t)},
		"access_log: "+logPath+"\naccess_log_fields: "+fields+"\n"), addr)
	req, _ := http.NewRequest("GET", "http://"+addr+"/x", nil)
	req.Header.Set("Referer", "http://example.com/")
	req.Header.Set("User-Agent", "e2e")
	seen := map[string]bool{}
	for range 4 { // one of the two endpoints refuses: errors get logged too
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	time.Sleep(100 * time.Millisecond)
	b, _ := os.ReadFile(logPath)
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("%q: %v", l, err)
		}
		for k := range m {
			seen[k] = true
		}
	}
	for _, f := range config.AccessLogFields {
		if !seen[f] && f != "error" && f != "error_side" {
			t.Errorf("field %s never written: %v", f, seen)
		}
	}
	for k := range seen {
		if !slices.Contains(config.AccessLogFields, k) && k != "time" && k != "level" && k != "msg" {
			t.Errorf("strait writes %s, which config.AccessLogFields does not name", k)
		}
	}

	short := filepath.Join(dir, "short.log")
	addr2 := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, dir, "d.yaml", listenerYAML(addr2, []string{fmt.Sprintf("%q", origin)},
		"access_log: "+short+"\naccess_log_fields: [status]\n"), addr2)
	resp, err := http.Get("http://" + addr2 + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	time.Sleep(100 * time.Millisecond)
	b, _ = os.ReadFile(short)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil || len(m) != 4 || m["status"] != 200.0 {
		t.Errorf("with fields [status]: %q (%v)", b, err)
	}
}

// TestDebugConnectionLog: at log_level debug, a connection's opening and
// closing are logged; at error, no access line is lost for it.
func TestDebugConnectionLog(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for _, level := range []string{"debug", "error"} {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		p := runConfig(t, t.TempDir(), "c.yaml", listenerYAML(addr, []string{fmt.Sprintf("%q", origin)},
			"access_log: true\nlog_level: "+level+"\n"), addr)
		client := newClient(false)
		for range 2 {
			resp, err := client.Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
		time.Sleep(200 * time.Millisecond)
		out := p.stderr.String()
		opened, closed, requests := strings.Count(out, `"msg":"connection open"`), strings.Count(out, `"msg":"connection closed"`), strings.Count(out, `"msg":"request"`)
		// waitPort's probe is a connection too.
		if level == "debug" && (opened < 2 || closed < 2 || !strings.Contains(out, `"requests":1`)) ||
			level == "error" && (opened != 0 || closed != 0) || requests != 2 {
			t.Errorf("log_level %s: %d opened, %d closed, %d requests logged:\n%s", level, opened, closed, requests, tail(out, 10))
		}
	}
}

// TestFailureLoggedWithoutAccessLog: with no access log, an upstream
// failure is still logged, saying which side failed and why; a client's
// malformed request is not.
func TestFailureLoggedWithoutAccessLog(t *testing.T) {
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startProc(t, exec.Command(straitBin, "proxy", "--listen", addr, "--upstream", "http://"+closedAddr(t)))
	waitPort(t, addr, 10*time.Second, p.exited)
	resp, err := http.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
	io.ReadAll(c)
	c.Close()
	deadline := time.Now().Add(3 * time.Second)
	for !strings.Contains(p.stderr.String(), `"msg":"request failed"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no failure logged:\n%s", tail(p.stderr.String(), 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	out := p.stderr.String()
	if n := strings.Count(out, `"msg":"request failed"`); n != 1 || !strings.Contains(out, `"error_side":"upstream"`) ||
		!strings.Contains(out, `"status":502`) || !strings.Contains(out, `"path":"/x"`) {
		t.Errorf("%d failure lines, want 1 for the upstream's, with side, status and path:\n%s", n, tail(out, 10))
	}
}
