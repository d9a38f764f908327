package tcpproxy

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAcceptor: an accepted socket knows its client's address without
// asking, has TCP_NODELAY (inherited from the listener), knows its local
// address when asked (a wildcard listener's included), and the acceptor
// ends when closed while the listener stays open.
func TestAcceptor(t *testing.T) {
	for _, tc := range []struct{ listen, connect string }{
		{"127.0.0.1:0", "127.0.0.1"},
		{"0.0.0.0:0", "127.0.0.1"},
		{"[::1]:0", "::1"},
		{"[::]:0", "::1"},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			ln, err := net.Listen("tcp", tc.listen)
			if err != nil {
				t.Skip(err) // no IPv6 here
			}
			defer ln.Close()
			a := newAcceptor(ln)
			if a == nil {
				t.Fatal("no acceptor for a TCP listener")
			}
			port := ln.Addr().(*net.TCPAddr).Port
			c, err := net.Dial("tcp", net.JoinHostPort(tc.connect, strconv.Itoa(port)))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := a.next()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// A dual-stack listener's IPv4 client is IPv4-mapped, as
			// net gives it.
			if got, want := s.remote, c.LocalAddr().(*net.TCPAddr).AddrPort(); unmap(got) != want {
				t.Errorf("remote %v, want %v", got, want)
			}
			if got, want := s.localAddr(), c.RemoteAddr().(*net.TCPAddr).AddrPort(); unmap(got) != want {
				t.Errorf("local %v, want %v", got, want)
			}
			var nodelay int
			s.control(func(fd int) (err error) {
				nodelay, err = unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY)
				return err
			})
			if nodelay == 0 {
				t.Error("the accepted socket has no TCP_NODELAY")
			}
			// Bytes both ways, through the poller.
			go c.Write([]byte("ping"))
			b := make([]byte, 4)
			s.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(s, b); err != nil || string(b) != "ping" {
				t.Fatalf("read %q, %v", b, err)
			}

			done := make(chan error, 1)
			go func() {
				_, err := a.next()
				done <- err
			}()
			time.Sleep(20 * time.Millisecond)
			a.close()
			select {
			case err := <-done:
				if err == nil {
					t.Error("next after close: no error")
				}
			case <-time.After(5 * time.Second):
				t.Fatal("next still waits after close")
			}
			// The listener is still open: its queue takes connections.
			if c2, err := net.Dial("tcp", ln.Addr().String()); err != nil {
				t.Errorf("the listener after the acceptor closed: %v", err)
			} else {
				c2.Close()
			}
		})
	}
}

func unmap(ap netip.AddrPort) netip.AddrPort { return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()) }

// TestConnectTCP: a connect that completes, one refused, and one that
// never completes (a listener whose queue is full drops the SYN), which
// ends at the timeout as a timeout.
func TestConnectTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	s, err := connectTCP(addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if s.remote != addr {
		t.Errorf("remote %v, want %v", s.remote, addr)
	}
	s.Close()

	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := closed.Addr().(*net.TCPAddr).AddrPort()
	closed.Close()
	_, err = connectTCP(refused, time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) || !strings.Contains(err.Error(), "dial tcp "+refused.String()) {
		t.Errorf("refused: %v", err)
	}

	full := fullListener(t)
	start := time.Now()
	_, err = connectTCP(full, 300*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("a SYN dropped: %v, want a timeout", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Errorf("timed out after %v, want 300ms", d)
	}
}

// fullListener returns the address of a listening socket whose accept
// queue is full, so that the kernel drops new SYNs.
func fullListener(t *testing.T) netip.AddrPort {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	addr := addrPort(sa)
	// A backlog of 0 queues one connection: fill it, and try one more.
	for range 2 {
		if c, err := net.DialTimeout("tcp", addr.String(), 200*time.Millisecond); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return addr
}

// TestRelayByName: an endpoint given by name, not address, is dialed by
// net, and relays as well.
func TestRelayByName(t *testing.T) {
	addr := origin(t, echo)
	_, port, _ := net.SplitHostPort(addr)
	p := start(t, Options{}, "localhost:"+port)
	c := dial(t, p.addr)
	io.WriteString(c, "ping")
	c.CloseWrite()
	if b, _ := io.ReadAll(c); string(b) != "ping" {
		t.Fatalf("relayed %q", b)
	}
}

// TestZones: a link-local address keeps its zone from the kernel's
// scope id, and an endpoint with a zone is dialed by net, which maps the
// zone to its interface (connectTCP would connect without one).
func TestZones(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip(err)
	}
	sa := &unix.SockaddrInet6{Port: 80, Addr: netip.MustParseAddr("fe80::1").As16(), ZoneId: uint32(lo.Index)}
	if got := addrPort(sa); got.String() != "[fe80::1%lo]:80" {
		t.Errorf("accepted from %v, want [fe80::1%%lo]:80", got)
	}
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip(err)
	}
	defer ln.Close()
	s := New(Options{})
	var d net.Dialer
	c, err := s.dial(&d, "[::1%lo]:"+strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.(*net.TCPConn); !ok {
		t.Errorf("an endpoint with a zone was dialed as %T, not by net", c)
	}
}
