package main

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// sockperf ping-pong's output, colour codes and all (a run on this
// machine, through strait).
const sockperfSample = "sockperf: \x1b[2;35m== version #3.7-no.git == \x1b[0m\n" +
	"sockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)\n" +
	"\n" +
	"[ 0] IP = 127.0.0.1       PORT = 23456 # UDP\n" +
	"sockperf: Warmup stage (sending a few dummy messages)...\n" +
	"sockperf: Starting test...\n" +
	"sockperf: Test end (interrupted by timer)\n" +
	"sockperf: Test ended\n" +
	"sockperf: [Total Run] RunTime=2.000 sec; Warm up time=400 msec; SentMessages=20005; ReceivedMessages=20004\n" +
	"sockperf: ========= Printing statistics for Server No: 0\n" +
	"sockperf: [Valid Duration] RunTime=1.550 sec; SentMessages=15504; ReceivedMessages=15503\n" +
	"sockperf: \x1b[2;35m====> avg-rtt=18.216 (std-dev=14.431)\x1b[0m\n" +
	"sockperf: # dropped messages = 1; # duplicated messages = 0; # out-of-order messages = 0\n" +
	"sockperf: Summary: Round trip is 18.216 usec\n" +
	"sockperf: \x1b[2;35mTotal 15503 observations\x1b[0m; each percentile contains 155.03 observations\n" +
	"sockperf: ---> <MAX> observation = 3690.050\n" +
	"sockperf: ---> percentile 99.999 = 3690.050\n" +
	"sockperf: ---> percentile 99.990 =  249.353\n" +
	"sockperf: ---> percentile 99.900 =  201.112\n" +
	"sockperf: ---> percentile 99.000 =  162.878\n" +
	"sockperf: ---> percentile 90.000 =   17.694\n" +
	"sockperf: ---> percentile 75.000 =   17.092\n" +
	"sockperf: ---> percentile 50.000 =   17.232\n" +
	"sockperf: ---> percentile 25.000 =   16.431\n" +
	"sockperf: ---> <MIN> observation =   15.679\n"

func TestParseSockperf(t *testing.T) {
	r, err := parseSockperf(sockperfSample)
	if err != nil {
		t.Fatal(err)
	}
	want := sockperfResult{Sent: 20005, Received: 20004, ValidSent: 15504, Dropped: 1, Observations: 15503,
		P50: 17.232, P99: 162.878, P999: 201.112, Max: 3690.050, Avg: 18.216}
	if r != want {
		t.Errorf("parsed\n%+v, want\n%+v", r, want)
	}
	if _, err := parseSockperf("sockperf: Test ended\n"); err == nil {
		t.Error("output without observations: no error")
	}
}

func TestPercentile(t *testing.T) {
	var xs []int64
	for i := range int64(1000) {
		xs = append(xs, i+1) // 1..1000
	}
	for _, tc := range []struct {
		q    float64
		want int64
	}{{0.5, 500}, {0.99, 990}, {0.999, 999}, {1, 1000}, {0.0001, 1}} {
		if got := percentile(xs, tc.q); got != tc.want {
			t.Errorf("percentile(1..1000, %g) = %d, want %d", tc.q, got, tc.want)
		}
	}
	if got := percentile([]int64{7}, 0.99); got != 7 {
		t.Errorf("percentile of one value = %d, want it", got)
	}
	if got := percentile(nil, 0.5); got != 0 {
		t.Errorf("percentile of none = %d, want 0", got)
	}
}

func TestParseUDPTable(t *testing.T) {
	const table = `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  101: 0100007F:9C41 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 123456 2 0000000000000000 17
  102: 0100007F:D431 0100007F:9C41 01 00000000:00000000 00:00000000 00000000     0        0 123457 2 0000000000000000 0
`
	got := parseUDPTable(table)
	want := []udpSock{{local: 0x9C41, remote: 0, inode: 123456, drops: 17}, {local: 0xD431, remote: 0x9C41, inode: 123457, drops: 0}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("parsed %+v, want %+v", got, want)
	}
}

// The load generator straight to its own sink (the direct target): every
// request answered, nothing allocated per datagram.
func TestUDPLoadDirect(t *testing.T) {
	ports, err := freeUDPPorts(1)
	if err != nil {
		t.Fatal(err)
	}
	sink := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ports[0]))
	res, err := udpLoadGen(sink, sink, 3, 5000, 100, 200*time.Millisecond, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != 1000 || res.Replies != 1000 || res.SinkReceived != 1000 || res.Bad != 0 || res.Duplicates != 0 {
		t.Errorf("sent %d, sink received %d, replies %d, bad %d, duplicates %d; want 1000 each, none bad", res.Sent, res.SinkReceived, res.Replies, res.Bad, res.Duplicates)
	}
	if res.P50Us <= 0 || res.P99Us < res.P50Us || res.MaxUs < res.P99Us {
		t.Errorf("latency p50 %.1f, p99 %.1f, max %.1f µs: want 0 < p50 ≤ p99 ≤ max", res.P50Us, res.P99Us, res.MaxUs)
	}
	// The count is the process's: the test's other goroutines may add
	// one or two (the helper, a process of one goroutine, counts 0).
	if res.LoopAllocs > 10 {
		t.Errorf("%d allocations during the loop, want none per datagram", res.LoopAllocs)
	}
}

// The GSO sender straight to its GRO sink: every datagram counted.
func TestUDPPeakDirect(t *testing.T) {
	ports, err := freeUDPPorts(1)
	if err != nil {
		t.Fatal(err)
	}
	sink := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(ports[0]))
	res, err := udpPeakGen(sink, sink, 2, 1200, 8, 100*time.Millisecond)
	if err != nil {
		t.Skipf("GSO or GRO not available here: %v", err)
	}
	if res.Sent == 0 || res.Sent != res.SendCalls*8 || res.Received+res.Drops != res.Sent {
		t.Errorf("sent %d in %d calls, received %d, %d dropped at the sink: want 8 a call, all received or dropped", res.Sent, res.SendCalls, res.Received, res.Drops)
	}
}
