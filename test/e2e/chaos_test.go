package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// loadResult counts what a load run got.
type loadResult struct {
	ok, failed atomic.Int64
	firstErr   atomic.Value
}

// loadFor sends GETs to url from 8 keep-alive clients for d, running each
// action at its offset, and returns the counts once every client is done.
func loadFor(url string, d time.Duration, actions map[time.Duration]func()) *loadResult {
	r := &loadResult{}
	deadline := time.Now().Add(d)
	for at, act := range actions {
		time.AfterFunc(at, act)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := newClient(true)
			c.Timeout = 10 * time.Second
			for time.Now().Before(deadline) {
				resp, err := c.Get(url)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					r.failed.Add(1)
					r.firstErr.CompareAndSwap(nil, err.Error())
				} else {
					r.ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return r
}

// accessEntries reads the JSON access-log lines a strait process wrote
// to its standard error.
func accessEntries(p *proc) []map[string]any { return logEntries(p, "request") }

// logEntries returns the JSON log lines of p whose msg is msg.
func logEntries(p *proc, msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(p.stderr.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// sentTo counts the requests logged as answered by upstream between from
// and to, and returns when the first and last were logged.
func sentTo(entries []map[string]any, upstream string, from, to time.Time) (n int, first, last time.Time) {
	for _, e := range entries {
		ts, _ := time.Parse(time.RFC3339Nano, e["time"].(string))
		if e["upstream"] == upstream && ts.After(from) && ts.Before(to) {
			if n == 0 {
				first = ts
			}
			n++
			last = ts
		}
	}
	return n, first, last
}

func (r *loadResult) check(t *testing.T, what string) {
	t.Helper()
	t.Logf("%s: %d requests ok, %d failed", what, r.ok.Load(), r.failed.Load())
	if r.failed.Load() != 0 {
		t.Errorf("%s: %d requests failed (first: %v)", what, r.failed.Load(), r.firstErr.Load())
	}
}

// TestClusterSurvivesFailures runs three origins behind strait under
// steady load from 8 clients and breaks one: killed (SIGKILL), hung
// (SIGSTOP, then SIGCONT), or answering 503 to everything. No request may
// fail; the hung one is ejected, and readmitted once it answers again.
func TestClusterSurvivesFailures(t *testing.T) {
	needTool(t, "nginx")
	nginxes := func(t *testing.T, n int) []string {
		var addrs []string
		for range n {
			addrs = append(addrs, startNginx(t, map[string][]byte{"index.html": []byte("ok\n")}, "").Addr)
		}
		return addrs
	}
	quick := func(t *testing.T, upstreams []string) (*proc, string) {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		args := []string{"proxy", "--listen", addr, "--access-log", "--try-timeout", "1s"}
		for _, u := range upstreams {
			args = append(args, "--upstream", "http://"+u)
		}
		p := startProc(t, exec.Command(straitBin, args...))
		waitPort(t, addr, 10*time.Second, p.exited)
		return p, "http://" + addr + "/"
	}

	t.Run("killed", func(t *testing.T) {
		addrs := make([]string, 0, 3)
		var victim *nginxOrigin
		for i := range 3 {
			o := startNginx(t, map[string][]byte{"index.html": []byte("ok\n")}, "")
			if i == 1 {
				victim = o
			}
			addrs = append(addrs, o.Addr)
		}
		p, url := quick(t, addrs)
		var killedAt time.Time
		r := loadFor(url, 4*time.Second, map[time.Duration]func(){
			time.Second: func() { killedAt = time.Now(); victim.p.signal(syscall.SIGKILL) },
		})
		r.check(t, "one origin killed")
		if n, _, last := sentTo(accessEntries(p), victim.Addr, killedAt, time.Now()); n > 0 {
			t.Logf("after the kill, %d answers came from it, the last %v after", n, last.Sub(killedAt).Round(time.Millisecond))
		}
	})

	t.Run("503", func(t *testing.T) {
		bad := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(503)
		}))
		_, url := quick(t, append(nginxes(t, 2), bad))
		loadFor(url, 2*time.Second, nil).check(t, "one origin answering 503")
	})

	t.Run("hung", func(t *testing.T) {
		var victim *nginxOrigin
		var addrs []string
		for i := range 3 {
			o := startNginx(t, map[string][]byte{"index.html": []byte("ok\n")}, "")
			if i == 1 {
				victim = o
			}
			addrs = append(addrs, fmt.Sprintf("%q", o.Addr))
		}
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		p := runConfig(t, t.TempDir(), "hung.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: c, timeouts: {upstream_total: 1s}}]}
clusters:
  - name: c
    endpoints: [%s]
    retry_on: [502, 503, 504]
    retry_budget: {min: 10}
    outlier: {base_ejection: 3s}
limits: {max_attempts: 3}
access_log: true
`, addr, strings.Join(addrs, ", ")), addr)
		var stoppedAt, contAt time.Time
		r := loadFor("http://"+addr+"/", 10*time.Second, map[time.Duration]func(){
			time.Second:     func() { stoppedAt = time.Now(); victim.p.signal(syscall.SIGSTOP) },
			4 * time.Second: func() { contAt = time.Now(); victim.p.signal(syscall.SIGCONT) },
		})
		r.check(t, "one origin hung for 3 s")
		entries := accessEntries(p)
		// Once it answers again it is readmitted: within its ejection
		// (3 s from about 1 s after SIGSTOP, which is 2 s before SIGCONT)
		// of SIGCONT it serves its share again.
		late := contAt.Add(4 * time.Second)
		if n, _, _ := sentTo(entries, victim.Addr, late, time.Now()); n == 0 {
			t.Errorf("the origin served nothing from 4 s after SIGCONT on: not readmitted")
		}
		n, first, _ := sentTo(entries, victim.Addr, contAt, time.Now())
		t.Logf("stopped %v; %d answers from it after SIGCONT, the first %v after",
			contAt.Sub(stoppedAt).Round(time.Millisecond), n, first.Sub(contAt).Round(time.Millisecond))
		ejected := false
		for _, e := range logEntries(p, "endpoint ejected") {
			ts, _ := time.Parse(time.RFC3339Nano, e["time"].(string))
			if e["endpoint"] == victim.Addr && ts.After(stoppedAt) {
				t.Logf("ejected %v after SIGSTOP, for %v", ts.Sub(stoppedAt).Round(time.Millisecond), e["for"])
				ejected = true
				break
			}
		}
		if !ejected {
			t.Errorf("the hung origin was not ejected")
		}
		retried := 0
		for _, e := range entries {
			if a, _ := e["attempts"].(float64); a > 1 {
				retried++
			}
		}
		t.Logf("%d requests took more than one try", retried)
		// Ejected, the hung origin stops stalling the clients: once its
		// first run of timeouts is over, they go on at about their rate
		// before it hung. (Without ejection every third try waits out the
		// try timeout, and the rate falls a hundredfold.)
		count := func(from, to time.Time) int {
			n := 0
			for _, e := range entries {
				if ts, _ := time.Parse(time.RFC3339Nano, e["time"].(string)); ts.After(from) && ts.Before(to) {
					n++
				}
			}
			return n
		}
		before := count(stoppedAt.Add(-time.Second), stoppedAt)
		during := count(stoppedAt.Add(2*time.Second), contAt)
		t.Logf("requests answered: %d in the second before it hung, %d in its last second hung", before, during)
		if during < before/4 {
			t.Errorf("while the origin hung, %d requests were answered in a second, against %d before: it was not ejected", during, before)
		}
	})
}

// TestActiveHealthCheck: an endpoint whose health check fails takes no
// requests, though it would answer them; once its check passes, it takes
// its share again. Through the binary.
func TestActiveHealthCheck(t *testing.T) {
	var sick atomic.Bool
	sick.Store(true)
	var served [2]atomic.Int64
	origin := func(i int) string {
		return startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				if i == 1 && sick.Load() {
					w.WriteHeader(503)
				}
				return
			}
			served[i].Add(1)
			io.WriteString(w, "ok")
		}))
	}
	a, b := origin(0), origin(1)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, t.TempDir(), "hc.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: c}]}
clusters:
  - name: c
    endpoints: [%q, %q]
    health_check: {kind: http, path: /healthz, interval: 50ms, healthy: 2, unhealthy: 2}
`, addr, a, b), addr)
	time.Sleep(500 * time.Millisecond) // a few checks
	client := newClient(true)
	get := func(n int) {
		for range n {
			resp, err := client.Get("http://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	get(100)
	if served[1].Load() != 0 || served[0].Load() != 100 {
		t.Errorf("with one endpoint failing its check: served %d and %d, want 100 and 0", served[0].Load(), served[1].Load())
	}
	sick.Store(false)
	time.Sleep(500 * time.Millisecond)
	get(100)
	if served[1].Load() < 40 {
		t.Errorf("the endpoint passing its check again served %d of 100", served[1].Load())
	}
}

// TestSlowClusterIsolated: a cluster whose origin hangs holds at most its
// limits (10 requests in flight, 10 waiting); the flood past them gets
// 503 at once, and another cluster serves as before. Through the binary.
func TestSlowClusterIsolated(t *testing.T) {
	hang := startRawOrigin(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	fast := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "iso.yaml", fmt.Sprintf(`listeners:
  - address: %s
    routes:
      - {path_prefix: /slow, cluster: slow, timeouts: {response_header: 2s}}
      - {cluster: fast}
clusters:
  - {name: slow, endpoints: [%q], limits: {max_requests: 10, max_pending: 10, pending_timeout: 200ms}}
  - {name: fast, endpoints: [%q]}
`, addr, hang, fast), addr)
	before := rssKiB(t, p.cmd.Process.Pid)
	const flood = 500
	statuses := make(chan int, flood)
	for range flood {
		go func() {
			c := newClient(false)
			c.Timeout = 10 * time.Second
			resp, err := c.Get("http://" + addr + "/slow")
			if err != nil {
				statuses <- 0
				return
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	time.Sleep(300 * time.Millisecond)
	// The other cluster answers as before, at once.
	client := newClient(true)
	var worst time.Duration
	for range 50 {
		start := time.Now()
		resp, err := client.Get("http://" + addr + "/")
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("the fast cluster: %v %v", resp, err)
		}
		resp.Body.Close()
		worst = max(worst, time.Since(start))
	}
	during := rssKiB(t, p.cmd.Process.Pid)
	refused := 0
	for range flood - 10 { // all but the 10 in flight answer within the wait
		select {
		case s := <-statuses:
			if s == 503 {
				refused++
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("only %d of the flood answered within 3 s", refused)
		}
	}
	t.Logf("flood of %d on the slow cluster: %d refused with 503; fast cluster's slowest of 50: %v; RSS %d KiB before, %d during",
		flood, refused, worst.Round(time.Microsecond), before, during)
	if refused != flood-10 {
		t.Errorf("%d of the flood got 503, want %d (all but the 10 in flight)", refused, flood-10)
	}
	if worst > 100*time.Millisecond {
		t.Errorf("the fast cluster took %v for a request while the slow one was flooded", worst)
	}
}
