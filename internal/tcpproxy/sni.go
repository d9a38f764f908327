package tcpproxy

import (
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/internal/clienthello"
)

// Route sends TLS connections by their ClientHello, unterminated.
type Route struct {
	// Names are server names: exact, or *.example.com for one label
	// more; lower case.
	Names []string
	// ALPN, if set, also needs the client to offer one of these.
	ALPN    []string
	Cluster *cluster.Cluster
}

// matches reports whether r takes a ClientHello naming name and offering
// protos.
func (r *Route) matches(name string, protos []string) bool {
	if len(r.ALPN) > 0 && !slices.ContainsFunc(protos, func(p string) bool { return slices.Contains(r.ALPN, p) }) {
		return false
	}
	for _, n := range r.Names {
		if n == name {
			return true
		}
		if suffix, ok := strings.CutPrefix(n, "*"); ok && strings.HasSuffix(name, suffix) &&
			!strings.Contains(name[:len(name)-len(suffix)], ".") && len(name) > len(suffix) {
			return true
		}
	}
	return false
}

// helloBufs are the buffers ClientHellos are peeked into.
var helloBufs = sync.Pool{New: func() any { b := make([]byte, clienthello.MaxRead); return &b }}

// peekHello reads the ClientHello at the start of c without taking it
// from the socket, so that the relay passes it on as it came (and the
// socket stays bare for splice). It waits up to timeout for all of it.
func peekHello(c *net.TCPConn, timeout time.Duration) (clienthello.Info, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return clienthello.Info{}, err
	}
	bp := helloBufs.Get().(*[]byte)
	defer helloBufs.Put(bp)
	buf := *bp
	c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	var info clienthello.Info
	var perr error
	seen := 0
	err = rc.Read(func(fd uintptr) bool {
		n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch {
		case errno == syscall.EAGAIN:
			return false
		case errno != 0:
			perr = errno
			return true
		case n == 0:
			perr = io.ErrUnexpectedEOF // closed before the whole hello
			return true
		case int(n) == seen:
			return false // nothing new: wait for more
		}
		seen = int(n)
		info, perr = clienthello.Parse(buf[:n])
		if perr == clienthello.ErrIncomplete {
			if seen == len(buf) {
				perr = clienthello.ErrTooLarge
				return true
			}
			return false
		}
		return true
	})
	if err == nil {
		err = perr
	}
	return info, err
}
