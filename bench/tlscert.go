package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// tlsTargets are the TLS siblings of strait, nginx and haproxy (only when
// named in -targets): the same proxy terminating TLS (HTTP/1.1) with one
// shared ECDSA P-256 certificate, and proxying plain HTTP to the origin
// exactly as its sibling does.
var tlsTargets = []string{"strait-tls", "nginx-tls", "haproxy-tls"}

// isTLSTarget says whether wrk and the harness reach target name over TLS.
func isTLSTarget(name string) bool {
	return slices.Contains(tlsTargets, name)
}

// tlsFiles are the PEM files of the run's certificate, in the temporary
// directory: the certificate, its key, and both concatenated (HAProxy's
// crt wants one file).
type tlsFiles struct {
	cert, key, both string
}

// tlsCert generates the run's self-signed ECDSA P-256 certificate for
// 127.0.0.1 and localhost, once, and returns its files.
func (b *bench) tlsCert() (tlsFiles, error) {
	if b.tlsFiles.cert != "" {
		return b.tlsFiles, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tlsFiles{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return tlsFiles{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "strait-bench"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tlsFiles{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tlsFiles{}, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	f := tlsFiles{
		cert: filepath.Join(b.tmp, "tls-cert.pem"),
		key:  filepath.Join(b.tmp, "tls-key.pem"),
		both: filepath.Join(b.tmp, "tls-haproxy.pem"),
	}
	// nginx's workers run as nobody when started as root, but the master
	// reads the files; 0644 keeps it simple for a throwaway key.
	for _, w := range []struct {
		path string
		data []byte
	}{{f.cert, certPEM}, {f.key, keyPEM}, {f.both, append(slices.Clone(certPEM), keyPEM...)}} {
		if err := os.WriteFile(w.path, w.data, 0o644); err != nil {
			return tlsFiles{}, err
		}
	}
	b.tlsFiles = f
	return f, nil
}
