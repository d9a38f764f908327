package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pebble is Let's Encrypt's test CA, run by a test: its ACME directory,
// and the root its certificates chain to.
type pebble struct {
	dir  string // the directory URL
	mgmt string // the management API's address
	ca   *testCA
	proc *proc
}

// startPebble starts Pebble validating HTTP-01 on httpPort and
// TLS-ALPN-01 on tlsPort of 127.0.0.1 (strait's listeners), issuing
// certificates valid for validity.
func startPebble(t *testing.T, httpPort, tlsPort int, validity time.Duration) *pebble {
	t.Helper()
	return startPebbleAt(t, fmt.Sprintf("127.0.0.1:%d", freePort(t)), newTestCA(t), httpPort, tlsPort, validity)
}

// startPebbleAt is startPebble with its directory at listen, serving its
// API with a certificate of ca's.
func startPebbleAt(t *testing.T, listen string, ca *testCA, httpPort, tlsPort int, validity time.Duration) *pebble {
	t.Helper()
	bin := needTool(t, "pebble")
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "pebble", 99, "localhost")
	mgmt := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf, _ := json.Marshal(map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt,
		"certificate": cert, "privateKey": key,
		"httpPort": httpPort, "tlsPort": tlsPort,
		"profiles": map[string]any{"default": map[string]any{"description": "short", "validityPeriod": int(validity.Seconds())}},
	}})
	path := writeFile(t, dir, "pebble.json", conf)
	cmd := exec.Command(bin, "-config", path)
	// No random refusals of nonces, no sleeps before validations: the test
	// is about strait, not about an ACME client's retries.
	cmd.Env = append(os.Environ(), "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_VA_NOSLEEP=1")
	// Its certificate names localhost, not the address.
	p := &pebble{dir: "https://" + strings.Replace(listen, "127.0.0.1", "localhost", 1) + "/dir",
		mgmt: strings.Replace(mgmt, "127.0.0.1", "localhost", 1), ca: ca}
	p.proc = startProc(t, cmd)
	waitPort(t, listen, 10*time.Second, p.proc.exited)
	waitPort(t, mgmt, 10*time.Second, p.proc.exited)
	return p
}

// roots returns the roots Pebble's certificates chain to.
func (p *pebble) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.ca.pool}}}
	resp, err := c.Get("https://" + p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble's root: %s", b)
	}
	return pool
}

