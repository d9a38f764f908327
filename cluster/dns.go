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
	r := &discovery{refresh: time.Duration(d.Refresh), v4: d.Family != "ipv6", v6: d.Family != "ipv4"}
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
	wait := r.update(ctx, c)
	go func() {
		defer close(r.done)
		t := time.NewTimer(wait)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				t.Reset(r.update(ctx, c))
			}
		}
	}()
}

func (r *discovery) stop() {
	r.cancel()
	<-r.done
}

// update looks the names up and swaps the answer in, and returns how long
// to wait before the next lookup.
func (r *discovery) update(ctx context.Context, c *Cluster) time.Duration {
	eps, ttl, err := r.lookup(ctx)
	if err == nil && len(eps) == 0 {
		err = errors.New("no addresses in the answers")
	}
	if err != nil {
		if ctx.Err() == nil {
			r.failures.Add(1)
			c.logger.Warn("dns lookup failed; keeping the endpoints the cluster has", "err", err,
				"endpoints", len(c.set.Load().eps))
		}
		return min(r.wait, retryFailed)
	}
	r.refreshes.Add(1)
	if c.swap(append(slices.Clip(c.static), eps...)) {
		names := make([]string, len(eps))
		for i, e := range eps {
			names[i] = e.Name + " weight=" + strconv.Itoa(e.Weight)
		}
		c.logger.Info("endpoints from dns", "endpoints", strings.Join(names, ", "))
	}
	r.wait = min(max(ttl, minRefresh), r.refresh)
	return r.wait
}

// lookup returns the endpoints the names give now, sorted, and the
// shortest TTL of the records that gave them.
func (r *discovery) lookup(ctx context.Context) ([]balance.Endpoint, time.Duration, error) {
	ttl := r.refresh
	var eps []balance.Endpoint
	add := func(ips []netip.Addr, port string, weight int) {
		for _, ip := range ips {
			eps = append(eps, balance.Endpoint{Name: net.JoinHostPort(ip.String(), port), Weight: weight})
		}
	}
	for _, n := range r.names {
		ips, t, err := r.addrs(ctx, n.host, nil)
		if err != nil {
			return nil, 0, err
		}
		ttl = min(ttl, t)
		add(ips, n.port, n.weight)
	}
	for _, name := range r.srv {
		m, err := r.query(ctx, name, dns.TypeSRV)
		if err != nil {
			return nil, 0, err
		}
		// RFC 2782: only the targets of the lowest priority are used
		// while any answers; a weight of 0 counts as 1.
		var srvs []*dns.SRV
		for _, rr := range m.Answer {
			if s, ok := rr.(*dns.SRV); ok && s.Target != "." {
				srvs = append(srvs, s)
				ttl = min(ttl, time.Duration(s.Hdr.Ttl)*time.Second)
			}
		}
		if len(srvs) == 0 {
			continue
		}
		lowest := slices.MinFunc(srvs, func(a, b *dns.SRV) int { return int(a.Priority) - int(b.Priority) }).Priority
		for _, s := range srvs {
			if s.Priority != lowest {
				continue
			}
			ips, t, err := r.addrs(ctx, s.Target, m.Extra)
			if err != nil {
				return nil, 0, err
			}
			ttl = min(ttl, t)
			add(ips, strconv.Itoa(int(s.Port)), max(int(s.Weight), 1))
		}
	}
	slices.SortFunc(eps, func(a, b balance.Endpoint) int { return strings.Compare(a.Name, b.Name) })
	eps = slices.CompactFunc(eps, func(a, b balance.Endpoint) bool { return a.Name == b.Name })
	return eps, ttl, nil
}

// addrs returns host's A and AAAA addresses (as the family allows), from
// extra (an SRV answer's additional records) if they are there, and the
// shortest TTL among them.
func (r *discovery) addrs(ctx context.Context, host string, extra []dns.RR) ([]netip.Addr, time.Duration, error) {
	ttl := r.refresh
	var ips []netip.Addr
	collect := func(rrs []dns.RR) {
		for _, rr := range rrs {
			if !strings.EqualFold(rr.Header().Name, host) {
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
	if collect(extra); len(ips) > 0 {
		return ips, ttl, nil
	}
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		if t == dns.TypeA && !r.v4 || t == dns.TypeAAAA && !r.v6 {
			continue
		}
		m, err := r.query(ctx, host, t)
		if err != nil {
			return nil, 0, err
		}
		collect(m.Answer)
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
