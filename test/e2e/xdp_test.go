package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/netnstest"
)

// xdpNet is netnstest's three namespaces with strait in the middle one,
// and an HTTP client that reaches its admin API there.
type xdpNet struct {
	*netnstest.Topology
	admin *http.Client
}

func newXDPNet(t *testing.T) *xdpNet {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "needs root for network namespaces and XDP")
	}
	needTool(t, "ip")
	needTool(t, "ethtool")
	tp, err := netnstest.Create(strconv.Itoa(os.Getpid()%100000) + "e")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tp.Close)
	n := &xdpNet{Topology: tp}
	n.admin = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			if e := netnstest.In(tp.Proxy, func() { c, err = (&net.Dialer{}).DialContext(ctx, network, addr) }); e != nil {
				return nil, e
			}
			return c, err
		}}}
	return n
}

// metrics reads strait's metrics in the proxy namespace.
func (n *xdpNet) metrics(t *testing.T) string {
	t.Helper()
	resp, err := n.admin.Get("http://127.0.0.1:9901/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// startStrait runs strait on conf in the proxy namespace (its admin API
// at 127.0.0.1:9901 there: the namespace is the test's own).
func (n *xdpNet) startStrait(t *testing.T, conf string) *proc {
	t.Helper()
	path := writeFile(t, t.TempDir(), "strait.yaml", []byte(conf+"admin: {address: \"127.0.0.1:9901\"}\n"))
	p := startProc(t, netnstest.Command(n.Proxy, straitBin, "run", "-c", path))
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := n.admin.Get("http://127.0.0.1:9901/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if err := p.exited(); err != nil || time.Now().After(end) {
			t.Fatalf("strait in %s did not become ready: %v\n%s", n.Proxy, err, p.stderr.String())
		}
	}
}

// xdpAttached returns the ids of the XDP programs attached in namespace
// ns, by interface, as bpftool sees them.
func xdpAttached(t *testing.T, bpftool, ns string) map[string]int {
	t.Helper()
	out, err := netnstest.Command(ns, bpftool, "-j", "net", "show").Output()
	if err != nil {
		t.Fatalf("bpftool net show: %v", err)
	}
	var nets []struct {
		XDP []struct {
			Dev string `json:"devname"`
			ID  int    `json:"id"`
		} `json:"xdp"`
	}
	if err := json.Unmarshal(out, &nets); err != nil {
		t.Fatalf("bpftool net show: %v\n%s", err, out)
	}
	ids := make(map[string]int)
	for _, n := range nets {
		for _, x := range n.XDP {
			ids[x.Dev] = x.ID
		}
	}
	return ids
}

// progLinks returns the ids of the bpf links of program prog.
func progLinks(t *testing.T, bpftool string, prog int) []int {
	t.Helper()
	out, err := exec.Command(bpftool, "-j", "link", "show").Output()
	if err != nil {
		t.Fatalf("bpftool link show: %v", err)
	}
	var links []struct {
		ID   int `json:"id"`
		Prog int `json:"prog_id"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatalf("bpftool link show: %v\n%s", err, out)
	}
	var ids []int
	for _, l := range links {
		if l.Prog == prog {
			ids = append(ids, l.ID)
		}
	}
	return ids
}

// adminNSDo sends a request to strait's admin API in the proxy namespace.
func adminNSDo(t *testing.T, n *xdpNet, method, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://127.0.0.1:9901"+path, nil)
	req.Header.Set("X-Strait-Admin", "1")
	resp, err := n.admin.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestUDPXDP: strait between a client and a dnsmasq and an iperf2
// server, each in a network namespace of its own, with its XDP program
// on both its interfaces. A flow's first datagrams go through strait's
// sockets; once answered (or 64 datagrams one way), the program forwards
// the rest in the kernel: the answers are right (the client's and the
// origin's kernels check the checksums the program rewrote), strait's
// sockets see none of them, and the program's counters have them. Kernel
// traffic keeps a flow alive past the idle timeout; an idle one expires
// from both tables; one whose endpoint is drained comes back to user
// space. Detached underneath strait, the program leaves the
// flows to user space, which goes on answering; when strait stops,
// bpftool no longer sees it.
func TestUDPXDP(t *testing.T) {
	n := newXDPNet(t)
	dnsmasq, dig, iperf, bpftool := needTool(t, "dnsmasq"), needTool(t, "dig"), needTool(t, "iperf"), needTool(t, "bpftool")
	startProc(t, netnstest.Command(n.Origin, dnsmasq, "-k", "-p", "53", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
		"--address=/example.com/192.0.2.1", "--listen-address=10.91.2.2", "--bind-interfaces", "--pid-file=", "--user=root"))
	startProc(t, netnstest.Command(n.Origin, iperf, "-s", "-u", "-B", "10.91.2.2", "-p", "5001"))
	p := n.startStrait(t, `listeners:
  - {address: "10.91.1.1:53", name: dns, kind: udp, cluster: dns, udp: {idle_timeout: 2s, xdp: {interfaces: [c1, o1]}}}
  - {address: "10.91.1.1:5001", name: iperf, kind: udp, cluster: iperf, udp: {xdp: {interfaces: [c1, o1], mode: native}}}
clusters:
  - {name: dns, endpoints: ["10.91.2.2:53"]}
  - {name: iperf, endpoints: ["10.91.2.2:5001"]}
`)
	attached := xdpAttached(t, bpftool, n.Proxy)
	prog := attached["c1"]
	if prog == 0 || attached["o1"] != prog {
		t.Fatalf("bpftool net show in strait's namespace: XDP programs %v, want one on c1 and o1\n%s", attached, p.stderr.String())
	}
	if out, err := exec.Command(bpftool, "prog", "show", "id", strconv.Itoa(prog)).CombinedOutput(); err != nil || !strings.Contains(string(out), "strait_udp") {
		t.Fatalf("bpftool prog show id %d: %v\n%s", prog, err, out)
	}
	if got := len(progLinks(t, bpftool, prog)); got != 2 {
		t.Fatalf("bpftool link show: %d links of strait's program, want 2 (c1, o1)", got)
	}

	port := "5300"
	query := func(name string) string {
		t.Helper()
		// One source port: one flow, query after query.
		out, err := netnstest.Command(n.Client, dig, "@10.91.1.1", "-p", "53", "-b", "10.91.1.2#"+port, name, "A", "+short", "+tries=1", "+time=2").CombinedOutput()
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", name, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// dnsmasq may take a moment to bind.
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := netnstest.Command(n.Client, dig, "@10.91.1.1", "-p", "53", "ready.example.com", "+short", "+tries=1", "+time=1").CombinedOutput()
		if strings.TrimSpace(string(out)) == "192.0.2.1" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("no answer through strait: %s", out)
		}
	}
	m := n.metrics(t)
	flows0 := metricValue(m, "strait_udp_flows_total", `listener="dns"`)
	in0 := metricValue(m, "strait_udp_datagrams_total", `listener="dns"`, `direction="in"`)
	fwd0 := metricValue(m, "strait_udp_xdp_datagrams_total", `action="forwarded"`)
	const digs = 10
	for i := range digs {
		if got := query(fmt.Sprintf("host%d.example.com", i)); got != "192.0.2.1" {
			t.Fatalf("dig %d through strait: %q, want 192.0.2.1", i, got)
		}
	}
	m = n.metrics(t)
	if d := metricValue(m, "strait_udp_flows_total", `listener="dns"`) - flows0; d != 1 {
		t.Errorf("%v flows for %d digs from one port, want 1", d, digs)
	}
	if d := metricValue(m, "strait_udp_datagrams_total", `listener="dns"`, `direction="in"`) - in0; d != 1 {
		t.Errorf("strait's sockets relayed %v of the flow's queries, want 1 (the first: the rest in the kernel)", d)
	}
	if d := metricValue(m, "strait_udp_xdp_datagrams_total", `action="forwarded"`) - fwd0; d != 2*(digs-1) {
		t.Errorf("the program forwarded %v datagrams, want %d (the later queries and their answers)", d, 2*(digs-1))
	}
	// Every answered flow is in the kernel: this one and the first dig's.
	if v, all := metricValue(m, "strait_udp_xdp_flows", `listener="dns"`), metricValue(m, "strait_udp_active_flows", `listener="dns"`); v != 2 || all != 2 {
		t.Errorf("strait_udp_xdp_flows{dns} = %v of %v flows, want 2 of 2", v, all)
	}

	// Past the idle timeout (2s) on kernel traffic alone: the flow lives.
	for i := range 8 {
		if got := query(fmt.Sprintf("alive%d.example.com", i)); got != "192.0.2.1" {
			t.Fatalf("dig: %q", got)
		}
		time.Sleep(400 * time.Millisecond)
	}
	m = n.metrics(t)
	if d := metricValue(m, "strait_udp_flows_total", `listener="dns"`) - flows0; d != 1 {
		t.Errorf("after 3s of queries only the kernel saw: %v flows, want the one (its idle time is the kernel's)", d)
	}
	// Quiet past it: the flow ends in both tables; the next query opens
	// a new one in user space.
	time.Sleep(3500 * time.Millisecond)
	m = n.metrics(t)
	if v := metricValue(m, "strait_udp_active_flows", `listener="dns"`); v != 0 {
		t.Errorf("strait_udp_active_flows{dns} = %v after the idle timeout, want 0", v)
	}
	if v := metricValue(m, "strait_udp_xdp_flows", `listener="dns"`); v != 0 {
		t.Errorf("strait_udp_xdp_flows{dns} = %v after the idle timeout, want 0", v)
	}
	in1 := metricValue(m, "strait_udp_datagrams_total", `listener="dns"`, `direction="in"`)
	if got := query("back.example.com"); got != "192.0.2.1" {
		t.Fatalf("dig after expiry: %q", got)
	}
	m = n.metrics(t)
	if d := metricValue(m, "strait_udp_datagrams_total", `listener="dns"`, `direction="in"`) - in1; d != 1 {
		t.Errorf("after expiry, strait's sockets relayed %v of 1 query (the program forwarded it: its entry outlived the flow)", d)
	}

	// The endpoint drained: the flow comes back to user space (within a
	// sweep, a second at most), where it goes on as a drain lets flows
	// in flight.
	if code, body := adminNSDo(t, n, "POST", "/clusters/dns/endpoints/10.91.2.2:53/drain"); code != 200 {
		t.Fatalf("drain: %d %s", code, body)
	}
	time.Sleep(1200 * time.Millisecond)
	m = n.metrics(t)
	if v := metricValue(m, "strait_udp_xdp_flows", `listener="dns"`); v != 0 {
		t.Errorf("strait_udp_xdp_flows{dns} = %v with the endpoint drained, want 0", v)
	}
	in1 = metricValue(m, "strait_udp_datagrams_total", `listener="dns"`, `direction="in"`)
	if got := query("drained.example.com"); got != "192.0.2.1" {
		t.Fatalf("dig with the endpoint drained: %q", got)
	}
	m = n.metrics(t)
	if d := metricValue(m, "strait_udp_datagrams_total", `listener="dns"`, `direction="in"`) - in1; d != 1 {
		t.Errorf("with the endpoint drained, strait's sockets relayed %v of 1 query of the flow (the kernel kept it)", d)
	}
	if code, body := adminNSDo(t, n, "POST", "/clusters/dns/endpoints/10.91.2.2:53/undrain"); code != 200 {
		t.Fatalf("undrain: %d %s", code, body)
	}

	// iperf2, 64-byte datagrams at 20k a second: the stream is one way,
	// so from its 64th datagram the kernel forwards it; the server's
	// report comes back through the program.
	fwd1 := metricValue(m, "strait_udp_xdp_datagrams_total", `action="forwarded"`)
	out, err := netnstest.Command(n.Client, iperf, "-c", "10.91.1.1", "-u", "-p", "5001", "-b", "20000pps", "-l", "64", "-t", "3").CombinedOutput()
	if err != nil {
		t.Fatalf("iperf: %v\n%s", err, out)
	}
	rep := regexp.MustCompile(`(\d+)/\s*(\d+) \(([0-9.e+-]+)%\)`).FindStringSubmatch(string(out))
	if rep == nil {
		t.Fatalf("iperf: no server report (it comes back through strait):\n%s", out)
	}
	lost, _ := strconv.Atoi(rep[1])
	total, _ := strconv.Atoi(rep[2])
	m = n.metrics(t)
	fwd := metricValue(m, "strait_udp_xdp_datagrams_total", `action="forwarded"`) - fwd1
	t.Logf("iperf2 -u -b 20000pps -l 64 with XDP: lost %d of %d; the program forwarded %v datagrams", lost, total, fwd)
	if total == 0 || float64(lost) > 0.01*float64(total) {
		t.Errorf("iperf: lost %d of %d datagrams, want under 1%%", lost, total)
	}
	if fwd < 0.9*float64(total) {
		t.Errorf("the program forwarded %v of iperf's %d datagrams, want most", fwd, total)
	}

	// Detached under strait: the flows' datagrams reach strait's sockets
	// again, and are answered from there. A new flow first, in the
	// kernel.
	port = "5301"
	fwd3 := metricValue(m, "strait_udp_xdp_datagrams_total", `action="forwarded"`)
	for i := range 3 {
		query(fmt.Sprintf("kernel%d.example.com", i))
	}
	m = n.metrics(t)
	if d := metricValue(m, "strait_udp_xdp_datagrams_total", `action="forwarded"`) - fwd3; d != 4 {
		t.Fatalf("the program forwarded %v datagrams of a new flow's 3 queries, want 4 (all but the first query and its answer)", d)
	}
	for _, id := range progLinks(t, bpftool, prog) {
		if out, err := exec.Command(bpftool, "link", "detach", "id", strconv.Itoa(id)).CombinedOutput(); err != nil {
			t.Fatalf("bpftool link detach: %v %s", err, out)
		}
	}
	m = n.metrics(t)
	in2, fwd2 := metricValue(m, "strait_udp_datagrams_total", `listener="dns"`, `direction="in"`), metricValue(m, "strait_udp_xdp_datagrams_total", `action="forwarded"`)
	for i := range 5 {
		if got := query(fmt.Sprintf("detached%d.example.com", i)); got != "192.0.2.1" {
			t.Fatalf("dig with the program detached: %q", got)
		}
	}
	m = n.metrics(t)
	if d := metricValue(m, "strait_udp_datagrams_total", `listener="dns"`, `direction="in"`) - in2; d != 5 {
		t.Errorf("with the program detached, strait's sockets relayed %v of 5 queries", d)
	}
	if d := metricValue(m, "strait_udp_xdp_datagrams_total", `action="forwarded"`) - fwd2; d != 0 {
		t.Errorf("the detached program forwarded %v datagrams", d)
	}

	p.signal(syscall.SIGTERM)
	if !p.wait(15 * time.Second) {
		t.Fatal("strait did not stop")
	}
	if out, err := exec.Command(bpftool, "prog", "show", "id", strconv.Itoa(prog)).CombinedOutput(); err == nil {
		t.Errorf("bpftool prog show id %d: strait's program outlived it:\n%s", prog, out)
	}
}

// TestUDPXDPCannotAttach: quick mode's --xdp on an interface that is not
// there. strait says why in its log and relays in user space.
func TestUDPXDPCannotAttach(t *testing.T) {
	origin := taggedUDPEcho(t, "echo:")
	addr := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	p := startProc(t, exec.Command(straitBin, "proxy", "--listen", "udp://"+addr, "--upstream", "udp://"+origin, "--xdp", "nosuch0"))
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for end := time.Now().Add(10 * time.Second); ; {
		c.Write([]byte("hi"))
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := c.Read(buf); err == nil {
			if got := string(buf[:n]); got != "echo:hi" {
				t.Fatalf("through strait: %q", got)
			}
			break
		}
		if err := p.exited(); err != nil || time.Now().After(end) {
			t.Fatalf("no answer through strait: %v\n%s", err, p.stderr.String())
		}
	}
	// Without the privilege to load it, strait says that instead.
	if log := p.stderr.String(); !strings.Contains(log, `"interface":"nosuch0"`) && !strings.Contains(log, "XDP program cannot load") {
		t.Errorf("strait's log does not say why XDP is off:\n%s", log)
	} else {
		t.Log(strings.TrimSpace(regexp.MustCompile(`.*(nosuch0|cannot load).*`).FindString(log)))
	}
}

// TestUDPXDPReloadLateAnswer: a flow whose endpoint first answers after
// a reload has begun (its server draining) is not handed to the kernel:
// the client's next datagrams reach the new server, and its endpoint.
func TestUDPXDPReloadLateAnswer(t *testing.T) {
	n := newXDPNet(t)
	// Origin A answers a client's first datagram after 700 ms, origin B
	// at once; each tags its answers.
	for _, o := range []struct {
		port  int
		tag   string
		delay time.Duration
	}{{54, "A", 700 * time.Millisecond}, {55, "B", 0}} {
		var c *net.UDPConn
		var err error
		if e := netnstest.In(n.Origin, func() { c, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(10, 91, 2, 2), Port: o.port}) }); e != nil || err != nil {
			t.Fatal(e, err)
		}
		t.Cleanup(func() { c.Close() })
		go func() {
			seen := map[string]bool{}
			buf := make([]byte, 64)
			for {
				_, from, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if !seen[from.String()] {
					seen[from.String()] = true
					time.Sleep(o.delay)
				}
				c.WriteToUDPAddrPort([]byte(o.tag), from)
			}
		}()
	}
	conf := func(port int) string {
		return fmt.Sprintf(`listeners:
  - {address: "10.91.1.1:5300", kind: udp, cluster: c, udp: {drain_timeout: 5s, xdp: {interfaces: [c1, o1]}}}
clusters:
  - {name: c, endpoints: ["10.91.2.2:%d"]}
`, port)
	}
	p := n.startStrait(t, conf(54))
	var client *net.UDPConn
	var err error
	if e := netnstest.In(n.Client, func() {
		client, err = net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(10, 91, 1, 2)}, &net.UDPAddr{IP: net.IPv4(10, 91, 1, 1), Port: 5300})
	}); e != nil || err != nil {
		t.Fatal(e, err)
	}
	defer client.Close()
	client.Write([]byte("first"))
	time.Sleep(100 * time.Millisecond)
	// The config file is the one startStrait wrote: the last argument.
	path := p.cmd.Args[len(p.cmd.Args)-1]
	os.WriteFile(path, []byte(conf(55)+"admin: {address: \"127.0.0.1:9901\"}\n"), 0o644)
	p.signal(syscall.SIGHUP)
	buf := make([]byte, 64)
	client.SetReadDeadline(time.Now().Add(3 * time.Second))
	if k, err := client.Read(buf); err != nil || string(buf[:k]) != "A" {
		t.Fatalf("the late answer: %q, %v", buf[:k], err)
	}
	tags := map[string]int{}
	for range 20 {
		client.Write([]byte("next"))
		client.SetReadDeadline(time.Now().Add(time.Second))
		k, err := client.Read(buf)
		if err != nil {
			tags["lost"]++
			continue
		}
		tags[string(buf[:k])]++
		time.Sleep(30 * time.Millisecond)
	}
	if tags["B"] < 19 {
		t.Errorf("after the reload, the client's datagrams were answered %v; want all but one by B, the new server's endpoint", tags)
	}
}
