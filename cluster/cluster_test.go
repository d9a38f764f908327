package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

func newCluster(t *testing.T, cc config.Cluster) *Cluster {
	t.Helper()
	c, err := New(&cc, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// pick makes a first try of a new request, and returns its session, call
// and endpoint ("" for an error).
func pick(t *testing.T, c *Cluster) (*proxy.Session, *Call, string) {
	t.Helper()
	s := &proxy.Session{Request: proxy.Request{Method: "GET", Path: []byte("/")}}
	s.Stats.Attempts = 1
	call := new(Call)
	p, err := c.Peer(s, call)
	if err != nil {
		return s, call, ""
	}
	return s, call, p.Addr
}

// addrs returns the addresses of the cluster's endpoints, sorted.
func addrs(c *Cluster) []string {
	var out []string
	for _, e := range c.Endpoints() {
		out = append(out, fmt.Sprintf("%s w%d", e.Addr, e.Weight))
	}
	slices.Sort(out)
	return out
}

// TestDrain: a draining endpoint takes no new requests, its requests in
// flight finish and are counted until they do, and it comes back when
// undrained. With every endpoint draining, requests get 503 even though
// the cluster would use endpoints that are down (panic).
func TestDrain(t *testing.T) {
	c := newCluster(t, config.Cluster{Name: "c", Endpoints: []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}})
	var held []*Call
	var sessions []*proxy.Session
	for len(held) < 2 { // two requests in flight at 10.0.0.1
		s, call, addr := pick(t, c)
		if addr == "10.0.0.1:80" {
			held, sessions = append(held, call), append(sessions, s)
		} else {
			c.Done(s, call, nil)
		}
	}
	if err := c.Drain("10.0.0.1:80"); err != nil {
		t.Fatal(err)
	}
	if err := c.Drain("10.0.0.9:80"); !errors.Is(err, ErrNoEndpoint) {
		t.Errorf("draining an unknown endpoint: %v, want ErrNoEndpoint", err)
	}
	for range 300 {
		s, call, addr := pick(t, c)
		if addr == "10.0.0.1:80" || addr == "" {
			t.Fatalf("a new request went to %q while 10.0.0.1 drains", addr)
		}
		c.Done(s, call, nil)
	}
	e := c.Endpoints()[0]
	if !e.Draining || e.Active != 2 {
		t.Errorf("while draining: %+v, want draining with 2 in flight", e)
	}
	for i, call := range held {
		c.Done(sessions[i], call, nil)
	}
	if e := c.Endpoints()[0]; e.Active != 0 {
		t.Errorf("after its requests ended: %d in flight", e.Active)
	}
	c.Undrain("10.0.0.1:80")
	got := 0
	for range 30 {
		s, call, addr := pick(t, c)
		if addr == "10.0.0.1:80" {
			got++
		}
		c.Done(s, call, nil)
	}
	if got != 10 {
		t.Errorf("undrained, it took %d of 30 requests, want 10", got)
	}
	for _, a := range []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"} {
		c.Drain(a)
	}
	s, call, addr := pick(t, c)
	if addr != "" {
		t.Errorf("every endpoint draining: a request went to %s", addr)
	}
	c.Done(s, call, nil)
	if st := c.Stats(); st.Active != 0 {
		t.Errorf("%d requests in flight after all ended", st.Active)
	}
}

// TestDNSNames: A and AAAA names become endpoints; a change is picked up
// when the TTL runs out (here 1 s, though refresh is 30 s); a lookup that
// fails, or answers nothing, keeps the endpoints and is counted. Static
// endpoints stay beside the discovered ones.
func TestDNSNames(t *testing.T) {
	ns := proxytest.StartDNS(t)
	ns.Set(t, "svc.test. 1 IN A 127.0.0.2", "svc.test. 1 IN A 127.0.0.3", "svc.test. 1 IN AAAA ::1",
		"other.test. 1 IN A 127.0.0.9")
	c := newCluster(t, config.Cluster{Name: "c", Endpoints: []string{"10.0.0.1:80"},
		DNS: config.DNS{Names: []string{"svc.test:8080 weight=3", "other.test:9090"}, Nameservers: []string{ns.Addr},
			Refresh: config.Duration(30 * time.Second)}})
	want := []string{"10.0.0.1:80 w1", "127.0.0.2:8080 w3", "127.0.0.3:8080 w3", "127.0.0.9:9090 w1", "[::1]:8080 w3"}
	if got := addrs(c); !slices.Equal(got, want) {
		t.Fatalf("endpoints %v, want %v", got, want)
	}
	ns.Set(t, "svc.test. 1 IN A 127.0.0.4", "svc.test. 1 IN AAAA ::2")
	want = []string{"10.0.0.1:80 w1", "127.0.0.4:8080 w3", "127.0.0.9:9090 w1", "[::2]:8080 w3"}
	waitFor(t, 4*time.Second, func() bool { return slices.Equal(addrs(c), want) }, func() string {
		return fmt.Sprintf("after the change, endpoints %v, want %v", addrs(c), want)
	})
	// Requests reach the new set.
	seen := map[string]bool{}
	for range 8 {
		s, call, addr := pick(t, c)
		seen[addr] = true
		c.Done(s, call, nil)
	}
	if !seen["127.0.0.4:8080"] || seen["127.0.0.2:8080"] {
		t.Errorf("picks after the change: %v", seen)
	}

	for _, fail := range []struct {
		name  string
		apply func()
	}{
		{"SERVFAIL", func() { ns.Fail(dns.RcodeServerFailure) }},
		{"NXDOMAIN", func() { ns.Clear() }},
	} {
		before := c.Stats().DNSFailures
		fail.apply()
		waitFor(t, 4*time.Second, func() bool { return c.Stats().DNSFailures > before }, func() string {
			return fail.name + ": no failed lookup counted"
		})
		if got := addrs(c); !slices.Equal(got, want) {
			t.Errorf("%s: endpoints %v, want the last good %v", fail.name, got, want)
		}
	}
}

