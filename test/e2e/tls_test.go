package e2e

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// testCA makes certificates for tests: ECDSA P-256, signed by one CA.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
	pool *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "strait test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	return ca
}

// issue writes a certificate for names, with serial, and its key, into
// dir as NAME.pem and NAME.key, and returns their paths.
func (ca *testCA) issue(t *testing.T, dir, file string, serial int64, names ...string) (string, string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	certPath, keyPath := filepath.Join(dir, file+".pem"), filepath.Join(dir, file+".key")
	// Written whole, then renamed: a reload never sees half a file.
	for path, data := range map[string][]byte{
		certPath: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPath:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}),
	} {
		if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
	return certPath, keyPath
}

// TestTLSTermination: certificates chosen by SNI (exact, wildcard,
// default), TLS 1.0 and 1.1 and non-ECDHE ciphers refused, ALPN, session
// resumption, curl as a client, pipelined requests, plain HTTP answered
// 400, a stalled handshake timed out, broken handshakes leaking nothing,
// and a certificate replaced on disk served within a second or two while
// open connections go on.
func TestTLSTermination(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	defCert, defKey := ca.issue(t, dir, "default", 10, "default.test")
	aCert, aKey := ca.issue(t, dir, "a", 11, "a.test")
	bCert, bKey := ca.issue(t, dir, "b", 12, "*.b.test")
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "proto="+r.Header.Get("X-Forwarded-Proto"))
	}))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, dir, "tls.yaml", fmt.Sprintf(`listeners:
  - name: web
    address: %s
    tls:
      certificates: [{cert: %s, key: %s}, {cert: %s, key: %s}, {cert: %s, key: %s}]
      handshake_timeout: 500ms
    routes: [{cluster: o}]
clusters: [{name: o, endpoints: [%q]}]
`, addr, defCert, defKey, aCert, aKey, bCert, bKey, origin), addr)
	api := "http://" + adminAddrOf(t, p)

	dial := func(cfg *tls.Config) (*tls.Conn, error) {
		if cfg.RootCAs == nil {
			cfg.RootCAs = ca.pool
		}
		return tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	}
	for sni, want := range map[string]string{"a.test": "a.test", "x.b.test": "*.b.test", "other.test": "default.test", "": "default.test"} {
		c, err := dial(&tls.Config{ServerName: sni, InsecureSkipVerify: sni == "" || sni == "other.test", NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatalf("SNI %q: %v", sni, err)
		}
		st := c.ConnectionState()
		if got := st.PeerCertificates[0].DNSNames[0]; got != want {
			t.Errorf("SNI %q: certificate for %s, want %s", sni, got, want)
		}
		if st.NegotiatedProtocol != "http/1.1" {
			t.Errorf("SNI %q: ALPN %q", sni, st.NegotiatedProtocol)
		}
		c.Close()
	}
	for name, cfg := range map[string]*tls.Config{
		"TLS 1.0":          {ServerName: "a.test", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS10},
		"TLS 1.1":          {ServerName: "a.test", MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11},
		"TLS 1.2 no ECDHE": {ServerName: "a.test", MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}},
		"TLS 1.2 CBC":      {ServerName: "a.test", MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}},
	} {
		if c, err := dial(cfg); err == nil {
			c.Close()
			t.Errorf("%s: accepted", name)
		}
	}
	// Resumption: the second connection resumes the first's session.
	cache := tls.NewLRUClientSessionCache(4)
	for i := range 2 {
		c, err := dial(&tls.Config{ServerName: "a.test", ClientSessionCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		// A TLS 1.3 ticket comes after the handshake: read the response.
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 100))
		if string(body) != "proto=https" {
			t.Errorf("the origin saw %q, want proto=https", body)
		}
		if resumed := c.ConnectionState().DidResume; resumed != (i == 1) {
			t.Errorf("connection %d: resumed %v", i, resumed)
		}
		c.Close()
	}

	// curl, and two pipelined requests in one write.
	_, port, _ := net.SplitHostPort(addr)
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	r := mustCurl(t, "-sS", "--cacert", caFile, "--resolve", "a.test:"+port+":127.0.0.1", "https://a.test:"+port+"/")
	if string(r.Stdout) != "proto=https" {
		t.Errorf("curl: %q", r.Stdout)
	}
	c, err := dial(&tls.Config{ServerName: "a.test"})
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "GET /1 HTTP/1.1\r\nHost: a.test\r\n\r\nGET /2 HTTP/1.1\r\nHost: a.test\r\n\r\n")
	br := bufio.NewReader(c)
	for i := range 2 {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("pipelined response %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
	}

	// A Host served by another certificate than the SNI's: 421.
	for _, tc := range []struct {
		sni, host string
		want      int
	}{
		{"a.test", "a.test:" + port, 200},
		{"a.test", "x.b.test", 421},
		{"x.b.test", "y.b.test", 200}, // one wildcard certificate
		{"", "default.test", 200},
		{"", "a.test", 421},
	} {
		hc, err := dial(&tls.Config{ServerName: tc.sni, InsecureSkipVerify: tc.sni == ""})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(hc, "GET / HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
		hc.SetReadDeadline(time.Now().Add(3 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(hc), nil)
		if err != nil || resp.StatusCode != tc.want {
			t.Errorf("SNI %q, Host %q: %v %v, want %d", tc.sni, tc.host, resp, err, tc.want)
		}
		hc.Close()
	}

	// Plain HTTP to the TLS port: a clear answer, and a close.
	pc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(pc, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	pc.SetReadDeadline(time.Now().Add(3 * time.Second))
	answer, _ := io.ReadAll(pc)
	pc.Close()
	if !strings.HasPrefix(string(answer), "HTTP/1.1 400") || !strings.Contains(string(answer), "https://") {
		t.Errorf("plain HTTP to the TLS port: %q", answer)
	}

	// Broken handshakes: stalled, garbage, closed half way. Each ends, and
	// leaves no goroutine behind.
	goroutines := func() float64 {
		_, m := adminDo(t, "GET", api+"/metrics", nil)
		return metricValue(m, "go_goroutines")
	}
	stalled, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	stalled.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := stalled.Read(make([]byte, 1)); err != io.EOF || time.Since(start) > 2*time.Second {
		t.Errorf("a stalled handshake: %v after %v, want EOF after about 0.5 s", err, time.Since(start))
	}
	stalled.Close()
	broken := func() float64 {
		for i := range 200 {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if i%2 == 0 {
				nc.Write([]byte("\x16\x03\x01\x00\x05garbagegarbage"))
			} else {
				// A real ClientHello's start, then gone.
				tc := tls.Client(nc, &tls.Config{ServerName: "a.test", RootCAs: ca.pool})
				tc.SetDeadline(time.Now().Add(time.Millisecond))
				tc.Handshake()
			}
			nc.Close()
		}
		time.Sleep(time.Second)
		return goroutines()
	}
	// Every broken handshake's connection is closed, and its goroutine
	// gone: what stays is the worker pool's idle goroutines (at most 64)
	// and the connection held open above.
	open := func() float64 {
		_, m := adminDo(t, "GET", api+"/metrics", nil)
		return metricValue(m, "strait_downstream_connections_active", `listener="web"`)
	}
	before, openBefore := goroutines(), open()
	var after float64
	for range 3 {
		after = broken()
	}
	if o := open(); o != openBefore {
		t.Errorf("connections open: %v before 600 broken handshakes, %v after", openBefore, o)
	}
	if after > before+64+2 {
		t.Errorf("goroutines: %v before 600 broken handshakes, %v after", before, after)
	}
	_, m := adminDo(t, "GET", api+"/metrics", nil)
	if v := metricValue(m, "strait_tls_handshakes_total", `reason="failed"`); v < 100 {
		t.Errorf("failed handshakes counted: %v", v)
	}
	if v := metricValue(m, "strait_tls_handshakes_total", `reason="plain_http"`); v != 1 {
		t.Errorf("plain-HTTP handshakes counted: %v", v)
	}
	if v := metricValue(m, "strait_tls_handshakes_total", `reason="timeout"`); v < 1 {
		t.Errorf("timed-out handshakes counted: %v", v)
	}

	// A certificate replaced on disk: new connections get it soon; the
	// open one goes on.
	ca.issue(t, dir, "a", 99, "a.test")
	changed := time.Now()
	for {
		nc, err := dial(&tls.Config{ServerName: "a.test"})
		if err != nil {
			t.Fatal(err)
		}
		serial := nc.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
		nc.Close()
		if serial == 99 {
			break
		}
		if time.Since(changed) > 3*time.Second {
			t.Fatalf("still serial %d %v after the files changed", serial, time.Since(changed))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the new certificate was served %v after the files changed", time.Since(changed).Round(time.Millisecond))
	io.WriteString(c, "GET /3 HTTP/1.1\r\nHost: a.test\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("the connection opened before the reload: %v", err)
	}
	c.Close()
	// A broken file keeps the old certificate.
	os.WriteFile(aCert, []byte("not a certificate"), 0o600)
	time.Sleep(1500 * time.Millisecond)
	nc, err := dial(&tls.Config{ServerName: "a.test"})
	if err != nil {
		t.Fatalf("after a broken file: %v", err)
	}
	if serial := nc.ConnectionState().PeerCertificates[0].SerialNumber.Int64(); serial != 99 {
		t.Errorf("after a broken file, serial %d, want the last good 99", serial)
	}
	nc.Close()
	if !strings.Contains(p.stderr.String(), "do not load") {
		t.Errorf("the broken file was not logged")
	}
}

// TestTLSQuickMode: strait proxy --listen https://… serves TLS with the
// certificate given; the flags go together.
func TestTLSQuickMode(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "q", 5, "q.test")
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startProc(t, exec.Command(straitBin, "proxy", "--listen", "https://"+addr, "--tls-cert", cert, "--tls-key", key,
		"--upstream", "http://"+origin))
	waitPort(t, addr, 10*time.Second, p.exited)
	_, port, _ := net.SplitHostPort(addr)
	r := mustCurl(t, "-sS", "--cacert", writeFile(t, dir, "ca.pem", ca.pem), "--resolve", "q.test:"+port+":127.0.0.1", "https://q.test:"+port+"/")
	if string(r.Stdout) != "ok" {
		t.Errorf("curl: %q", r.Stdout)
	}
	for _, args := range [][]string{
		{"proxy", "--listen", "https://" + addr, "--upstream", "http://" + origin},
		{"proxy", "--listen", addr, "--tls-cert", cert, "--tls-key", key, "--upstream", "http://" + origin},
	} {
		if _, stderr, code := runStrait(t, args...); code != 2 || !strings.Contains(stderr, "--tls-cert") {
			t.Errorf("%v: exit %d, %q", args, code, stderr)
		}
	}
}

// TestTLSEdges, from an attacker's review: a slow handshake does not eat
// the first request's head timeout; a client over max_conns gets a close
// (a plain-text 503 is garbage to TLS); SIGTERM closes a connection that
// shook hands and sent nothing at once.
func TestTLSEdges(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "e", 7, "e.test")
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := runConfig(t, dir, "e.yaml", fmt.Sprintf(`listeners:
  - address: %s
    tls: {certificates: [{cert: %s, key: %s}], handshake_timeout: 5s}
    routes: [{cluster: o}]
clusters: [{name: o, endpoints: [%q]}]
timeouts: {header: 1s, grace: 10s}
limits: {max_conns: 2}
`, addr, cert, key, origin), addr)
	handshake := func(delay time.Duration) (*tls.Conn, error) {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			return nil, err
		}
		time.Sleep(delay)
		tc := tls.Client(nc, &tls.Config{ServerName: "e.test", RootCAs: ca.pool})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		return tc, tc.Handshake()
	}
	// 1.5 s before the handshake, more than the 1 s head timeout.
	tc, err := handshake(1500 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(tc, "GET / HTTP/1.1\r\nHost: e.test\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(tc), nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("a request after a slow handshake: %v", err)
	}
	// Two connections are the limit: a third is closed, without plain
	// text.
	held, err := handshake(0)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := handshake(0); err == nil {
		c.Close()
		t.Errorf("a connection over max_conns shook hands")
	} else if strings.Contains(err.Error(), "does not look like a TLS handshake") {
		t.Errorf("a connection over max_conns got plain text: %v", err)
	}
	// held has sent nothing: after SIGTERM it may still send a request
	// for timeouts.drain_idle (1 s), then it is closed.
	p.signal(syscall.SIGTERM)
	start := time.Now()
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = held.Read(make([]byte, 1))
	if d := time.Since(start); err == nil || d < 700*time.Millisecond || d > 2*time.Second {
		t.Errorf("a silent connection after SIGTERM: %v after %v, want closed after drain_idle (1s)", err, d)
	}
	tc.Close()
}

// TestTLSValidate: validate loads the certificates run would: a key that
// is not the certificate's is an error, naming the files.
func TestTLSValidate(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, _ := ca.issue(t, dir, "v", 8, "v.test")
	_, otherKey := ca.issue(t, dir, "w", 9, "w.test")
	path := writeFile(t, dir, "v.yaml", []byte(fmt.Sprintf(`listeners:
  - address: 127.0.0.1:1
    tls: {certificates: [{cert: %s, key: %s}]}
    routes: [{cluster: o}]
clusters: [{name: o, endpoints: ["127.0.0.1:2"]}]
`, cert, otherKey)))
	_, stderr, code := runStrait(t, "validate", "-c", path)
	if code != 1 || !strings.Contains(stderr, cert) || !strings.Contains(stderr, "does not match") {
		t.Errorf("a key that is not the certificate's: exit %d, %q", code, stderr)
	}
}

// issueClient writes a client certificate for cn, signed by ca.
func (ca *testCA) issueClient(t *testing.T, dir, file, cn string) tls.Certificate {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn, Organization: []string{"e2e"}},
		DNSNames: []string{cn}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestMutualTLS: with client_auth required, a client without a
// certificate, or with one from another CA, is refused; a good one is
// served, and the origin learns its subject in the configured field, which
// a client cannot send itself. With optional, a client without one is
// served, without the field.
func TestMutualTLS(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "m", 3, "m.test")
	caFile := writeFile(t, dir, "clients.pem", ca.pem)
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // then the trailers are in
		out := "cert=" + strings.Join(r.Header.Values("X-Client-Cert"), "|")
		for k, v := range r.Header {
			if k != "X-Client-Cert" && strings.Contains(strings.ToLower(k), "client") {
				out += " header " + k + "=" + strings.Join(v, "|")
			}
		}
		for k, v := range r.Trailer {
			out += " trailer " + k + "=" + strings.Join(v, "|")
		}
		io.WriteString(w, out)
	}))
	start := func(auth string) string {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		runConfig(t, dir, auth+".yaml", fmt.Sprintf(`listeners:
  - address: %s
    tls: {certificates: [{cert: %s, key: %s}], client_auth: %s, client_ca: %s, client_cert_header: X-Client-Cert}
    routes: [{cluster: o}]
clusters: [{name: o, endpoints: [%q]}]
`, addr, cert, key, auth, caFile, origin), addr)
		return addr
	}
	get := func(addr string, certs []tls.Certificate) (string, error) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
			&tls.Config{ServerName: "m.test", RootCAs: ca.pool, Certificates: certs})
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: m.test\r\nX-Client-Cert: Subject=\"CN=admin\"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil) // TLS 1.3 reports a refusal here
		if err != nil {
			return "", err
		}
		body, _ := io.ReadAll(resp.Body)
		return string(body), nil
	}
	good := []tls.Certificate{ca.issueClient(t, dir, "alice", "alice.e2e")}
	foreign := []tls.Certificate{other.issueClient(t, dir, "mallory", "mallory.e2e")}

	req := start("required")
	if body, err := get(req, nil); err == nil {
		t.Errorf("required, no certificate: served %q", body)
	}
	if body, err := get(req, foreign); err == nil {
		t.Errorf("required, another CA's certificate: served %q", body)
	}
	body, err := get(req, good)
	if want := `cert=Subject="CN=alice.e2e,O=e2e";DNS="alice.e2e"`; err != nil || body != want {
		t.Errorf("required, a good certificate: %q %v, want %q", body, err, want)
	}

	// A forged field in the trailers, or spelt with underscores, does not
	// reach the origin either.
	c, err := tls.Dial("tcp", req, &tls.Config{ServerName: "m.test", RootCAs: ca.pool, Certificates: good})
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(3 * time.Second))
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: m.test\r\nX_Client_Cert: forged\r\nTransfer-Encoding: chunked\r\nTrailer: X-Client-Cert\r\n\r\n"+
		"1\r\na\r\n0\r\nX-Client-Cert: forged-trailer\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := io.ReadAll(resp.Body)
	c.Close()
	if strings.Contains(string(forged), "forged") || !strings.Contains(string(forged), "alice") {
		t.Errorf("a forged field reached the origin: %q", forged)
	}

	opt := start("optional")
	if body, err := get(opt, nil); err != nil || body != "cert=" {
		t.Errorf("optional, no certificate: %q %v, want the client's field removed", body, err)
	}
	if body, err := get(opt, foreign); err == nil {
		t.Errorf("optional, another CA's certificate: served %q", body)
	}
}

