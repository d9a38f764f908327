// Package accesslog writes strait's access log: a file that can be
// reopened (for logrotate), and slog handlers for its two formats, JSON
// with a chosen set of fields, and the Combined Log Format that existing
// tooling reads.
package accesslog

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

// File is an access log file that Reopen opens again at its path: after
// logrotate has moved it, lines go to a new file of that name.
type File struct {
	path string
	mu   sync.Mutex
	f    *os.File
}

// OpenFile opens path for appending, creating it with mode 0640 (less the
// umask).
func OpenFile(path string) (*File, error) {
	f := &File{path: path}
	if err := f.Reopen(); err != nil {
		return nil, err
	}
	return f, nil
}

// Reopen opens the path again and writes there from now on; the old file
// is closed. If the path cannot be opened, lines go on to the old file.
func (f *File) Reopen() error {
	// O_APPEND writes each line at the file's end as it is then: after
	// logrotate's copytruncate the next line starts the file again rather
	// than leaving a hole of zeros before it.
	nf, err := os.OpenFile(f.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	f.mu.Lock()
	old := f.f
	f.f = nf
	f.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

// Write writes one line (a slog handler writes a record in one call).
func (f *File) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Write(p)
}

// Close closes the file.
func (f *File) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.f.Close()
}

// NewHandler returns a handler writing to w in format ("json", the
// default, or "combined"). A JSON log keeps only fields, if any are named
// (time, level and msg stay).
func NewHandler(w io.Writer, format string, fields []string) slog.Handler {
	if format == "combined" {
		return &combined{w: w}
	}
	opts := &slog.HandlerOptions{}
	if len(fields) > 0 {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 || a.Key == slog.TimeKey || a.Key == slog.LevelKey || a.Key == slog.MessageKey || slices.Contains(fields, a.Key) {
				return a
			}
			return slog.Attr{}
		}
	}
	return slog.NewJSONHandler(w, opts)
}

// combined writes the Combined Log Format:
//
//	client - - [10/Oct/2026:13:55:36 +0000] "GET /a HTTP/1.1" 200 2326 "referer" "user agent"
//
// from the attributes of proxy's access log records. Other records (none
// go to the access log) are written the same way, with what they have.
type combined struct {
	w  io.Writer
	mu sync.Mutex
}

func (h *combined) Enabled(context.Context, slog.Level) bool { return true }
func (h *combined) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *combined) WithGroup(string) slog.Handler            { return h }

func (h *combined) Handle(_ context.Context, r slog.Record) error {
	var client, method, path, authority, proto, referer, agent string
	status, bytes := "-", "-"
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "client":
			client = a.Value.String()
		case "method":
			method = a.Value.String()
		case "path":
			path = a.Value.String()
		case "authority":
			authority = a.Value.String()
		case "proto":
			proto = a.Value.String()
		case "status":
			if n := a.Value.Int64(); n > 0 {
				status = strconv.FormatInt(n, 10)
			}
		case "bytes_out":
			bytes = strconv.FormatInt(a.Value.Int64(), 10)
		case "referer":
			referer = a.Value.String()
		case "user_agent":
			agent = a.Value.String()
		}
		return true
	})
	if host, _, ok := cutPort(client); ok {
		client = host
	}
	t := r.Time
	if t.IsZero() {
		t = time.Now()
	}
	// The request line as received; "-" for a head that could not be
	// read (nothing of it is known for sure), as nginx writes for none.
	request := "-"
	if method != "" {
		if method == "CONNECT" {
			path = authority
		}
		request = escape(method) + " " + escape(path) + " " + escape(cmp.Or(proto, "HTTP/1.1"))
	}
	line := fmt.Sprintf("%s - - [%s] \"%s\" %s %s %s %s\n", dash(client), t.Format("02/Jan/2006:15:04:05 -0700"),
		request, status, bytes, quote(referer), quote(agent))
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, line)
	return err
}

// cutPort splits "ip:port" or "[ipv6]:port" at its port.
func cutPort(s string) (host, port string, ok bool) {
	i := len(s) - 1
	for i >= 0 && s[i] >= '0' && s[i] <= '9' {
		i--
	}
	if i < 0 || s[i] != ':' || i == len(s)-1 {
		return s, "", false
	}
	host = s[:i]
	if len(host) > 1 && host[0] == '[' && host[len(host)-1] == ']' {
		host = host[1 : len(host)-1]
	}
	return host, s[i+1:], true
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func quote(s string) string {
	if s == "" {
		return `"-"`
	}
	return `"` + escape(s) + `"`
}

// escape writes the bytes a log reader could take for the format's own
// (quotes, backslashes) or for the end of a line, and any other control or
// non-ASCII byte, as \xHH, as nginx does.
func escape(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			b = append(b, '\\', 'x', "0123456789ABCDEF"[c>>4], "0123456789ABCDEF"[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}
