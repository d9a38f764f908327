//go:build linux

package udpproxy

import (
	"net"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// BenchmarkRelayRoundTrip is a datagram to an echoing origin and back
// through the relay, with a client and an origin that allocate nothing:
// the relay's allocations per round trip are the figure (0).
func BenchmarkRelayRoundTrip(b *testing.B) {
	_, addr := start(b, Options{}, echo(b, false))
	c := dial(b, addr)
	p, buf := make([]byte, 64), make([]byte, 128)
	c.SetReadDeadline(time.Now().Add(time.Minute))
	c.Write(p) // the flow opens, out of the count
	c.Read(buf)
	b.ReportAllocs()
	for b.Loop() {
		c.Write(p)
		if _, err := c.Read(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// queued returns a socket with n datagrams of 64 bytes waiting on it,
// and a func that queues n more.
func queued(b *testing.B, n int) (*net.UDPConn, func()) {
	r, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	w, err := net.DialUDP("udp", nil, r.LocalAddr().(*net.UDPAddr))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.Close() })
	p := make([]byte, 64)
	fill := func() {
		for range n {
			w.Write(p)
		}
	}
	return r, fill
}

// BenchmarkReadBatchXNet reads 32 datagrams with x/net's
// ipv4.PacketConn.ReadBatch (recvmmsg underneath), reusing its messages:
// it allocates for each datagram (the source address), which is why
// udpproxy calls recvmmsg itself.
func BenchmarkReadBatchXNet(b *testing.B) {
	r, fill := queued(b, batchSize)
	pc := ipv4.NewPacketConn(r)
	msgs := make([]ipv4.Message, batchSize)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{make([]byte, 2048)}
	}
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		fill()
		b.StartTimer()
		for got := 0; got < batchSize; {
			n, err := pc.ReadBatch(msgs[got:], 0)
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
}

// BenchmarkReadBatchRaw reads the same with udpproxy's batch.
func BenchmarkReadBatchRaw(b *testing.B) {
	r, fill := queued(b, batchSize)
	rc, _ := r.SyscallConn()
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	bt := newBatch(batchSize, 2048)
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		fill()
		b.StartTimer()
		for got := 0; got < batchSize; {
			bt.armRecv(got, batchSize, true)
			n, e := mmsg(unix.SYS_RECVMMSG, fd, bt.msgs[got:])
			if e != 0 {
				b.Fatal(e)
			}
			for i := got; i < got+n; i++ {
				_ = bt.source(i)
			}
			got += n
		}
	}
}
