package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"golang.org/x/sys/unix"
)

// freeUDPPort returns a loopback UDP port that was free a moment ago.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// freeDualPort returns a loopback port that was free a moment ago for both
// UDP and TCP (dnsmasq binds both).
func freeDualPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
		l.Close()
		if err == nil {
			c.Close()
			return port
		}
	}
	t.Fatal("no port free for both UDP and TCP")
	return 0
}

// TestUDPDNS relays dig's queries to a real dnsmasq through a udp
// listener, each dig a flow of its own (a new source port), and goes on
// answering through a reload that replaces the listener's server.
func TestUDPDNS(t *testing.T) {
	dnsmasq := needTool(t, "dnsmasq")
	dig := needTool(t, "dig")
	dnsPort := freeDualPort(t)
	dns := startProc(t, exec.Command(dnsmasq, "-k", "-p", strconv.Itoa(dnsPort), "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
		"--address=/example.com/192.0.2.1", "--listen-address=127.0.0.1", "--bind-interfaces", "--pid-file=", "--user=root"))
	addr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	conf := func(idle string) string {
		return fmt.Sprintf(`listeners:
  - address: %q
    kind: udp
    cluster: dns
    udp: {idle_timeout: %s}
clusters:
  - name: dns
    endpoints: ["127.0.0.1:%d"]
admin: {address: %q}
`, addr, idle, dnsPort, admin)
	}
	p := runConfig(t, dir, "strait.yaml", conf("30s"), admin)
	host, port, _ := net.SplitHostPort(addr)
	query := func(name string) string {
		t.Helper()
		out, err := exec.Command(dig, "@"+host, "-p", port, name, "A", "+short", "+tries=1", "+time=2").CombinedOutput()
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", name, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// dnsmasq may take a moment to bind.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := exec.Command(dig, "@127.0.0.1", "-p", strconv.Itoa(dnsPort), "example.com", "+short", "+tries=1", "+time=1").CombinedOutput()
		if strings.TrimSpace(string(out)) == "192.0.2.1" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("dnsmasq does not answer: %s\ndnsmasq: %v %s", out, dns.exited(), dns.stderr.String())
		}
	}
	const digs = 10
	for i := range digs {
		if got := query(fmt.Sprintf("host%d.example.com", i)); got != "192.0.2.1" {
			t.Fatalf("dig host%d.example.com through strait: %q, want 192.0.2.1", i, got)
		}
	}
	_, metrics := adminDo(t, "GET", "http://"+admin+"/metrics", nil)
	if v := metricValue(metrics, "strait_udp_flows_total", `listener="`+addr+`"`); v != digs {
		t.Errorf("strait_udp_flows_total = %v, want %d (a flow per dig)", v, digs)
	}
	if v := metricValue(metrics, "strait_udp_datagrams_total", `direction="out"`); v != digs {
		t.Errorf("strait_udp_datagrams_total{direction=out} = %v, want %d", v, digs)
	}

	// dnsperf: 8 clients, each its own source port (a flow), at a set
	// rate; what it loses, and the rate strait kept.
	dnsperf := needTool(t, "dnsperf")
	queries := writeFile(t, dir, "queries.txt", []byte("example.com A\nhost1.example.com A\nwww.example.com AAAA\n"))
	out, err := exec.Command(dnsperf, "-s", host, "-p", port, "-d", queries, "-c", "8", "-l", "3", "-Q", "5000").CombinedOutput()
	if err != nil {
		t.Fatalf("dnsperf: %v\n%s", err, out)
	}
	sentQ := regexp.MustCompile(`Queries sent:\s+(\d+)`).FindSubmatch(out)
	lostQ := regexp.MustCompile(`Queries lost:\s+(\d+)`).FindSubmatch(out)
	qps := regexp.MustCompile(`Queries per second:\s+([0-9.]+)`).FindSubmatch(out)
	if sentQ == nil || lostQ == nil || qps == nil {
		t.Fatalf("dnsperf's output lacks its figures:\n%s", out)
	}
	nSent, _ := strconv.Atoi(string(sentQ[1]))
	nLost, _ := strconv.Atoi(string(lostQ[1]))
	t.Logf("dnsperf -c 8 -Q 5000 through strait: %s queries/s, %d of %d lost", qps[1], nLost, nSent)
	if nSent < 10000 || float64(nLost) > 0.01*float64(nSent) {
		t.Errorf("dnsperf: %d of %d queries lost, want under 1%%", nLost, nSent)
	}
	_, metrics = adminDo(t, "GET", "http://"+admin+"/metrics", nil)
	if v := metricValue(metrics, "strait_udp_flows_total", `listener="`+addr+`"`); v != digs+8 {
		t.Errorf("strait_udp_flows_total = %v after dnsperf -c 8, want %d", v, digs+8)
	}
	outBefore := metricValue(metrics, "strait_udp_datagrams_total", `direction="out"`)

	// A reload that changes the listener: a new server on the same
	// socket; the old one drains.
	writeFile(t, dir, "strait.yaml", []byte(conf("10s")))
	if code, body := adminDo(t, "POST", "http://"+admin+"/reload", map[string]string{"X-Strait-Admin": "1"}); code != 200 || !strings.Contains(body, "a new server") {
		t.Fatalf("reload: %d %s", code, body)
	}
	for i := range digs {
		if got := query(fmt.Sprintf("after%d.example.com", i)); got != "192.0.2.1" {
			t.Fatalf("dig after the reload: %q, want 192.0.2.1", got)
		}
	}
	_, metrics = adminDo(t, "GET", "http://"+admin+"/metrics", nil)
	if v := metricValue(metrics, "strait_udp_datagrams_total", `direction="out"`); v != outBefore+digs {
		t.Errorf("strait_udp_datagrams_total{direction=out} after the reload = %v, want %v (the old server's kept)", v, outBefore+digs)
	}
	if err := p.exited(); err != nil {
		t.Fatal(err)
	}
}

