//go:build !linux

package udpproxy

import (
	"context"
	"errors"
	"net"
)

var errLinux = errors.New("udpproxy: UDP relaying needs Linux (recvmmsg, sendmmsg, epoll)")

// Server is a stub off Linux: Serve fails.
type Server struct {
	Stats Stats
}

// New returns a Server that cannot serve.
func New(Options) *Server { return &Server{} }

// Probe finds nothing off Linux.
func Probe() (Features, error) { return Features{}, errLinux }

// Serve fails off Linux.
func (s *Server) Serve([]*net.UDPConn, Features) error { return errLinux }

// Shutdown has nothing to stop.
func (s *Server) Shutdown(context.Context) error { return nil }
