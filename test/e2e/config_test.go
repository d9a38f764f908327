package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runConfig runs the strait binary on a config whose one listener is at
// addr (from freePort), written to a file in dir, until the test ends.
func runConfig(t *testing.T, dir, name, yamlText, addr string) *proc {
	t.Helper()
	path := writeFile(t, dir, name, []byte(withAdmin(yamlText)))
	p := startProc(t, exec.Command(straitBin, "run", "-c", path))
	waitPort(t, addr, 10*time.Second, p.exited)
	return p
}

// listenerYAML is a config with one listener at addr sending everything
// to the endpoints, followed by more (top-level keys).
// withAdmin gives a config that says nothing of its admin listener one on
// a free port (the default, 127.0.0.1:9901, would be shared by every
// strait a test starts).
func withAdmin(yamlText string) string {
	if strings.HasPrefix(yamlText, "admin:") || strings.Contains(yamlText, "\nadmin:") {
		return yamlText
	}
	return yamlText + "\nadmin: {address: \"127.0.0.1:0\"}\n"
}

func listenerYAML(addr string, endpoints []string, more string) string {
	return fmt.Sprintf("listeners:\n  - address: %s\n    routes: [{cluster: origin}]\nclusters:\n  - name: origin\n    endpoints: [%s]\n%s",
		addr, strings.Join(endpoints, ", "), more)
}

// TestConfigResponseHeadLimit checks that limits.max_header_bytes bounds
// response heads as well as request heads, as docs/config.md says: a
// 100 KiB response head passes under 1MiB and gives 502 under the 64 KiB
// default.
func TestConfigResponseHeadLimit(t *testing.T) {
	const fields, fieldSize = 10, 10 << 10 // 100 KiB of head
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range fields {
			w.Header().Set(fmt.Sprintf("X-Big-%d", i), strings.Repeat("x", fieldSize))
		}
		io.WriteString(w, "big head\n")
	}))
	dir := t.TempDir()
	for _, tc := range []struct {
		name, limits string
		want         int
	}{
		{"Default", "", 502},
		{"1MiB", "limits:\n  max_header_bytes: 1MiB\n", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			p := runConfig(t, dir, tc.name+".yaml", listenerYAML(addr, []string{origin}, tc.limits), addr)
			resp, err := newClient(false).Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d; body %q\nstrait:\n%s", resp.StatusCode, tc.want, trunc(body), tail(p.stderr.String(), 10))
			}
			if tc.want == 200 && len(resp.Header.Get("X-Big-9")) != fieldSize {
				t.Errorf("X-Big-9 has %d bytes, want %d", len(resp.Header.Get("X-Big-9")), fieldSize)
			}
		})
	}
}

// TestAccessLogFile checks access_log naming a file: lines are appended to
// what the file held, each a JSON object for one request, and none goes
// to standard error.
func TestAccessLogFile(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "logged\n")
	}))
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	const before = "a line from before\n"
	if err := os.WriteFile(logPath, []byte(before), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, dir, "strait.yaml", listenerYAML(addr, []string{origin}, "access_log: "+logPath+"\n"), addr)
	getOK(t, newClient(false), "http://"+addr+"/logged", []byte("logged\n"))

	// The line is written after the response has gone out.
	var data []byte
	deadline := time.Now().Add(5 * time.Second)
	for !bytes.Contains(data, []byte("/logged")) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
		data, _ = os.ReadFile(logPath)
	}
	rest, ok := bytes.CutPrefix(data, []byte(before))
	if !ok {
		t.Fatalf("the file's earlier content is gone (not opened for append):\n%s", data)
	}
	var entry struct {
		Msg       string `json:"msg"`
		Path      string `json:"path"`
		Status    int    `json:"status"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(rest), &entry); err != nil {
		t.Fatalf("not one JSON line: %v\n%s", err, rest)
	}
	if entry.Msg != "request" || entry.Path != "/logged" || entry.Status != 200 || entry.RequestID == "" {
		t.Errorf("access-log line %s: want msg request, path /logged, status 200 and a request_id", rest)
	}
	if strings.Contains(p.stderr.String(), `"msg":"request"`) {
		t.Errorf("access-log lines on standard error too:\n%s", p.stderr.String())
	}
}

// TestAccessLogNewFile checks that a log file is created with mode 0640
// (less the umask), and that access_log: stdout writes to standard output.
func TestAccessLogNewFile(t *testing.T) {
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	dir := t.TempDir()
	t.Run("Created", func(t *testing.T) {
		logPath := filepath.Join(dir, "new.log")
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		runConfig(t, dir, "new.yaml", listenerYAML(addr, []string{origin}, "access_log: "+logPath+"\n"), addr)
		fi, err := os.Stat(logPath)
		if err != nil {
			t.Fatalf("the log file was not created at start: %v", err)
		}
		if perm := fi.Mode().Perm(); perm&^0o640 != 0 || perm&0o600 != 0o600 {
			t.Errorf("mode %v, want 0640 less the umask", perm)
		}
	})
	t.Run("Stdout", func(t *testing.T) {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		p := runConfig(t, dir, "stdout.yaml", listenerYAML(addr, []string{origin}, "access_log: stdout\n"), addr)
		getOK(t, newClient(false), "http://"+addr+"/out", nil)
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(p.stdout.String(), `"path":"/out","proto":"HTTP/1.1","status":200`) {
			if time.Now().After(deadline) {
				t.Fatalf("no access-log line on stdout:\n%s\nstderr:\n%s", p.stdout.String(), tail(p.stderr.String(), 10))
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// TestAccessLogCannotOpen checks that a log file strait cannot open stops
// it at start with a message naming the key and the path.
func TestAccessLogCannotOpen(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "no-such-dir", "access.log")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	path := writeFile(t, dir, "strait.yaml", []byte(listenerYAML(addr, []string{closedAddr(t)}, "access_log: "+logPath+"\n")))
	_, stderr, code := runStrait(t, "run", "-c", path)
	if code != 1 || !strings.Contains(stderr, "access_log") || !strings.Contains(stderr, logPath) ||
		!strings.Contains(stderr, "no such file or directory") {
		t.Errorf("exit %d, stderr %q; want exit 1 and a message naming access_log, %s and why", code, stderr, logPath)
	}
}
