package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// -udp measures UDP relaying: strait (proxy --listen udp:// --upstream
// udp://), nginx's stream module (listen … udp) and udpnaive (a Go relay
// with one ReadFrom and one WriteTo per datagram), each alone on
// -proxy-cpu with one worker, with everything else on -load-cpu. On
// loopback the sending core also runs the receive path of what it sends,
// so the load CPU cannot offer enough to saturate a good relay: what
// separates relays is what each forwarded datagram costs on the relay's
// core, at a fixed offered rate. Three tests, each target once per round
// in a shuffled order:
//
//   - rate (one scenario per datagram size): bench's load generator (this
//     binary as bench -udp-helper load, see udphelper.go) sends requests
//     on -udp-flows flows, evenly paced at -udp-rate, through the relay to
//     its echoing sink, and takes the replies: loss, round-trip
//     percentiles, and the relay's CPU time per forwarded datagram.
//   - peak: the same binary as bench -udp-helper peak sends unpaced with
//     GSO (32 datagrams of 1200 bytes per sendmsg), on one flow and on
//     -udp-flows, to a sink that takes them with GRO and counts: the
//     highest rate each relay forwards.
//   - sockperf: sockperf ping-pong, one 64-byte message at a time at
//     udpSockperfMPS, through the relay to a sockperf server: the latency
//     a relay adds when nothing queues.
//
// direct is the load straight to the sink: the ceiling and the latency
// of the load CPU alone.

// udpTargets are what -udp measures; "base" joins them with -base.
var udpTargets = []string{"direct", "strait", "nginx", "naive"}

// udpPeers are the relays strait is compared with (and base, with -base).
var udpPeers = []string{"naive", "nginx"}

// udpGoals are the targets: strait's CPU per datagram at most
// this share of the peer's, at a fixed rate.
var udpGoals = map[string]float64{"naive": 1.0 / 3, "nginx": 1.0 / 8}

// udpMaxLoss is the loss (percent) the goals allow strait.
const udpMaxLoss = 1.0

// udpMaxSendStretch is how much longer than -duration a rate run's
// sends may take before the run is FAILED: the load generator could not
// keep the rate at all. Late sends alone do not fail a run: on this VM
// the load CPU stalls for milliseconds now and then (the host's doing),
// and the sends due meanwhile go out as it catches up; they are counted.
const udpMaxSendStretch = 1.1

// The kinds of test.
const (
	udpRate     = "rate"
	udpPeak     = "peak"
	udpSockperf = "sockperf"
)

// udpSockperfMPS and udpSockperfSize are the sockperf test's messages per
// second and message size.
const (
	udpSockperfMPS  = 10000
	udpSockperfSize = 64
)

// udpPeakSize and udpPeakSegments are the peak test's datagram size and
// datagrams per GSO send.
const (
	udpPeakSize     = 1200
	udpPeakSegments = 32
)

// udpScenario is one test with its parameters.
type udpScenario struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"`
	Size  int    `json:"size"`
	Flows int    `json:"flows"`
}

// udpScenarios lists what a run measures, in order.
func udpScenarios(cfg *config) []udpScenario {
	var out []udpScenario
	for _, size := range cfg.udpSizes {
		out = append(out, udpScenario{Name: fmt.Sprintf("rate-%d", size), Kind: udpRate, Size: size, Flows: cfg.udpFlows})
	}
	if cfg.udpPeak > 0 {
		out = append(out, udpScenario{Name: "peak-1flow", Kind: udpPeak, Size: udpPeakSize, Flows: 1})
		if cfg.udpFlows > 1 {
			out = append(out, udpScenario{Name: fmt.Sprintf("peak-%dflows", cfg.udpFlows), Kind: udpPeak, Size: udpPeakSize, Flows: cfg.udpFlows})
		}
	}
	return append(out, udpScenario{Name: fmt.Sprintf("sockperf-%d", udpSockperfSize), Kind: udpSockperf, Size: udpSockperfSize, Flows: 1})
}

// udpRun is one measured run.
type udpRun struct {
	Round    int     `json:"round"`
	Position int     `json:"position"` // 1-based place in the round's shuffled order
	Scenario string  `json:"scenario"`
	Kind     string  `json:"kind"`
	Target   string  `json:"target"`
	Valid    bool    `json:"valid"`
	Noisy    bool    `json:"noisy,omitempty"` // valid, but other processes took over -max-other
	Failure  string  `json:"failure,omitempty"`
	WallS    float64 `json:"wall_s"`

	// Sent is requests (rate, sockperf) or datagrams (peak) sent;
	// Replies the requests answered; SinkReceived what reached the sink
	// (rate: requests, peak: datagrams).
	Sent         int64   `json:"sent"`
	Replies      int64   `json:"replies,omitempty"`
	SinkReceived int64   `json:"sink_received,omitempty"`
	LossPct      float64 `json:"loss_percent"`
	SendErrors   int64   `json:"send_errors,omitempty"`
	// rate: sends later than udpLateAfter, the worst, duplicates and
	// foreign datagrams.
	Late       int64   `json:"late_sends,omitempty"`
	MaxLateUs  float64 `json:"max_late_us,omitempty"`
	Duplicates int64   `json:"duplicates,omitempty"`
	Bad        int64   `json:"bad,omitempty"`
	SentPerS   float64 `json:"sent_per_s,omitempty"` // rate: requests/s achieved
	LoopAllocs uint64  `json:"load_loop_allocs"`     // rate: allocations in the load generator's loop (0 but for error messages)
	// Round-trip latency, client to client (rate: bench's load
	// generator, every request; sockperf: its percentiles).
	P50Us  float64 `json:"p50_us,omitempty"`
	P99Us  float64 `json:"p99_us,omitempty"`
	P999Us float64 `json:"p99_9_us,omitempty"`
	MaxUs  float64 `json:"max_us,omitempty"`
	// peak: datagrams the sink received per second.
	ForwardedPerS float64 `json:"forwarded_per_s,omitempty"`
	GROReceives   int64   `json:"sink_gro_receives,omitempty"`

	// RelayDrops counts datagrams the kernel dropped at the relay's
	// sockets (a full receive buffer), LoadDrops at the helper's own.
	RelayDrops int64 `json:"relay_socket_drops"`
	LoadDrops  int64 `json:"load_socket_drops"`

	// Forwarded is the datagrams the relay forwarded, both ways: rate,
	// requests at the sink plus replies at the clients (2 per answered
	// request); peak, datagrams at the sink; sockperf, 2 per reply.
	Forwarded int64 `json:"forwarded_datagrams"`
	// RelayCPUS is the relay's own CPU time (user + system, all its
	// processes) during the run; CoreBusyS is -proxy-cpu's busy time
	// from /proc/stat.
	RelayCPUS       float64 `json:"relay_cpu_s"`
	CoreBusyS       float64 `json:"proxy_core_busy_s"`
	RelayCPUPercent float64 `json:"relay_cpu_percent"`
	// CostUs is RelayCPUS per forwarded datagram, in µs; CoreCostUs the
	// same of CoreBusyS.
	CostUs          float64  `json:"relay_cpu_us_per_datagram"`
	CoreCostUs      float64  `json:"proxy_core_us_per_datagram"`
	OtherCPUPercent float64  `json:"other_processes_cpu_percent"`
	Errors          []string `json:"sample_errors,omitempty"`
}

