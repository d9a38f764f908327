// Package udpproxy relays UDP datagrams between clients and a cluster's
// endpoints, by flows: a client's address (its IP and port) gets a
// connected socket to one endpoint, which the cluster's balancer picks
// (ring_hash or maglev on the client's address keep a client on one
// endpoint when its flow expires and comes back), and loses it after an
// idle timeout.
//
// Each listening socket (several with SO_REUSEPORT, one per core) is a
// shard with an event loop of its own: one goroutine, an epoll set of
// the listening socket and of its flows' upstream sockets, and no lock.
// Datagrams move in batches both ways, recvmmsg and sendmmsg over
// reusable buffers, so that a datagram costs no system call of its own
// when several wait, no goroutine and no allocation. Where the kernel has
// them, UDP GRO hands over a run of a flow's datagrams as one buffer and
// UDP GSO sends it on as one (probed at start; the log says what is used).
// This is written on raw sockets rather than net.UDPConn, whose ReadFrom
// and WriteTo cost a system call each and whose batch API (x/net's
// ReadBatch) allocates per datagram.
//
// Spoofed sources must not evict real flows, or strait would send real
// replies to the spoofed addresses: a full table evicts only flows that
// were never answered (the oldest first), else the new flow is dropped
// and counted; and each source prefix (/24, /56) may open only so many
// flows a second.
package udpproxy

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/internal/udpxdp"
)

// Defaults of Options' zero values.
const (
	DefaultIdleTimeout       = time.Minute
	DefaultMaxFlows          = 10000
	DefaultNewFlowsPerPrefix = 1000 // a second
	DefaultBatchDelay        = 50 * time.Microsecond
)

// MaxDatagram is the most a UDP payload over IPv4 can be, and the most
// a GSO run that strait joins holds. Over IPv6 a datagram may have 20
// bytes more (65,527), which pass to an IPv6 endpoint; jumbograms do not
// fit strait's buffers and are dropped (too_big).
const MaxDatagram = 65507

// Prefix lengths whose sources share a new-flow rate.
const (
	prefix4 = 24
	prefix6 = 56
)

// Options configure a Server.
type Options struct {
	// Name is the listener's, for logs.
	Name    string
	Cluster *cluster.Cluster
	// IdleTimeout ends a flow that moved no datagram either way for that
	// long.
	IdleTimeout time.Duration
	// MaxFlows bounds the flows of the listener (of all its sockets).
	MaxFlows int
	// NewFlowsPerPrefix is how many new flows a second the sources of
	// one /24 (IPv4) or /56 (IPv6) may open, in bursts of as many.
	NewFlowsPerPrefix int
	// BatchDelay, when datagrams come often, is how long the loop waits
	// after a round that moved few before it looks again, so that more
	// gather for the next round: less CPU per datagram, up to that much
	// latency added; -1: none.
	BatchDelay time.Duration
	// FlowRate, if > 0, is how many datagrams a second a flow may send
	// each way, in bursts of up to FlowBurst; the rest are dropped and
	// counted (FlowRateDrops, and the XDP program's dropped).
	FlowRate  float64
	FlowBurst int
	// XDP, if set, forwards answered flows in the kernel; XDPInterfaces
	// are where it attaches (in XDPMode) while the server runs. Attaching
	// may fail (logged): the flows' datagrams then reach the loop.
	XDP           *udpxdp.Path
	XDPInterfaces []string
	XDPMode       udpxdp.Mode
	// Logger gets errors; AccessLog one line per flow, at its end (nil:
	// none).
	Logger    *slog.Logger
	AccessLog *slog.Logger
}

// Stats are a Server's counters.
type Stats struct {
	FlowsActive   atomic.Int64 // flows open now
	Flows         atomic.Int64 // flows opened
	FlowsExpired  atomic.Int64 // ended by the idle timeout
	FlowsEvicted  atomic.Int64 // never answered, ended to make room for a new one
	FlowsRefused  atomic.Int64 // upstream answered with ICMP unreachable: ended, the endpoint counted as failing
	FullDrops     atomic.Int64 // datagrams of new flows dropped: the table full of answered flows
	RateDrops     atomic.Int64 // datagrams of new flows dropped over their prefix's rate
	NoUpstream    atomic.Int64 // datagrams of new flows dropped: no endpoint to take them
	DatagramsIn   atomic.Int64 // client to upstream, relayed
	DatagramsOut  atomic.Int64 // upstream to client, relayed
	BytesIn       atomic.Int64
	BytesOut      atomic.Int64
	SendDrops     atomic.Int64 // datagrams dropped because a socket's send buffer was full, or the send failed (DatagramsIn and Out count them: they were taken)
	TooBig        atomic.Int64 // datagrams dropped as larger than a buffer (64 KiB)
	Batches       atomic.Int64 // receive calls that moved datagrams, both ways (DatagramsIn+Out over this: the batch size)
	GSOSends      atomic.Int64 // sends that carried several datagrams (GSO)
	GROReceives   atomic.Int64 // receives that gave several datagrams in one buffer (GRO)
	FlowRateDrops atomic.Int64 // datagrams dropped over their flow's rate, in user space (the XDP program counts its own)
	FlowsXDP      atomic.Int64 // flows forwarded in the kernel now
}

// Features are what the kernel offers a Server, probed when it starts.
type Features struct {
	GSO, GRO bool
}
