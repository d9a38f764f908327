package tcpproxy

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Accept and connect are made here with raw system calls rather than by
// net's Accept and Dial, which add a getsockname and a setsockopt to each
// accept, and a getsockname, a getpeername and a wait for the poller to
// each connect, even when the connect has already completed (on
// loopback it has, when the call returns). A system call is dear on the
// virtual machines strait is measured on; these were 4 of the 24 calls a
// short relayed connection cost. The socket waits through the runtime's
// poller all the same, as an *os.File (a fcntl and an epoll_ctl).

// conn is one side of a relay: a *sock, or a *net.TCPConn that net dialed
// (an endpoint given by name).
type conn interface {
	net.Conn
	syscall.Conn
	CloseWrite() error
	SetLinger(sec int) error
}

// sock is a TCP socket accepted or connected here.
type sock struct {
	*os.File
	rc     syscall.RawConn
	remote netip.AddrPort
	local  netip.AddrPort // once known: LocalAddr asks the kernel
}

func newSock(fd int, remote netip.AddrPort) *sock {
	f := os.NewFile(uintptr(fd), "tcp")
	rc, _ := f.SyscallConn() // fails only for a nil *os.File
	return &sock{File: f, rc: rc, remote: remote}
}

func (s *sock) SyscallConn() (syscall.RawConn, error) { return s.rc, nil }

func (s *sock) RemoteAddr() net.Addr { return net.TCPAddrFromAddrPort(s.remote) }

func (s *sock) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(s.localAddr()) }

// localAddr is the address the socket is bound to, asked of the kernel
// the first time: only a PROXY header sent upstream needs it.
func (s *sock) localAddr() netip.AddrPort {
	if !s.local.IsValid() {
		s.rc.Control(func(fd uintptr) {
			if sa, err := unix.Getsockname(int(fd)); err == nil {
				s.local = addrPort(sa)
			}
		})
	}
	return s.local
}

// control runs f on the descriptor, which stays open meanwhile.
func (s *sock) control(f func(fd int) error) error {
	var err error
	if cerr := s.rc.Control(func(fd uintptr) { err = f(int(fd)) }); cerr != nil {
		return cerr
	}
	return err
}

func (s *sock) CloseWrite() error {
	return s.control(func(fd int) error { return unix.Shutdown(fd, unix.SHUT_WR) })
}

func (s *sock) SetLinger(sec int) error {
	return s.control(func(fd int) error {
		return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: int32(sec)})
	})
}

// acceptor accepts on a listening socket with accept4, the accepted
// socket non-blocking and close-on-exec from the start. It waits on a
// duplicate of the socket's descriptor, its own: net's listener gives
// no raw reads, and the runtime's poller takes a descriptor once.
type acceptor struct {
	f      *os.File
	rc     syscall.RawConn
	fd     int
	remote netip.AddrPort
	err    error
	accept func(fd uintptr) bool // bound once: no allocation per accept
}

// newAcceptor returns an acceptor for ln, on a duplicate of its socket
// (listenerDups); nil if ln is no TCP socket.
func newAcceptor(ln net.Listener) *acceptor {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil
	}
	fds, err := listenerDups(sc, 1)
	if err != nil {
		return nil // not a TCP socket, or out of descriptors: net's Accept
	}
	dup := fds[0]
	a := &acceptor{f: os.NewFile(uintptr(dup), "tcp-listener")} // non-blocking as ln's: one open file
	a.rc, _ = a.f.SyscallConn()
	a.accept = func(fd uintptr) bool {
		for {
			nfd, remote, errno := rawAccept(int(fd))
			switch errno {
			case syscall.EAGAIN:
				return false
			case syscall.EINTR, syscall.ECONNABORTED:
				continue // as net's Accept does
			case 0:
				a.fd, a.remote, a.err = nfd, remote, nil
			default:
				a.fd, a.err = -1, os.NewSyscallError("accept4", errno)
			}
			return true
		}
	}
	return a
}

// listenerDups sets TCP_NODELAY on the listening socket ln, for the
// sockets it accepts to inherit (Linux copies the option): one call
// instead of one per connection; and returns n duplicates of its
// descriptor, close-on-exec, non-blocking as ln's (one open file).
func listenerDups(ln syscall.Conn, n int) ([]int, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	fds := make([]int, 0, n)
	cerr := rc.Control(func(fd uintptr) {
		if err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
			return
		}
		for range n {
			d, derr := unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
			if derr != nil {
				err = derr
				return
			}
			fds = append(fds, d)
		}
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, err
	}
	return fds, nil
}

// next waits for and accepts the next connection.
func (a *acceptor) next() (*sock, error) {
	if err := a.rc.Read(a.accept); err != nil {
		return nil, err
	}
	if a.err != nil {
		return nil, a.err
	}
	return newSock(a.fd, a.remote), nil
}

// close ends next's waiting, and closes the duplicate (the socket stays
// open as long as the listener does).
func (a *acceptor) close() { a.f.Close() }

