// Package acme gets and renews a listener's certificates from an ACME CA
// (Let's Encrypt, or any RFC 8555 server), with
// github.com/caddyserver/certmagic: it orders, stores, locks and renews as
// Caddy does, and is kept up to date by Caddy's users. (x/crypto's
// autocert has no storage lock between processes, renews at a fixed 30
// days before expiry, and answers TLS-ALPN-01 only.)
//
// Only the configured names get certificates: a client's SNI never makes
// strait order one. Challenges are answered by strait's own listeners:
// HTTP-01 by any plain-HTTP listener (AnswerHTTP), TLS-ALPN-01 by the TLS
// listener (Manager.Certificate). The storage folder keeps the account,
// keys and certificates with mode 0600, and its lock files keep two
// processes (old and new, in an upgrade) from ordering a name twice.
package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config is a listener's ACME.
type Config struct {
	Directory string // default certmagic.LetsEncryptProductionCA
	Email     string
	Names     []string
	Storage   string
	CARoot    string  // PEM file: the directory's TLS roots; "" for the system's
	RenewAt   float64 // part of the lifetime after which to renew; 0: 2/3
	HTTPPort  int     // where the CA validates HTTP-01; 0: 80
	TLSPort   int     // and TLS-ALPN-01; 0: 443
	// CheckInterval is how often certificates are looked at for renewal;
	// 0: certmagic's default, 10 minutes.
	CheckInterval time.Duration
	// Challenges are the validations offered: "http-01", "tls-alpn-01";
	// none listed: both.
	Challenges []string
	Logger     *slog.Logger
}

// Stats are what a Manager has done, for metrics.
type Stats struct {
	Obtained, Renewed, Failed atomic.Int64
}

// Manager keeps the certificates of one listener's names.
type Manager struct {
	names  map[string]bool
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	cache  *certmagic.Cache
	logger *slog.Logger
	Stats  Stats

	mu     sync.Mutex
	expiry map[string]time.Time // by name, of the certificate obtained last
}

// New returns a Manager for c; Start begins obtaining.
func New(c Config) (*Manager, error) {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	m := &Manager{names: make(map[string]bool), logger: c.Logger, expiry: make(map[string]time.Time)}
	for _, n := range c.Names {
		m.names[strings.ToLower(n)] = true
	}
	if err := os.MkdirAll(c.Storage, 0o700); err != nil {
		return nil, fmt.Errorf("acme storage: %w", err)
	}
	var roots *x509.CertPool
	if c.CARoot != "" {
		b, err := os.ReadFile(c.CARoot)
		if err != nil {
			return nil, fmt.Errorf("acme ca_root: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("acme ca_root %s holds no PEM certificate", c.CARoot)
		}
	}
	zl := zap.New(slogCore{c.Logger.With("component", "acme")})
	renewWindow := 1.0 / 3
	if c.RenewAt > 0 {
		renewWindow = 1 - c.RenewAt
	}
	tmpl := certmagic.Config{
		Storage:            &certmagic.FileStorage{Path: c.Storage},
		RenewalWindowRatio: renewWindow,
		Logger:             zl,
		OnEvent:            m.event,
	}
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.magic, nil },
		RenewCheckInterval: c.CheckInterval,
		Logger:             zl,
	})
	m.magic = certmagic.New(m.cache, tmpl)
	m.issuer = certmagic.NewACMEIssuer(m.magic, certmagic.ACMEIssuer{
		CA:                      cmpOr(c.Directory, certmagic.LetsEncryptProductionCA),
		Email:                   c.Email,
		Agreed:                  true,
		TrustedRoots:            roots,
		AltHTTPPort:             c.HTTPPort,
		AltTLSALPNPort:          c.TLSPort,
		DisableHTTPChallenge:    len(c.Challenges) > 0 && !slices.Contains(c.Challenges, "http-01"),
		DisableTLSALPNChallenge: len(c.Challenges) > 0 && !slices.Contains(c.Challenges, "tls-alpn-01"),
		Logger:                  zl,
	})
	m.magic.Issuers = []certmagic.Issuer{m.issuer}
	return m, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Start loads what storage holds and obtains what it lacks, in the
// background: a CA that cannot be reached is retried with backoff, and
// whatever certificate is stored is served meanwhile.
func (m *Manager) Start(ctx context.Context) error {
	names := make([]string, 0, len(m.names))
	for n := range m.names {
		names = append(names, n)
	}
	return m.magic.ManageAsync(ctx, names)
}

