// Command udpnaive is the baseline the UDP benchmark measures strait's
// relay against: the UDP relay a Go developer writes in a few dozen lines,
// with one system call per datagram and nothing batched. One socket takes
// every client's datagrams (ReadFrom); each client address gets a socket
// connected to the upstream (net.DialUDP) and a goroutine that reads the
// upstream's replies from it and writes each back to the client
// (WriteTo). Flows never expire: the benchmark's runs are short and
// open a handful of them.
//
//	udpnaive -listen 127.0.0.1:9001 -upstream 127.0.0.1:9000
//
// The benchmark runs it with GOMAXPROCS=1, like the other relays.
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sync"
)

// maxDatagram is the largest UDP payload over IPv4.
const maxDatagram = 65507

func main() {
	listen := flag.String("listen", "127.0.0.1:9001", "`address` to take datagrams on")
	upstream := flag.String("upstream", "", "`address` (ip:port) to relay them to")
	flag.Parse()
	up, err := net.ResolveUDPAddr("udp", *upstream)
	if err != nil || *upstream == "" {
		fmt.Fprintf(os.Stderr, "udpnaive: -upstream %q: want ip:port (%v)\n", *upstream, err)
		os.Exit(2)
	}
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "udpnaive:", err)
		os.Exit(1)
	}
	fmt.Fprintln(os.Stderr, "udpnaive: relaying", pc.LocalAddr(), "to", up)

	var mu sync.Mutex
	flows := map[string]*net.UDPConn{}
	buf := make([]byte, maxDatagram)
	for {
		n, client, err := pc.ReadFrom(buf)
		if err != nil {
			fmt.Fprintln(os.Stderr, "udpnaive: read:", err)
			os.Exit(1)
		}
		key := client.String()
		mu.Lock()
		c := flows[key]
		if c == nil {
			if c, err = net.DialUDP("udp", nil, up); err != nil {
				mu.Unlock()
				fmt.Fprintln(os.Stderr, "udpnaive: dial:", err)
				continue
			}
			flows[key] = c
			go back(pc, c, client)
		}
		mu.Unlock()
		if _, err := c.Write(buf[:n]); err != nil {
			// ECONNREFUSED: an earlier datagram met a closed port. The
			// flow stays; the next datagram tries again.
			continue
		}
	}
}

// back relays the upstream's replies on c to client, one Read and one
// WriteTo per datagram, for as long as the process lives.
func back(pc net.PacketConn, c *net.UDPConn, client net.Addr) {
	buf := make([]byte, maxDatagram)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ECONNREFUSED from an ICMP error: read on
		}
		pc.WriteTo(buf[:n], client)
	}
}
