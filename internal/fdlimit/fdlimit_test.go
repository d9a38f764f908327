//go:build unix

package fdlimit

import (
	"fmt"
	"net"
	"syscall"
	"testing"
)

// TestIsFDExhausted: running out of descriptors is recognised however it
// is reported, the resolver's words included.
func TestIsFDExhausted(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&net.OpError{Op: "accept", Err: syscall.EMFILE}, true},
		{fmt.Errorf("dial: %w", syscall.ENFILE), true},
		{&net.DNSError{Err: "dial udp 127.0.0.53:53: socket: too many open files", Name: "example.com"}, true},
		{&net.DNSError{Err: "no such host", Name: "example.com", IsNotFound: true}, false},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, false},
	} {
		if got := Exhausted(tc.err); got != tc.want {
			t.Errorf("Exhausted(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