// udpSummary is one target's figures over its counted runs in one
// scenario: medians, with min–max of the cost.
type udpSummary struct {
	Scenario        string    `json:"scenario"`
	Target          string    `json:"target"`
	Runs            int       `json:"runs"`
	Valid           int       `json:"valid_runs"` // counted
	Noisy           int       `json:"noisy_runs"`
	SentPerS        float64   `json:"median_sent_per_s,omitempty"`
	LossPct         float64   `json:"median_loss_percent"`
	MaxLossPct      float64   `json:"max_loss_percent"`
	LatePct         float64   `json:"median_late_percent,omitempty"` // sends over udpLateAfter late
	P50Us           float64   `json:"median_p50_us,omitempty"`
	P99Us           float64   `json:"median_p99_us,omitempty"`
	P999Us          float64   `json:"median_p99_9_us,omitempty"`
	ForwardedPerS   float64   `json:"median_forwarded_per_s,omitempty"`
	RateMin         float64   `json:"min_forwarded_per_s,omitempty"`
	RateMax         float64   `json:"max_forwarded_per_s,omitempty"`
	OverDirect      float64   `json:"forwarded_over_direct,omitempty"`
	CostUs          float64   `json:"median_relay_cpu_us_per_datagram"`
	CostMin         float64   `json:"min_relay_cpu_us_per_datagram"`
	CostMax         float64   `json:"max_relay_cpu_us_per_datagram"`
	CoreCostUs      float64   `json:"median_proxy_core_us_per_datagram"`
	RelayCPUPercent float64   `json:"median_relay_cpu_percent"`
	RelayDrops      int64     `json:"relay_socket_drops_total"`
	LoadDrops       int64     `json:"load_socket_drops_total"`
	OtherCPUPercent float64   `json:"median_other_processes_cpu_percent"`
	Each            []float64 `json:"counted_values"` // per counted run: µs/datagram (rate), forwarded/s (peak), p99 µs (sockperf)
}

// udpComparison is strait's figures over one peer's in one scenario.
type udpComparison struct {
	Scenario string `json:"scenario"`
	Peer     string `json:"peer"`
	// Ratios of medians: relay CPU per datagram, from the process and
	// from the core (below 1: strait cheaper), and forwarded rate (peak;
	// above 1: strait faster).
	Cost     float64 `json:"strait_over_peer_cpu_per_datagram"`
	CoreCost float64 `json:"strait_over_peer_core_per_datagram"`
	Rate     float64 `json:"strait_over_peer_forwarded_rate,omitempty"`
	// The same, median of the per-round ratios.
	PairedCost     float64 `json:"strait_over_peer_cpu_per_datagram_paired"`
	PairedCoreCost float64 `json:"strait_over_peer_core_per_datagram_paired"`
	PairedRate     float64 `json:"strait_over_peer_forwarded_rate_paired,omitempty"`
	Pairs          int     `json:"paired_rounds"`
}

// udpAdded is the latency strait adds over direct in one scenario: the
// difference of the medians, and the median of per-round differences.
type udpAdded struct {
	Scenario  string  `json:"scenario"`
	P50Us     float64 `json:"p50_us"`
	P99Us     float64 `json:"p99_us"`
	PairedP50 float64 `json:"p50_us_paired"`
	PairedP99 float64 `json:"p99_us_paired"`
	Pairs     int     `json:"paired_rounds"`
}

type udpReport struct {
	Started     time.Time     `json:"started"`
	Finished    time.Time     `json:"finished"`
	Seed        uint64        `json:"seed"`
	Rounds      int           `json:"rounds"`
	DurationS   float64       `json:"duration_s"`
	WarmupS     float64       `json:"warmup_s"`
	PeakS       float64       `json:"peak_duration_s"`
	ProxyCPU    int           `json:"proxy_cpu"`
	LoadCPU     int           `json:"load_cpu"`
	Rate        int           `json:"requests_per_s"` // rate test, over all flows
	Flows       int           `json:"flows"`
	WaitS       float64       `json:"reply_wait_s"`
	Scenarios   []udpScenario `json:"scenarios"`
	Targets     []string      `json:"targets"`
	Offloads    string        `json:"strait_offloads"` // what strait logged it found (GSO, GRO)
	WaitQuietS  float64       `json:"wait_quiet_s"`
	MaxOther    float64       `json:"max_other_percent"`
	Nice        int           `json:"nice"`
	Environment [][2]string   `json:"environment"`
	Runs        []*udpRun     `json:"runs"`

	Summaries   []udpSummary    `json:"summaries"`
	Comparisons []udpComparison `json:"comparisons"`
	Added       []udpAdded      `json:"latency_strait_adds"`
	// ProcessLogs is what each relay logged during the runs, grouped.
	ProcessLogs   map[string][]logGroup `json:"process_logs_during_runs"`
	InvalidReason []string              `json:"invalid,omitempty"`
}

// udpRelay is one relay process (or direct) and the port it takes
// datagrams on.
type udpRelay struct {
	name     string
	port     int
	upstream int
	proc     *proc // nil for direct
}

// udpReplyWait is how long the load generator waits for replies after
// its last send: a request unanswered by then is lost.
const udpReplyWait = time.Second

