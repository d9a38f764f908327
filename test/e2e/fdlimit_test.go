package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestFDLimit runs the binary with a small file-descriptor limit (prlimit)
// and opens more keep-alive connections than it allows. Every client gets
// an answer at once: served, or 503; none is left hanging in the listen
// backlog. By default max_conns follows the limit; set above it, the
// spare descriptor answers when accept runs out.
func TestFDLimit(t *testing.T) {
	prlimit := needTool(t, "prlimit")
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	for _, tc := range []struct {
		name, limits string
		warn         bool // strait says max_conns is more than the limit allows
	}{
		{"max_conns by default", "", false},
		{"max_conns above the limit", "limits:\n  max_conns: 1000\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			yaml := strings.Replace(clusterYAML(origin), "127.0.0.1:0", addr, 1) + tc.limits + "admin: {address: off}\n"
			cfg := writeFile(t, t.TempDir(), "strait.yaml", []byte(yaml))
			p := startProc(t, exec.Command(prlimit, "--nofile=64", straitBin, "run", "-c", cfg))
			waitPort(t, addr, 10*time.Second, p.exited)

			const n = 80
			var served, refused int
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for i := range n {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatalf("connection %d: %v", i, err)
				}
				conns = append(conns, c)
				c.SetDeadline(time.Now().Add(3 * time.Second))
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatalf("connection %d: no answer (%v); served %d, refused %d", i, err, served, refused)
				}
				resp.Body.Close()
				switch resp.StatusCode {
				case 200:
					served++
				case 503:
					refused++
				default:
					t.Errorf("connection %d: status %d", i, resp.StatusCode)
				}
			}
			t.Logf("of %d connections held open: %d served, %d refused with 503", n, served, refused)
			if served < 10 || refused < n/4 {
				t.Errorf("served %d, refused %d", served, refused)
			}
			if warned := strings.Contains(p.stderr.String(), "more than the file descriptor limit allows"); warned != tc.warn {
				t.Errorf("warning logged: %v, want %v; stderr:\n%s", warned, tc.warn, tail(p.stderr.String(), 5))
			}
			// Once clients leave, the next one is served: the spare
			// descriptor is not spent on a client that came when there
			// were descriptors again.
			for _, c := range conns {
				c.Close()
			}
			conns = nil
			time.Sleep(300 * time.Millisecond)
			resp, err := newClient(false).Get("http://" + addr + "/")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("after the clients left: %v %v", resp, err)
			}
			resp.Body.Close()
		})
	}
}

// TestFDLimitPooledConnections: idle upstream connections count against
// the descriptor limit too. With them holding most of it, clients within
// max_conns are still served: strait gives idle connections up first.
func TestFDLimitPooledConnections(t *testing.T) {
	prlimit := needTool(t, "prlimit")
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // so that requests overlap
		io.WriteString(w, "ok")
	})
	a, b := startGoOrigin(t, ok), startGoOrigin(t, ok)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := writeFile(t, t.TempDir(), "strait.yaml", []byte(fmt.Sprintf(`listeners:
  - address: %s
    routes:
      - {path_prefix: /a, cluster: a}
      - {path_prefix: /b, cluster: b}
clusters:
  - {name: a, endpoints: [%q]}
  - {name: b, endpoints: [%q]}
access_log: true
admin: {address: off}
`, addr, a, b)))
	p := startProc(t, exec.Command(prlimit, "--nofile=64", straitBin, "run", "-c", cfg))
	waitPort(t, addr, 10*time.Second, p.exited)
	for round := range 3 {
		for _, path := range []string{"/a", "/b"} {
			const n = 20 // within max_conns (48 for 64 descriptors)
			codes := make(chan int, n)
			for range n {
				go func() {
					resp, err := newClient(false).Get("http://" + addr + path)
					if err != nil {
						codes <- 0
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					codes <- resp.StatusCode
				}()
			}
			counts := map[int]int{}
			for range n {
				counts[<-codes]++
			}
			if counts[200] != n {
				t.Errorf("round %d, %d concurrent %s: statuses %v; want all 200\n%s", round, n, path, counts, tail(p.stderr.String(), 5))
			}
		}
	}
}

// TestFDLimitBurst: a burst of slow requests holds every descriptor; the
// clients that come next are each answered at once (503, or served once
// descriptors come back), never left waiting in the backlog.
func TestFDLimitBurst(t *testing.T) {
	prlimit := needTool(t, "prlimit")
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			time.Sleep(2 * time.Second)
		}
		io.WriteString(w, "ok")
	}))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	yaml := strings.Replace(clusterYAML(origin), "127.0.0.1:0", addr, 1) + "admin: {address: off}\n"
	p := startProc(t, exec.Command(prlimit, "--nofile=64", straitBin, "run", "-c", writeFile(t, t.TempDir(), "strait.yaml", []byte(yaml))))
	waitPort(t, addr, 10*time.Second, p.exited)
	var burst []net.Conn
	defer func() {
		for _, c := range burst {
			c.Close()
		}
	}()
	for range 100 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
		burst = append(burst, c)
	}
	time.Sleep(200 * time.Millisecond)
	for i := range 5 {
		start := time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(1500 * time.Millisecond))
		io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatalf("client %d after the burst: no answer after %v (%v)", i, time.Since(start), err)
		}
		if resp.StatusCode != 503 && resp.StatusCode != 200 {
			t.Errorf("client %d after the burst: %d", i, resp.StatusCode)
		}
	}
}
