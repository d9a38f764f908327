package config

import (
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/straitproxy/strait/internal/grpcwire"
	"go.yaml.in/yaml/v3"
)

// Error is one problem in a config file, with where it is.
type Error struct {
	File string
	Line int    // 0 if the problem has no line (an empty file)
	Key  string // the key's path, e.g. listeners[0].address
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Key != "" {
		b.WriteString(": " + e.Key)
	}
	b.WriteString(": " + e.Msg)
	return b.String()
}

// Errors are all the problems found in one file.
type Errors []*Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes and validates a config; name is used in messages. Unknown
// keys are errors. On error the returned error is an Errors, in the order
// of the file's lines.
func Parse(name string, data []byte) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Errors{yamlError(name, err)}
	}
	if len(root.Content) == 0 {
		return nil, Errors{{File: name, Msg: "the file is empty"}}
	}
	var c Config
	doc := root.Content[0]
	d := decoder{file: name, failed: make(map[string]bool)}
	d.value(doc, doc.Line, reflect.ValueOf(&c).Elem(), nil)
	if d.tooBig != nil {
		return nil, Errors{d.tooBig}
	}
	// Validate what decoded, so that one run lists every problem.
	v := validator{file: name, root: doc, failed: d.failed, errs: d.errs}
	v.config(&c)
	if len(v.errs) > 0 {
		slices.SortStableFunc(v.errs, func(a, b *Error) int { return cmp.Compare(a.Line, b.Line) })
		return nil, v.errs
	}
	return &c, nil
}

var reLine = regexp.MustCompile(`^line (\d+): (.*)$`)

// yamlError turns the YAML library's syntax error into an Error.
func yamlError(name string, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	e := &Error{File: name, Msg: msg}
	if m := reLine.FindStringSubmatch(msg); m != nil {
		e.Line, _ = strconv.Atoi(m[1])
		e.Msg = m[2]
	}
	return e
}

// validator checks a decoded config and finds the line of each key it
// complains about in the YAML tree.
type validator struct {
	file   string
	root   *yaml.Node
	failed map[string]bool // key paths the decoder could not read
	errs   Errors
}

// errorf reports a problem at path, unless path or a key above it could not
// be read: that was reported already, and what follows from it (an empty
// list, a missing name) would only mislead. Path elements are strings
// (mapping keys) and ints (sequence indexes).
func (v *validator) errorf(path []any, format string, args ...any) {
	for i := len(path); i >= 0; i-- {
		if v.failed[keyString(path[:i])] {
			return
		}
	}
	v.errs = append(v.errs, &Error{File: v.file, Line: v.line(path), Key: keyString(path), Msg: fmt.Sprintf(format, args...)})
}

// line finds the line of the deepest node on path that exists.
func (v *validator) line(path []any) int {
	n := v.root
	line := n.Line
	for _, p := range path {
		var next *yaml.Node
		switch p := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if n.Content[i].Value == p {
						line = n.Content[i].Line
						next = n.Content[i+1]
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && p < len(n.Content) {
				next = n.Content[p]
				line = next.Line
			}
		}
		if next == nil {
			break
		}
		n = next
	}
	return line
}

func keyString(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch p := p.(type) {
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(p)
		case int:
			fmt.Fprintf(&b, "[%d]", p)
		}
	}
	return b.String()
}

func at(path []any, more ...any) []any {
	return append(append([]any(nil), path...), more...)
}

// dns checks a cluster's dns block.
func (v *validator) dns(p []any, d *DNS) {
	for j, n := range d.Names {
		addr, _, err := ParseEndpoint(n)
		if err == nil {
			err = checkHostPort(addr)
		}
		if host, port, _ := net.SplitHostPort(addr); err == nil {
			switch {
			case host == "" || isIP(host):
				err = fmt.Errorf("%q: want a DNS name (an IP address belongs in endpoints)", n)
			case !isDomainName(host):
				err = fmt.Errorf("%q: %q is not a DNS name", n, host)
			case port == "0":
				err = fmt.Errorf("%q: port 0", n)
			}
		}
		if err != nil {
			v.errorf(at(p, "names", j), "%v", err)
		}
	}
	for j, n := range d.SRV {
		if !isDomainName(n) || isIP(n) {
			v.errorf(at(p, "srv", j), "%q is not a DNS name", n)
		}
	}
	for j, s := range d.Nameservers {
		if _, err := netip.ParseAddr(s); err != nil {
			if ap, err := netip.ParseAddrPort(s); err != nil || ap.Port() == 0 {
				v.errorf(at(p, "nameservers", j), "want an IP address, or IP:port, got %q", s)
			}
		}
	}
	if d.Refresh < 0 {
		v.errorf(at(p, "refresh"), "must not be negative")
	}
	v.oneOf(at(p, "family"), d.Family, "any", "ipv4", "ipv6")
}