// runUDP is the -udp mode.
func (b *bench) runUDP(ctx context.Context) error {
	cfg := b.cfg
	sockperf, ok := lookTool("sockperf")
	if !ok {
		return errors.New("sockperf is not installed (apt-get install -y sockperf)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	naive := filepath.Join(b.tmp, "udpnaive")
	build := exec.CommandContext(ctx, "go", "build", "-o", naive, "./bench/udpnaive")
	build.Dir = b.root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./bench/udpnaive: %v\n%s", err, out)
	}
	targets := slices.Clone(udpTargets)
	if b.base != "" {
		targets = append(targets, "base")
	}
	scenarios := udpScenarios(cfg)
	seed := cfg.seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(seed, seed>>32|1))

	env := b.environment(ctx)
	out, _ := exec.CommandContext(ctx, sockperf, "--version").CombinedOutput()
	env = append(env, [2]string{"sockperf", strings.TrimSpace(firstLine(string(out)))})
	rep := &udpReport{
		Started: b.started.UTC(), Seed: seed, Rounds: cfg.rounds,
		DurationS: cfg.duration.Seconds(), WarmupS: cfg.warmup.Seconds(), PeakS: cfg.udpPeak.Seconds(),
		ProxyCPU: cfg.proxyCPU, LoadCPU: cfg.loadCPU, Rate: cfg.udpRate, Flows: cfg.udpFlows, WaitS: udpReplyWait.Seconds(),
		Scenarios: scenarios, Targets: targets,
		WaitQuietS: cfg.waitQuiet.Seconds(), MaxOther: cfg.maxOther, Nice: cfg.nice,
		Environment: env, ProcessLogs: map[string][]logGroup{},
	}

	// The sink port is bound by each load generator run in turn; the
	// sockperf server is a long-running process on the load CPU.
	ports, err := freeUDPPorts(2)
	if err != nil {
		return err
	}
	sinkPort, spPort := ports[0], ports[1]
	spArgs := []string{"server", "-i", "127.0.0.1", "-p", strconv.Itoa(spPort)}
	spSrv, err := b.start("sockperf-server", cfg.loadCPU, nil, sockperf, spArgs...)
	if err != nil {
		return err
	}
	if err := waitUDP(ctx, spSrv, spPort); err != nil {
		return err
	}

	// Every relay runs for the whole benchmark, idle while another is
	// measured: one in front of the sink (rate and peak), one in front of
	// the sockperf server.
	relays := map[string]map[string]*udpRelay{"sink": {}, udpSockperf: {}}
	upstreams := map[string]int{"sink": sinkPort, udpSockperf: spPort}
	var logged []*udpRelay
	logStart := map[*udpRelay]int{}
	for _, set := range []string{"sink", udpSockperf} {
		for _, name := range targets {
			r, err := b.startUDPRelay(ctx, name, set, naive, upstreams[set])
			if err != nil {
				return fmt.Errorf("%s (%s): %w", name, set, err)
			}
			if set == "sink" {
				// A few requests through it, every one answered and
				// byte-checked, before any load.
				res, err := b.runUDPLoad(ctx, self, r, udpScenario{Kind: udpRate, Size: 64, Flows: 2}, 1000, 300*time.Millisecond)
				if err == nil && (res.Replies != res.Sent || res.Bad > 0 || res.Sent == 0) {
					err = fmt.Errorf("%d of %d requests answered, %d bad datagrams %v", res.Replies, res.Sent, res.Bad, res.Errors)
				}
				if err != nil {
					return fmt.Errorf("%s: requests through it: %v", name, err)
				}
			}
			relays[set][name] = r
			if r.proc != nil {
				logStart[r] = len(r.proc.logLines())
				logged = append(logged, r)
			}
		}
	}
	if r := relays["sink"]["strait"]; r != nil {
		rep.Offloads = straitOffloads(r.proc.logLines())
	}
	printUDPHeader(os.Stdout, rep)

	if pct := b.waitQuiet(ctx, 0); pct >= 10 {
		fmt.Fprintf(os.Stderr, "bench: warning: other processes are using %.0f%% of a CPU; expect noise (see the \"other CPU\" column; -wait-quiet waits)\n", pct)
	}
	// What a round takes, with the overheads seen here: process starts
	// and waits for replies, and sockperf's own start and warm-up.
	var per time.Duration
	for _, sc := range scenarios {
		switch sc.Kind {
		case udpRate:
			per += cfg.warmup + cfg.duration + 500*time.Millisecond
		case udpPeak:
			per += cfg.udpPeak + min(cfg.warmup, cfg.udpPeak/10) + 600*time.Millisecond
		case udpSockperf:
			per += cfg.duration + 2200*time.Millisecond
		}
	}
	n := cfg.rounds * len(scenarios) * len(targets)
	fmt.Fprintf(os.Stderr, "bench -udp: %d runs: about %v; seed %d\n",
		n, (time.Duration(cfg.rounds*len(targets)) * per).Round(time.Second), seed)

	for round := 1; round <= cfg.rounds; round++ {
		for _, sc := range scenarios {
			order := slices.Clone(targets)
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for pos, name := range order {
				if sc.Kind == udpSockperf && spSrv.exited() {
					fmt.Fprintf(os.Stderr, "bench: the sockperf server exited (%v); restarting it\n", spSrv.err)
					if spSrv, err = b.start("sockperf-server", cfg.loadCPU, nil, sockperf, spArgs...); err != nil {
						return err
					}
					if err := waitUDP(ctx, spSrv, spPort); err != nil {
						return err
					}
				}
				var r *udpRun
				switch sc.Kind {
				case udpRate:
					r = b.measureUDPRate(ctx, self, relays["sink"][name], sc)
				case udpPeak:
					r = b.measureUDPPeak(ctx, self, relays["sink"][name], sc)
				default:
					r = b.measureSockperf(ctx, sockperf, relays[udpSockperf][name], sc)
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.Round, r.Position = round, pos+1
				rep.Runs = append(rep.Runs, r)
				udpProgress(round, cfg.rounds, pos+1, len(order), r)
			}
		}
	}
	rep.Finished = time.Now().UTC()
	for _, r := range logged {
		if lines := r.proc.logLines(); len(lines) > logStart[r] {
			key := r.name + " (" + r.proc.name + ")"
			rep.ProcessLogs[key] = groupLines(lines[logStart[r]:])
		}
	}
	summarizeUDP(rep)
	printUDP(os.Stdout, rep)
	return b.writeJSON(rep, "-udp")
}

var reOffloads = regexp.MustCompile(`"gso":(\w+),"gro":(\w+)`)

// straitOffloads is what strait logged at start about the kernel's UDP
// offloads (GSO, GRO), which decide how it moves datagrams.
func straitOffloads(lines []string) string {
	for _, l := range lines {
		if !strings.Contains(l, "offloads") {
			continue
		}
		if m := reOffloads.FindStringSubmatch(l); m != nil {
			return fmt.Sprintf("GSO %s, GRO %s", m[1], m[2])
		}
		return strings.TrimSpace(reLogTime.ReplaceAllString(reJSONTime.ReplaceAllString(l, ""), ""))
	}
	return ""
}

// freeUDPPorts asks the kernel for n free loopback UDP ports, as
// freePorts does for TCP.
func freeUDPPorts(n int) ([]int, error) {
	var ports []int
	var pcs []net.PacketConn
	defer func() {
		for _, pc := range pcs {
			pc.Close()
		}
	}()
	for range n {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		pcs = append(pcs, pc)
		ports = append(ports, pc.LocalAddr().(*net.UDPAddr).Port)
	}
	return ports, nil
}

// waitUDP waits, for up to 15 s, until a UDP socket is bound to port
// (from /proc/net/udp: there is no handshake to probe with).
func waitUDP(ctx context.Context, p *proc, port int) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, s := range udpSocketTable() {
			if s.local == port && s.remote == 0 {
				return nil
			}
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.logTail(20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing is bound to UDP port %d after 15 s", port)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// startUDPRelay starts the named relay on -proxy-cpu in front of
// 127.0.0.1:upstream, and waits for its socket.
func (b *bench) startUDPRelay(ctx context.Context, name, set, naive string, upstream int) (*udpRelay, error) {
	if name == "direct" {
		return &udpRelay{name: name, port: upstream, upstream: upstream}, nil
	}
	ports, err := freeUDPPorts(1)
	if err != nil {
		return nil, err
	}
	r := &udpRelay{name: name, port: ports[0], upstream: upstream}
	proc := name + "-udp-" + set // the log file's and the config's name
	listen := fmt.Sprintf("127.0.0.1:%d", r.port)
	up := fmt.Sprintf("127.0.0.1:%d", upstream)
	cpu := b.cfg.proxyCPU
	switch name {
	case "strait", "base":
		bin := b.strait
		if name == "base" {
			bin = b.base
		}
		r.proc, err = b.start(proc, cpu, []string{"GOMAXPROCS=1"}, bin, "proxy", "--listen", "udp://"+listen, "--upstream", "udp://"+up)
	case "nginx":
		if _, err := os.Stat(nginxStreamModule); err != nil {
			return nil, fmt.Errorf("nginx's stream module: %v (apt-get install -y libnginx-mod-stream)", err)
		}
		var conf string
		if conf, err = b.writeFile(proc+".conf", b.nginxUDPConf(proc, listen, up)); err == nil {
			r.proc, err = b.start(proc, cpu, nil, nginxBin(), b.nginxArgs(proc, conf)...)
		}
	case "naive":
		r.proc, err = b.start(proc, cpu, []string{"GOMAXPROCS=1"}, naive, "-listen", listen, "-upstream", up)
	default:
		err = fmt.Errorf("unknown UDP target %q", name)
	}
	if err != nil {
		return nil, err
	}
	return r, waitUDP(ctx, r.proc, r.port)
}

// nginxUDPConf is nginx relaying UDP with its stream module: one worker,
// a session per client address that ends after 30 s without a datagram,
// its defaults otherwise (any number of replies per request).
func (b *bench) nginxUDPConf(name, listen, upstream string) string {
	d := b.tmp
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile %[1]d;
pid %[2]s/%[3]s.pid;
error_log %[2]s/%[3]s.log warn;
load_module %[4]s;
events {
    worker_connections %[5]d;
}
stream {
    server {
        listen %[6]s udp;
        proxy_pass %[7]s;
        proxy_timeout 30s;
    }
}
`, b.nofile, d, name, nginxStreamModule, b.nofile-100, listen, upstream)
}

// udpMeter is what a measured run reads before and after: the relay's
// CPU time, its core's busy time, other processes' CPU, and the drop
// counters of the relay's sockets.
type udpMeter struct {
	b     *bench
	r     *udpRelay
	pids  []int
	ours  map[int]bool
	start time.Time
	cpu   float64
	busy  int64
	other float64
	drops map[uint64]int64
}

func (b *bench) startUDPMeter(r *udpRelay) *udpMeter {
	m := &udpMeter{b: b, r: r, ours: b.ourPIDs()}
	if r.proc != nil {
		m.pids = r.proc.pids()
	}
	m.drops = m.relayDrops()
	m.other = otherCPUSeconds(m.ours)
	m.cpu = cpuSeconds(m.pids)
	m.busy, _ = cpuBusy(b.cfg.proxyCPU)
	m.start = time.Now()
	return m
}

// relayDrops reads the drop counters of the relay's sockets by inode:
// those bound to its port, and its flows' sockets (connected to the
// upstream's port). Nothing for direct.
func (m *udpMeter) relayDrops() map[uint64]int64 {
	out := map[uint64]int64{}
	if m.r.proc == nil {
		return out
	}
	for _, s := range udpSocketTable() {
		if s.local == m.r.port || s.remote == m.r.upstream {
			out[s.inode] = s.drops
		}
	}
	return out
}

// stop fills the run's CPU figures and relay drops; Forwarded must be
// set.
func (m *udpMeter) stop(run *udpRun) {
	run.WallS = time.Since(m.start).Seconds()
	busy, _ := cpuBusy(m.b.cfg.proxyCPU)
	cpu := cpuSeconds(m.pids)
	other := otherCPUSeconds(m.ours)
	run.OtherCPUPercent = (other - m.other) / run.WallS * 100
	run.CoreBusyS = float64(busy-m.busy) / clockTicks
	if m.r.proc == nil {
		return
	}
	for ino, d := range m.relayDrops() {
		run.RelayDrops += d - m.drops[ino] // a new socket's counter started at 0
	}
	run.RelayCPUS = cpu - m.cpu
	run.RelayCPUPercent = run.RelayCPUS / run.WallS * 100
	if run.Forwarded > 0 {
		run.CostUs = run.RelayCPUS / float64(run.Forwarded) * 1e6
		run.CoreCostUs = run.CoreBusyS / float64(run.Forwarded) * 1e6
	}
}

// udpHelperRun runs this binary as bench -udp-helper mode on the load
// CPU with GOMAXPROCS=1, and decodes its JSON into res.
func (b *bench) udpHelperRun(ctx context.Context, self, mode string, args []string, d time.Duration, res any) error {
	ctx, cancel := context.WithTimeout(ctx, d+60*time.Second)
	defer cancel()
	argv := b.pinned(b.cfg.loadCPU, append([]string{self, udpHelperArg, mode}, args...))
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("udp %s generator: %v %s", mode, err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, res); err != nil {
		return fmt.Errorf("udp %s generator: %v: %q", mode, err, out)
	}
	return nil
}

// runUDPLoad runs the paced load generator through r for d.
func (b *bench) runUDPLoad(ctx context.Context, self string, r *udpRelay, sc udpScenario, rate int, d time.Duration) (*udpLoadResult, error) {
	res := &udpLoadResult{}
	err := b.udpHelperRun(ctx, self, "load", []string{
		"-target", fmt.Sprintf("127.0.0.1:%d", r.port), "-sink", fmt.Sprintf("127.0.0.1:%d", r.upstream),
		"-flows", strconv.Itoa(sc.Flows), "-rate", strconv.Itoa(rate), "-size", strconv.Itoa(sc.Size),
		"-duration", d.String(), "-wait", udpReplyWait.String(),
	}, d, res)
	return res, err
}

// runUDPPeak runs the GSO load generator through r for d.
func (b *bench) runUDPPeak(ctx context.Context, self string, r *udpRelay, sc udpScenario, d time.Duration) (*udpPeakResult, error) {
	res := &udpPeakResult{}
	err := b.udpHelperRun(ctx, self, "peak", []string{
		"-target", fmt.Sprintf("127.0.0.1:%d", r.port), "-sink", fmt.Sprintf("127.0.0.1:%d", r.upstream),
		"-flows", strconv.Itoa(sc.Flows), "-size", strconv.Itoa(sc.Size), "-segments", strconv.Itoa(udpPeakSegments),
		"-duration", d.String(),
	}, d, res)
	return res, err
}

// udpBefore checks that r runs and waits for quiet, as the other modes
// do before a run; it returns a failed run if r is not running.
func (b *bench) udpBefore(ctx context.Context, r *udpRelay, sc udpScenario) *udpRun {
	run := &udpRun{Scenario: sc.Name, Kind: sc.Kind, Target: r.name}
	if r.proc != nil && r.proc.exited() {
		run.Failure = fmt.Sprintf("%s is not running (exited: %v)", r.name, r.proc.err)
		return run
	}
	if b.cfg.waitQuiet > 0 {
		b.waitQuiet(ctx, b.cfg.waitQuiet)
	}
	return run
}

// udpAfter decides whether run is valid, given the generator's error
// and what failed otherwise.
func (b *bench) udpAfter(run *udpRun, r *udpRelay, err error, failure string) {
	switch {
	case err != nil:
		run.Failure = err.Error()
	case r.proc != nil && r.proc.exited():
		run.Failure = fmt.Sprintf("%s exited during the run: %v\n%s", r.name, r.proc.err, r.proc.logTail(20))
	case failure != "":
		run.Failure = failure
	default:
		run.Valid = true
	}
	run.Noisy = run.Valid && b.cfg.maxOther > 0 && run.OtherCPUPercent > b.cfg.maxOther
}

// measureUDPRate runs one warm-up and one measured paced run through r.
func (b *bench) measureUDPRate(ctx context.Context, self string, r *udpRelay, sc udpScenario) *udpRun {
	run := b.udpBefore(ctx, r, sc)
	if run.Failure != "" {
		return run
	}
	if b.cfg.warmup > 0 {
		b.runUDPLoad(ctx, self, r, sc, b.cfg.udpRate, b.cfg.warmup)
	}
	m := b.startUDPMeter(r)
	res, err := b.runUDPLoad(ctx, self, r, sc, b.cfg.udpRate, b.cfg.duration)
	run.Sent, run.Replies, run.SinkReceived, run.SendErrors = res.Sent, res.Replies, res.SinkReceived, res.SendErrors
	run.Late, run.MaxLateUs, run.Duplicates, run.Bad = res.Late, res.MaxLateUs, res.Duplicates, res.Bad
	run.P50Us, run.P99Us, run.P999Us, run.MaxUs = res.P50Us, res.P99Us, res.P999Us, res.MaxUs
	run.LoadDrops, run.Errors, run.LoopAllocs = res.Drops, res.Errors, res.LoopAllocs
	if res.SendS > 0 {
		run.SentPerS = float64(res.Sent-1) / res.SendS
	}
	if res.Sent > 0 {
		run.LossPct = float64(res.Sent-res.Replies) / float64(res.Sent) * 100
	}
	run.Forwarded = res.SinkReceived + res.Replies
	m.stop(run)
	failure := ""
	switch {
	case res.Replies == 0:
		failure = "no request answered"
	case res.SendS > udpMaxSendStretch*b.cfg.duration.Seconds():
		failure = fmt.Sprintf("the load generator fell behind: its sends took %.2fs, not %v (%d over %v late, worst %.0f µs)", res.SendS, b.cfg.duration, res.Late, udpLateAfter, res.MaxLateUs)
	}
	b.udpAfter(run, r, err, failure)
	return run
}

// measureUDPPeak runs one GSO peak run through r; a short warm-up (a
// tenth of the run) opens its flows first.
func (b *bench) measureUDPPeak(ctx context.Context, self string, r *udpRelay, sc udpScenario) *udpRun {
	run := b.udpBefore(ctx, r, sc)
	if run.Failure != "" {
		return run
	}
	if w := min(b.cfg.warmup, b.cfg.udpPeak/10); w > 0 {
		b.runUDPPeak(ctx, self, r, sc, w)
	}
	m := b.startUDPMeter(r)
	res, err := b.runUDPPeak(ctx, self, r, sc, b.cfg.udpPeak)
	run.Sent, run.SinkReceived, run.SendErrors, run.GROReceives = res.Sent, res.Received, res.SendErrors, res.GROReceives
	run.LoadDrops, run.Errors = res.Drops, res.Errors
	if res.RecvS > 0 {
		run.ForwardedPerS = float64(res.Received) / res.RecvS
	}
	if res.Sent > 0 {
		run.LossPct = float64(res.Sent-res.Received) / float64(res.Sent) * 100
	}
	run.Forwarded = res.Received
	m.stop(run)
	failure := ""
	if res.Received == 0 {
		failure = "no datagram reached the sink"
	}
	b.udpAfter(run, r, err, failure)
	return run
}

// sockperfResult is what is read from sockperf ping-pong's output.
type sockperfResult struct {
	Sent, Received           int64 // the whole run, warm-up included
	ValidSent, Dropped       int64 // the measured part
	Observations             int64
	P50, P99, P999, Max, Avg float64 // µs, round trip (--full-rtt)
}

var (
	reANSI          = regexp.MustCompile(`\x1b\[[0-9;]*m`)
	reSockperfTotal = regexp.MustCompile(`\[Total Run\].*SentMessages=(\d+); ReceivedMessages=(\d+)`)
	reSockperfValid = regexp.MustCompile(`\[Valid Duration\].*SentMessages=(\d+); ReceivedMessages=(\d+)`)
	reSockperfDrop  = regexp.MustCompile(`# dropped messages = (\d+)`)
	reSockperfObs   = regexp.MustCompile(`Total (\d+) observations`)
	reSockperfAvg   = regexp.MustCompile(`avg-(?:rtt|latency)=([\d.]+)`)
	reSockperfPct   = regexp.MustCompile(`---> (?:percentile ([\d.]+)|<(MAX)> observation) =\s*([\d.]+)`)
)

// parseSockperf reads sockperf ping-pong's summary (colour codes and all).
func parseSockperf(out string) (sockperfResult, error) {
	var r sockperfResult
	out = reANSI.ReplaceAllString(out, "")
	atoi := func(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }
	if m := reSockperfTotal.FindStringSubmatch(out); m != nil {
		r.Sent, r.Received = atoi(m[1]), atoi(m[2])
	}
	if m := reSockperfValid.FindStringSubmatch(out); m != nil {
		r.ValidSent = atoi(m[1])
	}
	if m := reSockperfDrop.FindStringSubmatch(out); m != nil {
		r.Dropped = atoi(m[1])
	}
	if m := reSockperfObs.FindStringSubmatch(out); m != nil {
		r.Observations = atoi(m[1])
	}
	if m := reSockperfAvg.FindStringSubmatch(out); m != nil {
		r.Avg, _ = strconv.ParseFloat(m[1], 64)
	}
	for _, m := range reSockperfPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[3], 64)
		switch {
		case m[2] == "MAX":
			r.Max = v
		case m[1] == "50.000":
			r.P50 = v
		case m[1] == "99.000":
			r.P99 = v
		case m[1] == "99.900":
			r.P999 = v
		}
	}
	if r.Observations == 0 || r.P99 == 0 {
		return r, errors.New("sockperf: no latency observations in its output")
	}
	return r, nil
}

// measureSockperf runs sockperf ping-pong through r for -duration. Its
// own warm-up (400 ms, not counted in its figures) opens the flow, so
// there is no separate warm-up run.
func (b *bench) measureSockperf(ctx context.Context, sockperf string, r *udpRelay, sc udpScenario) *udpRun {
	run := b.udpBefore(ctx, r, sc)
	if run.Failure != "" {
		return run
	}
	m := b.startUDPMeter(r)
	rctx, cancel := context.WithTimeout(ctx, b.cfg.duration+30*time.Second)
	defer cancel()
	argv := b.pinned(b.cfg.loadCPU, []string{sockperf, "ping-pong", "-i", "127.0.0.1", "-p", strconv.Itoa(r.port),
		"-m", strconv.Itoa(sc.Size), "-t", strconv.Itoa(int(b.cfg.duration.Seconds())),
		"--mps", strconv.Itoa(udpSockperfMPS), "--full-rtt"})
	out, err := exec.CommandContext(rctx, argv[0], argv[1:]...).CombinedOutput()
	var res sockperfResult
	if err != nil {
		err = fmt.Errorf("sockperf: %v: %s", err, strings.TrimSpace(lastLines(string(out), 3)))
	} else if res, err = parseSockperf(string(out)); err != nil {
		err = fmt.Errorf("%v: %s", err, strings.TrimSpace(lastLines(string(out), 3)))
	}
	run.Sent, run.Replies = res.Sent, res.Received
	run.P50Us, run.P99Us, run.P999Us, run.MaxUs = res.P50, res.P99, res.P999, res.Max
	if res.ValidSent > 0 {
		run.LossPct = float64(res.Dropped) / float64(res.ValidSent) * 100
	}
	run.Forwarded = 2 * res.Received
	m.stop(run)
	b.udpAfter(run, r, err, "")
	return run
}

// lastLines is the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func udpProgress(round, rounds, pos, n int, r *udpRun) {
	head := fmt.Sprintf("round %d/%d %-12s %d/%d %-7s", round, rounds, r.Scenario, pos, n, r.Target)
	if !r.Valid {
		fmt.Fprintf(os.Stderr, "%s FAILED: %s\n", head, firstLine(r.Failure))
		return
	}
	if r.Noisy {
		head += " NOISY (not counted)"
	}
	var fig string
	switch r.Kind {
	case udpRate:
		fig = fmt.Sprintf("%6.0f req/s  loss %.2f%%  late %d  p50 %6.1f µs  p99 %7.1f µs", r.SentPerS, r.LossPct, r.Late, r.P50Us, r.P99Us)
	case udpPeak:
		fig = fmt.Sprintf("%9s dgram/s  loss %5.1f%%", thousands(r.ForwardedPerS), r.LossPct)
	default:
		fig = fmt.Sprintf("p50 %6.1f µs  p99 %7.1f µs  loss %.2f%%", r.P50Us, r.P99Us, r.LossPct)
	}
	if r.Target != "direct" {
		fig += fmt.Sprintf("  relay CPU %3.0f%%  %.2f µs/dgram  (core busy %.2f)", r.RelayCPUPercent, r.CostUs, r.CoreCostUs)
	}
	if r.OtherCPUPercent >= 10 {
		fig += fmt.Sprintf("  (other processes took %.0f%% of a CPU)", r.OtherCPUPercent)
	}
	fmt.Fprintf(os.Stderr, "%s %s\n", head, fig)
}

// summarizeUDP fills rep's summaries, comparisons and latency added from
// its runs.
func summarizeUDP(rep *udpReport) {
	rep.Summaries, rep.Comparisons, rep.Added = nil, nil, nil
	counted := func(r *udpRun) bool { return r.Valid && !r.Noisy }
	peers := slices.Clone(udpPeers)
	if slices.Contains(rep.Targets, "base") {
		peers = append(peers, "base")
	}
	for _, sc := range rep.Scenarios {
		var sums []udpSummary
		var direct float64
		for _, name := range rep.Targets {
			s := udpSummary{Scenario: sc.Name, Target: name}
			var sent, late, loss, p50, p99, p999, fwd, cost, core, pct, other []float64
			for _, r := range rep.Runs {
				if r.Scenario != sc.Name || r.Target != name {
					continue
				}
				s.Runs++
				if r.Valid && r.Noisy {
					s.Noisy++
				}
				if !counted(r) {
					continue
				}
				s.Valid++
				s.RelayDrops += r.RelayDrops
				s.LoadDrops += r.LoadDrops
				s.MaxLossPct = max(s.MaxLossPct, r.LossPct)
				sent = append(sent, r.SentPerS)
				if r.Sent > 0 {
					late = append(late, float64(r.Late)/float64(r.Sent)*100)
				}
				loss = append(loss, r.LossPct)
				p50 = append(p50, r.P50Us)
				p99 = append(p99, r.P99Us)
				p999 = append(p999, r.P999Us)
				fwd = append(fwd, r.ForwardedPerS)
				cost = append(cost, r.CostUs)
				core = append(core, r.CoreCostUs)
				pct = append(pct, r.RelayCPUPercent)
				other = append(other, r.OtherCPUPercent)
				switch sc.Kind {
				case udpRate:
					s.Each = append(s.Each, r.CostUs)
				case udpPeak:
					s.Each = append(s.Each, r.ForwardedPerS)
				default:
					s.Each = append(s.Each, r.P99Us)
				}
			}
			s.SentPerS, s.LatePct, s.LossPct = median(sent), median(late), median(loss)
			s.P50Us, s.P99Us, s.P999Us = median(p50), median(p99), median(p999)
			s.ForwardedPerS, s.RateMin, s.RateMax = median(fwd), minOf(fwd), maxOf(fwd)
			s.CostUs, s.CostMin, s.CostMax = median(cost), minOf(cost), maxOf(cost)
			s.CoreCostUs, s.RelayCPUPercent, s.OtherCPUPercent = median(core), median(pct), median(other)
			if name == "direct" {
				direct = s.ForwardedPerS
			}
			sums = append(sums, s)
		}
		for i := range sums {
			if direct > 0 && sums[i].Valid > 0 {
				sums[i].OverDirect = sums[i].ForwardedPerS / direct
			}
		}
		rep.Summaries = append(rep.Summaries, sums...)

		get := func(name string) *udpSummary {
			for i := range sums {
				if sums[i].Target == name && sums[i].Valid > 0 {
					return &sums[i]
				}
			}
			return nil
		}
		// pairs calls f with strait's and other's counted runs of each
		// round that has both.
		pairs := func(other string, f func(st, o *udpRun)) {
			for _, a := range rep.Runs {
				for _, o := range rep.Runs {
					if a.Scenario == sc.Name && o.Scenario == sc.Name && a.Round == o.Round &&
						a.Target == "strait" && o.Target == other && counted(a) && counted(o) {
						f(a, o)
					}
				}
			}
		}
		st := get("strait")
		if st == nil {
			continue
		}
		for _, peer := range peers {
			p := get(peer)
			if p == nil {
				continue
			}
			c := udpComparison{Scenario: sc.Name, Peer: peer, Cost: ratio(st.CostUs, p.CostUs), CoreCost: ratio(st.CoreCostUs, p.CoreCostUs)}
			if sc.Kind == udpPeak {
				c.Rate = ratio(st.ForwardedPerS, p.ForwardedPerS)
			}
			var pc, pcore, pr []float64
			pairs(peer, func(a, o *udpRun) {
				if o.CostUs > 0 {
					pc = append(pc, a.CostUs/o.CostUs)
				}
				if o.CoreCostUs > 0 {
					pcore = append(pcore, a.CoreCostUs/o.CoreCostUs)
				}
				if o.ForwardedPerS > 0 {
					pr = append(pr, a.ForwardedPerS/o.ForwardedPerS)
				}
			})
			c.PairedCost, c.PairedCoreCost, c.Pairs = median(pc), median(pcore), len(pc)
			if sc.Kind == udpPeak {
				c.PairedRate = median(pr)
			}
			rep.Comparisons = append(rep.Comparisons, c)
		}
		if d := get("direct"); d != nil && sc.Kind != udpPeak {
			a := udpAdded{Scenario: sc.Name, P50Us: st.P50Us - d.P50Us, P99Us: st.P99Us - d.P99Us}
			var d50, d99 []float64
			pairs("direct", func(s, o *udpRun) {
				d50 = append(d50, s.P50Us-o.P50Us)
				d99 = append(d99, s.P99Us-o.P99Us)
			})
			a.PairedP50, a.PairedP99, a.Pairs = median(d50), median(d99), len(d99)
			rep.Added = append(rep.Added, a)
		}
	}
	rep.InvalidReason = nil
	for _, r := range rep.Runs {
		if !r.Valid {
			rep.InvalidReason = append(rep.InvalidReason, fmt.Sprintf("round %d %s %s: %s", r.Round, r.Scenario, r.Target, firstLine(r.Failure)))
		}
	}
}

// ratio is a ÷ b, or 0 when b is 0.
func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func printUDPHeader(w io.Writer, rep *udpReport) {
	fmt.Fprintf(w, "strait benchmark (UDP relays), %s\n", rep.Started.Format("2006-01-02 15:04:05 UTC"))
	for _, kv := range rep.Environment {
		fmt.Fprintf(w, "  %-10s %s\n", kv[0]+":", kv[1])
	}
	if rep.Offloads != "" {
		fmt.Fprintf(w, "  %-10s strait found %s in the kernel\n", "offloads:", rep.Offloads)
	}
	fmt.Fprintf(w, "  %-10s relay alone on CPU %d, one worker (strait GOMAXPROCS=1 proxy --listen udp://, nginx stream listen udp worker_processes 1, udpnaive GOMAXPROCS=1);\n", "pinning:", rep.ProxyCPU)
	fmt.Fprintf(w, "  %-10s bench's UDP load generator and sink (one goroutine, GOMAXPROCS=1) or sockperf client and server on CPU %d\n", "", rep.LoadCPU)
	var sizes []string
	for _, sc := range rep.Scenarios {
		if sc.Kind == udpRate {
			sizes = append(sizes, strconv.Itoa(sc.Size))
		}
	}
	fmt.Fprintf(w, "  %-10s rate: %d requests/s evenly paced over %d flows (%d datagrams/s through a relay), %s-byte datagrams, echoed by the sink; lost = unanswered %gs after the last send\n",
		"load:", rep.Rate, rep.Flows, 2*rep.Rate, strings.Join(sizes, " and "), rep.WaitS)
	if rep.PeakS > 0 {
		fmt.Fprintf(w, "  %-10s peak: unpaced GSO sends of %d × %d B, %gs, one flow and %d, to a sink that counts (GRO); no replies\n", "", udpPeakSegments, udpPeakSize, rep.PeakS, rep.Flows)
	}
	fmt.Fprintf(w, "  %-10s sockperf: ping-pong, %d B, %d messages/s, one at a time, --full-rtt, %gs (its own 400 ms warm-up)\n", "", udpSockperfSize, udpSockperfMPS, rep.DurationS)
	fmt.Fprintf(w, "  %-10s rate: %gs measured after a %gs warm-up; %d round(s), targets shuffled per round and scenario, seed %d\n", "", rep.DurationS, rep.WarmupS, rep.Rounds, rep.Seed)
	if rep.Nice != 0 {
		fmt.Fprintf(w, "  %-10s sinks, relays and load run at nice %d\n", "priority:", rep.Nice)
	}
	if rep.WaitQuietS > 0 || rep.MaxOther > 0 {
		fmt.Fprintf(w, "  %-10s each run waits up to %gs for other processes to use under 10%% of a CPU; runs during which they took over %.0f%% are not counted (0: all counted)\n",
			"noise:", rep.WaitQuietS, rep.MaxOther)
	}
	fmt.Fprintln(w)
}

// printUDP prints a -udp report's tables, from the report alone.
func printUDP(w io.Writer, rep *udpReport) {
	f1 := func(v float64) string { return fmt.Sprintf("%.1f", v) }
	f2 := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	for _, sc := range rep.Scenarios {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		var direct *udpSummary
		for i := range rep.Summaries {
			if s := &rep.Summaries[i]; s.Scenario == sc.Name && s.Target == "direct" && s.Valid > 0 {
				direct = s
			}
		}
		switch sc.Kind {
		case udpRate:
			fmt.Fprintf(w, "== UDP at a fixed rate: %d-byte datagrams, %d requests/s over %d flows, %d × %gs\n", sc.Size, rep.Rate, sc.Flows, rep.Rounds, rep.DurationS)
			fmt.Fprintln(tw, "target\treq/s\tloss\tmax loss\tlate\tp50 µs\tp99 µs\tp99.9 µs\tp99 − direct\trelay CPU\tCPU µs/dgram\tmin–max\tcore µs/dgram\trelay drops\tvalid\tother CPU\t  µs/dgram of each counted run\t")
		case udpPeak:
			fmt.Fprintf(w, "== UDP peak: unpaced GSO %d × %d B, %d flow(s), %d × %gs\n", udpPeakSegments, sc.Size, sc.Flows, rep.Rounds, rep.PeakS)
			fmt.Fprintln(tw, "target\tforwarded/s\tmin–max\t÷ direct\tloss\trelay CPU\tCPU µs/dgram\tcore µs/dgram\trelay drops\tsink drops\tvalid\tother CPU\t  forwarded/s of each counted run\t")
		default:
			fmt.Fprintf(w, "== UDP latency: sockperf ping-pong, %d B, %d messages/s, round trip, %d × %gs\n", sc.Size, udpSockperfMPS, rep.Rounds, rep.DurationS)
			fmt.Fprintln(tw, "target\tp50 µs\tp99 µs\tp99.9 µs\tp99 − direct\tloss\trelay CPU\tCPU µs/dgram\tcore µs/dgram\tvalid\tother CPU\t  p99 µs of each counted run\t")
		}
		for _, s := range rep.Summaries {
			if s.Scenario != sc.Name {
				continue
			}
			relay := s.Target != "direct" && s.Valid > 0
			cpu := func(cols ...string) []string {
				if !relay {
					return slices.Repeat([]string{"-"}, len(cols))
				}
				return cols
			}
			plus := "-"
			if direct != nil && relay {
				plus = fmt.Sprintf("%+.1f", s.P99Us-direct.P99Us)
			}
			counted := fmt.Sprintf("%d/%d", s.Valid, s.Runs)
			if s.Noisy > 0 {
				counted += fmt.Sprintf(" (%d noisy)", s.Noisy)
			}
			var each []string
			for _, v := range s.Each {
				if sc.Kind == udpPeak {
					each = append(each, fmt.Sprintf("%.0fk", v/1000))
				} else {
					each = append(each, f2(v))
				}
			}
			row := []string{s.Target}
			switch {
			case s.Valid == 0:
				row = append(row, "FAILED")
			case sc.Kind == udpRate:
				row = append(row, thousands(s.SentPerS), fmt.Sprintf("%.2f%%", s.LossPct), fmt.Sprintf("%.2f%%", s.MaxLossPct), fmt.Sprintf("%.1f%%", s.LatePct),
					f1(s.P50Us), f1(s.P99Us), f1(s.P999Us), plus)
				row = append(row, cpu(fmt.Sprintf("%.0f%%", s.RelayCPUPercent), f2(s.CostUs), f2(s.CostMin)+"–"+f2(s.CostMax), f2(s.CoreCostUs), strconv.FormatInt(s.RelayDrops, 10))...)
			case sc.Kind == udpPeak:
				over := "-"
				if s.OverDirect > 0 {
					over = fmt.Sprintf("%.2f×", s.OverDirect)
				}
				row = append(row, thousands(s.ForwardedPerS), thousands(s.RateMin)+"–"+thousands(s.RateMax), over, fmt.Sprintf("%.1f%%", s.LossPct))
				row = append(row, cpu(fmt.Sprintf("%.0f%%", s.RelayCPUPercent), f2(s.CostUs), f2(s.CoreCostUs), strconv.FormatInt(s.RelayDrops, 10))...)
				row = append(row, strconv.FormatInt(s.LoadDrops, 10))
			default:
				row = append(row, f1(s.P50Us), f1(s.P99Us), f1(s.P999Us), plus, fmt.Sprintf("%.2f%%", s.LossPct))
				row = append(row, cpu(fmt.Sprintf("%.0f%%", s.RelayCPUPercent), f2(s.CostUs), f2(s.CoreCostUs))...)
			}
			if s.Valid > 0 {
				row = append(row, counted, fmt.Sprintf("%.0f%%", s.OtherCPUPercent), "  "+strings.Join(each, " "))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
		tw.Flush()
		for _, r := range rep.Runs {
			if r.Scenario == sc.Name && !r.Valid {
				fmt.Fprintf(w, "  FAILED round %d %s: %s\n", r.Round, r.Target, strings.ReplaceAll(r.Failure, "\n", "\n  "))
				for _, e := range r.Errors {
					fmt.Fprintf(w, "    e.g. %s\n", e)
				}
			}
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "== strait ÷ peer: relay CPU per forwarded datagram (below 1: strait cheaper), process and core; peak: forwarded rate (above 1: strait faster);")
	fmt.Fprintln(w, "   ratios of medians, and in brackets the median of per-round ratios")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tpeer\tCPU/dgram\t(cheaper)\tcore/dgram\tforwarded/s\tpaired rounds\tgoal\t")
	kind := map[string]string{}
	for _, sc := range rep.Scenarios {
		kind[sc.Name] = sc.Kind
	}
	for _, c := range rep.Comparisons {
		cheaper := "-"
		if c.Cost > 0 {
			cheaper = fmt.Sprintf("%.1f× cheaper", 1/c.Cost)
		}
		rate := "-"
		if c.Rate > 0 {
			rate = fmt.Sprintf("%.2f× (%.2f×)", c.Rate, c.PairedRate)
		}
		goal := ""
		if g, ok := udpGoals[c.Peer]; ok && kind[c.Scenario] == udpRate {
			verdict := "met"
			if c.Cost > g || c.PairedCost > g {
				verdict = "NOT met"
			}
			goal = fmt.Sprintf("≤ %.3g× (%.0f× cheaper): %s", g, 1/g, verdict)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f× (%.2f×)\t%s\t%.2f× (%.2f×)\t%s\t%d\t%s\t\n", c.Scenario, c.Peer, c.Cost, c.PairedCost, cheaper, c.CoreCost, c.PairedCoreCost, rate, c.Pairs, goal)
	}
	tw.Flush()
	for _, s := range rep.Summaries {
		if s.Target == "strait" && s.Valid > 0 && kind[s.Scenario] == udpRate {
			verdict := "met"
			if s.MaxLossPct >= udpMaxLoss {
				verdict = "NOT met"
			}
			fmt.Fprintf(w, "strait's loss in %s: median %.2f%%, worst run %.2f%% (goal under %.0f%%: %s)\n", s.Scenario, s.LossPct, s.MaxLossPct, udpMaxLoss, verdict)
		}
	}
	fmt.Fprintln(w)

	if len(rep.Added) > 0 {
		fmt.Fprintln(w, "== latency strait adds: strait's round trip − direct's, in µs; medians, and in brackets the median of per-round differences")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "scenario\tp50\tp99\tpaired rounds\t")
		for _, a := range rep.Added {
			fmt.Fprintf(tw, "%s\t%+.1f (%+.1f)\t%+.1f (%+.1f)\t%d\t\n", a.Scenario, a.P50Us, a.PairedP50, a.P99Us, a.PairedP99, a.Pairs)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "columns: medians over counted runs; loss = requests unanswered (rate, sockperf) or datagrams that did not reach the sink (peak);")
	fmt.Fprintf(w, "late = share of the paced sends that left over %v after their time; p50/p99 = round trip client → relay → sink → relay → client;\n", udpLateAfter)
	fmt.Fprintln(w, "relay CPU = the relay's CPU time ÷ wall time; CPU µs/dgram = the relay process's CPU time (user + system, /proc/PID/stat) per datagram")
	fmt.Fprintln(w, "it forwarded, both ways (rate: requests at the sink + replies at the clients): THE figure; core µs/dgram = the relay CPU's busy")
	fmt.Fprintln(w, "time from /proc/stat per datagram instead (adds anything else on that core; on this VM those tick-sampled counters have")
	fmt.Fprintln(w, "looked inconsistent, idle + busy off wall time, at times below the process's own, so a cross-check only); relay drops and sink drops = datagrams")
	fmt.Fprintln(w, "the kernel dropped at the relay's sockets or the load generator's (full receive buffers, /proc/net/udp); other CPU = processes")
	fmt.Fprintln(w, "not started by the harness, in % of a CPU.")
	fmt.Fprintf(w, "A rate run whose sends took over %.0f%% longer than the duration is FAILED (the load generator could not keep the rate) and not counted.\n", (udpMaxSendStretch-1)*100)
	if len(rep.InvalidReason) > 0 {
		fmt.Fprintf(w, "INVALID RUNS: %d\n", len(rep.InvalidReason))
		for _, s := range rep.InvalidReason {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	fmt.Fprintln(w)
	printProcessLogs(w, rep.ProcessLogs)
}

// printStoredUDP prints a stored -udp report again.
func printStoredUDP(path string, data []byte) error {
	var rep udpReport
	if err := json.Unmarshal(data, &rep); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	summarizeUDP(&rep)
	printUDPHeader(os.Stdout, &rep)
	printUDP(os.Stdout, &rep)
	return nil
}
