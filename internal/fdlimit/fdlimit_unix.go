//go:build unix

package fdlimit

import (
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
)

// Limit returns the process's limit on open file descriptors (the soft
// RLIMIT_NOFILE, which Go raises to the hard limit at start), or 0 if it
// cannot tell.
func Limit() int64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<40 {
		return 0
	}
	return int64(rl.Cur)
}

// Exhausted reports whether an accept or a dial failed for want of a file
// descriptor. The resolver reports it in words only.
func Exhausted(err error) bool {
	var de *net.DNSError
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.As(err, &de) && strings.Contains(de.Err, "too many open files")
}

// Spare is a file descriptor held in reserve, so that when the process
// runs out, one can be given up to accept a waiting client and tell it so
// (a 503) instead of leaving it in the listen backlog, where it would hang.
type Spare struct{ f *os.File }

// Reserve takes a descriptor to hold in reserve; the Spare holds none if
// none was free.
func Reserve() Spare {
	f, _ := os.Open(os.DevNull)
	return Spare{f}
}

// Release closes the reserved descriptor and reports whether there was one.
func (s *Spare) Release() bool {
	if s.f == nil {
		return false
	}
	s.f.Close()
	s.f = nil
	return true
}

// Held reports whether a descriptor is reserved.
func (s *Spare) Held() bool { return s.f != nil }