// TestDNSSRV: SRV targets of the lowest priority become endpoints with
// their records' ports and weights, their addresses from the answer's
// additional records or from lookups of their own.
func TestDNSSRV(t *testing.T) {
	ns := proxytest.StartDNS(t)
	ns.Set(t,
		"_http._tcp.svc.test. 1 IN SRV 10 5 8081 a.test.",
		"_http._tcp.svc.test. 1 IN SRV 10 0 8082 b.test.",
		"_http._tcp.svc.test. 1 IN SRV 20 9 8083 c.test.",
		"a.test. 1 IN A 127.0.0.2",
		"b.test. 1 IN AAAA ::1",
		"c.test. 1 IN A 127.0.0.4")
	c := newCluster(t, config.Cluster{Name: "c", Balance: "ring_hash",
		DNS: config.DNS{SRV: []string{"_http._tcp.svc.test"}, Nameservers: []string{ns.Addr}, Refresh: config.Duration(time.Second)}})
	want := []string{"127.0.0.2:8081 w5", "[::1]:8082 w1"}
	if got := addrs(c); !slices.Equal(got, want) {
		t.Fatalf("endpoints %v, want %v", got, want)
	}
	ns.Set(t, "_http._tcp.svc.test. 1 IN SRV 10 1 8083 c.test.")
	waitFor(t, 4*time.Second, func() bool { return slices.Equal(addrs(c), []string{"127.0.0.4:8083 w1"}) }, func() string {
		return fmt.Sprintf("after the change, endpoints %v", addrs(c))
	})
	if _, _, addr := pick(t, c); addr != "127.0.0.4:8083" {
		t.Errorf("a request went to %q", addr)
	}
}

// TestDNSNoAnswerAtStart: a cluster whose names do not resolve yet starts,
// answers 503 (no endpoints), and takes its endpoints once they resolve.
func TestDNSNoAnswerAtStart(t *testing.T) {
	ns := proxytest.StartDNS(t)
	c := newCluster(t, config.Cluster{Name: "c",
		DNS: config.DNS{Names: []string{"late.test:80"}, Nameservers: []string{ns.Addr}, Refresh: config.Duration(time.Second)}})
	s := &proxy.Session{}
	s.Stats.Attempts = 1
	call := new(Call)
	if _, err := c.Peer(s, call); err != errNoEndpoints {
		t.Errorf("with no endpoints: %v", err)
	}
	c.Done(s, call, nil)
	if st := c.Stats(); st.Active != 0 || st.DNSFailures == 0 {
		t.Errorf("stats %+v, want none in flight and the empty answer counted", st)
	}
	ns.Set(t, "late.test. 1 IN A 127.0.0.5")
	waitFor(t, 8*time.Second, func() bool { return slices.Equal(addrs(c), []string{"127.0.0.5:80 w1"}) }, func() string {
		return fmt.Sprintf("endpoints %v", addrs(c))
	})
}

