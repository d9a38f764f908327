package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/proxy"
)

// readHead reads a request head from c and returns it (without the body).
func readHead(c net.Conn) (string, error) {
	br := bufio.NewReader(c)
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

// TestFailures: clients and origins that misbehave or are missing get the
// right answer, and strait stays healthy after each.
func TestFailures(t *testing.T) {
	needTool(t, "curl")

	// A healthy origin, and one that reports how reading an upload went.
	type uploadResult struct {
		n   int
		err error
	}
	uploads := make(chan uploadResult, 4)
	uploadStarted := make(chan struct{}, 4)
	good := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/upload" {
			uploadStarted <- struct{}{}
			n, err := io.Copy(io.Discard, r.Body)
			uploads <- uploadResult{int(n), err}
			if err != nil {
				return
			}
		}
		fmt.Fprintf(w, "ok %s\n", r.URL.Path)
	}))
	// An origin that sends half of what its Content-Length promises, then
	// closes.
	trunc := startRawOrigin(t, func(c net.Conn) {
		if _, err := readHead(c); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n")
		c.Write(bytes.Repeat([]byte("t"), 50000))
	})
	// An origin that reads requests and never answers.
	hang := startRawOrigin(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	refused := closedAddr(t)
	down1, down2 := closedAddr(t), closedAddr(t)

	yaml := fmt.Sprintf(`listeners:
  - address: 127.0.0.1:0
    routes:
      - path_prefix: /trunc
        cluster: trunc
      - path_prefix: /hang
        cluster: hang
      - path_prefix: /refused
        cluster: refused
      - path_prefix: /down
        cluster: down
      - host: good.example
        cluster: good
clusters:
  - name: good
    endpoints: [%q]
  - name: trunc
    endpoints: [%q]
  - name: hang
    endpoints: [%q]
  - name: refused
    endpoints: [%q]
  - name: down
    endpoints: [%q, %q]
access_log: true
`, good, trunc, hang, refused, down1, down2)
	const respHeaderTimeout = 300 * time.Millisecond
	px := startStrait(t, yaml, func(o *proxy.Options) { o.Timeouts.ResponseHeader = respHeaderTimeout })

	healthy := func(t *testing.T) {
		t.Helper()
		r := mustCurl(t, "-H", "Host: good.example", "-w", "%{http_code}", px.URL+"/after")
		if string(r.Stdout) != "ok /after\n200" {
			t.Fatalf("strait is not healthy afterwards: %q", r.Stdout)
		}
	}
	status := func(t *testing.T, host, path string) (int, curlResult) {
		t.Helper()
		args := []string{"-o", "/dev/null", "-w", "%{http_code}"}
		if host != "" {
			args = append(args, "-H", "Host: "+host)
		}
		r := mustCurl(t, append(args, px.URL+path)...)
		var code int
		fmt.Sscanf(string(r.Stdout), "%d", &code)
		return code, r
	}

	t.Run("ClientAbortsBody", func(t *testing.T) {
		// Default timeouts here: the origin must learn that the client left
		// because strait tells it, not because a timeout expired.
		px := startStrait(t, clusterYAML(good), nil)
		c, err := net.Dial("tcp", px.Addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: e2e\r\nContent-Length: 100000\r\n\r\n")
		c.Write(bytes.Repeat([]byte("u"), 50000))
		select {
		case <-uploadStarted:
		case <-time.After(5 * time.Second):
			t.Fatal("the upload did not reach the origin")
		}
		closed := time.Now()
		c.Close()
		select {
		case r := <-uploads:
			if r.err == nil {
				t.Fatalf("the origin read the whole body (%d bytes) of an upload the client abandoned", r.n)
			}
			t.Logf("origin saw the abort after %v: read %d of 100000 bytes: %v", time.Since(closed), r.n, r.err)
		case <-time.After(3 * time.Second):
			t.Fatalf("the origin was still waiting for the rest of the body 3 s after the client closed "+
				"(strait keeps the upstream request open); %s", counters(px.Srv))
		}
		getOK(t, newClient(false), px.URL+"/after", []byte("ok /after\n"))
	})

	t.Run("OriginTruncatesBody", func(t *testing.T) {
		r := runCurl(t, "-o", "/dev/null", "-w", "%{http_code} %{size_download}", px.URL+"/trunc")
		if r.ExitCode != 18 {
			t.Fatalf("curl exit %d (%s), want 18 (partial file)", r.ExitCode, r.Stderr)
		}
		if string(r.Stdout) != "200 50000" {
			t.Errorf("curl saw %q, want status 200 and 50000 bytes", r.Stdout)
		}
		healthy(t)
	})

	t.Run("OriginHangs", func(t *testing.T) {
		code, r := status(t, "", "/hang")
		if code != 504 {
			t.Fatalf("status %d, want 504", code)
		}
		if r.Elapsed < respHeaderTimeout || r.Elapsed > respHeaderTimeout+time.Second {
			t.Errorf("504 after %v, want about %v (Timeouts.ResponseHeader)", r.Elapsed, respHeaderTimeout)
		}
		t.Logf("504 after %v", r.Elapsed)
		healthy(t)
	})

	t.Run("OriginRefuses", func(t *testing.T) {
		if code, _ := status(t, "", "/refused"); code != 502 {
			t.Fatalf("status %d, want 502", code)
		}
		healthy(t)
	})

	t.Run("NoRoute", func(t *testing.T) {
		if code, _ := status(t, "other.example", "/x"); code != 404 {
			t.Fatalf("status %d, want 404", code)
		}
		healthy(t)
	})

	t.Run("ClusterAllDown", func(t *testing.T) {
		for i := range 4 { // round robin: each endpoint twice
			if code, _ := status(t, "", fmt.Sprintf("/down/%d", i)); code != 502 {
				t.Fatalf("request %d: status %d, want 502", i, code)
			}
		}
		healthy(t)
	})

	t.Logf("%s", counters(px.Srv))
}
