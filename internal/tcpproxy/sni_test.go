package tcpproxy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/config"
)

// tlsOrigin is a TLS server whose certificate names name; it answers
// each connection with its name and the protocol negotiated.
func tlsOrigin(t *testing.T, name string) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	cfg := &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"h2", "http/1.1"}}
	return origin(t, func(c *net.TCPConn) {
		tc := tls.Server(c, cfg)
		if tc.Handshake() != nil {
			return
		}
		io.WriteString(tc, name+" "+tc.ConnectionState().NegotiatedProtocol)
		tc.Close()
	})
}

func newCluster(t *testing.T, endpoints ...string) *cluster.Cluster {
	t.Helper()
	cl, err := cluster.New(&config.Cluster{Name: endpoints[0], Endpoints: endpoints}, cluster.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	return cl
}

// TestSNIRoutes: connections go by their ClientHello's name and ALPN,
// unterminated (the certificate is the origin's); what no route takes
// goes to the default cluster, and garbage, a slow hello or an oversized
// one is refused.
func TestSNIRoutes(t *testing.T) {
	a, b, h2only, def := tlsOrigin(t, "a.example"), tlsOrigin(t, "b.example"), tlsOrigin(t, "h2.example"), tlsOrigin(t, "default.example")
	p := start(t, Options{HelloTimeout: 300 * time.Millisecond, Routes: []Route{
		{Names: []string{"a.example"}, Cluster: newCluster(t, a)},
		{Names: []string{"*.b.example"}, Cluster: newCluster(t, b)},
		{Names: []string{"h2.example"}, ALPN: []string{"h2"}, Cluster: newCluster(t, h2only)},
	}}, def)
	ask := func(sni string, protos ...string) string {
		t.Helper()
		c, err := tls.Dial("tcp", p.addr, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: protos})
		if err != nil {
			return "refused: " + err.Error()
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		if cn := c.ConnectionState().PeerCertificates[0].Subject.CommonName; cn+" " != string(b)[:len(cn)+1] {
			t.Errorf("certificate %s, answer %q", cn, b)
		}
		return string(b)
	}
	for _, tc := range []struct{ sni, alpn, want string }{
		{"a.example", "http/1.1", "a.example http/1.1"},
		{"A.Example", "", "a.example "},
		{"x.b.example", "h2", "b.example h2"},
		{"b.example", "", "default.example "},     // the wildcard is for one label more
		{"y.x.b.example", "", "default.example "}, // only one
		{"h2.example", "h2", "h2.example h2"},     // ALPN matches
		{"h2.example", "http/1.1", "default.example http/1.1"},
		{"", "", "default.example "}, // no SNI
	} {
		var protos []string
		if tc.alpn != "" {
			protos = []string{tc.alpn}
		}
		if got := ask(tc.sni, protos...); got != tc.want {
			t.Errorf("SNI %q ALPN %q: %q, want %q", tc.sni, tc.alpn, got, tc.want)
		}
	}

	// A ClientHello that comes a few bytes at a time, in several records.
	hello := helloBytes(t, "a.example")
	c := dial(t, p.addr)
	for i := 0; i < len(hello); i += 50 {
		c.Write(hello[i:min(i+50, len(hello))])
		time.Sleep(5 * time.Millisecond)
	}
	// The origin saw the hello whole: its answer (a ServerHello) arrives.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 5)); n == 0 || err != nil {
		t.Errorf("a hello in pieces: %d, %v", n, err)
	}

	refused := func(what string, send []byte, wait time.Duration) {
		t.Helper()
		c := dial(t, p.addr)
		c.Write(send)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		start := time.Now()
		if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
			t.Errorf("%s: read %d, %v; want it refused", what, n, err)
		}
		if d := time.Since(start); d < wait || d > wait+2*time.Second {
			t.Errorf("%s: refused after %v, want about %v", what, d, wait)
		}
	}
	before := p.srv.Stats.BadHello.Load()
	refused("HTTP", []byte("GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"), 0)
	refused("half a hello", hello[:len(hello)/2], 300*time.Millisecond)
	refused("over 16 KiB", []byte{22, 3, 1, 0x40, 0, 1, 0, 0x50, 0}, 0)
	// A byte a segment: refused after a few dozen, well before the
	// timeout, rather than parsed again at each.
	drip := dial(t, p.addr)
	drip.SetNoDelay(true)
	startDrip := time.Now()
	for i := range hello {
		if _, err := drip.Write(hello[i : i+1]); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	drip.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := drip.Read(make([]byte, 1)); n != 0 || err == nil || time.Since(startDrip) > time.Second {
		t.Errorf("a hello a byte at a time: read %d, %v after %v; want it refused early", n, err, time.Since(startDrip))
	}
	if n := p.srv.Stats.BadHello.Load() - before; n != 4 {
		t.Errorf("BadHello counted %d, want 4", n)
	}
}

// TestSNINoDefault: without a default cluster, a name no route takes is
// refused, and counted.
func TestSNINoDefault(t *testing.T) {
	p := start(t, Options{Routes: []Route{{Names: []string{"a.example"}, Cluster: newCluster(t, tlsOrigin(t, "a.example"))}}})
	if _, err := tls.Dial("tcp", p.addr, &tls.Config{ServerName: "b.example", InsecureSkipVerify: true}); err == nil {
		t.Fatal("a name no route takes was relayed")
	}
	if n := p.srv.Stats.NoRoute.Load(); n != 1 {
		t.Errorf("NoRoute %d, want 1", n)
	}
}

// helloBytes returns the ClientHello crypto/tls sends for sni.
func helloBytes(t *testing.T, sni string) []byte {
	t.Helper()
	client, server := net.Pipe()
	go func() {
		tls.Client(client, &tls.Config{ServerName: sni, InsecureSkipVerify: true}).Handshake()
	}()
	buf := make([]byte, 64<<10)
	n, err := server.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	server.Close()
	client.Close()
	return buf[:n]
}
