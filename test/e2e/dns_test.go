package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/straitproxy/strait/internal/proxytest"
)

// TestDNSDiscovery: a cluster whose endpoints come from an SRV name moves
// to a new endpoint within one refresh of the answer changing, loses no
// request while it does, and keeps its endpoint when the nameserver
// starts failing.
func TestDNSDiscovery(t *testing.T) {
	origin := func(name string) string {
		return startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
	}
	a, b := origin("a"), origin("b")
	_, portA, _ := net.SplitHostPort(a)
	_, portB, _ := net.SplitHostPort(b)
	ns := proxytest.StartDNS(t)
	ns.Set(t, "_http._tcp.svc.test. 1 IN SRV 10 1 "+portA+" a.test.", "a.test. 1 IN A 127.0.0.1", "b.test. 1 IN A 127.0.0.1")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, t.TempDir(), "dns.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: svc}]}
clusters:
  - name: svc
    dns: {srv: [_http._tcp.svc.test], nameservers: [%q], refresh: 10s}
`, addr, ns.Addr), addr)
	logs := func() string { return p.stdout.String() + p.stderr.String() }
	client := newClient(true)
	get := func() string {
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("request: %v", err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s\n%s", resp.StatusCode, body, tail(logs(), 20))
		}
		return string(body)
	}
	if got := get(); got != "a" {
		t.Fatalf("before the change, answered by %q", got)
	}
	ns.Set(t, "_http._tcp.svc.test. 1 IN SRV 10 1 "+portB+" b.test.")
	changed := time.Now()
	n := 0
	for get() != "b" {
		n++
		if time.Since(changed) > 3*time.Second { // the TTL is 1 s
			t.Fatalf("still at the old endpoint %v after the answer changed", time.Since(changed))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("moved to the new endpoint %v after the answer changed (%d requests in between, none failed)",
		time.Since(changed).Round(time.Millisecond), n)

	ns.Fail(dns.RcodeServerFailure)
	deadline := time.Now().Add(6 * time.Second)
	for !strings.Contains(logs(), "dns lookup failed") {
		if time.Now().After(deadline) {
			t.Fatalf("no failed lookup logged:\n%s", tail(logs(), 20))
		}
		if got := get(); got != "b" {
			t.Fatalf("with the nameserver failing, answered by %q", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for range 5 {
		if got := get(); got != "b" {
			t.Fatalf("after a failed lookup, answered by %q", got)
		}
	}
}
