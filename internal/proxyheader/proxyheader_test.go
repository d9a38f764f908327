package proxyheader

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pires/go-proxyproto"
)

// pair returns the two ends of a loopback TCP connection.
func pair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

func TestReadWrite(t *testing.T) {
	src, dst := netip.MustParseAddrPort("203.0.113.7:41000"), netip.MustParseAddrPort("[2001:db8::1]:443")
	src6 := netip.MustParseAddrPort("[2001:db8::9]:41000")
	for _, tc := range []struct {
		name     string
		version  byte
		src, dst netip.AddrPort
	}{
		{"v1 ipv4", 1, src, netip.MustParseAddrPort("198.51.100.1:443")},
		{"v2 ipv4", 2, src, netip.MustParseAddrPort("198.51.100.1:443")},
		{"v2 ipv6", 2, src6, dst},
		{"v2 ipv4-mapped", 2, netip.MustParseAddrPort("[::ffff:203.0.113.7]:41000"), netip.MustParseAddrPort("[::ffff:198.51.100.1]:443")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t)
			// The header and the first bytes in one segment: only the
			// header is taken.
			go func() {
				var b bufWriter
				Write(&b, tc.version, tc.src, tc.dst)
				c.Write(append(b, "after"...))
			}()
			gotSrc, gotDst, err := Read(s, time.Now().Add(5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if gotSrc.Addr().Unmap() != tc.src.Addr().Unmap() || gotSrc.Port() != tc.src.Port() || gotDst.Addr().Unmap() != tc.dst.Addr().Unmap() {
				t.Errorf("got %v -> %v, want %v -> %v", gotSrc, gotDst, tc.src, tc.dst)
			}
			rest := make([]byte, 5)
			if _, err := io.ReadFull(s, rest); err != nil || string(rest) != "after" {
				t.Errorf("after the header: %q, %v", rest, err)
			}
		})
	}
}

type bufWriter []byte

func (b *bufWriter) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }

func TestReadRefuses(t *testing.T) {
	local := proxyproto.HeaderProxyFromAddrs(2, nil, nil)
	local.Command = proxyproto.LOCAL
	var localBytes bufWriter
	local.WriteTo(&localBytes)
	for _, tc := range []struct {
		name string
		send string
		want error
	}{
		{"no header", "GET / HTTP/1.1\r\n\r\n", ErrMissing},
		{"v2 over 4 KiB", string(sigV2) + "\x21\x11\xea\x60", ErrMalformed}, // 60000 bytes of addresses
		{"v2 just over", string(sigV2) + "\x21\x11\x10\x01", ErrMalformed},
		{"bad v1", "PROXY TCP4 1.2.3.4 x 1 2\r\n", ErrMalformed},
		{"v1 too long", "PROXY TCP4 " + string(make([]byte, 120)), ErrMalformed},
		{"half a v2", string(sigV2[:8]), errTimeout},
		// A peek sees the bytes, not the FIN behind them: the wait ends
		// at the deadline.
		{"closed midway", "PROXY TCP4 1.2.3.4", errTimeout},
		{"v2 LOCAL", string(localBytes), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, s := pair(t)
			c.Write([]byte(tc.send))
			c.CloseWrite()
			src, _, err := Read(s, time.Now().Add(200*time.Millisecond))
			if tc.want == errTimeout {
				var ne net.Error
				if !errors.As(err, &ne) || !ne.Timeout() {
					t.Errorf("err %v, want a timeout", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Errorf("err %v, want %v", err, tc.want)
			}
			if tc.want == nil && src != s.RemoteAddr().(*net.TCPAddr).AddrPort() {
				t.Errorf("LOCAL: src %v, want the socket's", src)
			}
		})
	}
}

var errTimeout = errors.New("timeout")

func TestTrusted(t *testing.T) {
	ps := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	for a, want := range map[string]bool{"10.1.2.3": true, "::ffff:10.1.2.3": true, "11.0.0.1": false, "::1": true, "127.0.0.1": false} {
		if got := Trusted(ps, netip.MustParseAddr(a)); got != want {
			t.Errorf("Trusted(%s) = %v", a, got)
		}
	}
}

// FuzzHeader: headerSize never asks for less than a whole header nor
// more than it can know, and what it delimits parses or is refused
// without a panic.
func FuzzHeader(f *testing.F) {
	for _, v := range []byte{1, 2} {
		var b bufWriter
		Write(&b, v, netip.MustParseAddrPort("203.0.113.7:41000"), netip.MustParseAddrPort("198.51.100.1:443"))
		f.Add([]byte(b))
		f.Add(append([]byte(b), "GET / HTTP/1.1\r\n"...))
	}
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		size, err := headerSize(b)
		if err != nil || size == 0 || size > len(b) {
			return
		}
		if size < 8 {
			t.Fatalf("a header of %d bytes", size)
		}
		proxyproto.Read(bufio.NewReader(bytes.NewReader(b[:size])))
	})
}

// TestAccept: a header is taken from a trusted peer only.
func TestAccept(t *testing.T) {
	c, s := pair(t)
	var b bufWriter
	Write(&b, 2, netip.MustParseAddrPort("203.0.113.7:41000"), netip.MustParseAddrPort("198.51.100.1:443"))
	c.Write(b)
	if _, _, err := Accept(s, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, time.Second); !errors.Is(err, ErrUntrusted) {
		t.Errorf("from 127.0.0.1, trusting 10/8: %v", err)
	}
	src, _, err := Accept(s, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, time.Second)
	if err != nil || src != netip.MustParseAddrPort("203.0.113.7:41000") {
		t.Errorf("trusted: %v, %v", src, err)
	}
}
