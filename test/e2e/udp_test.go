package e2e

import (
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
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

// TestUDPDNS relays dig's queries to a real dnsmasq through a udp
// listener, each dig a flow of its own (a new source port), and goes on
// answering through a reload that replaces the listener's server.
func TestUDPDNS(t *testing.T) {
	dnsmasq := needTool(t, "dnsmasq")
	dig := needTool(t, "dig")
	dnsPort := freeUDPPort(t)
	startProc(t, exec.Command(dnsmasq, "-k", "-p", strconv.Itoa(dnsPort), "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
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
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		out, _ := exec.Command(dig, "@127.0.0.1", "-p", strconv.Itoa(dnsPort), "example.com", "+short", "+tries=1", "+time=1").CombinedOutput()
		if strings.TrimSpace(string(out)) == "192.0.2.1" {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("dnsmasq does not answer: %s", out)
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
	if v := metricValue(metrics, "strait_udp_datagrams_total", `direction="out"`); v != 2*digs {
		t.Errorf("strait_udp_datagrams_total{direction=out} after the reload = %v, want %d (the old server's kept)", v, 2*digs)
	}
	if err := p.exited(); err != nil {
		t.Fatal(err)
	}
}
