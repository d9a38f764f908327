package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// selfSigned writes a certificate for names and its key into dir.
func selfSigned(t *testing.T, dir, file string, names ...string) Pair {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	p := Pair{filepath.Join(dir, file+".pem"), filepath.Join(dir, file+".key")}
	os.WriteFile(p.Cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(p.Key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
	return p
}

// TestFor: the exact name, else one level of wildcard, else the default.
func TestFor(t *testing.T) {
	dir := t.TempDir()
	s, err := New(Config{Pairs: []Pair{
		selfSigned(t, dir, "def", "default.test"),
		selfSigned(t, dir, "a", "a.test", "www.a.test"),
		selfSigned(t, dir, "w", "*.w.test"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"a.test": "a.test", "WWW.A.TEST": "a.test", "a.test.": "a.test",
		"x.w.test": "*.w.test", "w.test": "default.test", "y.x.w.test": "default.test",
		"": "default.test", "other.test": "default.test", "127.0.0.1": "default.test",
	} {
		if got := s.For(name).Leaf.DNSNames[0]; got != want {
			t.Errorf("For(%q) = %s, want %s", name, got, want)
		}
	}
	if _, err := New(Config{Pairs: []Pair{{Cert: filepath.Join(dir, "a.pem"), Key: filepath.Join(dir, "w.key")}}}); err == nil {
		t.Errorf("a key that is not the certificate's loaded")
	}
}

// managedStub manages one name, with one certificate.
type managedStub struct {
	name string
	cert *tls.Certificate
}

func (m managedStub) Manages(name string) bool { return name == m.name }
func (m managedStub) Certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.cert, nil
}

// TestManaged: a managed name's certificate comes from Managed; another
// name, with no files, gets none; a TLS-ALPN-01 validation gets a
// handshake of its own, speaking acme-tls/1 only.
func TestManaged(t *testing.T) {
	cert := new(tls.Certificate)
	s, err := New(Config{Managed: managedStub{"a.example", cert}})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := s.certificate(&tls.ClientHelloInfo{ServerName: "a.example"}); err != nil || c != cert {
		t.Errorf("a managed name: %v, %v", c, err)
	}
	if c, err := s.certificate(&tls.ClientHelloInfo{ServerName: "b.example"}); err == nil {
		t.Errorf("a name not managed, with no files: %v", c)
	}
	if s.For("a.example") == nil || s.For("a.example") != s.For("A.example") || s.For("a.example") == s.For("b.example") {
		t.Error("For does not tell a managed name's certificate from others")
	}
	cfg, err := s.TLS().GetConfigForClient(&tls.ClientHelloInfo{ServerName: "a.example", SupportedProtos: []string{"acme-tls/1"}})
	if err != nil || cfg == nil || len(cfg.NextProtos) != 1 || cfg.NextProtos[0] != "acme-tls/1" || !cfg.SessionTicketsDisabled {
		t.Errorf("a TLS-ALPN-01 hello: %v, %v", cfg, err)
	}
	if cfg, _ := s.TLS().GetConfigForClient(&tls.ClientHelloInfo{ServerName: "a.example", SupportedProtos: []string{"h2", "acme-tls/1"}}); cfg != nil {
		t.Error("a hello offering other protocols got the validation's handshake")
	}
}
