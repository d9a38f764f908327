package accesslog

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func record(attrs ...slog.Attr) slog.Record {
	r := slog.NewRecord(time.Date(2026, 10, 10, 13, 55, 36, 0, time.UTC), slog.LevelInfo, "request", 0)
	r.AddAttrs(attrs...)
	return r
}

func TestCombined(t *testing.T) {
	for _, tc := range []struct {
		attrs []slog.Attr
		want  string
	}{
		{[]slog.Attr{slog.String("method", "GET"), slog.String("path", "/a?b=c"), slog.Int("status", 200),
			slog.String("client", "192.0.2.7:5555"), slog.Int64("bytes_out", 2326),
			slog.String("referer", "http://example.com/"), slog.String("user_agent", "curl/8.0")},
			`192.0.2.7 - - [10/Oct/2026:13:55:36 +0000] "GET /a?b=c HTTP/1.1" 200 2326 "http://example.com/" "curl/8.0"` + "\n"},
		{[]slog.Attr{slog.String("method", "GET"), slog.String("path", "/x"), slog.String("proto", "HTTP/1.0"), slog.Int("status", 0),
			slog.String("client", "[2001:db8::1]:443"), slog.Int64("bytes_out", 0)},
			`2001:db8::1 - - [10/Oct/2026:13:55:36 +0000] "GET /x HTTP/1.0" - 0 "-" "-"` + "\n"},
		// A head that could not be read: no request line.
		{[]slog.Attr{slog.String("method", ""), slog.String("path", ""), slog.String("proto", ""), slog.Int("status", 400),
			slog.String("client", "192.0.2.7:1"), slog.Int64("bytes_out", 11)},
			`192.0.2.7 - - [10/Oct/2026:13:55:36 +0000] "-" 400 11 "-" "-"` + "\n"},
		{[]slog.Attr{slog.String("method", "CONNECT"), slog.String("path", "/"), slog.String("authority", "evil:443"), slog.Int("status", 405),
			slog.String("client", "192.0.2.7:1")},
			`192.0.2.7 - - [10/Oct/2026:13:55:36 +0000] "CONNECT evil:443 HTTP/1.1" 405 - "-" "-"` + "\n"},
		// What a client sends cannot end the line or a quoted part early.
		{[]slog.Attr{slog.String("method", "GET"), slog.String("path", "/\"x\\"), slog.Int("status", 400),
			slog.String("client", "192.0.2.7:1"), slog.String("user_agent", "a\"b\nc\xff")},
			`192.0.2.7 - - [10/Oct/2026:13:55:36 +0000] "GET /\x22x\x5C HTTP/1.1" 400 - "-" "a\x22b\x0Ac\xFF"` + "\n"},
	} {
		var buf bytes.Buffer
		if err := NewHandler(&buf, "combined", nil).Handle(context.Background(), record(tc.attrs...)); err != nil {
			t.Fatal(err)
		}
		if buf.String() != tc.want {
			t.Errorf("got  %q\nwant %q", buf.String(), tc.want)
		}
	}
}

func TestJSONFields(t *testing.T) {
	var buf bytes.Buffer
	h := NewHandler(&buf, "json", []string{"status", "path"})
	h.Handle(context.Background(), record(slog.String("path", "/a"), slog.Int("status", 200), slog.String("client", "192.0.2.7:1")))
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	if len(m) != 5 || m["path"] != "/a" || m["status"] != 200.0 || m["msg"] != "request" || m["client"] != nil {
		t.Errorf("line %v, want time, level, msg, path and status only", m)
	}
}

// TestReopen: after the file is moved, lines go on to it until Reopen,
// then to a new file at the path.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	f, err := OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Write([]byte("one\n"))
	os.Rename(path, path+".1")
	f.Write([]byte("two\n"))
	if err := f.Reopen(); err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("three\n"))
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if string(old) != "one\ntwo\n" || string(cur) != "three\n" {
		t.Errorf("moved file %q, new file %q", old, cur)
	}
	if st, _ := os.Stat(path); st.Mode().Perm()&0o027 != 0 {
		t.Errorf("new file's mode %v, want at most 0640", st.Mode())
	}
}
