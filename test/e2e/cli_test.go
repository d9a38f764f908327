package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runStrait runs the strait binary to completion and returns its output
// and exit code.
func runStrait(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(straitBin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	cmd.WaitDelay = 5 * time.Second
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("strait %s did not finish", strings.Join(args, " "))
	}
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatal(err)
		}
		code = ee.ExitCode()
	}
	return o.String(), e.String(), code
}

// TestCLI runs the strait binary's commands.
func TestCLI(t *testing.T) {
	dir := t.TempDir()

	t.Run("ValidateUnknownKey", func(t *testing.T) {
		path := writeFile(t, dir, "unknown-key.yaml", []byte(`listeners:
  - address: 127.0.0.1:8080
    adress: 127.0.0.1:8081
    routes:
      - cluster: web
clusters:
  - name: web
    endpoints: ["127.0.0.1:9000"]
`))
		_, stderr, code := runStrait(t, "validate", "-c", path)
		if code == 0 {
			t.Fatalf("validate accepted an unknown key")
		}
		// file:line: key: message
		if !strings.Contains(stderr, path+":3: ") || !strings.Contains(stderr, "adress") {
			t.Errorf("message does not name file, line 3 and key adress:\n%s", stderr)
		}
		if !strings.Contains(stderr, "listeners[0].adress") {
			t.Errorf("message does not give the key's path listeners[0].adress:\n%s", stderr)
		}
		t.Logf("exit %d: %s", code, strings.TrimSpace(stderr))
	})

	t.Run("ValidateBadValue", func(t *testing.T) {
		path := writeFile(t, dir, "bad-value.yaml", []byte(`listeners:
  - address: 127.0.0.1:8080
    routes:
      - cluster: web
clusters:
  - name: web
    endpoints: ["127.0.0.1:9000"]
timeouts:
  header: 10 parsecs
limits:
  max_request_body: lots
`))
		_, stderr, code := runStrait(t, "validate", "-c", path)
		if code == 0 {
			t.Fatalf("validate accepted bad values")
		}
		for _, want := range []string{path + ":9: timeouts.header: ", path + ":11: limits.max_request_body: "} {
			if !strings.Contains(stderr, want) {
				t.Errorf("message lacks %q:\n%s", want, stderr)
			}
		}
		if !strings.Contains(stderr, "parsecs") {
			t.Errorf("message does not quote the bad value:\n%s", stderr)
		}
		t.Logf("exit %d: %s", code, strings.TrimSpace(stderr))
	})

	t.Run("ValidateGood", func(t *testing.T) {
		path := writeFile(t, dir, "good.yaml", []byte(`listeners:
  - name: web
    address: 127.0.0.1:8080
    routes:
      - host: "*.example.com"
        path_prefix: /api
        cluster: api
      - cluster: web
clusters:
  - name: api
    endpoints: ["127.0.0.1:9001", "127.0.0.1:9002"]
  - name: web
    balance: round_robin
    endpoints: ["127.0.0.1:9000"]
timeouts:
  header: 5s
  response_header: 1m30s
limits:
  max_request_body: 1MiB
access_log: true
`))
		stdout, stderr, code := runStrait(t, "validate", "-c", path)
		if code != 0 {
			t.Fatalf("validate: exit %d: %s", code, stderr)
		}
		if strings.TrimSpace(stdout) != path+": ok" {
			t.Errorf("stdout %q, want %q", stdout, path+": ok")
		}
	})

	t.Run("Version", func(t *testing.T) {
		for _, arg := range []string{"version", "--version", "-version"} {
			stdout, stderr, code := runStrait(t, arg)
			if code != 0 || !regexp.MustCompile(`^strait \S+\n$`).MatchString(stdout) || stderr != "" {
				t.Errorf("strait %s: exit %d, stdout %q, stderr %q; want exit 0 and \"strait VERSION\"", arg, code, stdout, stderr)
			}
		}
	})

	// Help asked for is printed to stdout with exit 0, so that
	// `strait --help | less` works; help given because of a mistake goes
	// to stderr with exit 2.
	t.Run("Help", func(t *testing.T) {
		for _, args := range [][]string{{"--help"}, {"-h"}, {"-help"}, {"help"}} {
			stdout, stderr, code := runStrait(t, args...)
			if code != 0 || stderr != "" {
				t.Errorf("strait %s: exit %d, stderr %q; want exit 0 and nothing on stderr", args[0], code, stderr)
			}
			for _, want := range []string{"usage:", "strait run", "strait validate", "strait proxy", "strait version"} {
				if !strings.Contains(stdout, want) {
					t.Errorf("strait %s: stdout lacks %q:\n%s", args[0], want, stdout)
				}
			}
		}
	})

	t.Run("CommandHelp", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want []string // in stdout
		}{
			{[]string{"run", "-h"}, []string{"strait run", "-c file"}},
			{[]string{"run", "--help"}, []string{"strait run", "-c file"}},
			{[]string{"validate", "-h"}, []string{"strait validate", "-c file"}},
			{[]string{"proxy", "-h"}, []string{"strait proxy", "-listen", "-upstream", "-access-log"}},
			{[]string{"help", "proxy"}, []string{"strait proxy", "-listen"}},
		} {
			cmd := strings.Join(tc.args, " ")
			stdout, stderr, code := runStrait(t, tc.args...)
			if code != 0 || stderr != "" {
				t.Errorf("strait %s: exit %d, stderr %q; want exit 0 and nothing on stderr", cmd, code, stderr)
			}
			for _, want := range tc.want {
				if !strings.Contains(stdout, want) {
					t.Errorf("strait %s: stdout lacks %q:\n%s", cmd, want, stdout)
				}
			}
		}
	})

	t.Run("Mistakes", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want string // in stderr, besides the usage
		}{
			{[]string{"--bogus"}, "-bogus"},
			{[]string{"run", "--bogus"}, "-bogus"},
			{[]string{"validate", "-x"}, "-x"},
			{[]string{"proxy", "--listn", "127.0.0.1:1"}, "-listn"},
			{[]string{"run", "extra"}, `"extra"`},
			{[]string{"frobnicate"}, `"frobnicate"`},
		} {
			cmd := strings.Join(tc.args, " ")
			stdout, stderr, code := runStrait(t, tc.args...)
			if code != 2 || stdout != "" {
				t.Errorf("strait %s: exit %d, stdout %q; want exit 2 and nothing on stdout", cmd, code, stdout)
			}
			if !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "usage:") {
				t.Errorf("strait %s: stderr does not name %s and give the usage:\n%s", cmd, tc.want, stderr)
			}
		}
	})

	t.Run("Proxy", func(t *testing.T) {
		needTool(t, "curl")
		gotSlow := make(chan struct{}, 1)
		origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				gotSlow <- struct{}{}
				time.Sleep(time.Second)
			}
			fmt.Fprintf(w, "origin %s\n", r.URL.Path)
		}))
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		p := startProc(t, exec.Command(straitBin, "proxy", "--listen", addr, "--upstream", "http://"+origin, "--access-log"))
		waitPort(t, addr, 10*time.Second, p.exited)

		r := mustCurl(t, "http://"+addr+"/hello")
		if string(r.Stdout) != "origin /hello\n" {
			t.Fatalf("body %q, want %q", r.Stdout, "origin /hello\n")
		}

		// SIGTERM while a slow request is in flight: it completes, then
		// strait exits 0.
		type result struct {
			r   curlResult
			err error
		}
		slow := make(chan result, 1)
		go func() {
			resp, err := newClient(false).Get("http://" + addr + "/slow")
			if err != nil {
				slow <- result{err: err}
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			slow <- result{r: curlResult{Stdout: body, ExitCode: resp.StatusCode}, err: err}
		}()
		select {
		case <-gotSlow:
		case <-time.After(10 * time.Second):
			t.Fatal("the slow request did not reach the origin")
		}
		sent := time.Now()
		p.signal(syscall.SIGTERM)
		select {
		case res := <-slow:
			if res.err != nil || res.r.ExitCode != 200 || string(res.r.Stdout) != "origin /slow\n" {
				t.Errorf("in-flight request during shutdown: status %d, body %q, err %v; want 200 \"origin /slow\\n\"",
					res.r.ExitCode, res.r.Stdout, res.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the in-flight request did not complete after SIGTERM")
		}
		if !p.wait(10 * time.Second) {
			t.Fatalf("strait did not exit within 10 s of SIGTERM\nstderr:\n%s", tail(p.stderr.String(), 20))
		}
		if p.err != nil {
			t.Errorf("strait exited with %v after SIGTERM, want status 0\nstderr:\n%s", p.err, tail(p.stderr.String(), 20))
		}
		stderr := p.stderr.String()
		if !strings.Contains(stderr, `"path":"/slow","proto":"HTTP/1.1","status":200`) {
			t.Errorf("the access log has no 200 for /slow:\n%s", tail(stderr, 20))
		}
		t.Logf("exited %v after SIGTERM with the slow request done", time.Since(sent).Round(time.Millisecond))
	})
}