// TestUDPQUIC runs HTTP/3 (quic-go, client and servers) through a udp
// listener to a cluster of two: every connection completes, and each
// stays on one endpoint for all its requests. The connections come from
// eight addresses (127.0.0.2 to .9), which the cluster's maglev spreads.
func TestUDPQUIC(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t)
	certFile, keyFile := ca.issue(t, dir, "h3", 2, "h3.test")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var endpoints []string
	for _, name := range []string{"one", "two"} {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http3.Server{
			TLSConfig: http3.ConfigureTLSConfig(&tls.Config{Certificates: []tls.Certificate{cert}}),
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprint(w, name)
			}),
		}
		go srv.Serve(pc)
		t.Cleanup(func() { srv.Close(); pc.Close() })
		endpoints = append(endpoints, fmt.Sprintf("%q", pc.LocalAddr().String()))
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, dir, "strait.yaml", fmt.Sprintf(`listeners:
  - address: %q
    kind: udp
    cluster: h3
clusters:
  - name: h3
    endpoints: [%s]
admin: {address: %q}
`, addr, strings.Join(endpoints, ", "), admin), admin)

	seen := map[string]int{}
	const conns, requests = 8, 5
	for c := range conns {
		src, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(2+c))})
		if err != nil {
			t.Fatal(err)
		}
		tr := &http3.Transport{
			TLSClientConfig: &tls.Config{RootCAs: ca.pool, ServerName: "h3.test"},
			Dial: func(ctx context.Context, addr string, tlsCfg *tls.Config, cfg *quic.Config) (*quic.Conn, error) {
				ua, err := net.ResolveUDPAddr("udp", addr)
				if err != nil {
					return nil, err
				}
				return quic.DialEarly(ctx, src, ua, tlsCfg, cfg)
			},
		}
		client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
		var first string
		for r := range requests {
			resp, err := client.Get("https://" + addr + "/")
			if err != nil {
				t.Fatalf("connection %d, request %d: %v", c, r, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if r == 0 {
				first = string(body)
			} else if string(body) != first {
				t.Fatalf("connection %d moved from endpoint %s to %s", c, first, body)
			}
		}
		seen[first]++
		tr.Close()
		src.Close()
	}
	t.Logf("connections per endpoint: %v", seen)
	if len(seen) != 2 {
		t.Errorf("connections per endpoint: %v; want both endpoints used by eight client addresses", seen)
	}
	_, metrics := adminDo(t, "GET", "http://"+admin+"/metrics", nil)
	if v := metricValue(metrics, "strait_udp_flows_total", `listener="`+addr+`"`); v != conns {
		t.Errorf("strait_udp_flows_total = %v, want %d (one per QUIC connection)", v, conns)
	}
}

