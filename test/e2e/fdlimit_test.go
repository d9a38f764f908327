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
			yaml := strings.Replace(clusterYAML(origin), "127.0.0.1:0", addr, 1) + tc.limits
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
			// Once clients leave, new ones are served again.
			for _, c := range conns {
				c.Close()
			}
			conns = nil
			ok := false
			for end := time.Now().Add(5 * time.Second); !ok && time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
				resp, err := newClient(false).Get("http://" + addr + "/")
				if err == nil {
					ok = resp.StatusCode == 200
					resp.Body.Close()
				}
			}
			if !ok {
				t.Errorf("not served again after the clients left")
			}
		})
	}
}