// TestACME gets a certificate from Pebble for an allowed name, answering
// its HTTP-01 validation on strait's plain listener; renews it within
// the test (new connections get the new certificate, an open one goes
// on); orders nothing for a name not allowed; and, restarted with Pebble
// gone, serves the stored certificate.
func TestACME(t *testing.T) {
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tlsPort := freePort(t)
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	var httpPort int
	fmt.Sscanf(httpAddr, "127.0.0.1:%d", &httpPort)
	pb := startPebble(t, httpPort, tlsPort, 40*time.Second)
	dir := t.TempDir()
	storage := filepath.Join(dir, "acme")
	caRoot := filepath.Join(dir, "pebble-api.pem")
	os.WriteFile(caRoot, pb.ca.pem, 0o644)
	yaml := fmt.Sprintf(`listeners:
  - address: %q
    routes: [{respond: {status: 200, body: plain}}]
  - address: %q
    tls:
      acme: {directory: %q, email: ops@example.com, names: [localhost], storage: %q, ca_root: %q,
             http_port: %d, tls_port: %d, renew_at: 0.5, check_interval: 1s}
    routes: [{respond: {status: 200, body: secure}}]
`, httpAddr, tlsAddr, pb.dir, storage, caRoot, httpPort, tlsPort)
	p := runConfig(t, dir, "strait.yaml", yaml, tlsAddr)
	roots := pb.roots(t)
	dial := func(name string) (*tls.Conn, error) {
		return tls.Dial("tcp", tlsAddr, &tls.Config{ServerName: name, RootCAs: roots, NextProtos: []string{"http/1.1"}})
	}
	// The first order.
	var first *x509.Certificate
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := dial("localhost")
		if err == nil {
			first = c.ConnectionState().PeerCertificates[0]
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate from Pebble within 30 s: %v\n%s", err, tail(p.stderr.String(), 30))
		}
		time.Sleep(200 * time.Millisecond)
	}
	res := runCurl(t, "-s", "--cacert", writeRoots(t, dir, pb), "--resolve", "localhost:"+fmt.Sprint(tlsPort)+":127.0.0.1",
		"https://localhost:"+fmt.Sprint(tlsPort)+"/")
	if res.ExitCode != 0 || string(res.Stdout) != "secure" {
		t.Errorf("curl with Pebble's root: exit %d, %q %s", res.ExitCode, res.Stdout, res.Stderr)
	}
	for _, f := range []string{"localhost.crt", "localhost.key"} {
		matches, _ := filepath.Glob(filepath.Join(storage, "certificates", "*", "localhost", f))
		if len(matches) != 1 {
			t.Fatalf("%s not stored: %v", f, matches)
		}
		if fi, err := os.Stat(matches[0]); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", matches[0], fi.Mode().Perm())
		}
	}

	// A name not allowed: no certificate, and no order.
	if c, err := dial("other.example"); err == nil {
		c.Close()
		t.Error("a handshake for a name not allowed succeeded")
	}
	if strings.Contains(pb.proc.stdout.String(), "other.example") {
		t.Error("Pebble saw an order for a name not allowed")
	}

	// Renewal, at half the 40 s lifetime: an open connection goes on.
	open, err := dial("localhost")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	openBR := bufio.NewReader(open)
	get := func() error {
		io.WriteString(open, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
		resp, err := http.ReadResponse(openBR, nil)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := get(); err != nil { // a keep-alive connection from now on
		t.Fatal(err)
	}
	deadline = time.Now().Add(45 * time.Second)
	for {
		c, err := dial("localhost")
		if err == nil {
			serial := c.ConnectionState().PeerCertificates[0].SerialNumber
			c.Close()
			if serial.Cmp(first.SerialNumber) != 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not renewed within 45 s\n%s", tail(p.stderr.String(), 30))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := get(); err != nil {
		t.Errorf("the connection opened before the renewal: %v", err)
	}
	if !strings.Contains(p.stderr.String(), `"msg":"acme: certificate obtained","listener":"`+tlsAddr+`","name":"localhost","renewal":true`) {
		t.Errorf("no log line for the renewal:\n%s", tail(p.stderr.String(), 20))
	}
	_, metrics := adminDo(t, "GET", "http://"+adminAddrOf(t, p)+"/metrics", nil)
	if v := metricValue(metrics, "strait_acme_orders_total", `result="obtained"`); v != 1 {
		t.Errorf("strait_acme_orders_total{result=obtained} = %v, want 1", v)
	}
	if v := metricValue(metrics, "strait_acme_orders_total", `result="renewed"`); v < 1 {
		t.Errorf("strait_acme_orders_total{result=renewed} = %v, want at least 1", v)
	}
	if v := metricValue(metrics, "strait_acme_certificate_expiry_timestamp_seconds", `name="localhost"`); v < float64(time.Now().Unix()) {
		t.Errorf("strait_acme_certificate_expiry_timestamp_seconds = %v, not in the future", v)
	}

	// Pebble gone, strait started again: the stored certificate is served.
	pb.proc.stop()
	p.stop()
	again := runConfig(t, dir, "strait.yaml", yaml, tlsAddr)
	c, err := dial("localhost")
	if err != nil {
		t.Fatalf("with Pebble down, the stored certificate is not served: %v\n%s", err, tail(again.stderr.String(), 10))
	}
	served := c.ConnectionState().PeerCertificates[0].NotAfter
	c.Close()
	_, metrics = adminDo(t, "GET", "http://"+adminAddrOf(t, again)+"/metrics", nil)
	if v := metricValue(metrics, "strait_acme_certificate_expiry_timestamp_seconds", `name="localhost"`); v != float64(served.Unix()) {
		t.Errorf("after a restart, strait_acme_certificate_expiry_timestamp_seconds = %v, want the stored certificate's %d", v, served.Unix())
	}

	// Anyone may send ALPN acme-tls/1 alone: with no validation pending,
	// each is refused, counted, and logged once, not once per handshake.
	const flood = 200
	for range flood {
		c, err := tls.Dial("tcp", tlsAddr, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true, NextProtos: []string{"acme-tls/1"}})
		if err == nil {
			c.Close()
			t.Fatal("an acme-tls/1 handshake with no validation pending succeeded")
		}
	}
	_, metrics = adminDo(t, "GET", "http://"+adminAddrOf(t, again)+"/metrics", nil)
	if v := metricValue(metrics, "strait_acme_challenges_refused_total", ""); v != flood {
		t.Errorf("strait_acme_challenges_refused_total = %v, want %d", v, flood)
	}
	// certmagic's own line for each is "tls-alpn challenge"; strait's is
	// "acme: TLS-ALPN-01 handshake ...".
	if n := strings.Count(again.stderr.String(), "tls-alpn challenge") + strings.Count(again.stderr.String(), "TLS-ALPN-01 handshake"); n != 1 {
		t.Errorf("%d log lines for %d refused acme-tls/1 handshakes, want 1:\n%s", n, flood, tail(again.stderr.String(), 10))
	}
}

// writeRoots writes Pebble's root as a PEM file for curl.
func writeRoots(t *testing.T, dir string, pb *pebble) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pb.ca.pool}}}
	resp, err := c.Get("https://" + pb.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return writeFile(t, dir, "pebble-root.pem", b)
}