// sendFrom sends p from c (bound to 0.0.0.0) with the source address src,
// a local address (any of 127.0.0.0/8 here), by IP_PKTINFO: one socket
// speaks for thousands of clients.
func sendFrom(c *net.UDPConn, src net.IP, to *net.UDPAddr, p []byte) error {
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
	copy(info.Spec_dst[:], src.To4())
	_, _, err := c.WriteMsgUDP(p, oob, to)
	return err
}

// TestUDPFlood: a flood of datagrams from 20,000 source addresses (as
// forged ones would come) against max_flows 500. While the origin
// answers none of them, they evict only one another, never the answered
// flow of a real client, which keeps its round trips; once the origin
// answers them and the table is full of answered flows, the flood's new
// flows are dropped and counted. strait's memory stays bounded.
func TestUDPFlood(t *testing.T) {
	origin, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()
	var answerAll atomic.Bool
	var realPorts sync.Map // the source ports the real client's flow came from
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := origin.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			isReal := strings.HasPrefix(string(buf[:n]), "real")
			if isReal {
				realPorts.Store(from.Port(), true)
			}
			if answerAll.Load() || isReal {
				origin.WriteToUDPAddrPort(buf[:n], from)
			}
		}
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "strait.yaml", fmt.Sprintf(`listeners:
  - address: %q
    kind: udp
    cluster: o
    udp: {max_flows: 500, new_flows_per_prefix: 100000}
clusters:
  - name: o
    endpoints: [%q]
admin: {address: %q}
`, addr, origin.LocalAddr().String(), admin), admin)
	to, _ := net.ResolveUDPAddr("udp", addr)

	real, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, to)
	if err != nil {
		t.Fatal(err)
	}
	defer real.Close()
	buf := make([]byte, 100)
	lost := 0
	trip := func(when string) {
		t.Helper()
		// Under the flood a datagram may be lost in a full socket
		// buffer, as anywhere: a try or two more. What must not happen
		// is the flow's eviction (checked by its port at the origin).
		for try := 0; ; try++ {
			real.Write([]byte("real " + when))
			real.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := real.Read(buf)
			if err == nil && string(buf[:n]) == "real "+when {
				return
			}
			if lost++; try == 4 {
				t.Fatalf("the real client's round trip %s: %q, %v (5 tries)", when, buf[:n], err)
			}
		}
	}
	trip("before")
	rss0 := rssKiB(t, p.cmd.Process.Pid)

	flood, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	const sources = 20000
	send := func() {
		for i := range sources {
			src := net.IPv4(127, 1, byte(i/250), byte(1+i%250))
			if err := sendFrom(flood, src, to, []byte("forged")); err != nil {
				t.Fatalf("sending from %s: %v", src, err)
			}
			if i%500 == 0 {
				trip(fmt.Sprintf("during %d", i))
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	send()
	trip("after")
	_, m := adminDo(t, "GET", "http://"+admin+"/metrics", nil)
	active := metricValue(m, "strait_udp_active_flows")
	evicted := metricValue(m, "strait_udp_flows_ended_total", `reason="evicted"`)
	opened := metricValue(m, "strait_udp_flows_total")
	t.Logf("unanswered flood: flows opened %v, evicted %v, active %v", opened, evicted, active)
	if active > 500 || evicted < opened-500 || opened < sources/2 {
		t.Errorf("flows opened %v, evicted %v, active %v: want at most 500 active, the rest evicted", opened, evicted, active)
	}

	// Now every flow is answered: the table fills with answered flows and
	// the flood's new ones are dropped, never an answered one evicted.
	answerAll.Store(true)
	send()
	trip("after answered flood")
	_, m = adminDo(t, "GET", "http://"+admin+"/metrics", nil)
	full := metricValue(m, "strait_udp_datagrams_dropped_total", `reason="table_full"`)
	t.Logf("answered flood: dropped as table_full %v, active %v", full, metricValue(m, "strait_udp_active_flows"))
	if full < sources/2 {
		t.Errorf("table_full drops %v, want most of the %d forged datagrams", full, sources)
	}
	ports := 0
	realPorts.Range(func(any, any) bool { ports++; return true })
	if ports != 1 {
		t.Errorf("the real client's flow reached the origin from %d ports: it was evicted and opened again", ports)
	}
	t.Logf("real round trips lost and tried again: %d", lost)
	if grew := rssKiB(t, p.cmd.Process.Pid) - rss0; grew > 32<<10 {
		t.Errorf("strait's RSS grew %d KiB over two floods of %d sources with max_flows 500", grew, sources)
	} else {
		t.Logf("RSS grew %d KiB", grew)
	}
}

// TestUDPIperf runs iperf2 UDP streams (two at once, each a flow)
// through strait to an iperf2 server at a set rate: the server's report,
// which comes back through strait too, counts the datagrams lost. A
// server for each size (iperf2's server does not take a second -P run).
func TestUDPIperf(t *testing.T) {
	iperf := needTool(t, "iperf")
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tests := []struct{ size, rate, listen string }{{"64", "20000pps", ""}, {"1200", "40M", ""}}
	conf := "listeners:\n"
	clusters := "clusters:\n"
	for i := range tests {
		port := freeUDPPort(t)
		startProc(t, exec.Command(iperf, "-s", "-u", "-B", "127.0.0.1", "-p", strconv.Itoa(port)))
		tests[i].listen = fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
		conf += fmt.Sprintf("  - {address: %q, kind: udp, cluster: iperf%d}\n", tests[i].listen, i)
		clusters += fmt.Sprintf("  - {name: iperf%d, endpoints: [\"127.0.0.1:%d\"]}\n", i, port)
	}
	runConfig(t, t.TempDir(), "strait.yaml", conf+clusters+fmt.Sprintf("admin: {address: %q}\n", admin), admin)
	report := regexp.MustCompile(`(\d+)/\s*(\d+) \(([0-9.e+-]+)%\)`)
	for _, tc := range tests {
		host, port, _ := net.SplitHostPort(tc.listen)
		out, err := exec.Command(iperf, "-c", host, "-u", "-p", port, "-b", tc.rate, "-t", "3", "-l", tc.size, "-P", "2").CombinedOutput()
		if err != nil {
			t.Fatalf("iperf -l %s: %v\n%s", tc.size, err, out)
		}
		ms := report.FindAllStringSubmatch(string(out), -1)
		if len(ms) < 2 {
			t.Fatalf("iperf -l %s: no server report for both streams (it comes back through strait):\n%s", tc.size, out)
		}
		for _, m := range ms[:2] {
			lost, _ := strconv.Atoi(m[1])
			total, _ := strconv.Atoi(m[2])
			t.Logf("iperf2 -u -b %s -l %s: lost %d of %d datagrams (%s%%)", tc.rate, tc.size, lost, total, m[3])
			if total == 0 || float64(lost) > 0.01*float64(total) {
				t.Errorf("iperf -l %s: lost %d of %d datagrams, want under 1%%", tc.size, lost, total)
			}
		}
	}
	_, m := adminDo(t, "GET", "http://"+admin+"/metrics", nil)
	t.Logf("strait dropped %v datagrams (send buffer full or send failed); relayed %v in, %v out; %v receive calls",
		metricSum(m, "strait_udp_datagrams_dropped_total", `reason="send"`), metricSum(m, "strait_udp_datagrams_total", `direction="in"`),
		metricSum(m, "strait_udp_datagrams_total", `direction="out"`), metricSum(m, "strait_udp_receive_calls_total"))
}

// metricSum is the sum of the samples of name that have all of labels.
func metricSum(text, name string, labels ...string) float64 {
	sum := 0.0
	for _, v := range metricValues(text, name, labels...) {
		sum += v
	}
	return sum
}

// taggedUDPEcho runs a UDP origin that answers each datagram with tag
// before it, and returns its address.
func taggedUDPEcho(t *testing.T, tag string) string {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf[len(tag):])
			if err != nil {
				return
			}
			copy(buf, tag)
			c.WriteToUDPAddrPort(buf[:len(tag)+n], from)
		}
	}()
	return c.LocalAddr().String()
}

