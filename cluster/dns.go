package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/balance"
)

// DNS discovery's defaults and bounds.
const (
	defaultRefresh = 30 * time.Second
	minRefresh     = time.Second // however short a TTL
	retryFailed    = 5 * time.Second
	lookupTimeout  = 2 * time.Second // of one query to one nameserver
	startBudget    = 5 * time.Second // of the lookups before the cluster starts
	refreshBudget  = 10 * time.Second
	maxTargets     = 256  // SRV targets used of one name
	maxEndpoints   = 1024 // endpoints from DNS in one cluster
	maxWeight      = 1000 // as a config's endpoint weights
)

// discovery looks a cluster's names up in DNS, off the request path, and
// swaps in the endpoints they give. A lookup that fails or answers nothing
// keeps the endpoints the cluster has.
type discovery struct {
	names   []dnsName
	srv     []string // SRV names, fully qualified
	servers []string // nameservers, host:port
	refresh time.Duration
	wait    time.Duration // after the last good answer: its TTL within bounds
	v4, v6  bool
	client  dns.Client

	last                map[string][]balance.Endpoint // what each name gave last
	refreshes, failures atomic.Int64
	cancel              context.CancelFunc
	done                chan struct{}
}

// dnsName is an A/AAAA name, with the port and weight its endpoints get.
type dnsName struct {
	host, port string
	weight     int
}

func newDiscovery(d *config.DNS) (*discovery, error) {
	r := &discovery{refresh: time.Duration(d.Refresh), v4: d.Family != "ipv6", v6: d.Family != "ipv4",
		last: make(map[string][]balance.Endpoint)}
	if r.refresh <= 0 {
		r.refresh = defaultRefresh
	}
	r.refresh = max(r.refresh, minRefresh)
	r.wait = r.refresh
	for _, n := range d.Names {
		addr, w, err := config.ParseEndpoint(n)
		if err != nil {
			return nil, err
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		r.names = append(r.names, dnsName{dns.Fqdn(host), port, w})
	}
	for _, n := range d.SRV {
		r.srv = append(r.srv, dns.Fqdn(n))
	}
	for _, s := range d.Nameservers {
		if _, err := netip.ParseAddr(s); err == nil {
			s = net.JoinHostPort(s, "53")
		}
		r.servers = append(r.servers, s)
	}
	if len(r.servers) == 0 {
		cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("no nameservers given, and %w", err)
		}
		for _, s := range cc.Servers {
			r.servers = append(r.servers, net.JoinHostPort(s, cc.Port))
		}
	}
	r.client.Timeout = lookupTimeout
	return r, nil
}

// start looks the names up once, then again whenever the shortest TTL
// (within [minRefresh, refresh]) has passed, until stop.
func (r *discovery) start(c *Cluster) {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel, r.done = cancel, make(chan struct{})
	wait := r.update(ctx, c, startBudget)
	go func() {
		defer close(r.done)
		t := time.NewTimer(wait)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				t.Reset(r.update(ctx, c, refreshBudget))
			}
		}
	}()
}

func (r *discovery) stop() {
	r.cancel()
	<-r.done
}

// update looks the names up and swaps the answer in, and returns how long
// to wait before the next lookup. A name whose lookup fails or answers
// nothing keeps the endpoints it gave last; if none answers, the cluster
// keeps what it has.
func (r *discovery) update(ctx context.Context, c *Cluster, budget time.Duration) time.Duration {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	eps, ttl, answered, err := r.lookup(ctx)
	if err != nil && ctx.Err() != context.Canceled {
		r.failures.Add(1)
		c.logger.Warn("dns lookup failed; keeping what the failed names gave last", "err", err,
			"endpoints", len(c.set.Load().eps))
	}
	if !answered || len(eps) == 0 {
		return min(r.wait, retryFailed)
	}
	if err == nil {
		r.refreshes.Add(1)
	}
	if c.swap(append(slices.Clip(c.static), eps...)) {
		names := make([]string, len(eps))
		for i, e := range eps {
			names[i] = e.Name + " weight=" + strconv.Itoa(e.Weight)
		}
		c.logger.Info("endpoints from dns", "endpoints", strings.Join(names, ", "))
	}
	r.wait = min(max(ttl, minRefresh), r.refresh)
	if err != nil {
		return min(r.wait, retryFailed)
	}
	return r.wait
}

// lookup returns the endpoints the names give now, sorted, at most
// maxEndpoints of them, and the shortest TTL of the records that gave
// them. A name that fails, or answers nothing, gives what it gave last,
// and its error is returned; answered reports whether any name answered.
func (r *discovery) lookup(ctx context.Context) (eps []balance.Endpoint, ttl time.Duration, answered bool, err error) {
	ttl = r.refresh
	var errs []error
	use := func(key string, got []balance.Endpoint, t time.Duration, e error) {
		if e == nil && len(got) == 0 {
			e = fmt.Errorf("%s: no addresses", key)
		}
		if e != nil {
			errs = append(errs, e)
			got = r.last[key]
		} else {
			answered = true
			r.last[key] = got
			ttl = min(ttl, t)
		}
		eps = append(eps, got...)
	}
	for _, n := range r.names {
		ips, t, e := r.addrs(ctx, n.host, nil)
		var got []balance.Endpoint
		for _, ip := range ips {
			got = append(got, balance.Endpoint{Name: net.JoinHostPort(ip.String(), n.port), Weight: n.weight})
		}
		use(n.host+":"+n.port, got, t, e)
	}
	for _, name := range r.srv {
		got, t, e := r.lookupSRV(ctx, name)
		use(name, got, t, e)
	}
	slices.SortFunc(eps, func(a, b balance.Endpoint) int { return strings.Compare(a.Name, b.Name) })
	eps = slices.CompactFunc(eps, func(a, b balance.Endpoint) bool { return a.Name == b.Name })
	if len(eps) > maxEndpoints {
		errs = append(errs, fmt.Errorf("%d endpoints: the first %d are used", len(eps), maxEndpoints))
		eps = eps[:maxEndpoints]
	}
	return eps, ttl, answered, errors.Join(errs...)
}