// Stop ends renewals.
func (m *Manager) Stop() { m.cache.Stop() }

// Manages reports whether name is one of the Manager's.
func (m *Manager) Manages(name string) bool { return m.names[strings.ToLower(name)] }

// Certificate returns the certificate for hello: a TLS-ALPN-01
// challenge's for the CA, or a managed name's. Another name is an error:
// nothing is ordered for it.
func (m *Manager) Certificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !m.Manages(hello.ServerName) {
		return nil, fmt.Errorf("acme: %q is not a managed name", hello.ServerName)
	}
	return m.magic.GetCertificate(hello)
}

// IsChallenge reports whether hello is a CA's TLS-ALPN-01 validation.
func IsChallenge(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ChallengeProto
}

// ChallengeProto is TLS-ALPN-01's protocol (RFC 8737).
const ChallengeProto = "acme-tls/1"

// AnswerHTTP answers an HTTP-01 validation for one of the Manager's names:
// the status and body for GET host path, or ok false if it is none.
func (m *Manager) AnswerHTTP(host, path string) (status int, body []byte, ok bool) {
	if !strings.HasPrefix(path, "/.well-known/acme-challenge/") || !m.Manages(hostOnly(host)) {
		return 0, nil, false
	}
	req, err := http.NewRequest("GET", path, nil)
	if err != nil {
		return 0, nil, false
	}
	req.Host = host
	rec := &recorder{header: http.Header{}, status: 200}
	if !m.issuer.HandleHTTPChallenge(rec, req) {
		return 0, nil, false
	}
	return rec.status, rec.body, true
}

func hostOnly(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	return strings.ToLower(strings.Trim(host, "[]"))
}

// recorder is the http.ResponseWriter certmagic answers a challenge to.
type recorder struct {
	header http.Header
	status int
	body   []byte
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(status int)      { r.status = status }
func (r *recorder) Write(b []byte) (int, error) { r.body = append(r.body, b...); return len(b), nil }

// Expiry returns when each name's certificate obtained last expires.
func (m *Manager) Expiry() map[string]time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]time.Time, len(m.expiry))
	for k, v := range m.expiry {
		out[k] = v
	}
	return out
}

// event logs and counts what certmagic does: one line per order.
func (m *Manager) event(ctx context.Context, event string, data map[string]any) error {
	name, _ := data["identifier"].(string)
	renewal, _ := data["renewal"].(bool)
	switch event {
	case "cert_obtained":
		if renewal {
			m.Stats.Renewed.Add(1)
		} else {
			m.Stats.Obtained.Add(1)
		}
		notAfter := m.notAfter(ctx, data)
		m.mu.Lock()
		m.expiry[name] = notAfter
		m.mu.Unlock()
		m.logger.Info("acme: certificate obtained", "name", name, "renewal", renewal, "not_after", notAfter)
	case "cert_failed":
		m.Stats.Failed.Add(1)
		err, _ := data["error"].(error)
		m.logger.Error("acme: order failed; the certificate stored (if any) is served, and the order retried", "name", name, "renewal", renewal, "err", err)
	case "cached_managed_cert":
		m.logger.Info("acme: certificate loaded from storage", "names", data["sans"])
	}
	return nil
}

// notAfter reads the expiry of the certificate an event names.
func (m *Manager) notAfter(ctx context.Context, data map[string]any) time.Time {
	path, _ := data["certificate_path"].(string)
	if path == "" {
		return time.Time{}
	}
	b, err := m.magic.Storage.Load(ctx, path)
	if err != nil {
		return time.Time{}
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return time.Time{}
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return time.Time{}
	}
	return c.NotAfter
}

// slogCore writes certmagic's zap logs to strait's slog logger, at info
// and above (its debug lines are for certmagic's developers).
type slogCore struct{ l *slog.Logger }

func (c slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.InfoLevel }

func (c slogCore) With(fields []zapcore.Field) zapcore.Core {
	return slogCore{c.l.With(attrs(fields)...)}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	level := slog.LevelInfo
	switch {
	case e.Level >= zapcore.ErrorLevel:
		level = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		level = slog.LevelWarn
	}
	c.l.Log(context.Background(), level, e.Message, attrs(fields)...)
	return nil
}

func (c slogCore) Sync() error { return nil }

func attrs(fields []zapcore.Field) []any {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, k, v)
	}
	return out
}
