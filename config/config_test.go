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
			[]string{"f.yaml:4: listeners[0].colour: unknown key (not a field of listener)"}},
		{"bad duration and size", "listeners: [{address: 'a:1', routes: [{cluster: c}]}]\nclusters: [{name: c, endpoints: [a:1]}]\ntimeouts:\n  idle: soon\nlimits:\n  max_request_body: 1TB\n",
			[]string{"f.yaml:4: timeouts.idle: \"soon\" is not a duration", "f.yaml:6: limits.max_request_body: \"1TB\" is not a size"}},
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
