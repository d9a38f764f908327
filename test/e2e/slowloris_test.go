package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/proxy"
)

// TestSlowloris attacks strait with slowhttptest's slow headers (thousands
// of connections that send a header line every 10 s), while a normal
// client does a GET on a new connection every 100 ms. strait cuts the
// attackers at Timeouts.Header; every normal request must succeed, quickly.
func TestSlowloris(t *testing.T) {
	if testing.Short() {
		t.Skip("slowloris takes ~25 s; skipped with -short")
	}
	slow := needTool(t, "slowhttptest")
	prlimit := needTool(t, "prlimit")

	const (
		wantConns   = 8000
		attackSecs  = 20 // slowhttptest -l
		headerLimit = 5 * time.Second
		maxLatency  = time.Second
	)
	// Both ends of every attack connection are in this machine; strait's
	// are in this process.
	conns := wantConns
	if lim := noFileLimit(); lim < uint64(conns)+2000 {
		conns = int(lim) - 2000
		if conns < 1000 {
			skipOrFail(t, "RLIMIT_NOFILE is %d: too low for a slowloris test", lim)
		}
		t.Logf("RLIMIT_NOFILE is %d: attacking with %d connections instead of %d", lim, conns, wantConns)
	}
	nofile := strconv.FormatUint(min(noFileLimit(), 20000), 10)

	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	}))
	px := startStrait(t, clusterYAML(origin), func(o *proxy.Options) {
		o.Timeouts.Header = headerLimit
		// The access log shows only the normal requests: strait logs no
		// line for a connection it cuts before its head is complete.
	})

	cmd := exec.Command(prlimit, "--nofile="+nofile+":"+nofile, slow,
		"-H", "-c", strconv.Itoa(conns), "-i", "10", "-r", "2000", "-t", "GET",
		"-u", px.URL+"/", "-x", "24", "-p", "3", "-l", strconv.Itoa(attackSecs))
	netstatBefore := tcpExtCounters()
	attack := startProc(t, cmd)
	attackStart := time.Now()

	// Wait until the attack is underway, then keep the normal client
	// going for as long as it lasts. (With the 5 s header cut, the open
	// connections peak near the attacker's connection rate times 5 s.)
	var peakOpen int64
	for {
		accepted := px.Srv.Counters().ConnsAccepted.Load()
		peakOpen = max(peakOpen, px.Srv.Counters().ConnsOpen.Load())
		if accepted >= 500 {
			break
		}
		if err := attack.exited(); err != nil {
			t.Fatalf("slowhttptest ended before its attack started (%d connections): %v\n%s", accepted, err, tail(attack.stdout.String(), 30))
		}
		if time.Since(attackStart) > 10*time.Second {
			t.Fatalf("slowhttptest opened only %d connections in 10 s\n%s", accepted, tail(attack.stdout.String(), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("attack underway after %v", time.Since(attackStart).Round(time.Millisecond))

	client := newClient(false)
	client.Timeout = 5 * time.Second
	var latencies []time.Duration
	failures := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	end := attackStart.Add(attackSecs * time.Second)
	for time.Now().Before(end) && attack.exited() == nil {
		<-tick.C
		peakOpen = max(peakOpen, px.Srv.Counters().ConnsOpen.Load())
		start := time.Now()
		var connected time.Time
		req, _ := http.NewRequest("GET", px.URL+"/normal", nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			ConnectDone: func(string, string, error) { connected = time.Now() },
		}))
		resp, err := client.Do(req)
		var body []byte
		if err == nil {
			body, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil && (resp.StatusCode != 200 || string(body) != "ok\n") {
				err = fmt.Errorf("status %d, body %q", resp.StatusCode, body)
			}
		}
		d := time.Since(start)
		latencies = append(latencies, d)
		if err != nil {
			failures++
			if failures <= 5 {
				t.Errorf("normal request at +%v failed after %v: %v", start.Sub(attackStart).Round(time.Millisecond), d, err)
			}
		} else if d-connected.Sub(start) > maxLatency {
			// Only what follows the TCP handshake is strait's: the kernel
			// completes handshakes before strait accepts. On a loaded
			// machine a SYN is sometimes retransmitted (connect takes 1 s or
			// 3 s) with no listen-queue drop counted; that is logged below.
			t.Errorf("normal request at +%v took %v after connecting (want under %v)",
				start.Sub(attackStart).Round(time.Millisecond), d-connected.Sub(start), maxLatency)
		} else if d > maxLatency {
			t.Logf("normal request at +%v took %v, of which TCP connect %v",
				start.Sub(attackStart).Round(time.Millisecond), d, connected.Sub(start))
		}
	}
	if !attack.wait(15 * time.Second) {
		t.Errorf("slowhttptest did not finish")
	}
	if len(latencies) < 50 {
		t.Errorf("only %d normal requests during the attack", len(latencies))
	}
	slices.Sort(latencies)
	pct := func(p int) time.Duration { return latencies[(len(latencies)-1)*p/100].Round(10 * time.Microsecond) }
	cn := px.Srv.Counters()
	t.Logf("normal client: %d requests, %d failed; latency p50 %v, p90 %v, p99 %v, max %v",
		len(latencies), failures, pct(50), pct(90), pct(99), latencies[len(latencies)-1].Round(10*time.Microsecond))
	t.Logf("strait: peak open connections %d, accepted %d, header timeouts (408) %d, rejected %d",
		peakOpen, cn.ConnsAccepted.Load(), cn.HeaderTimeouts.Load(), cn.ConnsRejected.Load())
	// Every attack connection that lived past Timeouts.Header was cut.
	if attackers := cn.ConnsAccepted.Load() - int64(len(latencies)); cn.HeaderTimeouts.Load() < attackers/2 {
		t.Errorf("only %d of %d slow connections were cut by Timeouts.Header", cn.HeaderTimeouts.Load(), attackers)
	}
	// Every answer is logged: the normal requests' 200s, and a 408 for
	// each attack connection cut (which the normal client never gets).
	var worstInStrait time.Duration
	var timeouts int64
	for _, e := range px.waitAccessLog(t, len(latencies)+int(cn.HeaderTimeouts.Load())) {
		if e.Status == 408 {
			timeouts++
			continue
		}
		if e.Status != 200 {
			t.Errorf("access log: %+v", e)
		}
		worstInStrait = max(worstInStrait, e.Total)
		if e.Total > maxLatency/4 {
			t.Logf("slow inside strait: total %v = head read %v + upstream dial %v (reused %v) + upstream header %v + rest",
				e.Total, e.RequestRead, e.UpstreamDial, e.Reused, e.UpstreamHeader)
		}
	}
	if timeouts != cn.HeaderTimeouts.Load() {
		t.Errorf("access log has %d lines for 408s; strait counted %d", timeouts, cn.HeaderTimeouts.Load())
	}
	t.Logf("slowest normal request inside strait (access log total, head read to response sent): %v", worstInStrait)
	after := tcpExtCounters()
	var kernel []string
	for _, k := range []string{"ListenOverflows", "ListenDrops", "TCPReqQFullDrop", "SyncookiesSent"} {
		kernel = append(kernel, fmt.Sprintf("%s +%d", k, after[k]-netstatBefore[k]))
	}
	t.Logf("kernel (whole machine) during the attack: %s", strings.Join(kernel, ", "))
	if report := lastReport(attack.stdout.String()); report != "" {
		t.Logf("slowhttptest's last report: %s", report)
	}
}

// lastReport condenses slowhttptest's last status report to one line,
// without its terminal colours.
func lastReport(out string) string {
	i := strings.LastIndex(out, "slow HTTP test status on")
	if i < 0 {
		return ""
	}
	var b strings.Builder
	esc := false
	for _, r := range out[i:] {
		switch {
		case r == 0x1b:
			esc = true
		case esc:
			esc = r != 'm' && r != 'J' && r != 'H'
		case r == '\n' || r == '\t':
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// tcpExtCounters reads the kernel's TcpExt counters (/proc/net/netstat):
// ListenOverflows counts connections dropped because a listener's accept
// queue was full.
func tcpExtCounters() map[string]int64 {
	m := make(map[string]int64)
	data, err := os.ReadFile("/proc/net/netstat")
	if err != nil {
		return m
	}
	lines := strings.Split(string(data), "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, values := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		if len(names) == 0 || names[0] != "TcpExt:" || len(names) != len(values) {
			continue
		}
		for j := 1; j < len(names); j++ {
			v, _ := strconv.ParseInt(values[j], 10, 64)
			m[names[j]] = v
		}
	}
	return m
}
