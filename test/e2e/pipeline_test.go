package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// pipelineClient writes raw requests to strait and reads responses in
// order.
type pipelineClient struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialPipeline(t *testing.T, addr string) *pipelineClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	return &pipelineClient{t: t, c: c, br: bufio.NewReader(c)}
}

func (p *pipelineClient) write(s string) {
	p.t.Helper()
	if _, err := io.WriteString(p.c, s); err != nil {
		p.t.Fatal(err)
	}
}

// expect reads the next response and requires status 200 and body want.
func (p *pipelineClient) expect(method, path string, want []byte) {
	p.t.Helper()
	resp, err := http.ReadResponse(p.br, &http.Request{Method: method})
	if err != nil {
		p.t.Fatalf("response to %s %s: %v", method, path, err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		p.t.Fatalf("response to %s %s: body: %v", method, path, err)
	}
	if resp.StatusCode != 200 || !bytes.Equal(body, want) {
		p.t.Fatalf("response to %s %s: status %d, body %q; want 200, %q", method, path, resp.StatusCode, trunc(body), trunc(want))
	}
}

// TestPipelining sends several requests before reading any response.
func TestPipelining(t *testing.T) {
	t.Run("Nginx", func(t *testing.T) {
		files := map[string][]byte{
			"a.txt":   []byte("first\n"),
			"big.bin": randomBytes(300 << 10), // larger than any buffer on the way
			"c.txt":   []byte("third\n"),
		}
		ngx := startNginx(t, files, "")
		px := startStrait(t, clusterYAML(ngx.Addr), nil)
		p := dialPipeline(t, px.Addr)
		// Three requests in one write.
		p.write("GET /a.txt HTTP/1.1\r\nHost: e2e\r\n\r\n" +
			"GET /big.bin HTTP/1.1\r\nHost: e2e\r\n\r\n" +
			"GET /c.txt HTTP/1.1\r\nHost: e2e\r\n\r\n")
		p.expect("GET", "/a.txt", files["a.txt"])
		p.expect("GET", "/big.bin", files["big.bin"])
		p.expect("GET", "/c.txt", files["c.txt"])
		if n := px.Srv.Counters().Requests.Load(); n != 3 {
			t.Errorf("strait counted %d requests, want 3", n)
		}
	})

	t.Run("SlowFirstWithBody", func(t *testing.T) {
		// The first response is slow, so strait waits on the origin while
		// the rest of the pipeline arrives (and its client watcher reads
		// the first byte of the next request); the second request has a
		// body.
		arrived := make(chan string, 3)
		origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			arrived <- r.URL.Path
			if ms, err := strconv.Atoi(r.URL.Query().Get("sleep")); err == nil {
				time.Sleep(time.Duration(ms) * time.Millisecond)
			}
			body, _ := io.ReadAll(r.Body)
			fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
		}))
		px := startStrait(t, clusterYAML(origin), nil)
		p := dialPipeline(t, px.Addr)
		p.write("GET /one?sleep=300 HTTP/1.1\r\nHost: e2e\r\n\r\n")
		// Once the origin has the first request, strait is waiting on it:
		// that is when the rest of the pipeline should arrive.
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("the first request did not reach the origin")
		}
		body := strings.Repeat("b", 5000)
		p.write("POST /two HTTP/1.1\r\nHost: e2e\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body +
			"GET /three HTTP/1.1\r\nHost: e2e\r\n\r\n")
		p.expect("GET", "/one", []byte("GET /one "))
		p.expect("POST", "/two", []byte("POST /two "+body))
		p.expect("GET", "/three", []byte("GET /three "))
	})
}
