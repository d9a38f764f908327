// Package tlsconf is the TLS a listener serves: its certificates chosen by
// SNI and reloaded when their files change, the versions, ciphers and key
// exchanges a security review expects, and session ticket keys rotated on
// a schedule. It is built on crypto/tls.
package tlsconf

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Pair is a certificate chain and its key, PEM files.
type Pair struct{ Cert, Key string }

// Config is what a listener's TLS is made of.
type Config struct {
	Pairs []Pair // the first is the default, for a client without a known SNI
	// MinVersion is tls.VersionTLS12 (the default) or tls.VersionTLS13.
	MinVersion uint16
	// TicketRotation is how often a new session ticket key is made
	// (default 1 h); tickets stay valid for two rotations after.
	TicketRotation time.Duration
	// NoTickets turns session tickets off: every handshake is a full one.
	NoTickets bool
	// Reload is how often the files are looked at for changes (default
	// 250 ms); a change is loaded once it has held for one look.
	Reload time.Duration
	// NextProtos are the ALPN protocols, in order of preference (default
	// http/1.1). With RequireALPN a client must offer one of them.
	NextProtos  []string
	RequireALPN bool
	// ClientAuth is tls.NoClientCert (the default),
	// tls.VerifyClientCertIfGiven or tls.RequireAndVerifyClientCert,
	// against the PEM bundle ClientCA.
	ClientAuth tls.ClientAuthType
	ClientCA   string
	Logger     *slog.Logger
	// Managed, if set, gives the certificates of the names it manages
	// (ACME's), and answers its CA's TLS-ALPN-01 validations; Pairs may
	// then be empty.
	Managed Managed
}

// Managed gives certificates for the names it manages: internal/acme's
// Manager.
type Managed interface {
	Manages(name string) bool
	// Certificate returns the certificate for hello: a managed name's, or
	// a TLS-ALPN-01 validation's.
	Certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error)
}

// challengeProto is TLS-ALPN-01's ALPN protocol (RFC 8737).
const challengeProto = "acme-tls/1"

// Server is a listener's TLS: a tls.Config whose certificates and ticket
// keys change while it serves.
type Server struct {
	cfg    Config
	certs  atomic.Pointer[certSet]
	tls    *tls.Config
	stamp  string // the files' sizes and times when last loaded
	seen   string // their stamp at the last look: a change loads once it holds still
	keysMu sync.Mutex
	keys   [][32]byte // session ticket keys, newest first
	// managedID stands for each managed name's certificate in For, which
	// compares certificates: one per name.
	managedID map[string]*tls.Certificate
	challenge *tls.Config // a TLS-ALPN-01 validation's handshake
}

// certSet is the certificates of one load, by the names they are for.
type certSet struct {
	exact    map[string]*tls.Certificate // lower-case DNS names
	wildcard map[string]*tls.Certificate // "*.example.com" by "example.com"
	def      *tls.Certificate
}

// New loads the certificates and returns the server's TLS; Run keeps it
// fresh until its context ends.
func New(c Config) (*Server, error) {
	if len(c.Pairs) == 0 && c.Managed == nil {
		return nil, errors.New("tls: no certificates")
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.TicketRotation <= 0 {
		c.TicketRotation = time.Hour
	}
	if c.Reload <= 0 {
		c.Reload = 250 * time.Millisecond
	}
	if len(c.NextProtos) == 0 {
		c.NextProtos = []string{"http/1.1"}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	s := &Server{cfg: c, managedID: make(map[string]*tls.Certificate)}
	set, err := load(c.Pairs)
	if err != nil {
		return nil, err
	}
	s.certs.Store(set)
	s.stamp = stamp(c.Pairs)
	s.seen = s.stamp
	s.tls = &tls.Config{
		MinVersion: c.MinVersion,
		// TLS 1.2: forward secrecy and AEAD only (1.3's suites are all
		// that, and are not configurable).
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256},
		NextProtos:       c.NextProtos,
		GetCertificate:   s.certificate,
		ClientAuth:       c.ClientAuth,

		SessionTicketsDisabled: c.NoTickets,
		WrapSession:            s.wrapSession,
		UnwrapSession:          s.unwrapSession,
	}
	if c.Managed != nil {
		// The validation's handshake only: no session to resume later,
		// and the connection is closed after it (internal/h1).
		s.challenge = &tls.Config{MinVersion: s.tls.MinVersion, NextProtos: []string{challengeProto},
			GetCertificate: c.Managed.Certificate, SessionTicketsDisabled: true}
		s.tls.GetConfigForClient = s.configFor
	}
	if c.ClientAuth != tls.NoClientCert {
		pem, err := os.ReadFile(c.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("tls: client_ca: %w", err)
		}
		s.tls.ClientCAs = x509.NewCertPool()
		if !s.tls.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client_ca %s holds no PEM certificate", c.ClientCA)
		}
	}
	s.rotate()
	return s, nil
}

// TLS returns the tls.Config to serve with.
func (s *Server) TLS() *tls.Config { return s.tls }

// Run reloads the certificates when their files change, and rotates the
// ticket keys, until ctx ends.
func (s *Server) Run(ctx context.Context) {
	reload := time.NewTicker(s.cfg.Reload)
	defer reload.Stop()
	rotate := time.NewTicker(s.cfg.TicketRotation)
	defer rotate.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-rotate.C:
			s.rotate()
		case <-reload.C:
			s.reload()
		}
	}
}

// A session ticket names the SNI it was issued under, and resumes only
// under that one (RFC 6066 §3): a session begun for one name and
// resumed for another would skip the certificate the other name has,
// which the client never verified.
func (s *Server) wrapSession(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	ss.Extra = append(ss.Extra, []byte(sniPrefix+cs.ServerName))
	return s.tls.EncryptTicket(cs, ss)
}