// TestACMETLSALPNAndLock: two strait processes share one storage folder
// and order the same name over TLS-ALPN-01 only, answered on their own
// TLS listeners: the storage's lock lets one order it, and both serve the
// certificate.
func TestACMETLSALPNAndLock(t *testing.T) {
	tlsPorts := []int{freePort(t), freePort(t)}
	// Pebble validates on one port: the first process's.
	pb := startPebble(t, freePort(t), tlsPorts[0], time.Hour)
	dir := t.TempDir()
	caRoot := filepath.Join(dir, "pebble-api.pem")
	os.WriteFile(caRoot, pb.ca.pem, 0o644)
	storage := filepath.Join(dir, "acme")
	var procs []*proc
	var yamls []string
	for i, port := range tlsPorts {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		yaml := fmt.Sprintf(`listeners:
  - address: %q
    tls:
      acme: {directory: %q, names: [localhost], storage: %q, ca_root: %q, tls_port: %d, challenges: [tls-alpn-01]}
    routes: [{respond: {status: 200, body: secure}}]
`, addr, pb.dir, storage, caRoot, tlsPorts[0])
		yamls = append(yamls, yaml)
		procs = append(procs, runConfig(t, dir, fmt.Sprintf("strait%d.yaml", i), yaml, addr))
	}
	roots := pb.roots(t)
	for i, port := range tlsPorts {
		deadline := time.Now().Add(40 * time.Second)
		for {
			c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port), &tls.Config{ServerName: "localhost", RootCAs: roots})
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("process %d: no certificate: %v\n%s", i, err, tail(procs[i].stderr.String(), 20))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	if n := strings.Count(pb.proc.stdout.String(), "Issued certificate serial"); n != 1 {
		t.Errorf("Pebble issued %d certificates for one name and one storage, want 1\n%s", n, tail(pb.proc.stdout.String(), 20))
	}
	if !strings.Contains(procs[0].stderr.String()+procs[1].stderr.String(), `"challenge":"tls-alpn-01"`) {
		t.Error("no TLS-ALPN-01 validation was answered")
	}

	// A stored key that is not the certificate's (a damaged copy, a
	// restore gone wrong): set aside, counted as failed, and ordered anew.
	for _, p := range procs {
		p.stop()
	}
	keys, _ := filepath.Glob(filepath.Join(storage, "certificates", "*", "localhost", "localhost.key"))
	if len(keys) != 1 {
		t.Fatalf("stored keys: %v", keys)
	}
	_, otherKeyPath := pb.ca.issue(t, dir, "other", 7, "localhost")
	otherKey, _ := os.ReadFile(otherKeyPath)
	if err := os.WriteFile(keys[0], otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", tlsPorts[0])
	p := runConfig(t, dir, "strait0.yaml", yamls[0], addr)
	deadline := time.Now().Add(40 * time.Second)
	for {
		c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: roots})
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate after the stored one was found unusable: %v\n%s", err, tail(p.stderr.String(), 20))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(p.stderr.String(), "acme: stored certificate is unusable") {
		t.Errorf("no log line for the unusable certificate:\n%s", tail(p.stderr.String(), 20))
	}
	if _, err := os.Stat(keys[0] + ".unusable"); err != nil {
		t.Errorf("the unusable key was not set aside: %v", err)
	}
	_, metrics := adminDo(t, "GET", "http://"+adminAddrOf(t, p)+"/metrics", nil)
	if v := metricValue(metrics, "strait_acme_orders_total", `result="failed"`); v != 1 {
		t.Errorf("strait_acme_orders_total{result=failed} = %v, want 1", v)
	}
	if n := strings.Count(pb.proc.stdout.String(), "Issued certificate serial"); n != 2 {
		t.Errorf("Pebble issued %d certificates, want 2 (the first, and the one replacing the unusable)", n)
	}

	// Damaged metadata beside a good certificate and key: the same.
	p.stop()
	metas, _ := filepath.Glob(filepath.Join(storage, "certificates", "*", "localhost", "localhost.json"))
	if len(metas) != 1 {
		t.Fatalf("stored metadata: %v", metas)
	}
	os.WriteFile(metas[0], []byte(`{"sans":["localhost"],"issuer_data":`), 0o600)
	p = runConfig(t, dir, "strait0.yaml", yamls[0], addr)
	waitServed := func(what string) {
		t.Helper()
		deadline := time.Now().Add(40 * time.Second)
		for {
			c, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "localhost", RootCAs: roots})
			if err == nil {
				c.Close()
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no certificate served: %v\n%s", what, err, tail(p.stderr.String(), 20))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	waitServed("damaged metadata")
	if _, err := os.Stat(metas[0] + ".unusable"); err != nil {
		t.Errorf("the damaged metadata was not set aside: %v", err)
	}
	if n := strings.Count(pb.proc.stdout.String(), "Issued certificate serial"); n != 3 {
		t.Errorf("Pebble issued %d certificates, want 3", n)
	}

	// The storage's order lock held by another process (in an order, or
	// a renewal's backoff): strait starts at once, with what is stored.
	p.stop()
	lock := filepath.Join(storage, "locks", "issue_cert_localhost.lock")
	os.MkdirAll(filepath.Dir(lock), 0o700)
	now := time.Now().UTC().Format(time.RFC3339Nano)
	os.WriteFile(lock, []byte(`{"created":"`+now+`","updated":"`+now+`"}`), 0o644)
	started := time.Now()
	p = runConfig(t, dir, "strait0.yaml", yamls[0], addr)
	waitServed("with the lock held")
	if d := time.Since(started); d > 5*time.Second {
		t.Errorf("with the order lock held elsewhere, the stored certificate was served after %v", d)
	}
}