// admin checks the admin block: a listener beyond loopback needs a token.
func (v *validator) admin(a *Admin) {
	p := []any{"admin"}
	if a.Address == "" || a.Address == AdminOff {
		return
	}
	if err := checkHostPort(a.Address); err != nil {
		v.errorf(at(p, "address"), "%v", err)
		return
	}
	if !AdminLoopback(a.Address) && a.TokenFile == "" {
		v.errorf(at(p, "token_file"), "the admin listener %s is not on loopback: it needs a token_file", a.Address)
	}
	for j, h := range a.Hosts {
		if h == "" || strings.ContainsAny(h, " /\r\n") {
			v.errorf(at(p, "hosts", j), "%q is not a host", h)
		}
	}
}

// AdminLoopback reports whether the admin address host:port is on a
// loopback address (or localhost) only.
func AdminLoopback(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

func (v *validator) config(c *Config) {
	clusters := make(map[string]bool)
	// A route may name a cluster whose name could not be read; then an
	// unknown name is no news.
	allNamed := !v.failed["clusters"]
	for i, cl := range c.Clusters {
		p := []any{"clusters", i}
		if v.failed[keyString(p)] || v.failed[keyString(at(p, "name"))] {
			allNamed = false
		}
		switch {
		case cl.Name == "":
			v.errorf(at(p, "name"), "a cluster needs a name")
		case clusters[cl.Name]:
			v.errorf(at(p, "name"), "cluster %q is defined twice", cl.Name)
		}
		clusters[cl.Name] = true
		if d := cl.DNS; len(cl.Endpoints) == 0 && len(d.Names) == 0 && len(d.SRV) == 0 {
			v.errorf(at(p, "endpoints"), "cluster %q has no endpoints, and no dns names or srv", cl.Name)
		}
		v.dns(at(p, "dns"), &cl.DNS)
		if t := cl.TLS; t != nil {
			tp := at(p, "tls")
			if (t.Cert == "") != (t.Key == "") {
				v.errorf(tp, "a client certificate needs both cert and key")
			}
			v.oneOf(at(tp, "min_version"), t.MinVersion, "1.2", "1.3")
		}
		v.oneOf(at(p, "protocol"), cl.Protocol, "h1", "h2", "h2c")
		v.oneOf(at(p, "proxy_protocol"), cl.ProxyProtocol, "v1", "v2")
		switch {
		case cl.Protocol == "h2" && cl.TLS == nil:
			v.errorf(at(p, "protocol"), "h2 is HTTP/2 over TLS: add tls, or use h2c for cleartext")
		case cl.Protocol == "h2c" && cl.TLS != nil:
			v.errorf(at(p, "protocol"), "h2c is HTTP/2 in cleartext: with tls, use h2")
		}
		for j, ep := range cl.Endpoints {
			if _, _, err := ParseEndpoint(ep); err != nil {
				v.errorf(at(p, "endpoints", j), "%v", err)
			}
		}
		if cl.Balance != "" && !slices.Contains(Policies, cl.Balance) {
			v.errorf(at(p, "balance"), "unknown policy %q (known: %s)", cl.Balance, strings.Join(Policies, ", "))
		}
		v.oneOf(at(p, "when_all_ejected"), cl.WhenAllEjected, "panic", "fail")
		v.oneOf(at(p, "outlier", "enabled"), cl.Outlier.Enabled, "on", "off")
		if o := cl.Outlier; o.Failures < 0 || o.BaseEjection < 0 || o.MaxEjection < 0 || o.MaxEjectedPercent < 0 || o.MaxEjectedPercent > 100 {
			v.errorf(at(p, "outlier"), "values must not be negative, and max_ejected_percent at most 100")
		}
		if hc := cl.HealthCheck; !reflect.DeepEqual(hc, HealthCheck{}) {
			hp := at(p, "health_check")
			if hc.Kind != "http" && hc.Kind != "grpc" && hc.Kind != "tcp" {
				v.errorf(at(hp, "kind"), "want http, grpc or tcp, got %q", hc.Kind)
			}
			if hc.Kind == "grpc" && cl.Protocol != "h2c" && cl.Protocol != "h2" {
				v.errorf(at(hp, "kind"), "a grpc health check needs the cluster's protocol h2c or h2")
			}
			if hc.Interval < 0 || hc.Timeout < 0 || hc.Healthy < 0 || hc.Unhealthy < 0 {
				v.errorf(hp, "values must not be negative")
			}
			if hc.Method != "" && !isToken(hc.Method) {
				v.errorf(at(hp, "method"), "%q is not a method", hc.Method)
			}
			if hc.Path != "" && !strings.HasPrefix(hc.Path, "/") || strings.ContainsAny(hc.Path+hc.Host, " \r\n") {
				v.errorf(hp, "path must start with /, and path and host hold no spaces or line breaks")
			}
		}
		if l := cl.Limits; l.MaxRequests < 0 || l.MaxPending < 0 || l.PendingTimeout < 0 {
			v.errorf(at(p, "limits"), "values must not be negative")
		}
		if b := cl.RetryBudget; b.Percent < 0 || b.Percent > 100 || b.Min < 0 {
			v.errorf(at(p, "retry_budget"), "percent must be from 0 to 100, and min not negative")
		}
		for j, st := range cl.RetryOn {
			if st < 500 || st > 599 {
				v.errorf(at(p, "retry_on", j), "want a 5xx status, got %d", st)
			}
		}
		for j, name := range cl.RetryOnGRPC {
			if c, ok := grpcwire.ParseCode(name); !ok || c == grpcwire.OK {
				v.errorf(at(p, "retry_on_grpc", j), "want a gRPC status other than ok (unavailable, 14, ...), got %q", name)
			}
		}
		if cl.HashKey != "" {
			if cl.Balance != "ring_hash" && cl.Balance != "maglev" {
				v.errorf(at(p, "hash_key"), "only ring_hash and maglev hash a key")
			}
			kind, name, _ := strings.Cut(cl.HashKey, ":")
			switch {
			case (kind == "client_addr" || kind == "path") && name == "":
			case (kind == "header" || kind == "cookie" || kind == "query") && name != "":
			default:
				v.errorf(at(p, "hash_key"), "want client_addr, path, header:NAME, cookie:NAME or query:NAME, got %q", cl.HashKey)
			}
		}
	}
	v.admin(&c.Admin)
	if t := c.Tracing; !reflect.DeepEqual(t, Tracing{}) {
		p := []any{"tracing"}
		if !slices.Contains(TracingExporters, t.Exporter) {
			v.errorf(at(p, "exporter"), "want %s, got %q", strings.Join(TracingExporters, " or "), t.Exporter)
		}
		if t.Endpoint != "" {
			if err := checkHostPort(t.Endpoint); err != nil {
				v.errorf(at(p, "endpoint"), "%v", err)
			}
		}
		for j, s := range t.TrustedParents {
			if _, err := ParsePrefix(s); err != nil {
				v.errorf(at(p, "trusted_parents", j), "%v", err)
			}
		}
	}
	v.oneOf([]any{"access_log_format"}, c.AccessLogFormat, AccessLogFormats...)
	v.oneOf([]any{"log_level"}, c.LogLevel, "debug", "info", "warn", "error")
	for j, f := range c.AccessLogFields {
		if !slices.Contains(AccessLogFields, f) {
			v.errorf([]any{"access_log_fields", j}, "unknown field %q (known: %s)", f, strings.Join(AccessLogFields, ", "))
		}
	}
	if len(c.AccessLogFields) > 0 && c.AccessLogFormat == "combined" {
		v.errorf([]any{"access_log_fields"}, "the combined format has fields of its own: choose fields for json only")
	}
	if len(c.Listeners) == 0 {
		v.errorf([]any{"listeners"}, "at least one listener is needed")
	}
	addrs := make(map[string]bool)
	names := make(map[string]bool) // a listener's name, or else its address, labels its metrics
	for i, l := range c.Listeners {
		p := []any{"listeners", i}
		sock := l.Address // UDP's ports are not TCP's
		if l.Kind == "udp" {
			sock = "udp " + l.Address
		}
		dupAddr := addrs[sock]
		if err := checkHostPort(l.Address); err != nil {
			v.errorf(at(p, "address"), "%v", err)
		} else if dupAddr {
			v.errorf(at(p, "address"), "%s is used by two listeners", l.Address)
		}
		addrs[sock] = true
		// A udp listener's metrics are its own: it may share a default
		// name, its address, with a stream listener.
		if name := cmp.Or(l.Name, sock); names[name] && (l.Name != "" || !dupAddr) {
			v.errorf(at(p, "name"), "two listeners are named %s (a listener's name, or else its address, labels its metrics)", name)
		}
		names[cmp.Or(l.Name, sock)] = true
		if pp := l.ProxyProtocol; pp != nil {
			if len(pp.Trusted) == 0 {
				v.errorf(at(p, "proxy_protocol", "trusted"), "proxy_protocol needs the proxies it trusts (addresses or CIDRs)")
			}
			for j, t := range pp.Trusted {
				if _, err := ParsePrefix(t); err != nil {
					v.errorf(at(p, "proxy_protocol", "trusted", j), "%q is not a CIDR or address", t)
				}
			}
			if pp.Timeout < 0 {
				v.errorf(at(p, "proxy_protocol", "timeout"), "must not be negative")
			}
		}
		v.oneOf(at(p, "kind"), l.Kind, "http", "tcp", "udp")
		switch l.Kind {
		case "", "http":
		case "tcp":
			v.tcpListener(p, &l, c)
			continue
		case "udp":
			v.udpListener(p, &l, c)
			continue
		default:
			continue // what else is wrong depends on the kind meant
		}
		if l.Cluster != "" || l.SNIRoutes != nil || l.TCP != (TCPListener{}) || l.UDP != (UDPListener{}) {
			v.errorf(at(p, "kind"), "cluster, sni_routes, tcp and udp are for listeners of kind tcp or udp; an http listener has routes")
		}
		if len(l.Routes) == 0 {
			v.errorf(at(p, "routes"), "listener %s has no routes", l.Address)
		}
		v.oneOf(at(p, "http2"), l.HTTP2, "on", "off", "only")
		if t := l.TLS; t != nil {
			tp := at(p, "tls")
			if len(t.Certificates) == 0 && t.ACME == nil {
				v.errorf(at(tp, "certificates"), "a TLS listener needs at least one certificate, or acme")
			}
			if a := t.ACME; a != nil {
				ap := at(tp, "acme")
				if len(a.Names) == 0 {
					v.errorf(at(ap, "names"), "acme needs the names it may order certificates for")
				}
				for j, n := range a.Names {
					if !isCertName(n) {
						v.errorf(at(ap, "names", j), "want a host name, like www.example.com (no wildcard: those need DNS-01; no IP address, underscore or final dot), got %q", n)
					}
				}
				if a.Storage == "" {
					v.errorf(at(ap, "storage"), "acme needs a storage folder")
				}
				if a.Directory != "" && !strings.HasPrefix(a.Directory, "https://") {
					v.errorf(at(ap, "directory"), "want an https:// URL, got %q", a.Directory)
				}
				for j, ch := range a.Challenges {
					v.oneOf(at(ap, "challenges", j), ch, "http-01", "tls-alpn-01")
				}
				if a.CheckInterval < 0 || a.CheckInterval > 0 && a.CheckInterval < Duration(time.Second) {
					v.errorf(at(ap, "check_interval"), "want 1s or more, got %s", time.Duration(a.CheckInterval))
				}
				if r := a.RenewAt; r.Set && (r.Value <= 0 || r.Value >= 1) {
					v.errorf(at(ap, "renew_at"), "want a part of the lifetime between 0 and 1, like 0.67")
				}
				for _, port := range []struct {
					key string
					n   int
				}{{"http_port", a.HTTPPort}, {"tls_port", a.TLSPort}} {
					if port.n < 0 || port.n > 65535 {
						v.errorf(at(ap, port.key), "want a port, got %d", port.n)
					}
				}
			}
			for j, c := range t.Certificates {
				if c.Cert == "" || c.Key == "" {
					v.errorf(at(tp, "certificates", j), "want both cert and key (PEM files)")
				}
			}
			v.oneOf(at(tp, "min_version"), t.MinVersion, "1.2", "1.3")
			v.oneOf(at(tp, "client_auth"), t.ClientAuth, "none", "optional", "required")
			v.oneOf(at(tp, "session_tickets"), t.SessionTickets, "on", "off")
			if t.ClientAuth != "" && t.ClientAuth != "none" && t.ClientCA == "" {
				v.errorf(at(tp, "client_ca"), "client_auth %s needs a client_ca bundle", t.ClientAuth)
			}
			if h := t.ClientCertHeader; h != "" && !isToken(h) {
				v.errorf(at(tp, "client_cert_header"), "%q is not a field name", h)
			}
			if t.HandshakeTimeout < 0 || t.TicketRotation < 0 {
				v.errorf(tp, "durations must not be negative")
			}
		}
		for j, u := range l.Upgrades {
			if !isToken(u) {
				v.errorf(at(p, "upgrades", j), "want a protocol name (an HTTP token, like websocket), got %q", u)
			}
		}
		v.oneOf(at(p, "paths", "slashes"), l.Paths.Slashes, "merge", "keep")
		v.oneOf(at(p, "paths", "encoded_slashes"), l.Paths.EncodedSlashes, "reject", "keep")
		v.oneOf(at(p, "paths", "forward"), l.Paths.Forward, "normalized", "original")
		for j := range l.Routes {
			v.route(at(p, "routes", j), &l.Routes[j], clusters, allNamed)
		}
	}
	for i, d := range c.DemoOrigins {
		p := []any{"demo_origins", i}
		if d.Name == "" {
			v.errorf(at(p, "name"), "a demo origin needs a name")
		}
		if err := checkHostPort(d.Address); err != nil {
			v.errorf(at(p, "address"), "%v", err)
		}
	}
	v.oneOf([]any{"request_buffering", "over_budget"}, c.RequestBuffering.OverBudget, "stream", "refuse")
	for i, t := range c.Forwarding.TrustedProxies {
		if _, err := ParsePrefix(t); err != nil {
			v.errorf([]any{"forwarding", "trusted_proxies", i}, "%q is not a CIDR or address", t)
		}
	}
	httpClusters := make(map[string]bool)
	for _, l := range c.Listeners {
		for _, r := range l.Routes {
			httpClusters[r.Cluster] = true
		}
	}
	for i, cl := range c.Clusters {
		if cl.ProxyProtocol != "" && httpClusters[cl.Name] {
			v.errorf([]any{"clusters", i, "proxy_protocol"}, "cluster %s is an HTTP route's: a PROXY header goes on a tcp listener's connections only (HTTP connections are pooled, each carrying many clients' requests)", cl.Name)
		}
	}
	v.nonNegative(c)
}

// route checks one route: what it matches, and the one thing it does.
// tcpListener checks a listener of kind tcp: a cluster, and nothing of
// HTTP's.
func (v *validator) tcpListener(p []any, l *Listener, c *Config) {
	tcpCluster := func(p []any, name string) {
		i := slices.IndexFunc(c.Clusters, func(cl Cluster) bool { return cl.Name == name })
		switch {
		case i < 0:
			v.errorf(p, "no cluster is named %q", name)
		case c.Clusters[i].TLS != nil || c.Clusters[i].Protocol != "":
			v.errorf(p, "cluster %s has tls or protocol: a tcp listener relays bytes as they are, and would not apply them", name)
		}
	}
	switch {
	case l.Cluster != "":
		tcpCluster(at(p, "cluster"), l.Cluster)
	case len(l.SNIRoutes) == 0:
		v.errorf(at(p, "cluster"), "a tcp listener needs the cluster it relays to, or sni_routes")
	}
	for j, r := range l.SNIRoutes {
		rp := at(p, "sni_routes", j)
		if len(r.Names) == 0 {
			v.errorf(at(rp, "names"), "an SNI route needs the server names it takes")
		}
		for k, n := range r.Names {
			if !isCertName(strings.TrimPrefix(n, "*.")) {
				v.errorf(at(rp, "names", k), "want a host name, or *.example.com for one label more, got %q", n)
			}
		}
		for k, a := range r.ALPN {
			if a == "" || len(a) > 255 {
				v.errorf(at(rp, "alpn", k), "want an ALPN protocol id, like h2, got %q", a)
			}
		}
		if r.Cluster == "" {
			v.errorf(at(rp, "cluster"), "an SNI route needs a cluster")
		} else {
			tcpCluster(at(rp, "cluster"), r.Cluster)
		}
	}
	for _, k := range []struct {
		key string
		set bool
	}{
		{"routes", l.Routes != nil}, {"tls", l.TLS != nil}, {"http2", l.HTTP2 != ""},
		{"upgrades", l.Upgrades != nil}, {"paths", l.Paths != (Paths{})},
	} {
		if k.set {
			v.errorf(at(p, k.key), "%s is for http listeners: a tcp listener relays bytes to its cluster", k.key)
		}
	}
	if l.TCP.IdleTimeout < 0 || l.TCP.HalfClosedTimeout < 0 || l.TCP.DrainTimeout < 0 || l.TCP.MaxConns < 0 || l.TCP.HelloTimeout < 0 {
		v.errorf(at(p, "tcp"), "timeouts and max_conns must not be negative")
	}
}

// udpListener checks a listener of kind udp.
func (v *validator) udpListener(p []any, l *Listener, c *Config) {
	i := slices.IndexFunc(c.Clusters, func(cl Cluster) bool { return cl.Name == l.Cluster })
	switch {
	case l.Cluster == "":
		v.errorf(at(p, "cluster"), "a udp listener needs the cluster it relays to")
	case i < 0:
		v.errorf(at(p, "cluster"), "no cluster is named %q", l.Cluster)
	case c.Clusters[i].TLS != nil || c.Clusters[i].Protocol != "" || c.Clusters[i].ProxyProtocol != "":
		v.errorf(at(p, "cluster"), "cluster %s has tls, protocol or proxy_protocol: a udp listener relays datagrams as they are", l.Cluster)
	default:
		for j, e := range c.Clusters[i].Endpoints {
			// Looking a name up would stall the loop that relays:
			// names belong in dns discovery.
			hostPort, _, _ := strings.Cut(strings.TrimSpace(e), " ")
			if _, err := netip.ParseAddrPort(hostPort); err != nil {
				v.errorf(at(p, "cluster"), "cluster %s: endpoints[%d] %q: a udp listener's endpoints are IP:port (a name belongs in dns)", l.Cluster, j, e)
			}
		}
	}
	for _, k := range []struct {
		key string
		set bool
	}{
		{"routes", l.Routes != nil}, {"tls", l.TLS != nil}, {"http2", l.HTTP2 != ""}, {"sni_routes", l.SNIRoutes != nil},
		{"upgrades", l.Upgrades != nil}, {"paths", l.Paths != (Paths{})}, {"tcp", l.TCP != (TCPListener{})},
		{"proxy_protocol", l.ProxyProtocol != nil},
	} {
		if k.set {
			v.errorf(at(p, k.key), "%s is not for udp listeners: a udp listener relays datagrams to its cluster", k.key)
		}
	}
	u := &l.UDP
	if u.IdleTimeout < 0 || u.DrainTimeout < 0 || u.MaxFlows < 0 || u.Sockets < 0 || u.BatchDelay != nil && *u.BatchDelay < 0 {
		v.errorf(at(p, "udp"), "timeouts, max_flows and sockets must not be negative")
	}
	if u.NewFlowsPerPrefix < -1 {
		v.errorf(at(p, "udp", "new_flows_per_prefix"), "want flows a second, or -1 for no limit")
	}
	if u.BatchDelay != nil && *u.BatchDelay > Duration(10*time.Millisecond) {
		v.errorf(at(p, "udp", "batch_delay"), "want at most 10ms (it is latency added to each datagram), got %s", time.Duration(*u.BatchDelay))
	}
	if u.Sockets > 64 {
		v.errorf(at(p, "udp", "sockets"), "want at most 64")
	}
	if u.FlowRate < 0 || u.FlowBurst < 0 || u.FlowBurst > 0 && u.FlowRate == 0 {
		v.errorf(at(p, "udp", "flow_rate"), "want datagrams a second (flow_burst goes with it)")
	}
	if x := u.XDP; x != nil {
		if len(x.Interfaces) == 0 {
			v.errorf(at(p, "udp", "xdp", "interfaces"), "name the interfaces the program attaches to: the client-facing and the upstream-facing ones")
		}
		for i, name := range x.Interfaces {
			if name == "" || len(name) > 15 || strings.ContainsAny(name, "/ \t") {
				v.errorf(at(p, "udp", "xdp", "interfaces", i), "%q is not an interface name", name)
			}
		}
		v.oneOf(at(p, "udp", "xdp", "mode"), x.Mode, "native", "generic")
	}
}

func (v *validator) route(p []any, r *Route, clusters map[string]bool, allNamed bool) {
	if h := strings.TrimPrefix(r.Host, "*."); strings.ContainsAny(h, "*/: ") {
		v.errorf(at(p, "host"), "%q is not a host name or *.domain pattern", r.Host)
	}
	paths := 0
	for _, k := range []struct{ key, val string }{{"path", r.Path}, {"path_prefix", r.PathPrefix}} {
		if k.val != "" {
			paths++
			switch {
			case !strings.HasPrefix(k.val, "/"):
				v.errorf(at(p, k.key), "%q must start with /", k.val)
			case !normalPath(k.val):
				v.errorf(at(p, k.key), "%q would never match: paths are matched normalised (decoded, without dot-segments, // or \\)", k.val)
			}
		}
	}
	if r.PathRegex != "" {
		paths++
		v.regex(at(p, "path_regex"), r.PathRegex)
	}
	if paths > 1 {
		v.errorf(p, "set at most one of path, path_prefix and path_regex")
	}
	for i, m := range r.Methods {
		if !isToken(m) {
			v.errorf(at(p, "methods", i), "%q is not a method", m)
		}
	}
	for _, list := range []struct {
		key string
		ms  []FieldMatch
	}{{"headers", r.Headers}, {"query", r.Query}} {
		for i, m := range list.ms {
			mp := at(p, list.key, i)
			if m.Name == "" {
				v.errorf(at(mp, "name"), "a match needs a name")
			}
			if m.Exact != "" && m.Regex != "" {
				v.errorf(mp, "set exact or regex, not both")
			}
			if m.Regex != "" {
				v.regex(at(mp, "regex"), m.Regex)
			}
		}
	}

	// A value that could not be read counts as set: it was reported.
	set := func(key string) bool { return v.failed[keyString(at(p, key))] }
	redirect := r.Redirect != Redirect{} || set("redirect")
	respond := r.Respond != DirectResponse{} || set("respond")
	actions := 0
	for _, on := range []bool{r.Cluster != "" || set("cluster"), redirect, respond} {
		if on {
			actions++
		}
	}
	if actions != 1 {
		v.errorf(p, "a route needs one of cluster, redirect and respond")
	}
	if r.Cluster != "" && !clusters[r.Cluster] && allNamed {
		v.errorf(at(p, "cluster"), "no cluster is named %q", r.Cluster)
	}
	if r.PrefixRewrite != "" || r.Redirect.PrefixRewrite != "" {
		if r.PathPrefix == "" {
			v.errorf(p, "prefix_rewrite needs a path_prefix to replace")
		}
	}
	for _, pr := range []struct {
		key []any
		val string
	}{{at(p, "prefix_rewrite"), r.PrefixRewrite}, {at(p, "redirect", "prefix_rewrite"), r.Redirect.PrefixRewrite}, {at(p, "redirect", "path"), r.Redirect.Path}} {
		if pr.val != "" && (!strings.HasPrefix(pr.val, "/") || !normalPath(pr.val)) {
			v.errorf(pr.key, "%q must start with / and be normal (no %%, \\, dot-segments or //)", pr.val)
		}
	}
	if r.HostRewrite != "" && strings.ContainsAny(r.HostRewrite, "/ \t") {
		v.errorf(at(p, "host_rewrite"), "%q is not host[:port]", r.HostRewrite)
	}
	if (r.PrefixRewrite != "" || r.HostRewrite != "" || !r.RequestHeaders.empty() || !r.ResponseHeaders.empty() ||
		r.Timeouts != RouteTimeouts{} || r.MaxRequestBody != 0 || r.RequestBuffering != "" || r.IdempotencyKey != "") && r.Cluster == "" {
		v.errorf(p, "prefix_rewrite, host_rewrite, header rules, timeouts, max_request_body and request_buffering need a cluster")
	}
	v.oneOf(at(p, "request_buffering"), r.RequestBuffering, "on", "off")
	if g := r.GRPCWeb; g != nil {
		gp := at(p, "grpc_web")
		if r.Cluster == "" {
			v.errorf(gp, "grpc_web needs a cluster")
		}
		if len(g.AllowOrigins) == 0 {
			v.errorf(at(gp, "allow_origins"), "list the origins browsers may call from (\"*\" for any)")
		}
		for j, o := range g.AllowOrigins {
			switch {
			case o == "*" && g.AllowCredentials:
				v.errorf(at(gp, "allow_origins", j), "\"*\" with allow_credentials would let any site call with the user's credentials")
			case o != "*" && !validOrigin(o):
				v.errorf(at(gp, "allow_origins", j), "want scheme://host[:port], got %q", o)
			}
		}
		for _, list := range []struct {
			key   string
			names []string
		}{{"allow_headers", g.AllowHeaders}, {"expose_headers", g.ExposeHeaders}} {
			for j, name := range list.names {
				if !isToken(name) {
					v.errorf(at(gp, list.key, j), "%q is not a field name", name)
				}
			}
		}
		if g.MaxAge < 0 {
			v.errorf(at(gp, "max_age"), "must not be negative")
		}
	}
	if r.IdempotencyKey != "" && !isToken(r.IdempotencyKey) {
		v.errorf(at(p, "idempotency_key"), "%q is not a field name", r.IdempotencyKey)
	}
	t := &r.Timeouts
	for _, d := range []struct {
		key string
		val Duration
	}{{"connect", t.Connect}, {"response_header", t.ResponseHeader}, {"upstream_read", t.UpstreamRead}, {"upstream_total", t.UpstreamTotal}} {
		if d.val < 0 {
			v.errorf(at(p, "timeouts", d.key), "must not be negative")
		}
	}
	v.headerRules(at(p, "request_headers"), &r.RequestHeaders)
	v.headerRules(at(p, "response_headers"), &r.ResponseHeaders)
	if redirect {
		rp := at(p, "redirect")
		switch r.Redirect.Status {
		case 301, 302, 303, 307, 308:
		default:
			v.errorf(at(rp, "status"), "want 301, 302, 303, 307 or 308, got %d", r.Redirect.Status)
		}
		v.oneOf(at(rp, "scheme"), r.Redirect.Scheme, "http", "https")
		if r.Redirect.Path != "" && r.Redirect.PrefixRewrite != "" {
			v.errorf(rp, "set path or prefix_rewrite, not both")
		}
		if strings.ContainsAny(r.Redirect.Host, "/ \t") {
			v.errorf(at(rp, "host"), "%q is not host[:port]", r.Redirect.Host)
		}
	}
	if respond && (r.Respond.Status < 200 || r.Respond.Status > 599) {
		v.errorf(at(p, "respond", "status"), "want a status from 200 to 599, got %d", r.Respond.Status)
	}
}

func (h *HeaderRules) empty() bool { return len(h.Remove)+len(h.Set)+len(h.Add) == 0 }

// variable names a header value may use.
var reVariable = regexp.MustCompile(`\$\{([^}]*)\}`)

func (v *validator) headerRules(p []any, h *HeaderRules) {
	for i, name := range h.Remove {
		if !isToken(name) {
			v.errorf(at(p, "remove", i), "%q is not a field name", name)
		}
	}
	for _, list := range []struct {
		key string
		vs  []HeaderValue
	}{{"set", h.Set}, {"add", h.Add}} {
		for i, hv := range list.vs {
			vp := at(p, list.key, i)
			if !isToken(hv.Name) {
				v.errorf(at(vp, "name"), "%q is not a field name", hv.Name)
			}
			for _, m := range reVariable.FindAllStringSubmatch(hv.Value, -1) {
				switch m[1] {
				case "client_addr", "request_id", "host":
				default:
					v.errorf(at(vp, "value"), "unknown variable ${%s} (known: ${client_addr}, ${request_id}, ${host})", m[1])
				}
			}
			if strings.Count(hv.Value, "${") != len(reVariable.FindAllString(hv.Value, -1)) {
				v.errorf(at(vp, "value"), "${ without }")
			}
			if strings.ContainsAny(hv.Value, "\r\n\x00") {
				v.errorf(at(vp, "value"), "a field value may not hold CR, LF or NUL")
			}
		}
	}
}

func (v *validator) regex(p []any, expr string) {
	if _, err := WholeRegexp(expr); err != nil {
		v.errorf(p, "not a valid RE2 regular expression: %v", err)
	}
}

// WholeRegexp compiles expr (RE2 syntax) to match only whole strings, as
// path_regex and the header and query regex matches do. It anchors the
// parsed expression rather than its text: "\Q...", which quotes to the
// end, would swallow anchors written after it.
func WholeRegexp(expr string) (*regexp.Regexp, error) {
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return nil, err
	}
	whole := &syntax.Regexp{Op: syntax.OpConcat, Sub: []*syntax.Regexp{{Op: syntax.OpBeginText}, re, {Op: syntax.OpEndText}}}
	return regexp.Compile(whole.String())
}