func waitFor(t *testing.T, d time.Duration, ok func() bool, msg func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal(msg())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNewRefuses: a cluster built in Go gets errors for what config.Parse
// would refuse in a file.
func TestNewRefuses(t *testing.T) {
	for _, cc := range []config.Cluster{
		{Name: "a"},
		{Name: "b", Endpoints: []string{"10.0.0.1:80 weight=x"}},
		{Name: "c", Endpoints: []string{"10.0.0.1:80"}, Balance: "fastest"},
		{Name: "d", Endpoints: []string{"10.0.0.1:80"}, Balance: "ring_hash", HashKey: "header"},
	} {
		if c, err := New(&cc, Options{}); err == nil {
			c.Stop()
			t.Errorf("%+v: no error", cc)
		} else if !strings.Contains(err.Error(), `cluster "`+cc.Name+`"`) {
			t.Errorf("%v: does not name the cluster", err)
		}
	}
}

// TestDNSHostileAndBrokenAnswers, from an attacker's review: SRV records
// of a name strait did not ask about are not endpoints; a name behind a
// CNAME resolves; AAAA failing while A answers is no failure; SRV weights
// past 1000 are scaled down (a ring of 65,535 × 160 points each would
// take gigabytes).
func TestDNSHostileAndBrokenAnswers(t *testing.T) {
	ns := proxytest.StartDNS(t)
	ns.Set(t,
		"_http._tcp.svc.test. 1 IN SRV 10 65535 8081 a.test.",
		"_http._tcp.svc.test. 1 IN SRV 10 6553 8082 b.test.",
		"a.test. 1 IN A 127.0.0.2",
		"b.test. 1 IN A 127.0.0.3",
		"evil.test. 1 IN A 127.0.0.66",
		"alias.test. 1 IN CNAME real.test.",
		"real.test. 1 IN A 127.0.0.7")
	ns.Inject(t, "_http._tcp.svc.test.", dns.TypeSRV, "_evil._tcp.attacker.test. 1 IN SRV 1 1 8083 evil.test.")
	ns.FailType(dns.TypeAAAA, dns.RcodeServerFailure)
	c := newCluster(t, config.Cluster{Name: "c", Balance: "ring_hash",
		DNS: config.DNS{SRV: []string{"_http._tcp.svc.test"}, Names: []string{"alias.test:80"},
			Nameservers: []string{ns.Addr}, Refresh: config.Duration(time.Second)}})
	want := []string{"127.0.0.2:8081 w1000", "127.0.0.3:8082 w99", "127.0.0.7:80 w1"}
	if got := addrs(c); !slices.Equal(got, want) {
		t.Errorf("endpoints %v, want %v", got, want)
	}
	if st := c.Stats(); st.DNSFailures != 0 {
		t.Errorf("%d failed lookups counted, want 0 (AAAA failing alone is none)", st.DNSFailures)
	}
}

// TestDNSNameFailsAlone: a name whose lookup fails keeps what it gave
// last, while the other names' changes are taken.
func TestDNSNameFailsAlone(t *testing.T) {
	ns := proxytest.StartDNS(t)
	ns.Set(t, "one.test. 1 IN A 127.0.0.2", "two.test. 1 IN A 127.0.0.3")
	c := newCluster(t, config.Cluster{Name: "c",
		DNS: config.DNS{Names: []string{"one.test:80", "two.test:80"}, Nameservers: []string{ns.Addr}, Refresh: config.Duration(time.Second)}})
	ns.Clear()
	ns.Set(t, "one.test. 1 IN A 127.0.0.4") // two.test is gone: NXDOMAIN
	want := []string{"127.0.0.3:80 w1", "127.0.0.4:80 w1"}
	waitFor(t, 4*time.Second, func() bool { return slices.Equal(addrs(c), want) }, func() string {
		return fmt.Sprintf("endpoints %v, want %v", addrs(c), want)
	})
	if c.Stats().DNSFailures == 0 {
		t.Errorf("the empty name was not counted")
	}
}

// TestSwapKeepsState: an endpoint in both the old and the new set stays
// ejected, and a drain mark on an address that is gone can be cleared.
func TestSwapKeepsState(t *testing.T) {
	ns := proxytest.StartDNS(t)
	ns.Set(t, "svc.test. 1 IN A 127.0.0.2", "svc.test. 1 IN A 127.0.0.3", "svc.test. 1 IN A 127.0.0.4")
	c := newCluster(t, config.Cluster{Name: "c", Outlier: config.Outlier{Failures: 1, MaxEjectedPercent: 100},
		DNS: config.DNS{Names: []string{"svc.test:80"}, Nameservers: []string{ns.Addr}, Refresh: config.Duration(time.Second)}})
	// Eject 127.0.0.2 with one failed connection; drain 127.0.0.4.
	for {
		s, call, addr := pick(t, c)
		if addr == "127.0.0.2:80" {
			c.FailToConnect(s, call, &proxy.Error{Side: proxy.Upstream, Kind: proxy.KindConnect})
			c.Done(s, call, &proxy.Error{Side: proxy.Upstream})
			break
		}
		c.Done(s, call, nil)
	}
	if err := c.Drain("127.0.0.4:80"); err != nil {
		t.Fatal(err)
	}
	ns.Clear()
	ns.Set(t, "svc.test. 1 IN A 127.0.0.2", "svc.test. 1 IN A 127.0.0.5")
	waitFor(t, 4*time.Second, func() bool {
		return slices.Equal(addrs(c), []string{"127.0.0.2:80 w1", "127.0.0.5:80 w1"})
	}, func() string { return fmt.Sprintf("endpoints %v", addrs(c)) })
	if e := c.Endpoints()[0]; !e.Ejected {
		t.Errorf("after the swap, 127.0.0.2 is no longer ejected: %+v", e)
	}
	if err := c.Undrain("127.0.0.4:80"); err != nil {
		t.Errorf("clearing the drain mark of an address that is gone: %v", err)
	}
	ns.Set(t, "svc.test. 1 IN A 127.0.0.2", "svc.test. 1 IN A 127.0.0.4", "svc.test. 1 IN A 127.0.0.5")
	waitFor(t, 4*time.Second, func() bool { return len(c.Endpoints()) == 3 }, func() string { return fmt.Sprintf("endpoints %v", addrs(c)) })
	if e := c.Endpoints()[1]; e.Addr != "127.0.0.4:80" || e.Draining {
		t.Errorf("back, undrained while away: %+v", e)
	}
}