// TestUDPReloadAndUpgrade sends a datagram every 2 ms through a reload
// that changes the listener's cluster and a binary upgrade: the new
// server (and then the new process) takes the socket at once, so the
// client's datagrams go by the new config right after the reload; the
// few lost while it changes hands stay under 1%; the old process leaves
// after its drain timeout.
func TestUDPReloadAndUpgrade(t *testing.T) {
	originA, originB := taggedUDPEcho(t, "A:"), taggedUDPEcho(t, "B:")
	addr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := func(origin string) []byte {
		return fmt.Appendf(nil, `listeners:
  - address: %q
    kind: udp
    cluster: c
    udp: {drain_timeout: 2s}
clusters:
  - name: c
    endpoints: [%q]
admin: {address: %q}
`, addr, origin, adminAddr)
	}
	path := writeFile(t, t.TempDir(), "strait.yaml", conf(originA))
	s := startStraitRun(t, straitBin, path, adminAddr, nil)

	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var mu sync.Mutex
	replies := map[int]string{} // sequence number: the origin's tag
	go func() {
		buf := make([]byte, 100)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			tag, seq, _ := strings.Cut(string(buf[:n]), ":")
			i, _ := strconv.Atoi(seq)
			mu.Lock()
			replies[i] = tag
			mu.Unlock()
		}
	}()
	sent := 0
	sendFor := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); sent++ {
			fmt.Fprintf(c, "%d", sent)
			time.Sleep(2 * time.Millisecond)
		}
	}
	tagOf := func(seq int) string {
		mu.Lock()
		defer mu.Unlock()
		return replies[seq]
	}
	sendFor(500 * time.Millisecond)
	os.WriteFile(path, conf(originB), 0o644)
	s.signal(t, syscall.SIGHUP)
	reloadedAt := sent
	waitFor(t, 10*time.Second, func() bool { return s.lastReload(t).OK })
	sendFor(500 * time.Millisecond)
	oldPID, _ := s.upgrade(t)
	sendFor(time.Second)
	time.Sleep(200 * time.Millisecond)

	lost, tags := 0, map[string]int{}
	firstB := -1
	for i := range sent {
		tag := tagOf(i)
		if tag == "" {
			lost++
			continue
		}
		tags[tag]++
		if tag == "B" && firstB < 0 {
			firstB = i
		}
	}
	t.Logf("sent %d datagrams: %d answered by A, %d by B, %d lost; the reload at #%d, B from #%d", sent, tags["A"], tags["B"], lost, reloadedAt, firstB)
	if float64(lost) > 0.01*float64(sent) {
		t.Errorf("%d of %d datagrams lost through a reload and an upgrade, want under 1%%", lost, sent)
	}
	if firstB < 0 || tagOf(sent-1) != "B" {
		t.Errorf("the client's datagrams did not move to the reloaded cluster (B from #%d, last %q)", firstB, tagOf(sent-1))
	}
	if !waitGone(oldPID, 10*time.Second) {
		t.Error("the old process did not exit after its drain timeout")
	}
	fmt.Fprintf(c, "%d", sent)
	waitFor(t, 2*time.Second, func() bool { return tagOf(sent) == "B" })
}

