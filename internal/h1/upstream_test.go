package h1

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/http1"
	"github.com/straitproxy/strait/internal/mono"
)

// TestRawIOTotalLimit: once the upstream total deadline has passed, reads
// and writes fail with a timeout even though the socket has bytes to read
// and room to write, where the raw path would otherwise succeed without
// ever looking at a deadline.
func TestRawIOTotalLimit(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()

	u := NewUpstream(nc, http1.Limits{})
	if _, err := peer.Write([]byte("response bytes")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	// Within the limit the bytes are read (and, on Linux, raw).
	u.Begin(mono.Now()+time.Minute, time.Minute, time.Minute)
	u.readIdle = time.Minute
	if n, err := u.Read(buf[:4]); n != 4 || err != nil {
		t.Fatalf("read within the limit: %d, %v", n, err)
	}
	if n, err := u.Write([]byte("req")); n != 3 || err != nil {
		t.Fatalf("write within the limit: %d, %v", n, err)
	}

	u.Begin(1, time.Minute, time.Minute) // long past
	u.readIdle = time.Minute
	if n, err := u.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the limit: %d bytes (%q), %v; want a timeout", n, buf[:n], err)
	}
	if n, err := u.Write([]byte("more")); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("write past the limit: %d, %v; want a timeout", n, err)
	}
}
