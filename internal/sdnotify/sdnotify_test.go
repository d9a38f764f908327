package sdnotify

import (
	"crypto/rand"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listen plays the service manager: a datagram socket at a path or, for
// mode "abstract", at a random abstract name. It returns the socket and
// the value NOTIFY_SOCKET would have.
func listen(t *testing.T, mode string) (*net.UnixConn, string) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify")
	if mode == "abstract" {
		name = "@strait-test-" + rand.Text()
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, name
}

func receive(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func getenv(socket string) func(string) string {
	return func(k string) string {
		if k == "NOTIFY_SOCKET" {
			return socket
		}
		return ""
	}
}

func TestNotifier(t *testing.T) {
	for _, mode := range []string{"path", "abstract"} {
		t.Run(mode, func(t *testing.T) {
			c, socket := listen(t, mode)
			n := New(getenv(socket))
			if n == nil {
				t.Fatalf("New with NOTIFY_SOCKET=%s = nil", socket)
			}
			for _, tc := range []struct {
				send func() error
				want string
			}{
				{func() error { return n.Notify("READY=1\nSTATUS=a\nX=y") }, "READY=1\nSTATUS=a\nX=y"},
				{func() error { return n.Ready("") }, "READY=1"},
				{func() error { return n.Ready("serving on 2 listeners") }, "READY=1\nSTATUS=serving on 2 listeners"},
				{func() error { return n.Ready("bad\nMAINPID=1") }, "READY=1\nSTATUS=bad MAINPID=1"},
				{func() error { return n.Stopping() }, "STOPPING=1"},
				{func() error { return n.MainPID(4242) }, "MAINPID=4242"},
			} {
				if err := tc.send(); err != nil {
					t.Fatal(err)
				}
				if got := receive(t, c); got != tc.want {
					t.Errorf("received %q, want %q", got, tc.want)
				}
			}
		})
	}
}

// TestReloading: MONOTONIC_USEC is the CLOCK_MONOTONIC reading at the
// time of sending.
func TestReloading(t *testing.T) {
	c, socket := listen(t, "path")
	before := monotonicUsec(t)
	if err := New(getenv(socket)).Reloading(); err != nil {
		t.Fatal(err)
	}
	after := monotonicUsec(t)
	got := receive(t, c)
	v, ok := strings.CutPrefix(got, "RELOADING=1\nMONOTONIC_USEC=")
	usec, err := strconv.ParseInt(v, 10, 64)
	if !ok || err != nil {
		t.Fatalf("received %q, want RELOADING=1 and MONOTONIC_USEC", got)
	}
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d, want between %d and %d", usec, before, after)
	}
}

func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1e3
}

// TestNil: without NOTIFY_SOCKET there is no Notifier, and calling one
// does nothing.
func TestNil(t *testing.T) {
	n := New(getenv(""))
	if n != nil {
		t.Fatalf("New without NOTIFY_SOCKET = %+v, want nil", n)
	}
	for name, err := range map[string]error{
		"Notify":    n.Notify("READY=1"),
		"Ready":     n.Ready("x"),
		"Reloading": n.Reloading(),
		"Stopping":  n.Stopping(),
		"MainPID":   n.MainPID(1),
	} {
		if err != nil {
			t.Errorf("%s on nil: %v", name, err)
		}
	}
}

func TestUnsupportedOrMissing(t *testing.T) {
	for _, socket := range []string{
		"vsock:2:1234",
		"relative/notify",
		"@",
		filepath.Join(t.TempDir(), "absent"),
	} {
		if err := New(getenv(socket)).Ready(""); err == nil {
			t.Errorf("NOTIFY_SOCKET=%s: Ready succeeded", socket)
		}
	}
	_, socket := listen(t, "path")
	if err := New(getenv(socket)).MainPID(0); err == nil {
		t.Error("MainPID(0) succeeded")
	}
}