// startTLSOrigin starts a Go HTTPS origin with a certificate of ca for
// names, counting the connections it accepts.
func startTLSOrigin(t *testing.T, ca *testCA, dir string, conns *atomic.Int32, names ...string) string {
	cert, key := ca.issue(t, dir, "origin-"+names[0], 20, names...)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "tls-origin "+r.TLS.ServerName)
	}), ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestTLSUpstream: a cluster with tls verifies its endpoints against its
// CA and the name it is given, sends that name as SNI, and reuses its TLS
// connections; a certificate of another CA, or for another name, is a 502;
// insecure_skip_verify takes any, and says so at start.
func TestTLSUpstream(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	dir := t.TempDir()
	var conns atomic.Int32
	origin := startTLSOrigin(t, ca, dir, &conns, "origin.test")
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	otherFile := writeFile(t, dir, "other.pem", other.pem)
	start := func(tlsBlock string) (string, *proc) {
		addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
		p := runConfig(t, dir, "u.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o}]}
clusters:
  - {name: o, endpoints: [%q], tls: %s}
`, addr, origin, tlsBlock), addr)
		return addr, p
	}
	// One client connection: strait releases the upstream connection
	// before it reads the next request on it (a new client connection
	// could come in first, and open a second).
	client := newClient(true)
	get := func(addr string) (int, string) {
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	addr, _ := start(fmt.Sprintf("{ca_file: %s, server_name: origin.test}", caFile))
	for range 5 {
		if code, body := get(addr); code != 200 || body != "tls-origin origin.test" {
			t.Fatalf("through a verified TLS upstream: %d %q", code, body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("5 requests opened %d TLS connections to the origin, want 1 (reused)", n)
	}
	for _, block := range []string{
		fmt.Sprintf("{ca_file: %s, server_name: origin.test}", otherFile), // another CA
		fmt.Sprintf("{ca_file: %s, server_name: wrong.test}", caFile),     // another name
		fmt.Sprintf("{ca_file: %s}", caFile),                              // no name: the IP, which the certificate lacks
	} {
		a, _ := start(block)
		if code, _ := get(a); code != 502 {
			t.Errorf("tls %s: %d, want 502", block, code)
		}
	}
	a, p := start("{insecure_skip_verify: true}")
	if code, _ := get(a); code != 200 {
		t.Errorf("insecure_skip_verify: %d", code)
	}
	if !strings.Contains(p.stderr.String(), "insecure_skip_verify") {
		t.Errorf("insecure_skip_verify was not logged at start")
	}
}

// TestTLSUpstreamExtraBytes: a TLS origin that sends, with its response,
// a second one nobody asked for cannot have it read as the next client's
// answer: the bytes TLS read ahead are looked for before reuse, whether
// they are a whole record or the start of one (its first k bytes come
// with the response, the rest with the next).
func TestTLSUpstreamExtraBytes(t *testing.T) {
	for _, k := range []int{-1, 3, 5, 20} { // -1: the whole record
		t.Run(fmt.Sprintf("k=%d", k), func(t *testing.T) { upstreamExtraBytes(t, k) })
	}
}

func upstreamExtraBytes(t *testing.T, k int) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "x", 30, "x.test")
	pair, _ := tls.LoadX509KeyPair(cert, key)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				hc := &heldConn{Conn: raw}
				c := tls.Server(hc, &tls.Config{Certificates: []tls.Certificate{pair}})
				defer c.Close()
				br := bufio.NewReader(c)
				var rest []byte // of a record sent in part
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					io.Copy(io.Discard, req.Body)
					raw.Write(rest)
					hc.hold = true
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
					answer := len(hc.buf)
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED")
					if k >= 0 {
						rest = append([]byte(nil), hc.buf[answer+k:]...)
						hc.buf = hc.buf[:answer+k]
					}
					// In one TCP write: strait's TLS reads it all at once.
					hc.flush()
				}
			}()
		}
	}()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, dir, "x.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o}]}
clusters:
  - {name: o, endpoints: [%q], tls: {ca_file: %s, server_name: x.test}}
`, addr, ln.Addr().String(), writeFile(t, dir, "ca.pem", ca.pem)), addr)
	for i := range 3 {
		resp, err := newClient(false).Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "first" {
			t.Errorf("client %d got %q, want first", i, body)
		}
		time.Sleep(50 * time.Millisecond) // past the pool's 1 ms before it looks
	}
}