// TestUDPSockperf runs sockperf's ping-pong through strait and straight
// to its server, and logs the latency percentiles of each (what strait
// adds is bench's to measure; this checks that nothing is dropped,
// duplicated or reordered).
func TestUDPSockperf(t *testing.T) {
	sockperf := needTool(t, "sockperf")
	port := freeUDPPort(t)
	startProc(t, exec.Command(sockperf, "sr", "-i", "127.0.0.1", "-p", strconv.Itoa(port)))
	addr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, t.TempDir(), "strait.yaml", fmt.Sprintf(`listeners:
  - {address: %q, kind: udp, cluster: s}
clusters:
  - {name: s, endpoints: ["127.0.0.1:%d"]}
admin: {address: %q}
`, addr, port, admin), admin)
	pct := regexp.MustCompile(`percentile (50\.000|99\.000|99\.900) =\s+([0-9.]+)`)
	drops := regexp.MustCompile(`# dropped messages = (\d+); # duplicated messages = (\d+); # out-of-order messages = (\d+)`)
	run := func(target string) string {
		host, p, _ := net.SplitHostPort(target)
		out, err := exec.Command(sockperf, "pp", "-i", host, "-p", p, "-t", "2", "-m", "64").CombinedOutput()
		if err != nil {
			t.Fatalf("sockperf pp %s: %v\n%s", target, err, out)
		}
		d := drops.FindSubmatch(out)
		if d == nil {
			t.Fatalf("sockperf pp %s: no message counts:\n%s", target, out)
		}
		if string(d[1]) != "0" || string(d[2]) != "0" || string(d[3]) != "0" {
			t.Errorf("sockperf pp %s: dropped %s, duplicated %s, out of order %s; want none", target, d[1], d[2], d[3])
		}
		var fig []string
		for _, m := range pct.FindAllSubmatch(out, -1) {
			fig = append(fig, fmt.Sprintf("p%s %s µs", strings.TrimRight(strings.TrimRight(string(m[1]), "0"), "."), m[2]))
		}
		if len(fig) != 3 {
			t.Fatalf("sockperf pp %s: no percentiles:\n%s", target, out)
		}
		return strings.Join(fig, ", ")
	}
	t.Logf("sockperf pp, 64 bytes, one-way latency: direct %s; through strait %s", run(fmt.Sprintf("127.0.0.1:%d", port)), run(addr))
}

