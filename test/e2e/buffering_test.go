package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingOrigin is an HTTP origin that counts the connections it
// accepted and the requests it answered.
func countingOrigin(t *testing.T) (addr string, conns, requests *atomic.Int64) {
	conns, requests = new(atomic.Int64), new(atomic.Int64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, _ := io.Copy(io.Discard, r.Body)
			requests.Add(1)
			fmt.Fprintf(w, "%d", n)
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), conns, requests
}

// rssKiB reads a process's resident set size.
func rssKiB(t *testing.T, pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// slowUploads opens n connections to addr, each sending a POST head with
// a body of size bytes and half the body, then waiting. finish sends the
// rest of every body and returns each request's status (0 if it failed).
func slowUploads(t *testing.T, addr string, n, size int) (finish func() []int) {
	t.Helper()
	head := fmt.Sprintf("POST /up HTTP/1.1\r\nHost: e2e\r\nContent-Length: %d\r\n\r\n", size)
	half := strings.Repeat("u", size/2)
	cs := make([]net.Conn, n)
	for i := range cs {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(60 * time.Second))
		if _, err := io.WriteString(c, head+half); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		cs[i] = c
	}
	return func() []int {
		status := make([]int, n)
		var wg sync.WaitGroup
		for i, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				io.WriteString(c, strings.Repeat("u", size-size/2)) // fails if refused: the answer came
				if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
					io.Copy(io.Discard, resp.Body)
					status[i] = resp.StatusCode
				}
			}()
		}
		wg.Wait()
		return status
	}
}

func countStatus(status []int) map[int]int {
	m := make(map[int]int)
	for _, s := range status {
		m[s]++
	}
	return m
}

// TestSlowUploadsHoldNoOrigin: 2,000 clients sending their bodies slowly
// hold no connection to the origin while strait buffers the bodies (a
// streaming proxy would hold 2,000), through the binary; once the bodies
// are whole, every request is answered.
func TestSlowUploadsHoldNoOrigin(t *testing.T) {
	const n, size = 2000, 4096
	origin, conns, requests := countingOrigin(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "b.yaml", listenerYAML(addr, []string{fmt.Sprintf("%q", origin)}, ""), addr)
	finish := slowUploads(t, addr, n, size)
	time.Sleep(300 * time.Millisecond) // strait reads what was sent
	if c := conns.Load(); c != 0 {
		t.Errorf("the origin has %d connections while %d bodies are half sent", c, n)
	}
	t.Logf("strait RSS with %d bodies half buffered: %d KiB", n, rssKiB(t, p.cmd.Process.Pid))
	status := finish()
	if got := countStatus(status); got[200] != n {
		t.Fatalf("statuses %v, want %d × 200\n%s", got, n, tail(p.stderr.String(), 5))
	}
	if requests.Load() != n || conns.Load() > n {
		t.Errorf("the origin answered %d requests on %d connections", requests.Load(), conns.Load())
	}
	t.Logf("the origin answered %d requests on %d connections", requests.Load(), conns.Load())
}

// TestBufferBudget: 10,000 slow uploads against a budget of 8 MiB
// (buffers of 16 KiB for 8 KiB bodies: 512 fit). With over_budget:
// refuse, those past the budget get 503 at once; strait's memory stays
// bounded (RSS reported) and the origin sees none while bodies arrive.
func TestBufferBudget(t *testing.T) {
	n := 10000
	if lim := noFileLimit(); lim < uint64(n)+2000 {
		n = int(lim) - 2000
		if n < 2000 {
			skipOrFail(t, "RLIMIT_NOFILE is %d: too low", lim)
		}
		t.Logf("RLIMIT_NOFILE is %d: %d slow uploads, not 10,000", lim, n)
	}
	const size = 8 << 10
	origin, conns, _ := countingOrigin(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "budget.yaml", listenerYAML(addr, []string{fmt.Sprintf("%q", origin)},
		"request_buffering: {budget: 8MiB, over_budget: refuse}\n"), addr)
	before := rssKiB(t, p.cmd.Process.Pid)
	finish := slowUploads(t, addr, n, size)
	time.Sleep(500 * time.Millisecond)
	held := rssKiB(t, p.cmd.Process.Pid)
	if c := conns.Load(); c != 0 {
		t.Errorf("the origin has %d connections while bodies arrive", c)
	}
	status := finish()
	got := countStatus(status)
	t.Logf("%d slow uploads: strait RSS %d KiB before, %d KiB while they are held (%.1f KiB each); statuses %v",
		n, before, held, float64(held-before)/float64(n), got)
	const fit = (8 << 20) / (16 << 10)
	if got[200] != fit || got[503] != n-fit {
		t.Errorf("statuses %v, want %d × 200 (what the budget holds) and %d × 503", got, fit, n-fit)
	}
	// The buffered bodies are 8 MiB; each connection costs a few KiB
	// more. Without the budget, 10,000 would hold 160 MiB of buffers.
	if held-before > 8<<10+n*8 {
		t.Errorf("strait grew by %d KiB for %d slow uploads", held-before, n)
	}
}
