package sockio

import (
	"net"
	"net/netip"
	"time"
)

// Socket is a connection's socket as its owner uses it: net.Conn, the raw
// path beside it (for a plain TCP or Unix socket, while no other goroutine
// shares it), and the deadlines and interrupts of both directions.
type Socket struct {
	NC     net.Conn
	FD     int32 // the descriptor; -1 if unknown
	plain  int32 // FD if the socket is plain TCP or Unix; else -1
	raw    int32 // plain while the raw path is on; else -1
	shared int   // goroutines sharing the socket with its owner
	rd, wr Deadline
	under  *Underlay // under NC, if NC wraps the socket (InitWrapped)
}

// Init readies s for nc, whose descriptor is fd (-1 if unknown).
func (s *Socket) Init(nc net.Conn, fd int32) {
	s.NC, s.FD = nc, fd
	s.plain = PlainFD(nc, fd)
	s.raw = s.plain
}

// InitWrapped readies s for nc, which wraps the socket u (TLS): bytes go
// through nc only, and FD is u's, for waits.
func (s *Socket) InitWrapped(nc net.Conn, u *Underlay) {
	s.NC, s.FD, s.under = nc, FD(u.Conn), u
	s.plain, s.raw = -1, -1
}

// Under returns the socket under NC if NC wraps one, else nil.
func (s *Socket) Under() *Underlay { return s.under }

// Share turns the raw path off while another goroutine uses the socket
// or may stop a wait on it with a deadline; Unshare turns it back on once
// the last such goroutine is done. Only the owner calls them, while no
// other goroutine runs on the socket.
func (s *Socket) Share() {
	if s.shared == 0 {
		s.raw = -1
		if s.under != nil {
			s.under.fd = -1
		}
	}
	s.shared++
}

func (s *Socket) Unshare() {
	if s.shared--; s.shared == 0 {
		s.raw = s.plain
		if s.under != nil {
			s.under.fd = s.under.plain
		}
	}
}

// ReadRaw reads what it can without waiting (Read); 0 when the raw path is
// off or it read nothing.
func (s *Socket) ReadRaw(p []byte) int { return Read(s.raw, p) }

// WriteRaw writes what it can without waiting (Write).
func (s *Socket) WriteRaw(p []byte) int { return Write(s.raw, p) }

// EnsureReadDeadline and EnsureWriteDeadline keep a deadline (Deadline.Ensure).
func (s *Socket) EnsureReadDeadline(now, d, limit time.Duration) {
	s.rd.Ensure(s.NC.SetReadDeadline, now, d, limit)
}

func (s *Socket) EnsureWriteDeadline(now, d, limit time.Duration) {
	s.wr.Ensure(s.NC.SetWriteDeadline, now, d, limit)
}

// SetReadDeadline sets the read deadline to t (zero: none), an exception
// the next EnsureReadDeadline replaces (Deadline.Set).
func (s *Socket) SetReadDeadline(t time.Time) { s.rd.Set(s.NC.SetReadDeadline, t) }

// Interrupt, Interrupted and ClearInterrupt are Deadline's Interrupt,
// Interrupted and Reset, for writes if write is set, else for reads.
func (s *Socket) Interrupt(write bool) {
	if write {
		s.wr.Interrupt(s.NC.SetWriteDeadline)
	} else {
		s.rd.Interrupt(s.NC.SetReadDeadline)
	}
}

func (s *Socket) Interrupted(write bool) bool {
	if write {
		return s.wr.Interrupted()
	}
	return s.rd.Interrupted()
}

func (s *Socket) ClearInterrupt(write bool) {
	if write {
		s.wr.Reset(s.NC.SetWriteDeadline)
	} else {
		s.rd.Reset(s.NC.SetReadDeadline)
	}
}

// AddrPort returns a's address and port, or the zero value.
func AddrPort(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
