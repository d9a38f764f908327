package main

import (
	"fmt"
	"path/filepath"
	"strings"
)

// The peers are configured the way an operator tuning for throughput would:
// one worker, keep-alive both ways, no logging. Where a default would make
// a peer reconnect during a 5-second run (nginx's keepalive_requests 1000),
// it is raised, so the comparison is between proxies and not between
// defaults. strait runs on its own defaults.

// nginxArgs starts nginx in the foreground on conf with everything (pid,
// error log, temp paths) inside the temporary directory. -e sends even the
// messages before the config is read to our log, not /var/log/nginx.
func (b *bench) nginxArgs(name, conf string) []string {
	return []string{"-p", b.tmp, "-c", conf, "-e", filepath.Join(b.tmp, name+".log")}
}

// nginxCommon is the part of both nginx configs that is not about serving:
// one worker, enough connections and files for -idle, and private paths.
func (b *bench) nginxCommon(name string) string {
	// worker_connections counts client and upstream connections together.
	conns := b.nofile - 100
	d := b.tmp
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile %d;
pid %s/%s.pid;
error_log %s/%s.log warn;
events {
    worker_connections %d;
}
`, b.nofile, d, name, d, name, conns) + fmt.Sprintf(`http {
    access_log off;
    client_body_temp_path %[1]s/%[2]s-client_body;
    proxy_temp_path %[1]s/%[2]s-proxy;
    fastcgi_temp_path %[1]s/%[2]s-fastcgi;
    uwsgi_temp_path %[1]s/%[2]s-uwsgi;
    scgi_temp_path %[1]s/%[2]s-scgi;
    # nginx's default (1000 since 1.19.10) would close each wrk connection
    # every 1000 requests; HAProxy and httputil have no such limit.
    keepalive_requests 1000000;
    keepalive_timeout 300s;
`, d, name)
}

// originConf serves the payload files on the originPorts ports, and
// stub_status on another port so the harness can count the connections the
// origin accepted in a run (on all its ports): that is how it sees whether
// a proxy pools its upstream connections.
func (b *bench) originConf(www string) string {
	var listens string
	for _, p := range b.oports {
		listens += fmt.Sprintf("        listen 127.0.0.1:%d;\n", p)
	}
	return b.nginxCommon("origin") + fmt.Sprintf(`
    default_type application/octet-stream;
    sendfile on;
    # The origin shares CPU 1 with wrk: keep the file descriptors open so
    # each request costs it no open/fstat/close.
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    server {
%s        root %s;
        location / { }
    }
    server {
        listen 127.0.0.1:%d http2;
        root %s;
        location / { }
    }
    server {
        listen 127.0.0.1:%d;
        location = /status { stub_status; }
    }
}
`, listens, www, b.o2port, www, b.sport)
}

// originPorts is how many ports the origin serves its files on: the
// endpoints of the strait-* targets' cluster, so that a balancing policy
// has real choices. One nginx worker serves them all, on the load CPU as
// before; the single-upstream targets use the first.
const originPorts = 3

// straitBalanceConf is strait's config for a strait-* target: one
// listener, one route, one cluster over the origin's ports balanced by
// policy. Everything else is strait's defaults, as in strait proxy (access
// log off). ring_hash and maglev hash their default key, the client's
// address: wrk connects from 127.0.0.1 only, so every request hashes the
// same key (the hash and the lookup are paid on each request) and goes to
// the same endpoint.
func (b *bench) straitBalanceConf(port int, policy string) string {
	return b.straitReloadConf(port, policy, "", "75s")
}

// straitReloadConf is straitBalanceConf with a route that answers path
// itself ahead of the cluster's (none if path is empty), and
// timeouts.idle: what strait-reload and strait-reload-server change.
func (b *bench) straitReloadConf(port int, policy, path, idle string) string {
	route := ""
	if path != "" {
		route = fmt.Sprintf("      - {path: %s, respond: {status: 200, body: reloaded}}\n", path)
	}
	var eps strings.Builder
	for _, p := range b.oports {
		fmt.Fprintf(&eps, "      - 127.0.0.1:%d\n", p)
	}
	return fmt.Sprintf(`# written by bench: strait run -c THIS
listeners:
  - address: 127.0.0.1:%d
    routes:
%s      - cluster: origin

clusters:
  - name: origin
    balance: %s
    endpoints:
%s
timeouts: {idle: %s}
admin: {address: off}
`, port, route, policy, eps.String(), idle)
}

// nginxProxyConf is nginx as a reverse proxy with a pooled upstream.
func (b *bench) nginxProxyConf(port int) string {
	return b.nginxProxy("nginx", fmt.Sprintf("listen 127.0.0.1:%d;", port))
}

// nginxProxyConfTLS is nginxProxyConf terminating TLS with the run's
// certificate (TLS 1.2 and 1.3, nginx's session defaults); the upstream
// side is the same plain HTTP.
func (b *bench) nginxProxyConfTLS(port int, certs tlsFiles) string {
	listen := fmt.Sprintf(`listen 127.0.0.1:%d ssl http2;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;`, port, certs.cert, certs.key)
	if b.cfg.noTickets {
		// nginx's session cache is off by default (none): no tickets
		// means no resumption.
		listen += "\n        ssl_session_tickets off;"
	}
	return b.nginxProxy("nginx-tls", listen)
}

// nginxProxy is the proxy config of nginx and nginx-tls, which differ only
// in the listen directives.
func (b *bench) nginxProxy(name, listen string) string {
	return b.nginxCommon(name) + fmt.Sprintf(`
    upstream origin {
        server 127.0.0.1:%d;
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        %s
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
`, b.oport, listen)
}

// haproxyConf is HAProxy in HTTP mode with server-side connection reuse.
func (b *bench) haproxyConf(port int) string {
	return b.haproxy(fmt.Sprintf("bind 127.0.0.1:%d", port))
}

// haproxyConfTLS is haproxyConf terminating TLS with the run's
// certificate and key in one PEM file, as crt wants; the backend is the
// same plain HTTP.
func (b *bench) haproxyConfTLS(port int, certs tlsFiles) string {
	bind := fmt.Sprintf("bind 127.0.0.1:%d ssl crt %s alpn h2,http/1.1", port, certs.both)
	if b.cfg.noTickets {
		// And tune.ssl.cachesize 0 (haproxy): OpenSSL's stateful TLS 1.3
		// tickets live in the session cache.
		bind += " no-tls-tickets"
	}
	return b.haproxy(bind)
}

// nginxProxyConfH2C and haproxyConfH2C serve h2c with prior knowledge
// (and HTTP/2 only) on port, to the same HTTP/1.1 upstream.
func (b *bench) nginxProxyConfH2C(port int) string {
	return b.nginxProxy("nginx-h2c", fmt.Sprintf("listen 127.0.0.1:%d http2;", port))
}

func (b *bench) haproxyConfH2C(port int) string {
	return b.haproxy(fmt.Sprintf("bind 127.0.0.1:%d proto h2", port))
}

// nginxProxyConfH2Up is nginx to the origin's HTTP/2 port: grpc_pass is
// its only HTTP/2 upstream, and carries plain requests as well.
func (b *bench) nginxProxyConfH2Up(port int) string {
	return b.nginxCommon("nginx-h2up") + fmt.Sprintf(`
    upstream origin {
        server 127.0.0.1:%d;
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:%d;
        location / {
            grpc_pass grpc://origin;
        }
    }
}
`, b.o2port, port)
}

// haproxyConfH2Up is HAProxy to the origin's HTTP/2 port (proto h2).
func (b *bench) haproxyConfH2Up(port int) string {
	return strings.Replace(b.haproxy(fmt.Sprintf("bind 127.0.0.1:%d", port)),
		fmt.Sprintf("server origin 127.0.0.1:%d", b.oport), fmt.Sprintf("server origin 127.0.0.1:%d proto h2", b.o2port), 1)
}

// straitTLSConf is strait-tls from a config file, for what the quick mode
// has no flag for: session tickets off.
func (b *bench) straitTLSConf(port int, certs tlsFiles) string {
	return fmt.Sprintf(`# written by bench: strait run -c THIS
listeners:
  - address: 127.0.0.1:%d
    tls: {certificates: [{cert: %s, key: %s}], session_tickets: "off"}
    routes: [{cluster: origin}]
clusters: [{name: origin, endpoints: [127.0.0.1:%d]}]
admin: {address: off}
`, port, certs.cert, certs.key, b.oport)
}

// haproxy is the config of haproxy and haproxy-tls, which differ only in
// the bind line.
func (b *bench) haproxy(bind string) string {
	// maxconn bounds client connections; -idle needs idleConns of them.
	maxconn := max(b.cfg.idleConns+100, 4000)
	cacheSize := ""
	if b.cfg.noTickets {
		cacheSize = "    tune.ssl.cachesize 0"
	}
	return fmt.Sprintf(`global
%s
    nbthread 1
    maxconn %d
    # HAProxy wants ulimit-n >= 2*maxconn and refuses to start if it cannot
    # raise it (a container's hard limit is often 20000). One idle client
    # connection needs one descriptor and the upstream side is pooled, so
    # the limit we have is enough: let it start with a warning.
    no strict-limits

defaults
    mode http
    maxconn %d
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 10s
    timeout http-keep-alive 300s

frontend fe
    %s
    default_backend origin

backend origin
    server origin 127.0.0.1:%d
`, cacheSize, maxconn, maxconn, bind, b.oport)
}
