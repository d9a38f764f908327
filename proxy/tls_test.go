package proxy_test

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/proxytest"
	"github.com/straitproxy/strait/proxy"
)

// selfSigned returns a server TLS config with a self-signed ECDSA P-256
// certificate for "localhost", and a client config that trusts it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, NextProtos: []string{"http/1.1"}}
	return server, &tls.Config{RootCAs: pool, ServerName: "localhost"}
}

// batchConn holds what is written to it until flush, so that several TLS
// records reach the peer in one segment: while batch is set, after the
// first pass writes.
type batchConn struct {
	net.Conn
	held  bytes.Buffer
	batch bool
	pass  int
}

func (b *batchConn) Write(p []byte) (int, error) {
	if b.batch && b.pass <= 0 {
		return b.held.Write(p)
	}
	b.pass--
	return b.Conn.Write(p)
}

func (b *batchConn) flush() error {
	b.batch = false
	_, err := b.Conn.Write(b.held.Bytes())
	b.held.Reset()
	return err
}

func tlsConn(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, *batchConn, *bufio.Reader) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	bc := &batchConn{Conn: nc}
	tc := tls.Client(bc, cfg)
	t.Cleanup(func() { tc.Close() })
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	return tc, bc, bufio.NewReader(tc)
}

// TestTLSReadAhead: crypto/tls reads whole records, several at once, so a
// request may sit decrypted in the server's tls.Conn while its socket is
// empty. A connection that waited for its socket then would never serve
// it. Two requests in one record, and in two records sent together, are
// served, whether they come at once or after the connection parked.
func TestTLSReadAhead(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}))
	server, client := selfSigned(t)
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{TLS: server})
	const req = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"
	// A request with a body bigger than the parser's buffer, so that the
	// next one stays in the tls.Conn when the record is one.
	post := "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9000\r\n\r\n" + strings.Repeat("x", 9000)
	for _, idle := range []time.Duration{0, 100 * time.Millisecond} { // hot, then parked
		t.Run("one record/idle "+idle.String(), func(t *testing.T) {
			tc, _, br := tlsConn(t, addr, client)
			for _, first := range []string{req, post, req} {
				time.Sleep(idle)
				if _, err := io.WriteString(tc, first+req); err != nil {
					t.Fatal(err)
				}
				for range 2 {
					if _, body := readResponse(t, br, "GET"); body != "ok" {
						t.Fatalf("body %q", body)
					}
				}
			}
		})
		t.Run("two records/idle "+idle.String(), func(t *testing.T) {
			tc, bc, br := tlsConn(t, addr, client)
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				time.Sleep(idle)
				bc.batch = true
				io.WriteString(tc, req)
				io.WriteString(tc, req)
				if err := bc.flush(); err != nil {
					t.Fatal(err)
				}
				for range 2 {
					if _, body := readResponse(t, br, "GET"); body != "ok" {
						t.Fatalf("body %q", body)
					}
				}
			}
		})
	}
	t.Run("with the handshake", func(t *testing.T) {
		// TLS 1.3: the client's Finished and its first request can reach
		// the server in one segment, and the handshake reads both.
		tc, bc, br := tlsConn(t, addr, client)
		bc.batch, bc.pass = true, 1 // the ClientHello goes; the Finished waits
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		if v := tc.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Fatalf("version %x, want TLS 1.3", v)
		}
		io.WriteString(tc, req)
		if err := bc.flush(); err != nil {
			t.Fatal(err)
		}
		if _, body := readResponse(t, br, "GET"); body != "ok" {
			t.Fatalf("body %q", body)
		}
	})
}

