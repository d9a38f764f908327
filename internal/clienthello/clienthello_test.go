package clienthello

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"testing"
	"time"
)

// hello returns the ClientHello crypto/tls's client sends with cfg.
func hello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	client, server := net.Pipe()
	go func() {
		tls.Client(client, cfg).Handshake()
		client.Close()
	}()
	server.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := server.Read(buf)
		b = append(b, buf[:n]...)
		if _, perr := Parse(b); perr != ErrIncomplete || err != nil {
			break
		}
	}
	server.Close()
	return b
}

// fragment re-frames the handshake of one record into records of at
// most size bytes of payload each.
func fragment(rec []byte, size int) []byte {
	payload := rec[5:]
	var out []byte
	for len(payload) > 0 {
		n := min(size, len(payload))
		out = append(out, rec[0], rec[1], rec[2], byte(n>>8), byte(n))
		out = append(out, payload[:n]...)
		payload = payload[n:]
	}
	return out
}

func TestParse(t *testing.T) {
	pq := hello(t, &tls.Config{ServerName: "Svc.Example.com", NextProtos: []string{"h2", "http/1.1"},
		CurvePreferences: []tls.CurveID{tls.X25519MLKEM768, tls.X25519}})
	if len(pq) < 1500 {
		t.Fatalf("a post-quantum ClientHello of %d bytes: expected about 1.8 KiB", len(pq))
	}
	for _, tc := range []struct {
		name  string
		b     []byte
		want  Info
		error error
	}{
		{"post-quantum, one record", pq, Info{"svc.example.com", []string{"h2", "http/1.1"}}, nil},
		{"in 100-byte records", fragment(pq, 100), Info{"svc.example.com", []string{"h2", "http/1.1"}}, nil},
		{"in 1-byte records", fragment(pq[:5+300], 1), Info{}, ErrMalformed}, // over 64 records
		{"no SNI, no ALPN", hello(t, &tls.Config{InsecureSkipVerify: true}), Info{}, nil},
		{"the Kelvin sign is not a k", hello(t, &tls.Config{ServerName: "\u212aube.Test"}), Info{"\u212aube.test", nil}, nil},
		{"cut short", pq[:len(pq)-1], Info{}, ErrIncomplete},
		{"header only", pq[:5], Info{}, ErrIncomplete},
		{"HTTP", []byte("GET / HTTP/1.1\r\n\r\n"), Info{}, ErrNotTLS},
		{"a ServerHello", append([]byte{22, 3, 3, 0, 4}, 2, 0, 0, 0), Info{}, ErrNotTLS},
		{"over 16 KiB", []byte{22, 3, 1, 0, 4, 1, 0, 0x40, 0x01}, Info{}, ErrTooLarge},
		{"over 16 KiB, record cut short", []byte{22, 3, 1, 0x10, 0, 1, 0, 0x40, 0x01}, Info{}, ErrTooLarge},
		{"empty record", []byte{22, 3, 1, 0, 0}, Info{}, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.b)
			if !errors.Is(err, tc.error) {
				t.Fatalf("error %v, want %v", err, tc.error)
			}
			if err == nil && (got.ServerName != tc.want.ServerName || !slices.Equal(got.Protocols, tc.want.Protocols)) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	// Every beginning of a whole one is incomplete, never an error.
	for i := range len(pq) {
		if _, err := Parse(pq[:i]); err != ErrIncomplete {
			t.Fatalf("the first %d bytes: %v", i, err)
		}
	}
}

// oracle is crypto/tls's reading of b as a server: the ClientHelloInfo,
// or ok false if it did not take b as a ClientHello.
func oracle(b []byte) (info Info, ok bool) {
	errDone := errors.New("done")
	tls.Server(&bytesConn{Reader: bytes.NewReader(b)}, &tls.Config{GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		info = Info{asciiLower(chi.ServerName), chi.SupportedProtos}
		ok = true
		return nil, errDone
	}}).Handshake()
	return info, ok
}

// bytesConn is a connection whose peer sent the bytes of its Reader and
// then its FIN; what is written to it is dropped.
type bytesConn struct {
	*bytes.Reader
	net.Conn // not called
}

func (c *bytesConn) Read(p []byte) (int, error)       { return c.Reader.Read(p) }
func (c *bytesConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *bytesConn) Close() error                     { return nil }
func (c *bytesConn) SetDeadline(time.Time) error      { return nil }
func (c *bytesConn) SetReadDeadline(time.Time) error  { return nil }
func (c *bytesConn) SetWriteDeadline(time.Time) error { return nil }
func (c *bytesConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *bytesConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }

// FuzzParse holds Parse to crypto/tls: a ClientHello crypto/tls takes,
// Parse takes too (unless over 16 KiB), with the same name and
// protocols. Parse may refuse more than crypto/tls (it checks less of
// the rest, and the origin will refuse it), but never read another name.
func FuzzParse(f *testing.F) {
	for _, cfg := range []*tls.Config{
		{ServerName: "a.example", NextProtos: []string{"h2", "http/1.1"}},
		{ServerName: "b.example", CurvePreferences: []tls.CurveID{tls.X25519MLKEM768}},
		{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12},
	} {
		h := hello(f, cfg)
		f.Add(h)
		f.Add(fragment(h, 200))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := Parse(b)
		if len(b) > MaxRead+1024 {
			return
		}
		want, ok := oracle(b)
		if !ok {
			return
		}
		if errors.Is(err, ErrTooLarge) {
			return
		}
		if err != nil {
			t.Fatalf("crypto/tls took the hello (%+v); Parse: %v", want, err)
		}
		if got.ServerName != want.ServerName || !slices.Equal(got.Protocols, want.Protocols) {
			t.Fatalf("Parse read %+v, crypto/tls %+v", got, want)
		}
	})
}
