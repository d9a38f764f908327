package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