func (s *Server) unwrapSession(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	ss, err := s.tls.DecryptTicket(identity, cs)
	if ss == nil || err != nil {
		return nil, err
	}
	for _, e := range ss.Extra {
		if string(e) == sniPrefix+cs.ServerName {
			return ss, nil
		}
	}
	return nil, nil // a full handshake
}

const sniPrefix = "strait sni:"

// rotate makes a new ticket key, and keeps the two before it for
// decryption.
func (s *Server) rotate() {
	var k [32]byte
	rand.Read(k[:])
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	s.keys = append([][32]byte{k}, s.keys...)
	if len(s.keys) > 3 {
		s.keys = s.keys[:3]
	}
	s.tls.SetSessionTicketKeys(s.keys)
}

// TicketKeys returns the session ticket keys, newest first: what a new
// process or a new config's TLS takes over, so that resumption survives.
func (s *Server) TicketKeys() [][32]byte {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	return slices.Clone(s.keys)
}

// SetTicketKeys makes keys, newest first, the session ticket keys: the
// newest encrypts new tickets, and all decrypt. Rotation goes on from
// them.
func (s *Server) SetTicketKeys(keys [][32]byte) {
	if len(keys) == 0 {
		return
	}
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	s.keys = slices.Clone(keys[:min(len(keys), 3)])
	s.tls.SetSessionTicketKeys(s.keys)
}

// reload loads the files again if they changed and have since held still
// for a look (a chain cut short after a whole certificate would load, and
// be served until the rest came); a new set that does not load keeps the
// old one, and is logged.
func (s *Server) reload() {
	st := stamp(s.cfg.Pairs)
	seen := s.seen
	s.seen = st
	if st == s.stamp || st != seen {
		return
	}
	set, err := load(s.cfg.Pairs)
	if err != nil {
		// A file half written is caught again on its next change; one
		// broken for good is logged once per change.
		s.cfg.Logger.Error("tls: the changed certificates do not load; serving the old ones", "err", err)
		s.stamp = st
		return
	}
	s.stamp = st
	s.certs.Store(set)
	s.cfg.Logger.Info("tls: certificates reloaded")
}

// stamp is the files' sizes and modification times.
func stamp(pairs []Pair) string {
	var b strings.Builder
	for _, p := range pairs {
		for _, f := range []string{p.Cert, p.Key} {
			if fi, err := os.Stat(f); err == nil {
				fmt.Fprintf(&b, "%s %d %d;", f, fi.Size(), fi.ModTime().UnixNano())
			} else {
				fmt.Fprintf(&b, "%s missing;", f)
			}
		}
	}
	return b.String()
}

// load reads every pair and indexes its certificate by the DNS names it
// is for.
func load(pairs []Pair) (*certSet, error) {
	set := &certSet{exact: make(map[string]*tls.Certificate), wildcard: make(map[string]*tls.Certificate)}
	for i, p := range pairs {
		c, err := tls.LoadX509KeyPair(p.Cert, p.Key)
		if err != nil {
			return nil, fmt.Errorf("tls: %s and %s: %w", p.Cert, p.Key, err)
		}
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("tls: %s: %w", p.Cert, err)
		}
		c.Leaf = leaf
		if i == 0 {
			set.def = &c
		}
		names := leaf.DNSNames
		if len(names) == 0 && leaf.Subject.CommonName != "" {
			names = []string{leaf.Subject.CommonName}
		}
		for _, n := range names {
			n = strings.ToLower(n)
			if rest, ok := strings.CutPrefix(n, "*."); ok {
				if _, dup := set.wildcard[rest]; !dup {
					set.wildcard[rest] = &c
				}
			} else if _, dup := set.exact[n]; !dup {
				set.exact[n] = &c
			}
		}
	}
	return set, nil
}

// For returns the certificate served for name (an SNI or a Host without
// port): one for the exact name, else one for *.parent, else the default.
func (s *Server) For(name string) *tls.Certificate {
	set := s.certs.Load()
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if s.cfg.Managed != nil && s.cfg.Managed.Manages(name) {
		return s.managed(name)
	}
	if c := set.exact[name]; c != nil {
		return c
	}
	if _, parent, ok := strings.Cut(name, "."); ok {
		if c := set.wildcard[parent]; c != nil {
			return c
		}
	}
	return set.def
}

func (s *Server) certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if s.cfg.RequireALPN && !slices.ContainsFunc(s.cfg.NextProtos, func(p string) bool { return slices.Contains(hello.SupportedProtos, p) }) {
		// crypto/tls would go on without ALPN for a client that offers
		// http/1.1 only, and the listener would speak HTTP/2 to it.
		return nil, errNoProtocol
	}
	if m := s.cfg.Managed; m != nil && m.Manages(hello.ServerName) {
		return m.Certificate(hello)
	}
	if c := s.For(hello.ServerName); c != nil {
		return c, nil
	}
	return nil, fmt.Errorf("tls: no certificate for %q", hello.ServerName)
}

// configFor gives a CA's TLS-ALPN-01 validation (ALPN acme-tls/1 alone)
// a handshake of its own: the validation certificate, and no other
// protocol.
func (s *Server) configFor(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == challengeProto {
		return s.challenge, nil
	}
	return nil, nil
}

// managed returns the stand-in of a managed name's certificate.
func (s *Server) managed(name string) *tls.Certificate {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	c := s.managedID[name]
	if c == nil {
		c = new(tls.Certificate)
		s.managedID[name] = c
	}
	return c
}

var errNoProtocol = errors.New("tls: the client offers none of the listener's application protocols")