// lookupSRV returns the endpoints of SRV name: its targets of the lowest
// priority (RFC 2782), at most maxTargets, on the records' ports with
// their weights (0 counts as 1; scaled down to at most maxWeight, as a
// config's are bounded).
func (r *discovery) lookupSRV(ctx context.Context, name string) ([]balance.Endpoint, time.Duration, error) {
	m, err := r.query(ctx, name, dns.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	owner, ttl := follow(m.Answer, name, r.refresh)
	var srvs []*dns.SRV
	for _, rr := range m.Answer {
		if s, ok := rr.(*dns.SRV); ok && strings.EqualFold(s.Hdr.Name, owner) && s.Target != "." {
			srvs = append(srvs, s)
			ttl = min(ttl, time.Duration(s.Hdr.Ttl)*time.Second)
		}
	}
	if len(srvs) == 0 {
		return nil, ttl, nil
	}
	lowest := slices.MinFunc(srvs, func(a, b *dns.SRV) int { return int(a.Priority) - int(b.Priority) }).Priority
	srvs = slices.DeleteFunc(srvs, func(s *dns.SRV) bool { return s.Priority != lowest })
	if len(srvs) > maxTargets {
		srvs = srvs[:maxTargets]
	}
	top := int(slices.MaxFunc(srvs, func(a, b *dns.SRV) int { return int(a.Weight) - int(b.Weight) }).Weight)
	var eps []balance.Endpoint
	for _, s := range srvs {
		ips, t, err := r.addrs(ctx, s.Target, m.Extra)
		if err != nil {
			return nil, 0, err
		}
		ttl = min(ttl, t)
		w := max(int(s.Weight), 1)
		if top > maxWeight {
			w = max(w*maxWeight/top, 1)
		}
		for _, ip := range ips {
			eps = append(eps, balance.Endpoint{Name: net.JoinHostPort(ip.String(), strconv.Itoa(int(s.Port))), Weight: w})
		}
	}
	return eps, ttl, nil
}

// follow returns the name the CNAME records among rrs lead name to (at
// most 8 of them), and the shortest of their TTLs and ttl.
func follow(rrs []dns.RR, name string, ttl time.Duration) (string, time.Duration) {
	for range 8 {
		next := ""
		for _, rr := range rrs {
			if c, ok := rr.(*dns.CNAME); ok && strings.EqualFold(c.Hdr.Name, name) {
				next = c.Target
				ttl = min(ttl, time.Duration(c.Hdr.Ttl)*time.Second)
				break
			}
		}
		if next == "" {
			break
		}
		name = next
	}
	return name, ttl
}

// addrs returns host's A and AAAA addresses (as the family allows), from
// extra (an SRV answer's additional records) if they are there, and the
// shortest TTL among them. One family failing is no failure while the
// other answers (a nameserver that mishandles AAAA, say).
func (r *discovery) addrs(ctx context.Context, host string, extra []dns.RR) ([]netip.Addr, time.Duration, error) {
	ttl := r.refresh
	var ips []netip.Addr
	collect := func(rrs []dns.RR, owner string) {
		for _, rr := range rrs {
			if !strings.EqualFold(rr.Header().Name, owner) {
				continue
			}
			var ip net.IP
			switch a := rr.(type) {
			case *dns.A:
				ip = a.A
			case *dns.AAAA:
				ip = a.AAAA
			}
			if addr, ok := netip.AddrFromSlice(ip); ok && (addr.Unmap().Is4() && r.v4 || !addr.Unmap().Is4() && r.v6) {
				ips = append(ips, addr.Unmap())
				ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
			}
		}
	}
	if collect(extra, host); len(ips) > 0 {
		return ips, ttl, nil
	}
	var errs []error
	answered := false
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		if t == dns.TypeA && !r.v4 || t == dns.TypeAAAA && !r.v6 {
			continue
		}
		m, err := r.query(ctx, host, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		answered = true
		owner, t := follow(m.Answer, host, ttl)
		ttl = t
		collect(m.Answer, owner)
	}
	if !answered {
		return nil, 0, errors.Join(errs...)
	}
	return ips, ttl, nil
}

// query asks the nameservers in turn for name's records of type t, over
// TCP when a UDP answer was truncated. NXDOMAIN is an empty answer.
func (r *discovery) query(ctx context.Context, name string, t uint16) (*dns.Msg, error) {
	q := new(dns.Msg)
	q.SetQuestion(name, t)
	var err error
	for _, s := range r.servers {
		var m *dns.Msg
		m, _, err = r.client.ExchangeContext(ctx, q, s)
		if err == nil && m.Truncated {
			tcp := r.client
			tcp.Net = "tcp"
			m, _, err = tcp.ExchangeContext(ctx, q, s)
		}
		switch {
		case err != nil:
			err = fmt.Errorf("%s %s at %s: %w", dns.TypeToString[t], name, s, err)
		case m.Rcode != dns.RcodeSuccess && m.Rcode != dns.RcodeNameError:
			err = fmt.Errorf("%s %s at %s: %s", dns.TypeToString[t], name, s, dns.RcodeToString[m.Rcode])
		default:
			return m, nil
		}
	}
	return nil, err
}
