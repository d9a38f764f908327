package config

import (
	"strings"
	"testing"
	"time"
)

func TestDefault(t *testing.T) {
	c := Default()
	if len(c.Listeners) != 1 || c.Listeners[0].Address != "127.0.0.1:8080" {
		t.Fatalf("listeners %+v", c.Listeners)
	}
	if len(c.Clusters) != 1 || len(c.Clusters[0].Endpoints) != 2 || len(c.DemoOrigins) != 2 {
		t.Fatalf("clusters %+v demo %+v", c.Clusters, c.DemoOrigins)
	}
}

func TestParseValues(t *testing.T) {
	c, err := Parse("t.yaml", []byte(`
listeners:
  - address: 127.0.0.1:0
    routes: [{host: "*.example.com", path_prefix: /api, cluster: c}]
clusters:
  - name: c
    endpoints: ["[::1]:80", "localhost:81"]
timeouts: {header: 2s, upstream_total: 1m30s}
limits: {max_header_bytes: 32KiB, max_request_body: 1MiB, max_request_line: 512}
forwarding: {trusted_proxies: [10.0.0.0/8, "::1"], forwarded: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(c.Timeouts.Header) != 2*time.Second || time.Duration(c.Timeouts.UpstreamTotal) != 90*time.Second {
		t.Errorf("timeouts %+v", c.Timeouts)
	}
	if c.Limits.MaxHeaderBytes != 32<<10 || c.Limits.MaxRequestBody != 1<<20 || c.Limits.MaxRequestLine != 512 {
		t.Errorf("limits %+v", c.Limits)
	}
	if p, err := ParsePrefix("::1"); err != nil || p.Bits() != 128 {
		t.Errorf("ParsePrefix(::1) = %v, %v", p, err)
	}
}

// TestErrors checks that each problem is reported with file, line and key,
// and that all problems of a file are reported at once.
func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"unknown key", "listeners:\n  - address: 127.0.0.1:80\n    routes: [{cluster: c}]\n    colour: red\nclusters: [{name: c, endpoints: [a:1]}]\n",
			[]string{"f.yaml:4: listeners[0].colour: unknown key (known: name, address, kind, cluster, sni_routes, tcp, udp, proxy_protocol, routes, upgrades, paths, tls, http2)"}},
		{"bad duration and size", "listeners: [{address: 'a:1', routes: [{cluster: c}]}]\nclusters: [{name: c, endpoints: [a:1]}]\ntimeouts:\n  idle: soon\nlimits:\n  max_request_body: 1TB\n",
			[]string{`f.yaml:4: timeouts.idle: want a duration like 10s, 1m30s or 250ms, got "soon"`, `f.yaml:6: limits.max_request_body: want a size like 512, 64KiB or 1MiB, got "1TB"`}},
		{"validation", "listeners:\n  - address: nope\n    routes:\n      - cluster: missing\n        path_prefix: api\nclusters:\n  - name: c\n    endpoints: []\n    balance: fastest\n",
			[]string{
				"f.yaml:2: listeners[0].address: \"nope\" is not host:port",
				"f.yaml:4: listeners[0].routes[0].cluster: no cluster is named \"missing\"",
				"f.yaml:5: listeners[0].routes[0].path_prefix: \"api\" must start with /",
				"f.yaml:8: clusters[0].endpoints: cluster \"c\" has no endpoints",
				"f.yaml:9: clusters[0].balance: unknown policy \"fastest\"",
			}},
		{"duplicates", "listeners:\n  - {address: 'a:1', routes: [{cluster: c}]}\n  - {address: 'a:1', routes: [{cluster: c}]}\nclusters:\n  - {name: c, endpoints: ['b:2']}\n  - {name: c, endpoints: ['b:2']}\n",
			[]string{"f.yaml:3: listeners[1].address: a:1 is used by two listeners", "f.yaml:6: clusters[1].name: cluster \"c\" is defined twice"}},
		{"negative", "listeners: [{address: 'a:1', routes: [{cluster: c}]}]\nclusters: [{name: c, endpoints: [a:1]}]\nlimits:\n  max_conns: -1\n",
			[]string{"f.yaml:4: limits.max_conns: must not be negative"}},
		{"syntax", "listeners: [\n", []string{"f.yaml:1: did not find expected node content"}},
		{"empty", "", []string{"f.yaml: the file is empty"}},
		{"no listeners", "clusters: [{name: c, endpoints: [a:1]}]\n", []string{"listeners: at least one listener is needed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q:\n%s", w, msg)
				}
			}
			if n := strings.Count(msg, "\n") + 1; n != len(tc.want) {
				t.Errorf("%d problems reported, want %d:\n%s", n, len(tc.want), msg)
			}
		})
	}
}

// TestValueErrors checks the messages for values of the wrong type: each
// says in plain words what was wanted and what was found, nothing more is
// said about a value that could not be read, and the problems come in the
// order of their lines.
func TestValueErrors(t *testing.T) {
	const head = "listeners:\n  - address: 127.0.0.1:8080\n    routes:\n      - cluster: web\nclusters:\n  - name: web\n    endpoints: [127.0.0.1:9000]\n"
	for _, tc := range []struct {
		name, yaml string
		want       []string // the whole message, line by line
	}{
		{"word for number", head + "limits: {max_conns: lots}\n",
			[]string{`f.yaml:8: limits.max_conns: want a whole number, got "lots"`}},
		{"fraction for number", head + "limits:\n  max_header_count: 1.5\n",
			[]string{`f.yaml:9: limits.max_header_count: want a whole number, got "1.5"`}},
		{"quoted number", head + "limits:\n  max_attempts: \"3\"\n",
			[]string{`f.yaml:9: limits.max_attempts: want a whole number, got "3"`}},
		{"string for list", "listeners:\n  - address: 127.0.0.1:8080\n    routes: [{cluster: web}]\nclusters:\n  - name: web\n    endpoints: 127.0.0.1:9000\n",
			[]string{`f.yaml:6: clusters[0].endpoints: want a list, got a string`}},
		{"word for bool", head + "access_log: maybe\n",
			[]string{`f.yaml:8: access_log: want true, false, stderr, stdout or a file path (like /var/log/strait/access.log or ./access.log), got "maybe"`}},
		{"mapping for string", "listeners:\n  - address: {host: x}\n    routes: [{cluster: web}]\nclusters: [{name: web, endpoints: [a:1]}]\n",
			[]string{`f.yaml:2: listeners[0].address: want a string, got a mapping`}},
		{"block mapping for string", "listeners:\n  - address:\n      host: x\n    routes: [{cluster: web}]\nclusters: [{name: web, endpoints: [a:1]}]\n",
			[]string{`f.yaml:2: listeners[0].address: want a string, got a mapping`}},
		{"mapping for duration and size", head + "timeouts:\n  header: {s: 1}\nlimits:\n  max_request_body: [1]\n",
			[]string{
				`f.yaml:9: timeouts.header: want a duration like 10s, 1m30s or 250ms, got a mapping`,
				`f.yaml:11: limits.max_request_body: want a size like 512, 64KiB or 1MiB, got a list`,
			}},
		{"string for routes", "listeners:\n  - address: 127.0.0.1:8080\n    routes: x\nclusters: [{name: web, endpoints: [a:1]}]\n",
			[]string{`f.yaml:3: listeners[0].routes: want a list, got a string`}},
		{"list for mapping", head + "timeouts: [1s]\n",
			[]string{`f.yaml:8: timeouts: want a mapping, got a list`}},
		{"number for listeners", "listeners: 5\nclusters: [{name: web, endpoints: [a:1]}]\n",
			[]string{`f.yaml:1: listeners: want a list, got a number`}},
		{"string for cluster", "listeners:\n  - address: 127.0.0.1:8080\n    routes: [{cluster: web}]\nclusters:\n  - web\n",
			[]string{`f.yaml:5: clusters[0]: want a mapping, got a string`}},
		{"unknown cluster beside unreadable endpoints", "listeners:\n  - address: 127.0.0.1:8080\n    routes: [{cluster: nope}]\nclusters:\n  - name: web\n    endpoints: a:1\n",
			[]string{
				`f.yaml:3: listeners[0].routes[0].cluster: no cluster is named "nope"`,
				`f.yaml:6: clusters[0].endpoints: want a list, got a string`,
			}},
		{"list for route cluster", "listeners:\n  - address: 127.0.0.1:8080\n    routes: [{cluster: [web]}]\nclusters: [{name: web, endpoints: [a:1]}]\n",
			[]string{`f.yaml:3: listeners[0].routes[0].cluster: want a string, got a list`}},
		{"dns", "listeners:\n  - address: 127.0.0.1:8080\n    routes: [{cluster: web}]\nclusters:\n  - name: web\n    dns:\n      names: [\"10.0.0.1:80\", \"svc..test:80\", \"svc.test:0\", \"svc.test\"]\n      srv: [\"10.0.0.1\", \"_http._tcp.svc.test\"]\n      nameservers: [\"127.0.0.1:0\", \"ns.example\"]\n      family: ipv5\n",
			[]string{
				`f.yaml:7: clusters[0].dns.names[0]: "10.0.0.1:80": want a DNS name (an IP address belongs in endpoints)`,
				`f.yaml:7: clusters[0].dns.names[1]: "svc..test:80": "svc..test" is not a DNS name`,
				`f.yaml:7: clusters[0].dns.names[2]: "svc.test:0": port 0`,
				`f.yaml:7: clusters[0].dns.names[3]: "svc.test" is not host:port`,
				`f.yaml:8: clusters[0].dns.srv[0]: "10.0.0.1" is not a DNS name`,
				`f.yaml:9: clusters[0].dns.nameservers[0]: want an IP address, or IP:port, got "127.0.0.1:0"`,
				`f.yaml:9: clusters[0].dns.nameservers[1]: want an IP address, or IP:port, got "ns.example"`,
				`f.yaml:10: clusters[0].dns.family: want any or ipv4 or ipv6, got "ipv5"`,
			}},
		{"admin beyond loopback", head + "admin: {address: \"0.0.0.0:9901\", hosts: [\"a b\"]}\n",
			[]string{
				`f.yaml:8: admin.token_file: the admin listener 0.0.0.0:9901 is not on loopback: it needs a token_file`,
				`f.yaml:8: admin.hosts[0]: "a b" is not a host`,
			}},
		{"access log format and fields", head + "access_log_format: clf\naccess_log_fields: [status, latency]\n",
			[]string{
				`f.yaml:8: access_log_format: want json or combined, got "clf"`,
				`f.yaml:9: access_log_fields[1]: unknown field "latency" (known: method, authority, path, proto, status, client, request_id, total_ms, request_read_ms, upstream_dial_ms, upstream_header_ms, bytes_in, bytes_out, upstream, reused, attempts, referer, user_agent, error, error_side)`,
			}},
		{"tracing", head + "tracing: {exporter: zipkin, endpoint: collector, sampling: 1.5, trusted_parents: [10.0.0.0/33]}\n",
			[]string{
				`f.yaml:8: tracing.sampling: want a number from 0 to 1, like 0.05, got "1.5"`,
				`f.yaml:8: tracing.exporter: want otlp_grpc or otlp_http, got "zipkin"`,
				`f.yaml:8: tracing.endpoint: "collector" is not host:port`,
				`f.yaml:8: tracing.trusted_parents[0]: netip.ParsePrefix("10.0.0.0/33"): prefix length out of range`,
			}},
		{"log level", head + "log_level: verbose\n",
			[]string{`f.yaml:8: log_level: want debug or info or warn or error, got "verbose"`}},
		{"listener names", "listeners:\n  - {name: web, address: 127.0.0.1:1, routes: [{cluster: c}]}\n  - {name: web, address: 127.0.0.1:2, routes: [{cluster: c}]}\n  - {name: 127.0.0.1:4, address: 127.0.0.1:3, routes: [{cluster: c}]}\n  - {address: 127.0.0.1:4, routes: [{cluster: c}]}\nclusters: [{name: c, endpoints: [a:1]}]\n",
			[]string{
				`f.yaml:3: listeners[1].name: two listeners are named web (a listener's name, or else its address, labels its metrics)`,
				`f.yaml:5: listeners[3].name: two listeners are named 127.0.0.1:4 (a listener's name, or else its address, labels its metrics)`,
			}},
		{"acme", "listeners:\n  - address: 127.0.0.1:8443\n    routes: [{cluster: c}]\n    tls:\n      acme:\n        names: [a.example., 10.1.2.3, \"::1\", _dmarc.example, \"*.example\", -a.example, ok.example, WWW.Example.COM]\n        storage: /var/lib/strait/acme\n        check_interval: 10ms\n        challenges: [dns-01]\nclusters: [{name: c, endpoints: [a:1]}]\n",
			[]string{
				`f.yaml:6: listeners[0].tls.acme.names[0]: want a host name, like www.example.com (no wildcard: those need DNS-01; no IP address, underscore or final dot), got "a.example."`,
				`f.yaml:6: listeners[0].tls.acme.names[1]: want a host name, like www.example.com (no wildcard: those need DNS-01; no IP address, underscore or final dot), got "10.1.2.3"`,
				`f.yaml:6: listeners[0].tls.acme.names[2]: want a host name, like www.example.com (no wildcard: those need DNS-01; no IP address, underscore or final dot), got "::1"`,
				`f.yaml:6: listeners[0].tls.acme.names[3]: want a host name, like www.example.com (no wildcard: those need DNS-01; no IP address, underscore or final dot), got "_dmarc.example"`,
				`f.yaml:6: listeners[0].tls.acme.names[4]: want a host name, like www.example.com (no wildcard: those need DNS-01; no IP address, underscore or final dot), got "*.example"`,
				`f.yaml:6: listeners[0].tls.acme.names[5]: want a host name, like www.example.com (no wildcard: those need DNS-01; no IP address, underscore or final dot), got "-a.example"`,
				`f.yaml:8: listeners[0].tls.acme.check_interval: want 1s or more, got 10ms`,
				`f.yaml:9: listeners[0].tls.acme.challenges[0]: want http-01 or tls-alpn-01, got "dns-01"`,
			}},
		{"tcp", "listeners:\n  - address: 127.0.0.1:1\n    kind: tcp\n    routes: [{cluster: web}]\n  - address: 127.0.0.1:2\n    kind: tcp\n    cluster: secure\n    sni_routes: [{names: [\"*.a.example\", \"a..b\"], cluster: nope}, {names: [], alpn: [\"\"], cluster: web}]\n    tcp: {idle_timeout: -1s}\n  - address: 127.0.0.1:3\n    kind: udp\n  - address: 127.0.0.1:4\n    cluster: web\n    routes: [{cluster: web}]\nclusters: [{name: web, endpoints: [a:1]}, {name: secure, endpoints: [a:2], tls: {}}]\n",
			[]string{
				`f.yaml:2: listeners[0].cluster: a tcp listener needs the cluster it relays to, or sni_routes`,
				`f.yaml:4: listeners[0].routes: routes is for http listeners: a tcp listener relays bytes to its cluster`,
				`f.yaml:7: listeners[1].cluster: cluster secure has tls or protocol: a tcp listener relays bytes as they are, and would not apply them`,
				`f.yaml:8: listeners[1].sni_routes[0].names[1]: want a host name, or *.example.com for one label more, got "a..b"`,
				`f.yaml:8: listeners[1].sni_routes[0].cluster: no cluster is named "nope"`,
				`f.yaml:8: listeners[1].sni_routes[1].names: an SNI route needs the server names it takes`,
				`f.yaml:8: listeners[1].sni_routes[1].alpn[0]: want an ALPN protocol id, like h2, got ""`,
				`f.yaml:9: listeners[1].tcp: timeouts and max_conns must not be negative`,
				`f.yaml:10: listeners[2].cluster: a udp listener needs the cluster it relays to`,
				`f.yaml:12: listeners[3].kind: cluster, sni_routes, tcp and udp are for listeners of kind tcp or udp; an http listener has routes`,
			}},
		{"udp", "listeners:\n  - address: 127.0.0.1:1\n    kind: udp\n    cluster: names\n    routes: [{cluster: names}]\n    udp: {idle_timeout: -1s, batch_delay: 1s, new_flows_per_prefix: -2}\n  - address: 127.0.0.1:2\n    kind: udp\n    cluster: dns\n  - address: 127.0.0.1:2\n    kind: tcp\n    cluster: dns\n  - address: 127.0.0.1:2\n    kind: udp\n    cluster: secure\n    udp: {sockets: 65}\n  - address: 127.0.0.1:3\n    kind: bogus\nclusters: [{name: names, endpoints: [dns.example:53]}, {name: dns, endpoints: [\"127.0.0.1:53 weight=2\", \"[::1]:53\"]}, {name: secure, endpoints: [127.0.0.1:1], tls: {}}]\n",
			[]string{
				`f.yaml:4: listeners[0].cluster: cluster names: endpoints[0] "dns.example:53": a udp listener's endpoints are IP:port (a name belongs in dns)`,
				`f.yaml:5: listeners[0].routes: routes is not for udp listeners: a udp listener relays datagrams to its cluster`,
				`f.yaml:6: listeners[0].udp: timeouts, max_flows and sockets must not be negative`,
				`f.yaml:6: listeners[0].udp.new_flows_per_prefix: want flows a second, or -1 for no limit`,
				`f.yaml:6: listeners[0].udp.batch_delay: want at most 10ms (it is latency added to each datagram), got 1s`,
				`f.yaml:13: listeners[3].address: 127.0.0.1:2 is used by two listeners`,
				`f.yaml:15: listeners[3].cluster: cluster secure has tls, protocol or proxy_protocol: a udp listener relays datagrams as they are`,
				`f.yaml:16: listeners[3].udp.sockets: want at most 64`,
				`f.yaml:18: listeners[4].kind: want http or tcp or udp, got "bogus"`,
			}},
		{"proxy protocol", "listeners:\n  - address: 127.0.0.1:1\n    proxy_protocol: {trusted: [10.0.0.0/33], timeout: -1s}\n    routes: [{cluster: web}]\n  - address: 127.0.0.1:2\n    proxy_protocol: {}\n    routes: [{cluster: web}]\nclusters:\n  - {name: web, endpoints: [a:1], proxy_protocol: v2}\n  - {name: tcp, endpoints: [a:2], proxy_protocol: v3}\n",
			[]string{
				`f.yaml:3: listeners[0].proxy_protocol.trusted[0]: "10.0.0.0/33" is not a CIDR or address`,
				`f.yaml:3: listeners[0].proxy_protocol.timeout: must not be negative`,
				`f.yaml:6: listeners[1].proxy_protocol.trusted: proxy_protocol needs the proxies it trusts (addresses or CIDRs)`,
				`f.yaml:9: clusters[0].proxy_protocol: cluster web is an HTTP route's: a PROXY header goes on a tcp listener's connections only (HTTP connections are pooled, each carrying many clients' requests)`,
				`f.yaml:10: clusters[1].proxy_protocol: want v1 or v2, got "v3"`,
			}},
		{"list for file", "- a\n- b\n",
			[]string{`f.yaml:1: want a mapping, got a list`}},
		{"twice", head + "limits:\n  max_conns: 1\n  max_conns: 2\n",
			[]string{`f.yaml:10: limits.max_conns: set twice (first on line 9)`}},
		{"unknown key", head + "limits: {max_con: 1}\n",
			[]string{`f.yaml:8: limits.max_con: unknown key (did you mean max_conns?)`}},
		{"in line order", "listeners:\n  - address: 127.0.0.1:8080\n    routes:\n      - cluster: nope\n        pathprefix: /\nclusters: [{name: web, endpoints: [a:1]}]\ntimeouts:\n  header: 10x\n",
			[]string{
				`f.yaml:4: listeners[0].routes[0].cluster: no cluster is named "nope"`,
				`f.yaml:5: listeners[0].routes[0].pathprefix: unknown key (did you mean path_prefix?)`,
				`f.yaml:8: timeouts.header: want a duration like 10s, 1m30s or 250ms, got "10x"`,
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.yaml)
			}
			if got, want := err.Error(), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestAliases checks that YAML anchors, aliases and merge keys work as
// they do with the YAML library's own decoder.
func TestAliases(t *testing.T) {
	c, err := Parse("f.yaml", []byte(`
clusters:
  - &base {name: a, endpoints: &eps [127.0.0.1:9000, 127.0.0.1:9001]}
  - <<: *base
    name: b
  - {name: c, endpoints: *eps}
listeners:
  - address: 127.0.0.1:8080
    routes: [{cluster: a}, {cluster: b}, {cluster: c}]
`))
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"a", "b", "c"} {
		cl := c.Clusters[i]
		if cl.Name != name || len(cl.Endpoints) != 2 || cl.Endpoints[1] != "127.0.0.1:9001" {
			t.Errorf("clusters[%d] = %+v, want %s with both endpoints", i, cl, name)
		}
	}
}

// TestAliasBomb checks that a file whose aliases expand to millions of
// values is refused quickly with one message, not decoded.
func TestAliasBomb(t *testing.T) {
	const n = 1100 // n*n values: past maxValues
	eps := strings.TrimSuffix(strings.Repeat("a:1,", n), ",")
	refs := strings.TrimSuffix(strings.Repeat("*c,", n), ",")
	yaml := "x: &c {name: c, endpoints: [" + eps + "]}\nclusters: [" + refs + "]\n"
	_, err := Parse("f.yaml", []byte(yaml))
	if err == nil || len(err.(Errors)) != 1 || !strings.Contains(err.Error(), "expands to more than") {
		t.Fatalf("got %.300v, want one message saying the file expands too far", err)
	}
}

func TestUpgrades(t *testing.T) {
	const clusters = "clusters: [{name: c, endpoints: [a:1]}]\n"
	for _, tc := range []struct {
		name, listener string
		want           []string // nil: left to the default
	}{
		{"left out", "{address: 'a:1', routes: [{cluster: c}]}", nil},
		{"empty", "{address: 'a:1', routes: [{cluster: c}], upgrades: ~}", nil},
		{"none", "{address: 'a:1', routes: [{cluster: c}], upgrades: []}", []string{}},
		{"two", "{address: 'a:1', routes: [{cluster: c}], upgrades: [websocket, h2c]}", []string{"websocket", "h2c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("f.yaml", []byte("listeners: ["+tc.listener+"]\n"+clusters))
			if err != nil {
				t.Fatal(err)
			}
			got := c.Listeners[0].Upgrades
			if (got == nil) != (tc.want == nil) || strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Errorf("upgrades %#v, want %#v", got, tc.want)
			}
		})
	}
	_, err := Parse("f.yaml", []byte("listeners:\n  - address: a:1\n    routes: [{cluster: c}]\n    upgrades:\n      - websocket\n      - ''\n      - web socket\n      - h2c/1\n"+clusters))
	want := strings.Join([]string{
		`f.yaml:6: listeners[0].upgrades[1]: want a protocol name (an HTTP token, like websocket), got ""`,
		`f.yaml:7: listeners[0].upgrades[2]: want a protocol name (an HTTP token, like websocket), got "web socket"`,
		`f.yaml:8: listeners[0].upgrades[3]: want a protocol name (an HTTP token, like websocket), got "h2c/1"`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}
}

func TestAccessLog(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want AccessLog
	}{
		{"", ""},
		{"access_log: false", ""},
		{"access_log: true", AccessLogStderr},
		{"access_log: stderr", AccessLogStderr},
		{"access_log: stdout", AccessLogStdout},
		{"access_log: /var/log/strait/access.log", "/var/log/strait/access.log"},
		{"access_log: ./access.log", "./access.log"},
	} {
		c, err := Parse("f.yaml", []byte("listeners: [{address: 'a:1', routes: [{cluster: c}]}]\nclusters: [{name: c, endpoints: [a:1]}]\n"+tc.yaml+"\n"))
		if err != nil {
			t.Errorf("%s: %v", tc.yaml, err)
			continue
		}
		if c.AccessLog != tc.want {
			t.Errorf("%s: %q, want %q", tc.yaml, c.AccessLog, tc.want)
		}
	}
	for _, bad := range []string{"access.log", "[a]", "''"} {
		_, err := Parse("f.yaml", []byte("listeners: [{address: 'a:1', routes: [{cluster: c}]}]\nclusters: [{name: c, endpoints: [a:1]}]\naccess_log: "+bad+"\n"))
		if err == nil || !strings.Contains(err.Error(), "access_log: want true, false") {
			t.Errorf("access_log: %s: got %v, want an error", bad, err)
		}
	}
}