// heldConn holds what is written while hold is set, until flush writes it
// all at once.
type heldConn struct {
	net.Conn
	hold bool
	buf  []byte
}

func (h *heldConn) Write(p []byte) (int, error) {
	if h.hold {
		h.buf = append(h.buf, p...)
		return len(p), nil
	}
	return h.Conn.Write(p)
}

func (h *heldConn) flush() {
	h.hold = false
	h.Conn.Write(h.buf)
	h.buf = h.buf[:0]
}

// anySNICache offers the last session it was given for every server name,
// as a client that resumes across names would.
type anySNICache struct{ s *tls.ClientSessionState }

func (c *anySNICache) Get(string) (*tls.ClientSessionState, bool) { return c.s, c.s != nil }
func (c *anySNICache) Put(_ string, s *tls.ClientSessionState) {
	if s != nil {
		c.s = s
	}
}

// TestTLSSessions: openssl s_client sees TLS 1.3 and 1.2 with ALPN, and
// resumes with -sess_out/-sess_in; TLS 1.0 and 1.1 are refused with a
// protocol_version alert; a ticket resumes only under the SNI it was
// issued for; session_tickets: off makes every handshake a full one.
func TestTLSSessions(t *testing.T) {
	openssl := needTool(t, "openssl")
	ca := newTestCA(t)
	dir := t.TempDir()
	aCert, aKey := ca.issue(t, dir, "a", 11, "a.test")
	bCert, bKey := ca.issue(t, dir, "b", 12, "*.b.test")
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	origin := startGoOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") }))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	noTickets := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, dir, "s.yaml", fmt.Sprintf(`listeners:
  - address: %s
    tls: {certificates: [{cert: %s, key: %s}, {cert: %s, key: %s}]}
    routes: [{cluster: o}]
  - address: %s
    tls: {certificates: [{cert: %s, key: %s}], session_tickets: "off"}
    routes: [{cluster: o}]
clusters: [{name: o, endpoints: [%q]}]
`, addr, aCert, aKey, bCert, bKey, noTickets, aCert, aKey, origin), addr)
	waitPort(t, noTickets, 5*time.Second, nil)

	sClient := func(addr string, args ...string) string {
		t.Helper()
		full := append([]string{"s_client", "-connect", addr, "-servername", "a.test", "-CAfile", caFile, "-ign_eof"}, args...)
		cmd := exec.Command(openssl, full...)
		cmd.Stdin = strings.NewReader("GET / HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n")
		cmd.WaitDelay = time.Second
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	for _, v := range []struct{ flag, name, cipher string }{
		{"-tls1_3", "TLSv1.3", "TLS_AES_128_GCM_SHA256"},
		{"-tls1_2", "TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256"},
	} {
		sess := filepath.Join(dir, v.name+".sess")
		out := sClient(addr, v.flag, "-alpn", "http/1.1", "-sess_out", sess)
		for _, want := range []string{"New, " + v.name + ", Cipher is " + v.cipher, "ALPN protocol: http/1.1", "Verify return code: 0 (ok)", "\r\n\r\nhello"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s: no %q in\n%s", v.name, want, out)
			}
		}
		if out := sClient(addr, v.flag, "-sess_in", sess); !strings.Contains(out, "Reused, "+v.name) || !strings.Contains(out, "hello") {
			t.Errorf("%s: the session was not resumed:\n%s", v.name, out)
		}
		if out := sClient(noTickets, v.flag, "-sess_out", sess); !strings.Contains(out, "New, "+v.name) {
			t.Errorf("%s without tickets: %s", v.name, out)
		}
		if out := sClient(noTickets, v.flag, "-sess_in", sess); !strings.Contains(out, "New, "+v.name) || !strings.Contains(out, "hello") {
			t.Errorf("%s: resumed with session_tickets off:\n%s", v.name, out)
		}
	}
	// Debian's OpenSSL offers 1.0 and 1.1 only at security level 0; the
	// alert is strait's answer (70: protocol_version).
	for _, flag := range []string{"-tls1", "-tls1_1"} {
		if out := sClient(addr, flag, "-cipher", "DEFAULT@SECLEVEL=0"); !strings.Contains(out, "alert protocol version") || strings.Contains(out, "hello") {
			t.Errorf("%s: not refused with protocol_version:\n%s", flag, out)
		}
	}

	// A ticket issued under one SNI does not resume under another, though
	// the client offers it; under its own it does. (Go's client offers a
	// session only for a name its certificate covers, unless it skips
	// verification.)
	cache := &anySNICache{}
	for _, c := range []struct {
		sni    string
		resume bool
	}{{"a.test", false}, {"a.test", true}, {"x.b.test", false}, {"x.b.test", true}, {"a.test", false}} {
		tc, err := tls.Dial("tcp", addr, &tls.Config{ServerName: c.sni, InsecureSkipVerify: true, ClientSessionCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(tc, "GET / HTTP/1.1\r\nHost: "+c.sni+"\r\n\r\n") // the TLS 1.3 ticket comes after the handshake
		tc.SetReadDeadline(time.Now().Add(3 * time.Second))
		if resp, err := http.ReadResponse(bufio.NewReader(tc), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("SNI %s: %v", c.sni, err)
		}
		if st := tc.ConnectionState(); st.DidResume != c.resume {
			t.Errorf("SNI %s: resumed %v, want %v", c.sni, st.DidResume, c.resume)
		}
		tc.Close()
	}
}

// TestTLSUpstreamNginx: nginx over TLS as the origin. A 1 MiB file comes
// through whole; connections are reused, and when nginx closes one (every
// third request), the next resumes its TLS session, under the SNI given.
func TestTLSUpstreamNginx(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "origin", 21, "origin.test")
	caFile := writeFile(t, dir, "ca.pem", ca.pem)
	file := make([]byte, 1<<20)
	rand.Read(file)
	n := startNginxServer(t, map[string][]byte{"f": file},
		`log_format tls '$connection $ssl_session_reused $ssl_protocol $ssl_server_name $request_uri';`,
		" ssl", fmt.Sprintf(`ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 3;
        access_log %s/tls.log tls;`, cert, key, dir))
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runConfig(t, dir, "u.yaml", fmt.Sprintf(`listeners:
  - {address: %s, routes: [{cluster: o}]}
clusters:
  - {name: o, endpoints: [%q], tls: {ca_file: %s, server_name: origin.test}}
`, addr, n.Addr, caFile), addr)
	client := newClient(true)
	want := sha256.Sum256(file)
	const requests = 7
	for i := range requests {
		resp, err := client.Get(fmt.Sprintf("http://%s/f?%d", addr, i))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || sha256.Sum256(body) != want {
			t.Fatalf("request %d: %d, %d bytes, %v", i, resp.StatusCode, len(body), err)
		}
	}
	var lines []string
	for deadline := time.Now().Add(3 * time.Second); len(lines) < requests && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		log, _ := os.ReadFile(filepath.Join(dir, "tls.log"))
		lines = strings.Split(strings.TrimSpace(string(log)), "\n")
	}
	if len(lines) != requests {
		t.Fatalf("nginx logged %d requests, want %d:\n%s", len(lines), requests, strings.Join(lines, "\n"))
	}
	conns := map[string]bool{}
	for i, l := range lines {
		f := strings.Fields(l)
		if len(f) != 5 || f[2] != "TLSv1.3" || f[3] != "origin.test" {
			t.Errorf("request %d: nginx logged %q, want TLSv1.3 with SNI origin.test", i, l)
			continue
		}
		if !conns[f[0]] {
			conns[f[0]] = true
			// A new connection: the first is a full handshake, the
			// others resume.
			if reused := f[1] == "r"; reused != (len(conns) > 1) {
				t.Errorf("connection %d: session reused %q", len(conns), f[1])
			}
		}
	}
	t.Logf("nginx:\n%s", strings.Join(lines, "\n"))
	if len(conns) != 3 {
		t.Errorf("%d requests over %d connections, want 3 (nginx closes after 3)", requests, len(conns))
	}
}
