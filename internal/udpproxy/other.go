//go:build !linux

package udpproxy

import (
	"context"
	"errors"
	"net"
)

var errLinux = errors.New("udpproxy: UDP relaying needs Linux (recvmmsg, sendmmsg, epoll)")

// Server is a stub off Linux: New fails.
type Server struct {
	Stats Stats
}

// New fails off Linux.
func New(Options, []*net.UDPConn, Features) (*Server, error) { return nil, errLinux }

// Probe finds nothing off Linux.
func Probe() (Features, error) { return Features{}, errLinux }

// Serve fails off Linux.
func (s *Server) Serve() error { return errLinux }

// Shutdown has nothing to stop.
func (s *Server) Shutdown(context.Context) error { return nil }
