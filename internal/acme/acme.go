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
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
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
	// ChallengesRefused counts TLS-ALPN-01 handshakes for a managed
	// name that no pending validation of the CA's explains.
	ChallengesRefused atomic.Int64
}

// Manager keeps the certificates of one listener's names.
type Manager struct {
	names  map[string]bool
	magic  *certmagic.Config
	issuer *certmagic.ACMEIssuer
	cache  *certmagic.Cache
	logger *slog.Logger
	Stats  Stats

	offersHTTP bool
	refusedLog atomic.Int64 // unix seconds of the last refused-challenge line
}

// New returns a Manager for c; Start begins obtaining.
func New(c Config) (*Manager, error) {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	m := &Manager{names: make(map[string]bool), logger: c.Logger,
		offersHTTP: len(c.Challenges) == 0 || slices.Contains(c.Challenges, "http-01")}
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
		DisableHTTPChallenge:    !m.offersHTTP,
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
func (m *Manager) Start(ctx context.Context) {
	names := make([]string, 0, len(m.names))
	for n := range m.names {
		// What storage holds is served from the first handshake: it is
		// loaded now (local files; the check waits for no lock).
		m.setAsideUnusable(ctx, n)
		if _, err := m.magic.CacheManagedCertificate(ctx, n); err != nil && !errors.Is(err, fs.ErrNotExist) {
			m.logger.Error("acme: loading the stored certificate", "name", n, "err", err)
		}
		names = append(names, n)
	}
	// Orders and renewals in the background.
	if err := m.magic.ManageAsync(ctx, names); err != nil {
		m.logger.Error("acme: managing the certificates", "err", err)
	}
}

// setAsideUnusable renames a stored certificate, key and metadata that
// do not make a certificate (a damaged file, a key that is not the
// certificate's) to *.unusable, so that the name is ordered anew:
// certmagic would log the error once and never manage the name. It
// checks under the lock certmagic orders under, so that a renewal another
// process is writing is not taken for damage; if that lock is held, the
// holder is about to write a fresh set, and nothing is checked.
func (m *Manager) setAsideUnusable(ctx context.Context, name string) {
	fsys, ok := m.magic.Storage.(*certmagic.FileStorage)
	if !ok {
		return
	}
	issuer := m.issuer.IssuerKey()
	keys := []string{certmagic.StorageKeys.SiteCert(issuer, name), certmagic.StorageKeys.SitePrivateKey(issuer, name),
		certmagic.StorageKeys.SiteMeta(issuer, name)}
	if _, err := os.Stat(fsys.Filename(keys[0])); errors.Is(err, fs.ErrNotExist) {
		return
	}
	lock := "issue_cert_" + name // certmagic's own lock for ordering name
	if ok, err := fsys.TryLock(ctx, lock); err != nil || !ok {
		return
	}
	defer fsys.Unlock(context.WithoutCancel(ctx), lock)
	var parts [3][]byte
	for i, k := range keys {
		b, err := fsys.Load(ctx, k)
		if err != nil {
			return // certmagic orders anew when a part is missing
		}
		parts[i] = b
	}
	_, err := tls.X509KeyPair(parts[0], parts[1])
	if err == nil {
		var meta struct {
			SANs []string `json:"sans"`
		}
		if err = json.Unmarshal(parts[2], &meta); err == nil {
			return
		}
		err = fmt.Errorf("metadata: %w", err)
	}
	m.Stats.Failed.Add(1)
	m.logger.Error("acme: stored certificate is unusable; set aside as *.unusable and ordered anew", "name", name, "err", err)
	for _, k := range keys {
		if err := os.Rename(fsys.Filename(k), fsys.Filename(k)+".unusable"); err != nil {
			m.logger.Error("acme: setting aside the unusable certificate", "err", err)
		}
	}
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
	cert, err := m.magic.GetCertificate(hello)
	if err != nil && IsChallenge(hello) {
		// Anyone may send acme-tls/1: counted, and logged once a minute
		// at most (certmagic's own line for it is dropped in slogCore).
		m.Stats.ChallengesRefused.Add(1)
		now, last := time.Now().Unix(), m.refusedLog.Load()
		if now-last >= 60 && m.refusedLog.CompareAndSwap(last, now) {
			m.logger.Warn("acme: TLS-ALPN-01 handshake with no validation pending refused (logged once a minute)",
				"name", hello.ServerName, "remote", remote(hello), "refused_total", m.Stats.ChallengesRefused.Load())
		}
	}
	return cert, err
}

func remote(hello *tls.ClientHelloInfo) string {
	if hello.Conn == nil {
		return ""
	}
	return hello.Conn.RemoteAddr().String()
}

// OffersHTTP reports whether HTTP-01 is among the validations offered.
func (m *Manager) OffersHTTP() bool { return m.offersHTTP }

// IsChallenge reports whether hello is a CA's TLS-ALPN-01 validation.
func IsChallenge(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ChallengeProto
}

// ChallengeProto is TLS-ALPN-01's protocol (RFC 8737).
const ChallengeProto = "acme-tls/1"

// AnswerHTTP answers an HTTP-01 validation for one of the Manager's names:
// the status and body for method host path, or ok false if it is none
// (the CA's validation is a GET).
func (m *Manager) AnswerHTTP(method, host, path string) (status int, body []byte, ok bool) {
	if method != http.MethodGet || !strings.HasPrefix(path, "/.well-known/acme-challenge/") || !m.Manages(hostOnly(host)) {
		return 0, nil, false
	}
	req, err := http.NewRequest(method, path, nil)
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

// Expiry returns when the certificate served for each name expires,
// whether it was obtained or loaded from storage; a name with none is
// left out.
func (m *Manager) Expiry() map[string]time.Time {
	out := make(map[string]time.Time, len(m.names))
	for name := range m.names {
		for _, c := range m.cache.AllMatchingCertificates(name) {
			if c.Leaf != nil && c.Leaf.NotAfter.After(out[name]) {
				out[name] = c.Leaf.NotAfter
			}
		}
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
		m.logger.Info("acme: certificate obtained", "name", name, "renewal", renewal, "not_after", m.notAfter(ctx, data))
	case "cert_failed":
		err, _ := data["error"].(error)
		if errors.Is(err, context.Canceled) {
			// The listener's config was replaced or strait is stopping:
			// its successor, if any, orders.
			m.logger.Info("acme: order stopped with its config", "name", name, "renewal", renewal)
			return nil
		}
		m.Stats.Failed.Add(1)
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
	if e.Message == "tls-alpn challenge" {
		return nil // an error per handshake anyone can send: Certificate logs it, bounded
	}
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