// connectTCP connects to addr within timeout, with TCP_NODELAY set.
func connectTCP(addr netip.AddrPort, timeout time.Duration) (*sock, error) {
	family, sa := unix.AF_INET6, unix.Sockaddr(&unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()})
	if addr.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
	}
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Addr: net.TCPAddrFromAddrPort(addr), Err: err}
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, opErr(os.NewSyscallError("socket", err))
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		unix.Close(fd)
		return nil, opErr(os.NewSyscallError("setsockopt", err))
	}
	switch err := unix.Connect(fd, sa); err {
	case nil, unix.EINPROGRESS, unix.EINTR:
	default:
		unix.Close(fd)
		return nil, opErr(os.NewSyscallError("connect", err))
	}
	// A connect under way answers EALREADY when repeated; one that
	// completed, 0 or EISCONN; one that failed, its error. So a connect
	// already done (on loopback, one is as the first call returns) needs
	// no wait and no deadline.
	var cerr error
	connected := func(fd uintptr) bool {
		switch err := unix.Connect(int(fd), sa); err {
		case unix.EALREADY, unix.EINPROGRESS, unix.EINTR:
			return false
		case nil, unix.EISCONN:
			cerr = nil
		default:
			cerr = os.NewSyscallError("connect", err)
		}
		return true
	}
	s := newSock(fd, addr)
	if connected(uintptr(fd)) {
		err = cerr
	} else {
		s.SetWriteDeadline(time.Now().Add(timeout))
		if err = s.rc.Write(connected); err == nil {
			err = cerr
		}
		s.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		s.Close()
		return nil, opErr(err)
	}
	return s, nil
}

// zone is the name of the interface a link-local address is scoped to,
// as net names it.
func zone(id uint32) string {
	if id == 0 {
		return ""
	}
	if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
		return ifi.Name
	}
	return strconv.FormatUint(uint64(id), 10)
}

// addrPort returns sa's address and port; the zero value if it is no IP
// address.
func addrPort(sa unix.Sockaddr) netip.AddrPort {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(sa.Port))
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).WithZone(zone(sa.ZoneId)), uint16(sa.Port))
	}
	return netip.AddrPort{}
}

// The event loop's system calls (and the acceptor's accept4) never block:
// their sockets are non-blocking, and none lingers on close but to reset.
// So they are made raw: the runtime is not told, and its monitor does not
// hand the loop's processor to another thread when one takes a while (a
// loopback connect runs the whole handshake inside it), which cost a
// futex wake-up every other connection.

func rawErr(errno syscall.Errno) error {
	if errno == 0 {
		return nil
	}
	return errno
}

func rawClose(fd int) { syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0) }

func rawShutdownWrite(fd int) error {
	_, _, errno := syscall.RawSyscall(syscall.SYS_SHUTDOWN, uintptr(fd), syscall.SHUT_WR, 0)
	return rawErr(errno)
}

func rawSocket(family int) (int, error) {
	fd, _, errno := syscall.RawSyscall(syscall.SYS_SOCKET, uintptr(family), syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	return int(fd), rawErr(errno)
}

func rawSetsockopt(fd, level, opt int, p unsafe.Pointer, n uintptr) error {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(p), n, 0)
	return rawErr(errno)
}

func rawNoDelay(fd int) error {
	one := int32(1)
	return rawSetsockopt(fd, syscall.IPPROTO_TCP, syscall.TCP_NODELAY, unsafe.Pointer(&one), 4)
}

// rawResetOnClose makes fd's close send a reset (SO_LINGER 0).
func rawResetOnClose(fd int) {
	lg := syscall.Linger{Onoff: 1}
	rawSetsockopt(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, unsafe.Pointer(&lg), unsafe.Sizeof(lg))
}

func rawEpollCtl(ep, op, fd int, ev *unix.EpollEvent) error {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(ep), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return rawErr(errno)
}

// rawSockaddr writes ap into rsa (zeroed), and returns its family and
// length.
func rawSockaddr(ap netip.AddrPort, rsa *syscall.RawSockaddrInet6) (family int, n uintptr) {
	port := (*[2]byte)(unsafe.Pointer(&rsa.Port)) // network order
	port[0], port[1] = byte(ap.Port()>>8), byte(ap.Port())
	if ap.Addr().Is4() {
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(rsa))
		sa4.Family = syscall.AF_INET
		sa4.Addr = ap.Addr().As4()
		return syscall.AF_INET, syscall.SizeofSockaddrInet4
	}
	rsa.Family = syscall.AF_INET6
	rsa.Addr = ap.Addr().As16()
	return syscall.AF_INET6, syscall.SizeofSockaddrInet6
}

func rawConnect(fd int, rsa *syscall.RawSockaddrInet6, n uintptr) syscall.Errno {
	_, _, errno := syscall.RawSyscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(rsa)), n)
	return errno
}

// rawAccept accepts on the listening socket lfd, the socket non-blocking
// and close-on-exec, and returns it with its peer's address.
func rawAccept(lfd int) (int, netip.AddrPort, syscall.Errno) {
	var rsa syscall.RawSockaddrAny
	n := uint32(unsafe.Sizeof(rsa))
	fd, _, errno := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)),
		syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0, 0)
	if errno != 0 {
		return -1, netip.AddrPort{}, errno
	}
	var ap netip.AddrPort
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		ap = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), uint16(p[0])<<8|uint16(p[1]))
	case syscall.AF_INET6:
		sa := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		p := (*[2]byte)(unsafe.Pointer(&sa.Port))
		ap = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr).WithZone(zone(sa.Scope_id)), uint16(p[0])<<8|uint16(p[1]))
	}
	return int(fd), ap, 0
}