// TestACMERetriesCADown: with the CA down at start and nothing stored,
// the listener is up (a handshake fails, nothing else does), and once the
// CA is up the order is retried (certmagic's first retry is a minute
// later) and served.
func TestACMERetriesCADown(t *testing.T) {
	tlsPort := freePort(t)
	tlsAddr := fmt.Sprintf("127.0.0.1:%d", tlsPort)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	ca := newTestCA(t)
	dir := t.TempDir()
	caRoot := filepath.Join(dir, "pebble-api.pem")
	os.WriteFile(caRoot, ca.pem, 0o644)
	yaml := fmt.Sprintf(`listeners:
  - address: %q
    tls:
      acme: {directory: "https://%s/dir", names: [localhost], storage: %q, ca_root: %q, tls_port: %d, challenges: [tls-alpn-01]}
    routes: [{respond: {status: 200, body: secure}}]
`, tlsAddr, strings.Replace(listen, "127.0.0.1", "localhost", 1), filepath.Join(dir, "acme"), caRoot, tlsPort)
	p := runConfig(t, dir, "strait.yaml", yaml, tlsAddr)
	if c, err := tls.Dial("tcp", tlsAddr, &tls.Config{ServerName: "localhost", InsecureSkipVerify: true}); err == nil {
		c.Close()
		t.Fatal("a handshake succeeded with no certificate")
	}
	waitLog := func(what string, timeout time.Duration) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !strings.Contains(p.stderr.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", what, tail(p.stderr.String(), 20))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitLog("acme: order failed", 20*time.Second)
	pb := startPebbleAt(t, listen, ca, freePort(t), tlsPort, time.Hour)
	roots := pb.roots(t)
	deadline := time.Now().Add(90 * time.Second)
	for {
		c, err := tls.Dial("tcp", tlsAddr, &tls.Config{ServerName: "localhost", RootCAs: roots})
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no certificate 90 s after the CA came up: %v\n%s", err, tail(p.stderr.String(), 20))
		}
		time.Sleep(500 * time.Millisecond)
	}
}