// TestWholeRegexp: a regex matches whole strings only, however it is
// written (\Q quotes to its end; alternatives are tried for the whole).
func TestWholeRegexp(t *testing.T) {
	for _, tc := range []struct {
		expr, s string
		want    bool
	}{
		{`\Q/admin`, "/admin", true},
		{`\Q/admin`, "/admin/x", false},
		{`a|ab`, "ab", true},
		{`/v[0-9]+`, "/v1/x", false},
		{`/v[0-9]+`, "x/v1", false},
	} {
		re, err := WholeRegexp(tc.expr)
		if err != nil {
			t.Fatalf("%q: %v", tc.expr, err)
		}
		if got := re.MatchString(tc.s); got != tc.want {
			t.Errorf("%q on %q: %v, want %v", tc.expr, tc.s, got, tc.want)
		}
	}
}

// TestRouteValidation: routes that could never match, or do two things,
// are refused with their line and key.
func TestRouteValidation(t *testing.T) {
	_, err := Parse("r.yaml", []byte(`listeners:
  - address: 127.0.0.1:1
    routes:
      - {path_prefix: /%61dmin, cluster: c}
      - {path: /a/../b, cluster: c}
      - {path_regex: "(", cluster: c}
      - {cluster: c, respond: {status: 200}}
      - {path_prefix: /s, prefix_rewrite: /p/../x, cluster: c}
clusters:
  - {name: c, endpoints: ["127.0.0.1:2"]}
`))
	want := []string{
		`r.yaml:4: listeners[0].routes[0].path_prefix: "/%61dmin" would never match`,
		`r.yaml:5: listeners[0].routes[1].path: "/a/../b" would never match`,
		`r.yaml:6: listeners[0].routes[2].path_regex: not a valid RE2 regular expression`,
		`r.yaml:7: listeners[0].routes[3]: a route needs one of cluster, redirect and respond`,
		`r.yaml:8: listeners[0].routes[4].prefix_rewrite: "/p/../x" must start with / and be normal`,
	}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("errors lack %q:\n%v", w, err)
		}
	}
}
