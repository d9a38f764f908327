package acme

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer is a log certmagic's goroutines write to while a test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newManager(t *testing.T, logs *lockedBuffer) *Manager {
	t.Helper()
	m, err := New(Config{Directory: "https://127.0.0.1:1/dir", Names: []string{"WWW.Example.com"},
		Storage: filepath.Join(t.TempDir(), "acme"), Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Stop)
	return m
}

func TestManagesAndAnswerHTTP(t *testing.T) {
	var logs lockedBuffer
	m := newManager(t, &logs)
	for name, want := range map[string]bool{"www.example.com": true, "WWW.EXAMPLE.COM": true, "example.com": false, "": false} {
		if got := m.Manages(name); got != want {
			t.Errorf("Manages(%q) = %v, want %v", name, got, want)
		}
	}
	// Nothing pending: no answer, whatever the request.
	for _, tc := range []struct{ method, host, path string }{
		{"GET", "www.example.com", "/.well-known/acme-challenge/token"},
		{"POST", "www.example.com", "/.well-known/acme-challenge/token"},
		{"GET", "other.example", "/.well-known/acme-challenge/token"},
		{"GET", "www.example.com", "/elsewhere"},
	} {
		if _, _, ok := m.AnswerHTTP(tc.method, tc.host, tc.path); ok {
			t.Errorf("AnswerHTTP(%s %s %s) answered with no validation pending", tc.method, tc.host, tc.path)
		}
	}
	if fi, err := os.Stat(m.magic.Storage.(interface{ Filename(string) string }).Filename("")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("storage folder: %v, mode %v, want 0700", err, fi.Mode().Perm())
	}
}

func TestHostOnly(t *testing.T) {
	for in, want := range map[string]string{
		"Example.com":      "example.com",
		"example.com:80":   "example.com",
		"[::1]:443":        "::1",
		"[::1]":            "::1",
		"www.example.com.": "www.example.com.",
	} {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestSlogCore: certmagic's lines reach slog at their level with their
// fields; its per-handshake TLS-ALPN error does not.
func TestSlogCore(t *testing.T) {
	var logs lockedBuffer
	m := newManager(t, &logs)
	m.magic.Logger.Error("tls-alpn challenge")
	m.magic.Logger.Warn("something else")
	m.magic.Logger.Debug("for certmagic's developers")
	out := logs.String()
	if strings.Contains(out, "tls-alpn challenge") || strings.Contains(out, "developers") {
		t.Errorf("logged what should be dropped:\n%s", out)
	}
	if !strings.Contains(out, `"level":"WARN","msg":"something else","component":"acme"`) {
		t.Errorf("certmagic's warning not logged:\n%s", out)
	}
}
