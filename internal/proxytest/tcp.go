package proxytest

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// TCPOrigin is a TCP server on loopback that runs handle per connection
// (and closes it after), until the test ends; it returns its address.
func TCPOrigin(t testing.TB, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				// A test that lowers the descriptor limit makes
				// accept fail for a moment (EMFILE); the origin
				// must outlive it.
				time.Sleep(5 * time.Millisecond)
				continue
			}
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			})
		}
	}()
	return ln.Addr().String()
}

// CopyPlain copies through a buffer, as an origin in a test should: io.Copy
// between TCP connections would splice, holding a pipe per connection in
// the test's process.
func CopyPlain(dst io.Writer, src io.Reader) (int64, error) {
	return io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, 32<<10))
}