// TestUDPReloadRemove: a reload replaces a udp listener's server while its
// origin still answers a flow every 50 ms, and a second reload removes
// the listener: the old servers stop, the port is free at once, and no
// byte of theirs reaches a TCP connection the process accepts after
// (a server writing to a descriptor number the process had reused).
func TestUDPReloadRemove(t *testing.T) {
	origin, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer origin.Close()
	go func() { // answers each datagram 20 times, every 50 ms
		buf := make([]byte, 100)
		for {
			n, from, err := origin.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			p := append([]byte(nil), buf[:n]...)
			go func() {
				for range 20 {
					origin.WriteToUDPAddrPort(p, from)
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := func(udp string) []byte {
		return fmt.Appendf(nil, "listeners:\n%sclusters:\n  - {name: o, endpoints: [%q]}\nadmin: {address: %q}\n", udp, origin.LocalAddr().String(), adminAddr)
	}
	listener := func(idle string) string {
		return fmt.Sprintf("  - {address: %q, kind: udp, cluster: o, udp: {idle_timeout: %s, drain_timeout: 10s}}\n", addr, idle)
	}
	// An http listener keeps the config valid once the udp one is gone.
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	keep := fmt.Sprintf("  - {address: %q, routes: [{respond: {status: 200}}]}\n", httpAddr)
	path := writeFile(t, t.TempDir(), "strait.yaml", conf(listener("30s")+keep))
	s := startStraitRun(t, straitBin, path, adminAddr, nil)
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("flow"))
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 100)
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("the first reply: %v", err)
	}
	reload := func(body []byte) {
		t.Helper()
		os.WriteFile(path, body, 0o644)
		s.signal(t, syscall.SIGHUP)
		time.Sleep(300 * time.Millisecond)
		if r := s.lastReload(t); !r.OK {
			t.Fatalf("reload: %+v", r)
		}
	}
	reload(conf(listener("20s") + keep)) // a new server; the old one drains the flow
	reload(conf(keep))                   // the listener goes
	if pc, err := net.ListenPacket("udp", addr); err != nil {
		t.Errorf("the removed listener's port is still bound: %v", err)
	} else {
		pc.Close()
	}
	// TCP connections accepted now take the lowest free descriptors.
	var conns []net.Conn
	for range 8 {
		tc, err := net.Dial("tcp", adminAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close()
		conns = append(conns, tc)
	}
	time.Sleep(700 * time.Millisecond) // the origin goes on answering
	for i, tc := range conns {
		tc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if n, _ := tc.Read(buf); n > 0 {
			t.Errorf("TCP connection %d to the admin API got %d bytes it never asked for: %q", i, n, buf[:n])
		}
	}
}

// TestUDPSameAddressTwice: two udp listeners bound to one address written
// two ways would split the clients between their clusters (SO_REUSEPORT
// lets both bind): strait refuses to start.
func TestUDPSameAddressTwice(t *testing.T) {
	port := freeUDPPort(t)
	path := writeFile(t, t.TempDir(), "strait.yaml", fmt.Appendf(nil, `listeners:
  - {address: "localhost:%d", kind: udp, cluster: a}
  - {address: "127.0.0.1:%d", kind: udp, cluster: b}
clusters:
  - {name: a, endpoints: ["127.0.0.1:1"]}
  - {name: b, endpoints: ["127.0.0.1:2"]}
admin: {address: off}
`, port, port))
	out, err := exec.Command(straitBin, "run", "-c", path).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is bound already") {
		t.Fatalf("strait run: %v; want it refused, saying the address is bound already:\n%s", err, out)
	}
}

// TestUDPFailedReloadFreesSockets: a reload that adds a udp listener and
// fails later (another listener cannot bind) leaves nothing of it: its
// server's duplicates of the sockets close with it, so no socket stays
// bound to the address, unread, taking a share of its clients.
func TestUDPFailedReloadFreesSockets(t *testing.T) {
	origin := taggedUDPEcho(t, "ok:")
	first := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	added := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := func(more string) []byte {
		return fmt.Appendf(nil, `listeners:
  - {address: %q, kind: udp, cluster: c}
%sclusters:
  - {name: c, endpoints: [%q]}
admin: {address: %q}
`, first, more, origin, adminAddr)
	}
	path := writeFile(t, t.TempDir(), "strait.yaml", conf(""))
	s := startStraitRun(t, straitBin, path, adminAddr, nil)
	// The udp listener comes before one that cannot bind (an address
	// this host does not have): the reload fails after the first is made.
	os.WriteFile(path, conf(fmt.Sprintf("  - {address: %q, kind: udp, cluster: c}\n  - {address: \"192.0.2.1:%d\", kind: tcp, cluster: c}\n", added, freePort(t))), 0o644)
	if r := s.reload(t, false); r.OK {
		t.Fatalf("the reload succeeded: %+v", r)
	}
	// Nothing holds the address: it binds without SO_REUSEPORT.
	a, _ := net.ResolveUDPAddr("udp", added)
	c, err := net.ListenUDP("udp", a)
	if err != nil {
		t.Fatalf("after the failed reload, %s is still bound: %v", added, err)
	}
	c.Close()
}
