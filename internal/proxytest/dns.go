package proxytest

import (
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNS is a nameserver on a free loopback UDP port whose answers a test
// changes while it runs. It stops when the test ends.
type DNS struct {
	Addr string // ip:port

	mu      sync.Mutex
	records map[string][]dns.RR // by lower-case name and type: "svc.test. A"
	rcode   int                 // answered instead of records when not success
	failed  map[uint16]int      // rcodes for queries of one type
	inject  map[string][]dns.RR // more answer records for a question
	queries int
}

// StartDNS starts a nameserver with no records.
func StartDNS(t testing.TB) *DNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &DNS{Addr: pc.LocalAddr().String(), records: make(map[string][]dns.RR),
		failed: make(map[uint16]int), inject: make(map[string][]dns.RR)}
	srv := &dns.Server{PacketConn: pc, Handler: d}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return d
}

// Set replaces the records of their names and types with rrs, each in
// zone-file form ("svc.test. 1 IN A 127.0.0.2"), and answers normally
// again.
func (d *DNS) Set(t testing.TB, rrs ...string) {
	t.Helper()
	parsed := make(map[string][]dns.RR)
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		k := key(rr.Header().Name, rr.Header().Rrtype)
		parsed[k] = append(parsed[k], rr)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for k, v := range parsed {
		d.records[k] = v
	}
	d.rcode = dns.RcodeSuccess
}

// FailType makes queries of type qtype answer rcode (0: normally again).
func (d *DNS) FailType(qtype uint16, rcode int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failed[qtype] = rcode
}

// Inject adds rrs (zone-file form) to every answer to the question of
// qname and qtype, whatever their names: what a hostile or broken server
// sends.
func (d *DNS) Inject(t testing.TB, qname string, qtype uint16, rrs ...string) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		k := key(qname, qtype)
		d.inject[k] = append(d.inject[k], rr)
	}
}

// Clear removes every record: names get NXDOMAIN.
func (d *DNS) Clear() {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.records)
	d.rcode = dns.RcodeSuccess
}

// Fail makes every query answer rcode (dns.RcodeServerFailure, say).
func (d *DNS) Fail(rcode int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rcode = rcode
}

// Queries returns how many queries it answered.
func (d *DNS) Queries() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries
}

func key(name string, t uint16) string { return strings.ToLower(name) + " " + dns.TypeToString[t] }

// ServeDNS answers from the records; an SRV answer carries the A records
// of its targets that it has in its additional section.
func (d *DNS) ServeDNS(w dns.ResponseWriter, q *dns.Msg) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.queries++
	m := new(dns.Msg)
	m.SetReply(q)
	switch {
	case d.rcode != dns.RcodeSuccess:
		m.Rcode = d.rcode
	case len(q.Question) == 1 && d.failed[q.Question[0].Qtype] != 0:
		m.Rcode = d.failed[q.Question[0].Qtype]
	case len(q.Question) == 1:
		qq := q.Question[0]
		// As a recursive resolver answers: the CNAME chain, then the
		// records of its end.
		name := qq.Name
		for range 8 {
			cn := d.records[key(name, dns.TypeCNAME)]
			if len(cn) == 0 || qq.Qtype == dns.TypeCNAME {
				break
			}
			m.Answer = append(m.Answer, cn...)
			name = cn[0].(*dns.CNAME).Target
		}
		m.Answer = append(m.Answer, d.records[key(name, qq.Qtype)]...)
		m.Answer = append(m.Answer, d.inject[key(qq.Name, qq.Qtype)]...)
		for _, rr := range m.Answer {
			if srv, ok := rr.(*dns.SRV); ok {
				m.Extra = append(m.Extra, d.records[key(srv.Target, dns.TypeA)]...)
			}
		}
		if len(m.Answer) == 0 && !d.known(qq.Name) {
			m.Rcode = dns.RcodeNameError
		}
	}
	w.WriteMsg(m)
}

// known reports whether name has records of any type.
func (d *DNS) known(name string) bool {
	for k := range d.records {
		if n, _, _ := strings.Cut(k, " "); n == strings.ToLower(name) {
			return true
		}
	}
	return false
}