// TestTLSParked: idle keep-alive TLS connections hold no goroutine, serve
// their next request, and meet the idle timeout with a close_notify.
func TestTLSParked(t *testing.T) {
	origin := rawOriginKeepAlive(t, "ok")
	server, client := selfSigned(t)
	srv, addr := proxytest.Proxy(t, to(origin), proxy.Options{TLS: server, Timeouts: proxy.Timeouts{Idle: 4 * time.Second}})
	const n = 200 // more than the idle goroutines kept for new connections (64)
	before := runtime.NumGoroutine()
	conns := make([]*tls.Conn, n)
	readers := make([]*bufio.Reader, n)
	ask := func(i int) {
		io.WriteString(conns[i], "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
		if _, body := readResponse(t, readers[i], "GET"); body != "ok" {
			t.Fatalf("conn %d: %q", i, body)
		}
	}
	for i := range conns {
		conns[i], _, readers[i] = tlsConn(t, addr, client)
		ask(i)
	}
	time.Sleep(300 * time.Millisecond) // past park.After
	if extra := runtime.NumGoroutine() - before; extra > 64+10 {
		t.Errorf("%d idle TLS connections hold %d more goroutines; want them parked without one", n, extra)
	}
	for i := range conns {
		ask(i)
	}
	if got := srv.Counters().ConnsOpen.Load(); got != n {
		t.Fatalf("open connections: %d", got)
	}
	for i := range conns {
		conns[i].SetReadDeadline(time.Now().Add(8 * time.Second))
		if _, err := readers[i].ReadByte(); err != io.EOF {
			t.Fatalf("conn %d: %v, want EOF (close_notify) after the idle timeout", i, err)
		}
	}
}

// TestTLSPartialRecordTimesOut: part of a TLS record is the start of a
// request head, as a plain byte is: the header timeout bounds it with a
// 408, not the idle timeout, on a connection's first request and between
// requests.
func TestTLSPartialRecordTimesOut(t *testing.T) {
	origin := rawOriginKeepAlive(t, "ok")
	server, client := selfSigned(t)
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{TLS: server,
		Timeouts: proxy.Timeouts{Header: 300 * time.Millisecond, Idle: 10 * time.Second}})
	for _, served := range []int{0, 1} {
		tc, bc, br := tlsConn(t, addr, client)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		for range served {
			io.WriteString(tc, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
			readResponse(t, br, "GET")
			time.Sleep(100 * time.Millisecond) // parked
		}
		start := time.Now()
		bc.Conn.Write([]byte{23, 3, 3}) // an application data record's header, begun
		resp, _ := readResponse(t, br, "GET")
		if took := time.Since(start); resp.StatusCode != 408 || took > 3*time.Second {
			t.Errorf("after %d requests: %d after %v, want 408 after about 0.3 s", served, resp.StatusCode, took)
		}
	}
}

// TestTLSOtherProtocolClosed: a handshake that negotiates a protocol that
// is not HTTP (acme-tls/1, a CA's TLS-ALPN-01 validation, after which no
// data may follow) is closed: a request sent after it is not served, and
// would pass no client-certificate check a listener makes.
func TestTLSOtherProtocolClosed(t *testing.T) {
	origin := proxytest.Origin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served")
	}))
	server, client := selfSigned(t)
	server.NextProtos = []string{"http/1.1", "acme-tls/1"}
	_, addr := proxytest.Proxy(t, to(origin), proxy.Options{TLS: server})
	for _, proto := range []string{"acme-tls/1", "http/1.1"} {
		c := client.Clone()
		c.NextProtos = []string{proto}
		tc, _, br := tlsConn(t, addr, c)
		if err := tc.Handshake(); err != nil || tc.ConnectionState().NegotiatedProtocol != proto {
			t.Fatalf("%s: handshake %v, negotiated %q", proto, err, tc.ConnectionState().NegotiatedProtocol)
		}
		io.WriteString(tc, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if proto == "acme-tls/1" {
			if err == nil {
				t.Errorf("acme-tls/1: answered %s", resp.Status)
			}
			continue
		}
		if err != nil {
			t.Fatalf("http/1.1: %v", err)
		}
		resp.Body.Close()
	}
}
