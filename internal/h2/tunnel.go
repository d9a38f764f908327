package h2

import (
	"io"
	"net"
	"time"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/mono"
	istream "github.com/straitproxy/strait/internal/stream"
)

// tunnelStream is an HTTP/2 stream that carries a tunnel (an extended
// CONNECT, RFC 8441): a client's stream, or one to an upstream.
type tunnelStream interface {
	readBody(deadline time.Duration) ([]byte, error)
	WriteBody(p []byte) error
	Flush() error
	EndBody(trailer *header.Header) error
	Interrupt(d istream.Dir)
}

// tunnelConn is a tunnel's stream as a net.Conn, for tunnel.Relay: its
// reads are the peer's DATA, its writes strait's.
type tunnelConn struct {
	s             tunnelStream
	local, remote net.Addr
	rest          []byte        // read and not yet taken
	deadline      time.Duration // for reads (mono); 0: a minute
}

func (tc *tunnelConn) Read(p []byte) (int, error) {
	if len(tc.rest) == 0 {
		deadline := tc.deadline
		if deadline == 0 {
			deadline = mono.Now() + time.Minute
		}
		data, err := tc.s.readBody(deadline)
		tc.rest = data
		if len(data) == 0 {
			return 0, err
		}
		if err != nil && err != io.EOF {
			return 0, err
		}
	}
	n := copy(p, tc.rest)
	tc.rest = tc.rest[n:]
	return n, nil
}

func (tc *tunnelConn) Write(p []byte) (int, error) {
	if err := tc.s.WriteBody(p); err != nil {
		return 0, err
	}
	return len(p), tc.s.Flush()
}

// CloseWrite ends strait's side of the stream (END_STREAM).
func (tc *tunnelConn) CloseWrite() error {
	if err := tc.s.EndBody(nil); err != nil {
		return err
	}
	return tc.s.Flush()
}

// Close ends the relay's waits on the stream; the stream itself ends as
// its exchange does.
func (tc *tunnelConn) Close() error {
	tc.s.Interrupt(istream.Read)
	tc.s.Interrupt(istream.Write)
	return nil
}

func (tc *tunnelConn) SetReadDeadline(t time.Time) error {
	tc.deadline = mono.Now() + time.Until(t)
	return nil
}

func (tc *tunnelConn) SetDeadline(t time.Time) error    { return tc.SetReadDeadline(t) }
func (tc *tunnelConn) SetWriteDeadline(time.Time) error { return nil } // the stream's write timeout bounds each write
func (tc *tunnelConn) LocalAddr() net.Addr              { return tc.local }
func (tc *tunnelConn) RemoteAddr() net.Addr             { return tc.remote }
