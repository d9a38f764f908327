package tcpproxy

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLoopServes: a plain listener's connections are relayed by event
// loops, one per CPU.
func TestLoopServes(t *testing.T) {
	p := start(t, Options{}, origin(t, echo))
	c := dial(t, p.addr)
	io.WriteString(c, "ping")
	c.CloseWrite()
	if b, _ := io.ReadAll(c); string(b) != "ping" {
		t.Fatalf("relayed %q", b)
	}
	p.srv.mu.Lock()
	n := len(p.srv.loops)
	p.srv.mu.Unlock()
	if n != runtime.GOMAXPROCS(0) {
		t.Errorf("%d event loops, want %d", n, runtime.GOMAXPROCS(0))
	}
}

// TestLoopFairness: on one loop, small exchanges on one relay go on
// beside a bulk relay. (Here the bulk relay runs dry often enough that
// this passes without pumpBudget too: the budget guards against peers
// faster than the loop.)
func TestLoopFairness(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	sink := origin(t, func(c *net.TCPConn) { io.Copy(io.Discard, struct{ io.Reader }{c}) })
	bulk := start(t, Options{}, sink)
	small := start(t, Options{}, origin(t, echo))
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		c, err := net.Dial("tcp", bulk.addr)
		if err != nil {
			return
		}
		defer c.Close()
		buf := make([]byte, 1<<20)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond) // the bulk relay is busy
	c := dial(t, small.addr)
	msg, got := []byte("ping"), make([]byte, 4)
	for i := range 20 {
		c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("exchange %d beside a bulk relay: %q, %v", i, got, err)
		}
	}
}

// TestLoopConnectTimeout: a connect that gets no answer ends at the
// connect timeout, and the next endpoint takes the client.
func TestLoopConnectTimeout(t *testing.T) {
	dead := fullListener(t).String()
	p := start(t, Options{ConnectTimeout: 300 * time.Millisecond}, dead, origin(t, echo))
	for i := range 4 { // round robin: some go to the dead one first
		c := dial(t, p.addr)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "ping")
		c.CloseWrite()
		if b, err := io.ReadAll(c); string(b) != "ping" {
			t.Fatalf("client %d: %q, %v", i, b, err)
		}
	}
	if n := p.srv.Stats.NoUpstream.Load(); n != 0 {
		t.Errorf("%d clients got no endpoint", n)
	}
}

// TestUrgentDataCorked: urgent data in one segment with what follows it:
// just before the client's FIN (a read stops short at the urgent mark,
// which must not be taken for the end), and after a bulk burst (splice
// stops at the mark; the bytes after it go on at once, with no other
// event to come).
func TestUrgentDataCorked(t *testing.T) {
	p := start(t, Options{IdleTimeout: 10 * time.Second}, origin(t, echo))
	for _, tc := range []struct {
		name         string
		before, tail int
		fin          bool
	}{
		{"before the FIN", 100, 100, true},
		{"after bulk", 1 << 20, 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, p.addr)
			raw, _ := c.SyscallConn()
			before, tail := bytes.Repeat([]byte("a"), tc.before), bytes.Repeat([]byte("c"), tc.tail)
			go raw.Write(func(fd uintptr) bool {
				// Blocking sends, corked: one burst, urgent byte within.
				syscall.SetNonblock(int(fd), false)
				syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_CORK, 1)
				syscall.Write(int(fd), before)
				syscall.Sendto(int(fd), []byte("!"), syscall.MSG_OOB, nil)
				syscall.Write(int(fd), tail)
				if tc.fin {
					syscall.Shutdown(int(fd), syscall.SHUT_WR)
				} else {
					syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_CORK, 0)
				}
				syscall.SetNonblock(int(fd), true)
				return true
			})
			want := append(append([]byte{}, before...), tail...)
			got := make([]byte, len(want))
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, err := io.ReadFull(c, got)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("read back %d of %d bytes (%v), equal %v", n, len(want), err, bytes.Equal(got, want))
			}
		})
	}
}