// normalPath reports whether a path a route names is in the form paths are
// matched in (see internal/route.Normalize): no percent-encoding,
// backslash, semicolon-led or dot segment, or double slash. A route naming
// another form would never match.
func normalPath(p string) bool {
	return !strings.ContainsAny(p, "%\\") && !strings.Contains(p, "//") && !strings.Contains(p, "/;") &&
		!strings.Contains(p+"/", "/./") && !strings.Contains(p+"/", "/../")
}

// oneOf checks that val is empty (the default) or one of want.
func (v *validator) oneOf(p []any, val string, want ...string) {
	if val != "" && !slices.Contains(want, val) {
		v.errorf(p, "want %s, got %q", strings.Join(want, " or "), val)
	}
}

func (v *validator) nonNegative(c *Config) {
	check := func(key []any, x int64) {
		if x < 0 {
			v.errorf(key, "must not be negative")
		}
	}
	t := c.Timeouts
	for _, d := range []struct {
		key string
		val Duration
	}{{"header", t.Header}, {"body", t.Body}, {"write", t.Write}, {"idle", t.Idle}, {"connect", t.Connect},
		{"upstream_write", t.UpstreamWrite}, {"response_header", t.ResponseHeader}, {"upstream_read", t.UpstreamRead},
		{"upstream_total", t.UpstreamTotal}, {"tunnel_idle", t.TunnelIdle}, {"grace", t.Grace}, {"drain_delay", t.DrainDelay}, {"drain_idle", t.DrainIdle}} {
		check([]any{"timeouts", d.key}, int64(d.val))
	}
	l := c.Limits
	check([]any{"limits", "max_header_count"}, int64(l.MaxHeaderCount))
	check([]any{"limits", "max_requests_per_conn"}, int64(l.MaxRequestsPerConn))
	check([]any{"limits", "max_conns"}, int64(l.MaxConns))
	check([]any{"limits", "max_conns_per_client"}, int64(l.MaxConnsPerClient))
	check([]any{"limits", "max_attempts"}, int64(l.MaxAttempts))
	check([]any{"upstream_pool", "max_idle_per_endpoint"}, int64(c.Pool.MaxIdlePerEndpoint))
	check([]any{"upstream_pool", "max_idle"}, int64(c.Pool.MaxIdle))
	check([]any{"upstream_pool", "idle_timeout"}, int64(c.Pool.IdleTimeout))
	check([]any{"upstream_pool", "max_lifetime"}, int64(c.Pool.MaxLifetime))
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has an invalid port", s)
	}
	if host == "" {
		return nil // all addresses
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q has an invalid host", s)
	}
	return nil
}

// isDomainName reports whether s is a DNS name of letters, digits,
// hyphens and underscores (SRV labels), labels of 1 to 63 bytes, at most
// 253 in all; one final dot is allowed.
func isDomainName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// isCertName reports whether s is a name an ACME CA issues for: a host
// name of letters, digits and inner hyphens, and not an address.
func isCertName(s string) bool {
	if !isDomainName(s) || strings.HasSuffix(s, ".") || strings.ContainsAny(s, "_*") || isIP(s) {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
	}
	if i := strings.LastIndexByte(s, '.'); strings.Trim(s[i+1:], "0123456789") == "" {
		return false // 10.1.2.3 or 1234: the last label of a name is not all digits
	}
	return true
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// isToken reports whether s is an HTTP token (RFC 9110 §5.6.2).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		ok := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
		if !ok {
			return false
		}
	}
	return true
}

// ParsePrefix parses a CIDR, or a single address as a one-address prefix.
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// validOrigin reports whether o is a serialized origin (RFC 6454):
// scheme://host[:port], with no path.
func validOrigin(o string) bool {
	u, err := url.Parse(o)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" &&
		u.Path == "" && u.RawQuery == "" && u.User == nil && u.Fragment == "" && o == u.Scheme+"://"+u.Host
}
