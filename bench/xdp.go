package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/straitproxy/strait/internal/netnstest"
)

// -xdp measures strait's XDP fast path for UDP against its own user-space
// path and the naive relay, on netnstest's veth network:
//
//	client c0 ── c1 proxy o1 ── o0 origin      (the relays; XDP on c1, o1)
//	client d0 ──────────────── d1 origin       (direct)
//
// On veth an XDP program runs on the CPU that sends into the pair, not on
// the relay's: the relay's core alone says nothing. So the figure is the
// busy time of ALL CPUs per forwarded datagram, less the same load's
// going direct (client to origin over d0–d1) in the same round. The load
// sleeps between sends (bench -xdp-helper paced, see udphelper.go) so
// that idle time is left to count. Two tests, each target once per round
// and test, in shuffled order:
//
//   - rate (one scenario per datagram size): -udp-rate requests/s evenly
//     paced over -udp-flows flows, echoed by the sink: CPU per datagram,
//     loss, round trip, and for xdp the share the program forwarded.
//     The helper also times its own send calls: direct's and xdp's whole
//     path runs inside them, so their difference is the XDP path's cost
//     per datagram, read in one process (the "in-call" figures), steadier
//     than a difference of two runs' busy time.
//   - peak: the same flows sending unpaced (sendmmsg, no GSO: the XDP
//     program takes single datagrams), to a sink that does not answer:
//     the highest rate each target forwards.
//
// Every relay is started for its run alone and stopped after it: an XDP
// program attached for the xdp target would otherwise also run for the
// others' datagrams (passing them on), and change their path.

// xdpTargets are what -xdp measures.
var xdpTargets = []string{"direct", "xdp", "strait", "naive"}

// Fixed addresses in the benchmark's own namespaces (nothing else runs
// there).
const (
	xdpRelayPort   = 5300  // the relays listen on c1's address
	xdpEchoPort    = 5000  // the paced helper's echoing sink, in the origin
	xdpDiscardPort = 5001  // the sink that only takes (peak)
	xdpClientPort  = 20000 // first client port: fixed, so that the warm-up opens the measured run's flows
	xdpAdminPort   = 9901  // strait's admin API, on the proxy's loopback
	xdpPeakBatch   = 32    // datagrams per sendmmsg in the peak test
)

// xdpMinKernelShare is the least share of an xdp run's datagrams the
// program must have forwarded: below it the run measured strait's
// user-space path, and is FAILED.
const xdpMinKernelShare = 0.5

// xdpGoal is the target: xdp at least this many times cheaper per
// datagram than strait's user-space path.
const xdpGoal = 10.0

// xdpDefaultRate is -xdp's requests/s unless -udp-rate says otherwise:
// half -udp's. The load sleeps between sends here, and on this VM a
// request then costs the load CPU 40 to 65 µs: at 20,000/s direct kept
// the CPUs 98% busy (the load CPU saturated) in a run that met the VM's
// slow phase, and work the XDP program adds there (it runs on the
// sending CPU) no longer shows as busy time: xdp's all-CPU net came out
// at 0.0 µs while its in-call net was 1.9.
const xdpDefaultRate = 10000

// xdpSaturated is direct's busy time, in % of one CPU, above which the
// load CPU counts as saturated: all-CPU figures then miss work added on
// it.
const xdpSaturated = 85.0

// xdpMinWarmup is the shortest warm-up: the flows have to be open, and
// in the XDP program, before the measured run.
const xdpMinWarmup = 500 * time.Millisecond

// The CPU measures each run records; xdpMeasure is the one reported (see
// the README): as steady from round to round as procs, and unlike procs
// it counts kernel work done while no task ran (interrupts on an idle
// CPU). stat, tick-sampled, swung by 30× between rounds of one target.
const (
	measureIdle  = "idle"  // Σ CPUs (wall − idle − iowait), /proc/stat; less other processes' time
	measureStat  = "stat"  // Σ CPUs user+nice+system+irq+softirq, /proc/stat; less other processes' time
	measureProcs = "procs" // our processes' utime+stime (exited ones too) and the kernel threads'
	xdpMeasure   = measureIdle
)

var xdpMeasures = []string{measureIdle, measureStat, measureProcs}

type xdpScenario struct {
	Name  string `json:"name"`
	Kind  string `json:"kind"` // udpRate or udpPeak
	Size  int    `json:"size"`
	Flows int    `json:"flows"`
}

func xdpScenarios(cfg *config) []xdpScenario {
	var out []xdpScenario
	for _, size := range cfg.udpSizes {
		out = append(out, xdpScenario{Name: fmt.Sprintf("rate-%d", size), Kind: udpRate, Size: size, Flows: cfg.udpFlows})
	}
	if cfg.udpPeak > 0 {
		size := cfg.udpSizes[0]
		out = append(out, xdpScenario{Name: fmt.Sprintf("peak-%d", size), Kind: udpPeak, Size: size, Flows: cfg.udpFlows})
	}
	return out
}

// xdpCPU is the CPU time of a measured run, in seconds, by where it was
// read.
type xdpCPU struct {
	NotIdleS  float64 `json:"not_idle_s"`  // Σ CPUs wall − idle − iowait (/proc/stat's idle is exact on a tickless kernel)
	StatBusyS float64 `json:"stat_busy_s"` // Σ CPUs user+nice+system+irq+softirq (tick-sampled)
	OursS     float64 `json:"ours_s"`      // the harness, everything it started, and its exited children
	KthreadsS float64 `json:"kthreads_s"`  // kernel threads (ksoftirqd, kworkers…)
	OtherS    float64 `json:"other_s"`     // every other process (and their exited children)
	RelayS    float64 `json:"relay_s"`     // the relay's own processes
}

// value is the run's CPU seconds by measure.
func (c xdpCPU) value(measure string) float64 {
	switch measure {
	case measureIdle:
		return c.NotIdleS - c.OtherS
	case measureStat:
		return c.StatBusyS - c.OtherS
	default:
		return c.OursS + c.KthreadsS
	}
}

// xdpRun is one measured run.
type xdpRun struct {
	Round    int     `json:"round"`
	Position int     `json:"position"`
	Scenario string  `json:"scenario"`
	Kind     string  `json:"kind"`
	Target   string  `json:"target"`
	Valid    bool    `json:"valid"`
	Noisy    bool    `json:"noisy,omitempty"`
	Failure  string  `json:"failure,omitempty"`
	WallS    float64 `json:"wall_s"`

	// rate: requests sent and answered; peak: datagrams sent.
	Sent       int64   `json:"sent"`
	Replies    int64   `json:"replies,omitempty"`
	SendErrors int64   `json:"send_errors,omitempty"`
	LossPct    float64 `json:"loss_percent"`
	SentPerS   float64 `json:"sent_per_s,omitempty"`
	Late       int64   `json:"late_sends,omitempty"`
	MaxLateUs  float64 `json:"max_late_us,omitempty"`
	Duplicates int64   `json:"duplicates,omitempty"`
	Bad        int64   `json:"bad,omitempty"`
	P50Us      float64 `json:"p50_us,omitempty"`
	P99Us      float64 `json:"p99_us,omitempty"`
	P999Us     float64 `json:"p99_9_us,omitempty"`
	MaxUs      float64 `json:"max_us,omitempty"`
	LoopAllocs uint64  `json:"load_loop_allocs,omitempty"`

	// SinkReceived is what reached the origin's UDP sockets (taken or
	// dropped at a full buffer); Forwarded the datagrams that crossed
	// the relay (rate: those plus the replies the clients took; peak:
	// those), what the costs are divided by.
	SinkReceived  int64   `json:"sink_received"`
	Forwarded     int64   `json:"forwarded_datagrams"`
	ForwardedPerS float64 `json:"forwarded_per_s,omitempty"`
	// Drops at full receive buffers, per namespace (/proc/net/snmp
	// RcvbufErrors): the origin's sink, the proxy's relay sockets, the
	// clients.
	SinkDrops   int64 `json:"sink_drops"`
	RelayDrops  int64 `json:"relay_drops"`
	ClientDrops int64 `json:"client_drops"`

	// strait's counters over the run: the XDP program's datagrams by
	// action, and what its user-space path relayed (both ways);
	// KernelShare is the forwarded over both.
	XDPForwarded int64   `json:"xdp_forwarded,omitempty"`
	XDPPassed    int64   `json:"xdp_passed,omitempty"`
	XDPFallback  int64   `json:"xdp_fallback,omitempty"`
	XDPDropped   int64   `json:"xdp_dropped,omitempty"`
	XDPFlows     float64 `json:"xdp_flows_at_start,omitempty"`
	UserRelayed  int64   `json:"user_space_relayed,omitempty"`
	KernelShare  float64 `json:"kernel_share,omitempty"`

	CPU             xdpCPU  `json:"cpu"`
	OtherCPUPercent float64 `json:"other_processes_cpu_percent"`
	// CostUs is CPU µs per forwarded datagram by measure; NetUs the same
	// less the same round's direct run (rate only; filled by the
	// summary).
	CostUs map[string]float64 `json:"cpu_us_per_datagram"`
	NetUs  map[string]float64 `json:"net_cpu_us_per_datagram,omitempty"`
	// RelayUs is the relay process's own CPU time per datagram.
	RelayUs float64 `json:"relay_process_us_per_datagram"`
	// rate: the median time the load's send calls took per datagram,
	// requests' (SendUs) and the sink's echoes (EchoUs), and their mean
	// (InCallUs); for direct and xdp the whole path runs inside them.
	// InCallNetUs is InCallUs less the same round's direct run.
	SendUs      float64  `json:"send_p50_us,omitempty"`
	EchoUs      float64  `json:"echo_p50_us,omitempty"`
	InCallUs    float64  `json:"in_call_us_per_datagram,omitempty"`
	InCallNetUs *float64 `json:"in_call_net_us_per_datagram,omitempty"`
	Errors      []string `json:"sample_errors,omitempty"`
}

type xdpSummary struct {
	Scenario    string  `json:"scenario"`
	Target      string  `json:"target"`
	Runs        int     `json:"runs"`
	Valid       int     `json:"valid_runs"`
	Noisy       int     `json:"noisy_runs"`
	SentPerS    float64 `json:"median_sent_per_s,omitempty"`
	LossPct     float64 `json:"median_loss_percent"`
	MaxLossPct  float64 `json:"max_loss_percent"`
	LatePct     float64 `json:"median_late_percent,omitempty"` // paced sends over udpLateAfter late
	P50Us       float64 `json:"median_p50_us,omitempty"`
	P99Us       float64 `json:"median_p99_us,omitempty"`
	KernelShare float64 `json:"median_kernel_share,omitempty"`
	MinShare    float64 `json:"min_kernel_share,omitempty"`
	// Gross and net CPU µs per datagram by measure (medians); NetMin and
	// NetMax of the reported measure.
	CostUs          map[string]float64 `json:"median_cpu_us_per_datagram"`
	NetUs           map[string]float64 `json:"median_net_cpu_us_per_datagram,omitempty"`
	NetMin          float64            `json:"min_net_cpu_us_per_datagram,omitempty"`
	NetMax          float64            `json:"max_net_cpu_us_per_datagram,omitempty"`
	RelayUs         float64            `json:"median_relay_process_us_per_datagram"`
	BusyPct         float64            `json:"median_busy_percent"` // the reported measure's CPU time ÷ wall time, in % of one CPU
	InCallUs        float64            `json:"median_in_call_us_per_datagram,omitempty"`
	InCallNetUs     float64            `json:"median_in_call_net_us_per_datagram,omitempty"`
	ForwardedPerS   float64            `json:"median_forwarded_per_s,omitempty"`
	RateMin         float64            `json:"min_forwarded_per_s,omitempty"`
	RateMax         float64            `json:"max_forwarded_per_s,omitempty"`
	SinkDrops       int64              `json:"sink_drops_total"`
	RelayDrops      int64              `json:"relay_drops_total"`
	OtherCPUPercent float64            `json:"median_other_processes_cpu_percent"`
	Each            []float64          `json:"counted_values"` // per counted run: net µs/datagram (rate), forwarded/s (peak)
}

// xdpComparison sets xdp against another target in one scenario. rate:
// xdp's net CPU per datagram as a share of the other's (1 ÷ the share is
// how many times cheaper xdp is; a share at or below 0 means xdp's net
// was within the noise of direct's). peak: xdp's forwarded rate ÷ the
// other's.
type xdpComparison struct {
	Scenario string `json:"scenario"`
	Other    string `json:"other"`
	// Share is xdp's net all-CPU µs per datagram ÷ the other's, by
	// measure, from the medians; PairedShare the median of the per-round
	// shares (reported measure).
	Share       map[string]float64 `json:"xdp_over_other_net_cpu,omitempty"`
	PairedShare float64            `json:"xdp_over_other_net_cpu_paired,omitempty"`
	// InCallShare is xdp's net in-call time (the XDP path, timed where it
	// runs) ÷ the other's net all-CPU µs per datagram; OwnShare the same
	// ÷ the other's relay process's own CPU time alone (a ceiling on the
	// share: the relay costs at least that).
	InCallShare float64 `json:"xdp_in_call_net_over_other_net_cpu,omitempty"`
	OwnShare    float64 `json:"xdp_in_call_net_over_other_relay_process,omitempty"`
	// Saturated: direct kept the CPUs over xdpSaturated busy in this
	// scenario, so the all-CPU nets read low and only OwnShare bounds
	// the comparison.
	Saturated  bool    `json:"load_cpu_saturated,omitempty"`
	Rate       float64 `json:"xdp_over_other_forwarded_rate,omitempty"`
	PairedRate float64 `json:"xdp_over_other_forwarded_rate_paired,omitempty"`
	Pairs      int     `json:"paired_rounds"`
}

type xdpReport struct {
	Started     time.Time     `json:"started"`
	Finished    time.Time     `json:"finished"`
	Seed        uint64        `json:"seed"`
	Rounds      int           `json:"rounds"`
	DurationS   float64       `json:"duration_s"`
	WarmupS     float64       `json:"warmup_s"`
	PeakS       float64       `json:"peak_duration_s"`
	ProxyCPU    int           `json:"proxy_cpu"`
	LoadCPU     int           `json:"load_cpu"`
	Rate        int           `json:"requests_per_s"`
	Flows       int           `json:"flows"`
	Measure     string        `json:"reported_cpu_measure"`
	Scenarios   []xdpScenario `json:"scenarios"`
	Targets     []string      `json:"targets"`
	Topology    string        `json:"topology"`
	WaitQuietS  float64       `json:"wait_quiet_s"`
	MaxOther    float64       `json:"max_other_percent"`
	Nice        int           `json:"nice"`
	Environment [][2]string   `json:"environment"`
	Runs        []*xdpRun     `json:"runs"`

	Summaries     []xdpSummary          `json:"summaries"`
	Comparisons   []xdpComparison       `json:"comparisons"`
	ProcessLogs   map[string][]logGroup `json:"process_logs"`
	InvalidReason []string              `json:"invalid,omitempty"`
}

// xdpEnv is what every run uses: the namespaces, the binaries, the sink.
type xdpEnv struct {
	b     *bench
	tp    *netnstest.Topology
	self  string // this binary, for the helpers
	naive string
	sink  *proc
	// logged is each target's last relay process: every run of a target
	// appends to the same log file, read at the end.
	logged map[string]*proc
}

// xdpPreflight is what -xdp needs before anything is built or started.
func xdpPreflight() error {
	if os.Geteuid() != 0 {
		return errors.New("-xdp needs root: it makes network namespaces and veth pairs and attaches an XDP program (run it with sudo)")
	}
	for _, tool := range []string{"ip", "ethtool", "sysctl"} {
		if _, ok := lookTool(tool); !ok {
			return fmt.Errorf("-xdp needs %s (apt-get install -y iproute2 ethtool procps)", tool)
		}
	}
	return nil
}

// runXDP is the -xdp mode.
func (b *bench) runXDP(ctx context.Context) error {
	cfg := b.cfg
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
	tp, err := netnstest.Create(strconv.Itoa(os.Getpid() % 100000))
	if err != nil {
		return err
	}
	env := &xdpEnv{b: b, tp: tp, self: self, naive: naive, logged: map[string]*proc{}}
	// Whatever runs in the namespaces stops before they go (the harness's
	// cleanup stops them too, but after this returns).
	defer func() {
		if env.sink != nil {
			env.sink.stop()
		}
		tp.Close()
	}()
	if err := tp.AddDirect(); err != nil {
		return err
	}
	if err := env.startSink(ctx); err != nil {
		return err
	}

	scenarios := xdpScenarios(cfg)
	seed := cfg.seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(seed, seed>>32|1))
	rep := &xdpReport{
		Started: b.started.UTC(), Seed: seed, Rounds: cfg.rounds,
		DurationS: cfg.duration.Seconds(), WarmupS: max(cfg.warmup, xdpMinWarmup).Seconds(), PeakS: cfg.udpPeak.Seconds(),
		ProxyCPU: cfg.proxyCPU, LoadCPU: cfg.loadCPU, Rate: cfg.udpRate, Flows: cfg.udpFlows, Measure: xdpMeasure,
		Scenarios: scenarios, Targets: xdpTargets,
		Topology: fmt.Sprintf("namespaces %s (client: c0 %v, d0 %v), %s (proxy: c1 %v, o1 %v), %s (origin: o0 %v, d1 %v); veth, tx checksum off and GRO on at c0, o0, d0, d1; forwarding on in the proxy",
			tp.Client, tp.ClientIP[0], tp.DirectClientIP[0], tp.Proxy, tp.FrontIP[0], tp.BackIP[0], tp.Origin, tp.OriginIP[0], tp.DirectOriginIP[0]),
		WaitQuietS: cfg.waitQuiet.Seconds(), MaxOther: cfg.maxOther, Nice: cfg.nice,
		Environment: b.environment(ctx), ProcessLogs: map[string][]logGroup{},
	}
	printXDPHeader(os.Stdout, rep)
	if pct := b.waitQuiet(ctx, 0); pct >= 10 {
		fmt.Fprintf(os.Stderr, "bench: warning: other processes are using %.0f%% of a CPU; expect noise (the \"other CPU\" column; -wait-quiet waits)\n", pct)
	}
	var per time.Duration
	for _, sc := range scenarios {
		if sc.Kind == udpRate {
			per += max(cfg.warmup, xdpMinWarmup) + cfg.duration + 1500*time.Millisecond
		} else {
			per += cfg.udpPeak + 1500*time.Millisecond
		}
	}
	fmt.Fprintf(os.Stderr, "bench -xdp: %d runs: about %v; seed %d\n",
		cfg.rounds*len(scenarios)*len(xdpTargets), (time.Duration(cfg.rounds*len(xdpTargets)) * per).Round(time.Second), seed)

	for round := 1; round <= cfg.rounds; round++ {
		for _, sc := range scenarios {
			order := slices.Clone(xdpTargets)
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for pos, name := range order {
				r := env.measure(ctx, name, sc)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.Round, r.Position = round, pos+1
				rep.Runs = append(rep.Runs, r)
				xdpProgress(round, cfg.rounds, pos+1, len(order), r)
			}
		}
	}
	rep.Finished = time.Now().UTC()
	for name, p := range env.logged {
		if lines := p.logLines(); len(lines) > 0 {
			rep.ProcessLogs[name] = groupLines(lines)
		}
	}
	summarizeXDP(rep)
	printXDP(os.Stdout, rep)
	return b.writeJSON(rep, "-xdp")
}

// inNS is argv run in network namespace ns, pinned to cpu.
func (b *bench) inNS(ns string, cpu int, argv ...string) []string {
	return b.pinned(cpu, append([]string{"ip", "netns", "exec", ns}, argv...))
}

// startSink starts the peak test's sink, which takes datagrams and
// drops them, in the origin's namespace on the load CPU, for the whole
// benchmark. (The rate test's echoing sink is in the paced helper.)
func (env *xdpEnv) startSink(ctx context.Context) error {
	p, err := env.b.start("xdp-sink", env.b.cfg.loadCPU, []string{"GOMAXPROCS=1"}, "ip", "netns", "exec", env.tp.Origin,
		env.self, xdpHelperArg, "discard", "-sink", fmt.Sprintf("0.0.0.0:%d", xdpDiscardPort))
	if err != nil {
		return err
	}
	env.sink = p
	return waitBound(ctx, p, xdpDiscardPort)
}

// waitBound waits, for up to 15 s, until p's namespace has UDP sockets
// bound to every one of ports (read through /proc/PID/net/udp: p's
// namespace, not the harness's).
func waitBound(ctx context.Context, p *proc, ports ...int) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/net/udp", p.pid()))
		bound := map[int]bool{}
		for _, s := range parseUDPTable(string(data)) {
			if s.remote == 0 {
				bound[s.local] = true
			}
		}
		if !slices.ContainsFunc(ports, func(port int) bool { return !bound[port] }) {
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.logTail(20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: nothing bound to UDP ports %v after 15 s", p.name, ports)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// startRelay starts the named relay in the proxy's namespace, alone on
// the proxy CPU, in front of the sink's port upstream, and waits until it
// takes datagrams (and, for xdp, until the program is attached to c1 and
// o1). direct has no relay: nil.
func (env *xdpEnv) startRelay(ctx context.Context, name string, upstream int) (*proc, error) {
	if name == "direct" {
		return nil, nil
	}
	b, tp := env.b, env.tp
	listen := fmt.Sprintf("%v:%d", tp.FrontIP[0], xdpRelayPort)
	up := fmt.Sprintf("%v:%d", tp.OriginIP[0], upstream)
	var argv []string
	switch name {
	case "xdp", "strait":
		argv = []string{b.strait, "proxy", "--listen", "udp://" + listen, "--upstream", "udp://" + up,
			"--admin", fmt.Sprintf("127.0.0.1:%d", xdpAdminPort)}
		if name == "xdp" {
			argv = append(argv, "--xdp", "c1", "--xdp", "o1")
		}
	case "naive":
		argv = []string{env.naive, "-listen", listen, "-upstream", up}
	default:
		return nil, fmt.Errorf("unknown -xdp target %q", name)
	}
	// An XDP program left on the proxy's interfaces would run for this
	// relay's datagrams too.
	if name != "xdp" {
		if ifs := env.xdpAttached(); len(ifs) > 0 {
			return nil, fmt.Errorf("an XDP program is still attached to %s", strings.Join(ifs, ", "))
		}
	}
	p, err := b.start("xdp-relay-"+name, b.cfg.proxyCPU, []string{"GOMAXPROCS=1"}, "ip", append([]string{"netns", "exec", tp.Proxy}, argv...)...)
	if err != nil {
		return nil, err
	}
	env.logged[name] = p
	if err := waitBound(ctx, p, xdpRelayPort); err != nil {
		p.stop()
		return nil, err
	}
	if name == "naive" {
		return p, nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := env.scrape()
		attached := env.xdpAttached()
		if err == nil && (name != "xdp" || len(attached) == 2) {
			return p, nil
		}
		if err == nil {
			err = fmt.Errorf("the XDP program is attached to %v only, not c1 and o1", attached)
		}
		if p.exited() || time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s not ready: %v\n%s", name, err, p.logTail(10))
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			p.stop()
			return nil, err
		}
	}
}

// xdpAttached lists the proxy's interfaces with an XDP program (any mode).
func (env *xdpEnv) xdpAttached() []string {
	var out []string
	for _, ifc := range []string{"c1", "o1"} {
		data, _ := exec.Command("ip", "-n", env.tp.Proxy, "-d", "link", "show", "dev", ifc).Output()
		if strings.Contains(string(data), "prog/xdp") {
			out = append(out, ifc)
		}
	}
	return out
}

// scrape reads strait's metrics from its admin API, which listens on the
// proxy namespace's loopback: the connection is made from a thread in
// that namespace.
func (env *xdpEnv) scrape() (map[string]float64, error) {
	var conn net.Conn
	var derr error
	addr := fmt.Sprintf("127.0.0.1:%d", xdpAdminPort)
	if err := netnstest.In(env.tp.Proxy, func() { conn, derr = net.DialTimeout("tcp", addr, 2*time.Second) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", addr); err != nil {
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	return parseMetrics(string(body)), nil
}

// parseMetrics reads Prometheus's text format into series → value, each
// series as it is written (name{labels}).
func parseMetrics(text string) map[string]float64 {
	out := map[string]float64{}
	for _, l := range strings.Split(text, "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			out[l[:i]] = v
		}
	}
	return out
}

// metricSum adds up the series of name whose labels include every one of
// labels (`key="value"`).
func metricSum(m map[string]float64, name string, labels ...string) float64 {
	var sum float64
	for series, v := range m {
		if series != name && !strings.HasPrefix(series, name+"{") {
			continue
		}
		if slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(series, l) }) {
			continue
		}
		sum += v
	}
	return sum
}

// snmpUDP reads the UDP counters of namespace ns (/proc/net/snmp as a
// thread in ns sees it).
func snmpUDP(ns string) (map[string]int64, error) {
	var data []byte
	var rerr error
	if err := netnstest.In(ns, func() { data, rerr = os.ReadFile("/proc/thread-self/net/snmp") }); err != nil {
		return nil, err
	}
	if rerr != nil {
		return nil, rerr
	}
	var names []string
	out := map[string]int64{}
	for _, l := range strings.Split(string(data), "\n") {
		rest, ok := strings.CutPrefix(l, "Udp: ")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if names == nil {
			names = f
			continue
		}
		for i, v := range f {
			if i < len(names) {
				out[names[i]], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no Udp counters in %s's /proc/net/snmp", ns)
	}
	return out, nil
}

// cpuSnap is what a run's CPU measures are read from, at one instant.
type cpuSnap struct {
	at                    time.Time
	cpus                  int
	busy, idle            int64 // ticks, over all CPUs
	ours, kthreads, other int64 // ticks
	relay                 int64
}

// pfKthread is PF_KTHREAD, the flag of a kernel thread in /proc/PID/stat.
const pfKthread = 0x00200000

// takeCPU reads /proc/stat and every process's CPU time. Ours are the
// harness and its descendants, with the children it has reaped (the
// helpers that ran and exited); relay are relayPID's processes.
func takeCPU(relayPID int) cpuSnap {
	s := cpuSnap{}
	if data, err := os.ReadFile("/proc/stat"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			f := strings.Fields(l)
			if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
				continue
			}
			s.cpus++
			for i, v := range f[1:9] { // user nice system idle iowait irq softirq steal
				n, _ := strconv.ParseInt(v, 10, 64)
				switch i {
				case 3, 4:
					s.idle += n
				case 7: // steal: the host's, neither
				default:
					s.busy += n
				}
			}
		}
	}
	type task struct {
		ppid    int
		kthread bool
		ticks   int64 // utime stime cutime cstime
	}
	tasks := map[int]task{}
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f := statFields(pid)
		if len(f) <= 14 {
			continue
		}
		var t task
		t.ppid, _ = strconv.Atoi(f[1])
		flags, _ := strconv.ParseUint(f[6], 10, 64)
		t.kthread = flags&pfKthread != 0
		for _, i := range []int{11, 12, 13, 14} {
			v, _ := strconv.ParseInt(f[i], 10, 64)
			t.ticks += v
		}
		tasks[pid] = t
		children[t.ppid] = append(children[t.ppid], pid)
	}
	under := func(root int) map[int]bool {
		set := map[int]bool{}
		if _, ok := tasks[root]; !ok {
			return set
		}
		queue := []int{root}
		for len(queue) > 0 {
			p := queue[0]
			queue = queue[1:]
			set[p] = true
			queue = append(queue, children[p]...)
		}
		return set
	}
	ours := under(os.Getpid())
	relay := map[int]bool{}
	if relayPID > 0 {
		relay = under(relayPID)
	}
	for pid, t := range tasks {
		switch {
		case ours[pid]:
			s.ours += t.ticks
		case t.kthread:
			s.kthreads += t.ticks
		default:
			s.other += t.ticks
		}
		if relay[pid] {
			s.relay += t.ticks
		}
	}
	s.at = time.Now()
	return s
}

// cpuBetween is the CPU time from a to b.
func cpuBetween(a, b cpuSnap) xdpCPU {
	wall := b.at.Sub(a.at).Seconds()
	t := func(ticks int64) float64 { return float64(ticks) / clockTicks }
	return xdpCPU{
		NotIdleS:  float64(a.cpus)*wall - t(b.idle-a.idle),
		StatBusyS: t(b.busy - a.busy),
		OursS:     t(b.ours - a.ours),
		KthreadsS: t(b.kthreads - a.kthreads),
		OtherS:    t(b.other - a.other),
		RelayS:    t(b.relay - a.relay),
	}
}

// xdpMeter reads, around a measured run, the CPU, the namespaces' UDP
// counters and strait's metrics.
type xdpMeter struct {
	env     *xdpEnv
	relay   *proc
	straitM map[string]float64
	origin  map[string]int64
	proxy   map[string]int64
	client  map[string]int64
	cpu     cpuSnap
}

func (env *xdpEnv) startMeter(relay *proc, strait bool) (*xdpMeter, error) {
	m := &xdpMeter{env: env, relay: relay}
	var err error
	if strait {
		if m.straitM, err = env.scrape(); err != nil {
			return nil, fmt.Errorf("strait's metrics: %v", err)
		}
	}
	if m.origin, err = snmpUDP(env.tp.Origin); err != nil {
		return nil, err
	}
	if m.proxy, err = snmpUDP(env.tp.Proxy); err != nil {
		return nil, err
	}
	if m.client, err = snmpUDP(env.tp.Client); err != nil {
		return nil, err
	}
	pid := 0
	if relay != nil {
		pid = relay.pid()
	}
	m.cpu = takeCPU(pid) // last: the window starts here
	return m, nil
}

// stop ends the window and fills run's CPU, drops, what reached the sink
// and strait's counts. Forwarded is set by the caller after.
func (m *xdpMeter) stop(run *xdpRun) error {
	pid := 0
	if m.relay != nil {
		pid = m.relay.pid()
	}
	end := takeCPU(pid) // first: the window ends here
	run.CPU = cpuBetween(m.cpu, end)
	run.WallS = end.at.Sub(m.cpu.at).Seconds()
	run.OtherCPUPercent = run.CPU.OtherS / run.WallS * 100
	origin, err1 := snmpUDP(m.env.tp.Origin)
	proxy, err2 := snmpUDP(m.env.tp.Proxy)
	client, err3 := snmpUDP(m.env.tp.Client)
	if err := errors.Join(err1, err2, err3); err != nil {
		return err
	}
	run.SinkDrops = origin["RcvbufErrors"] - m.origin["RcvbufErrors"]
	run.SinkReceived = origin["InDatagrams"] - m.origin["InDatagrams"] + run.SinkDrops
	run.RelayDrops = proxy["RcvbufErrors"] - m.proxy["RcvbufErrors"]
	run.ClientDrops = client["RcvbufErrors"] - m.client["RcvbufErrors"]
	if m.straitM != nil {
		after, err := m.env.scrape()
		if err != nil {
			return fmt.Errorf("strait's metrics: %v", err)
		}
		d := func(name string, labels ...string) int64 {
			return int64(metricSum(after, name, labels...) - metricSum(m.straitM, name, labels...))
		}
		run.XDPForwarded = d("strait_udp_xdp_datagrams_total", `action="forwarded"`)
		run.XDPPassed = d("strait_udp_xdp_datagrams_total", `action="passed"`)
		run.XDPFallback = d("strait_udp_xdp_datagrams_total", `action="fallback"`)
		run.XDPDropped = d("strait_udp_xdp_datagrams_total", `action="dropped"`)
		run.XDPFlows = metricSum(m.straitM, "strait_udp_xdp_flows")
		run.UserRelayed = d("strait_udp_datagrams_total")
		if n := run.XDPForwarded + run.UserRelayed; n > 0 {
			run.KernelShare = float64(run.XDPForwarded) / float64(n)
		}
	}
	return nil
}

// costs fills the run's CPU per datagram from its CPU and Forwarded.
func (run *xdpRun) costs() {
	run.CostUs = map[string]float64{}
	if run.Forwarded <= 0 {
		return
	}
	for _, ms := range xdpMeasures {
		run.CostUs[ms] = run.CPU.value(ms) / float64(run.Forwarded) * 1e6
	}
	run.RelayUs = run.CPU.RelayS / float64(run.Forwarded) * 1e6
}

// helper runs this binary as bench -xdp-helper mode in namespace ns on
// the load CPU, and decodes its JSON into res.
func (env *xdpEnv) helper(ctx context.Context, ns, mode string, args []string, d time.Duration, res any) error {
	ctx, cancel := context.WithTimeout(ctx, d+60*time.Second)
	defer cancel()
	argv := env.b.inNS(ns, env.b.cfg.loadCPU, append([]string{env.self, xdpHelperArg, mode}, args...)...)
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s helper: %v %s", mode, err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, res); err != nil {
		return fmt.Errorf("%s helper: %v: %q", mode, err, out)
	}
	return nil
}

// clientArgs are a helper's target and client addresses for a target:
// direct over d0–d1 to the sink, the relays over c0 to c1.
func (env *xdpEnv) clientArgs(name string, sinkPort int, sc xdpScenario) []string {
	target := fmt.Sprintf("%v:%d", env.tp.FrontIP[0], xdpRelayPort)
	bind := env.tp.ClientIP[0]
	if name == "direct" {
		target = fmt.Sprintf("%v:%d", env.tp.DirectOriginIP[0], sinkPort)
		bind = env.tp.DirectClientIP[0]
	}
	return []string{"-target", target, "-bind", bind.String(), "-port", strconv.Itoa(xdpClientPort),
		"-flows", strconv.Itoa(sc.Flows), "-size", strconv.Itoa(sc.Size)}
}

// paced runs the paced helper (clients and echoing sink) against target
// name for d.
func (env *xdpEnv) paced(ctx context.Context, name string, sc xdpScenario, d time.Duration) (*udpPacedResult, error) {
	res := &udpPacedResult{}
	args := append(env.clientArgs(name, xdpEchoPort, sc), "-rate", strconv.Itoa(env.b.cfg.udpRate),
		"-duration", d.String(), "-wait", udpReplyWait.String(),
		"-sink", fmt.Sprintf("0.0.0.0:%d", xdpEchoPort), "-sink-netns", env.tp.Origin)
	return res, env.helper(ctx, env.tp.Client, "paced", args, d, res)
}

// flood runs the flood helper against target name for d, to the
// discarding sink.
func (env *xdpEnv) flood(ctx context.Context, name string, sc xdpScenario, d time.Duration) (*udpFloodResult, error) {
	res := &udpFloodResult{}
	args := append(env.clientArgs(name, xdpDiscardPort, sc), "-batch", strconv.Itoa(xdpPeakBatch), "-duration", d.String())
	return res, env.helper(ctx, env.tp.Client, "flood", args, d, res)
}

// measure runs one target once in one scenario: its relay started for
// the run and stopped after.
func (env *xdpEnv) measure(ctx context.Context, name string, sc xdpScenario) *xdpRun {
	b := env.b
	run := &xdpRun{Scenario: sc.Name, Kind: sc.Kind, Target: name}
	if env.sink.exited() {
		fmt.Fprintf(os.Stderr, "bench: the sink exited (%v); restarting it\n", env.sink.err)
		if err := env.startSink(ctx); err != nil {
			run.Failure = "sink: " + err.Error()
			return run
		}
	}
	if b.cfg.waitQuiet > 0 {
		b.waitQuiet(ctx, b.cfg.waitQuiet)
	}
	upstream := xdpEchoPort
	if sc.Kind == udpPeak {
		upstream = xdpDiscardPort
	}
	relay, err := env.startRelay(ctx, name, upstream)
	if err != nil {
		run.Failure = err.Error()
		return run
	}
	defer func() {
		if relay != nil {
			relay.stop()
		}
	}()
	var failure string
	if sc.Kind == udpRate {
		failure, err = env.measureRate(ctx, run, relay, sc)
	} else {
		failure, err = env.measurePeak(ctx, run, relay, sc)
	}
	switch {
	case err != nil:
		run.Failure = err.Error()
	case relay != nil && relay.exited():
		run.Failure = fmt.Sprintf("%s exited during the run: %v\n%s", name, relay.err, relay.logTail(20))
	case failure != "":
		run.Failure = failure
	default:
		run.Valid = true
	}
	run.Noisy = run.Valid && b.cfg.maxOther > 0 && run.OtherCPUPercent > b.cfg.maxOther
	return run
}

// waitFlows waits up to 2 s until strait's XDP program holds n flows.
func (env *xdpEnv) waitFlows(ctx context.Context, n int) float64 {
	var flows float64
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if m, err := env.scrape(); err == nil {
			if flows = metricSum(m, "strait_udp_xdp_flows"); flows >= float64(n) {
				break
			}
		}
		if sleep(ctx, 50*time.Millisecond) != nil {
			break
		}
	}
	return flows
}

// measureRate: a warm-up run on the same flows, then the measured one.
func (env *xdpEnv) measureRate(ctx context.Context, run *xdpRun, relay *proc, sc xdpScenario) (string, error) {
	cfg := env.b.cfg
	warm, err := env.paced(ctx, run.Target, sc, max(cfg.warmup, xdpMinWarmup))
	if err != nil {
		return "", fmt.Errorf("warm-up: %v", err)
	}
	if warm.Replies == 0 {
		return fmt.Sprintf("no request answered in the warm-up %v", warm.Errors), nil
	}
	if run.Target == "xdp" {
		if flows := env.waitFlows(ctx, sc.Flows); flows < float64(sc.Flows) {
			return fmt.Sprintf("after the warm-up the XDP program holds %.0f flows, not %d", flows, sc.Flows), nil
		}
	}
	m, err := env.startMeter(relay, run.Target == "xdp" || run.Target == "strait")
	if err != nil {
		return "", err
	}
	res, err := env.paced(ctx, run.Target, sc, cfg.duration)
	if err != nil {
		return "", err
	}
	if err := m.stop(run); err != nil {
		return "", err
	}
	run.Sent, run.Replies, run.SendErrors = res.Sent, res.Replies, res.SendErrors
	run.Late, run.MaxLateUs, run.Duplicates, run.Bad = res.Late, res.MaxLateUs, res.Duplicates, res.Bad
	run.P50Us, run.P99Us, run.P999Us, run.MaxUs = res.P50Us, res.P99Us, res.P999Us, res.MaxUs
	run.LoopAllocs, run.Errors = res.LoopAllocs, res.Errors
	run.SinkReceived = res.SinkReceived
	run.SendUs, run.EchoUs = res.SendUs, res.EchoUs
	run.InCallUs = (res.SendUs + res.EchoUs) / 2
	if res.SendS > 0 {
		run.SentPerS = float64(res.Sent-1) / res.SendS
	}
	if res.Sent > 0 {
		run.LossPct = float64(res.Sent-res.Replies) / float64(res.Sent) * 100
	}
	run.Forwarded = run.SinkReceived + res.Replies
	run.costs()
	switch {
	case res.Replies == 0:
		return "no request answered", nil
	case res.SendS > udpMaxSendStretch*cfg.duration.Seconds():
		return fmt.Sprintf("the load fell behind: its sends took %.2fs, not %v", res.SendS, cfg.duration), nil
	}
	return run.kernelFailure(), nil
}

// kernelFailure says why an xdp run does not count as one: most of its
// datagrams went through user space.
func (run *xdpRun) kernelFailure() string {
	if run.Target != "xdp" || run.KernelShare >= xdpMinKernelShare {
		return ""
	}
	return fmt.Sprintf("the XDP program forwarded only %.1f%% of the datagrams (%d; user space relayed %d, the program passed %d and fell back on %d)",
		run.KernelShare*100, run.XDPForwarded, run.UserRelayed, run.XDPPassed, run.XDPFallback)
}

// measurePeak: a short flood opens the flows (a flow nobody answers goes
// to the XDP program after 64 datagrams), then the measured one.
func (env *xdpEnv) measurePeak(ctx context.Context, run *xdpRun, relay *proc, sc xdpScenario) (string, error) {
	cfg := env.b.cfg
	if _, err := env.flood(ctx, run.Target, sc, max(cfg.udpPeak/10, 300*time.Millisecond)); err != nil {
		return "", fmt.Errorf("warm-up: %v", err)
	}
	if run.Target == "xdp" {
		if flows := env.waitFlows(ctx, sc.Flows); flows < float64(sc.Flows) {
			return fmt.Sprintf("after the warm-up the XDP program holds %.0f flows, not %d", flows, sc.Flows), nil
		}
	}
	env.settle(ctx)
	m, err := env.startMeter(relay, run.Target == "xdp" || run.Target == "strait")
	if err != nil {
		return "", err
	}
	res, err := env.flood(ctx, run.Target, sc, cfg.udpPeak)
	if err != nil {
		return "", err
	}
	env.settle(ctx) // what the relay still holds arrives
	if err := m.stop(run); err != nil {
		return "", err
	}
	run.Sent, run.SendErrors, run.Errors = res.Sent, res.SendErrors, res.Errors
	run.Forwarded = run.SinkReceived
	if res.SendS > 0 {
		run.ForwardedPerS = float64(run.SinkReceived) / res.SendS
	}
	if res.Sent > 0 {
		run.LossPct = float64(res.Sent-run.SinkReceived) / float64(res.Sent) * 100
	}
	run.costs()
	if run.SinkReceived == 0 {
		return "no datagram reached the sink", nil
	}
	return run.kernelFailure(), nil
}

// settle waits until the origin's UDP counters stop moving for 100 ms
// (at most 2 s): the queues between the load and the sink are empty.
func (env *xdpEnv) settle(ctx context.Context) {
	var last int64 = -1
	still := time.Now()
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		c, err := snmpUDP(env.tp.Origin)
		if err != nil {
			return
		}
		if n := c["InDatagrams"] + c["RcvbufErrors"]; n != last {
			last, still = n, time.Now()
		} else if time.Since(still) >= 100*time.Millisecond {
			return
		}
		if sleep(ctx, 10*time.Millisecond) != nil {
			return
		}
	}
}

func xdpProgress(round, rounds, pos, n int, r *xdpRun) {
	head := fmt.Sprintf("round %d/%d %-9s %d/%d %-7s", round, rounds, r.Scenario, pos, n, r.Target)
	if !r.Valid {
		fmt.Fprintf(os.Stderr, "%s FAILED: %s\n", head, firstLine(r.Failure))
		return
	}
	if r.Noisy {
		head += " NOISY (not counted)"
	}
	var fig string
	if r.Kind == udpRate {
		fig = fmt.Sprintf("%6.0f req/s  loss %.2f%%  p50 %6.1f µs  p99 %7.1f µs", r.SentPerS, r.LossPct, r.P50Us, r.P99Us)
	} else {
		fig = fmt.Sprintf("%9s dgram/s  loss %5.1f%%", thousands(r.ForwardedPerS), r.LossPct)
	}
	fig += "  all-CPU µs/dgram"
	for _, ms := range xdpMeasures {
		fig += fmt.Sprintf(" %s %.2f", ms, r.CostUs[ms])
	}
	fig += fmt.Sprintf("  relay %.2f", r.RelayUs)
	if r.Kind == udpRate {
		fig += fmt.Sprintf("  in-call %.2f", r.InCallUs)
	}
	if r.Target == "xdp" {
		fig += fmt.Sprintf("  in kernel %.1f%%", r.KernelShare*100)
	}
	if r.OtherCPUPercent >= 10 {
		fig += fmt.Sprintf("  (other processes took %.0f%% of a CPU)", r.OtherCPUPercent)
	}
	fmt.Fprintf(os.Stderr, "%s %s\n", head, fig)
}

// summarizeXDP fills the runs' net costs, the summaries and the
// comparisons from the runs.
func summarizeXDP(rep *xdpReport) {
	rep.Summaries, rep.Comparisons, rep.InvalidReason = nil, nil, nil
	counted := func(r *xdpRun) bool { return r.Valid && !r.Noisy }
	find := func(round int, scenario, target string) *xdpRun {
		for _, r := range rep.Runs {
			if r.Round == round && r.Scenario == scenario && r.Target == target && counted(r) {
				return r
			}
		}
		return nil
	}
	// Net: less the same round's direct run.
	for _, r := range rep.Runs {
		r.NetUs, r.InCallNetUs = nil, nil
		if r.Kind != udpRate || r.Target == "direct" || !counted(r) {
			continue
		}
		if d := find(r.Round, r.Scenario, "direct"); d != nil {
			r.NetUs = map[string]float64{}
			for _, ms := range xdpMeasures {
				r.NetUs[ms] = r.CostUs[ms] - d.CostUs[ms]
			}
			v := r.InCallUs - d.InCallUs
			r.InCallNetUs = &v
		}
	}
	for _, sc := range rep.Scenarios {
		for _, name := range rep.Targets {
			s := xdpSummary{Scenario: sc.Name, Target: name, CostUs: map[string]float64{}}
			var sent, late, loss, p50, p99, share, relay, fwd, other, inCall, inCallNet, busy []float64
			cost, net := map[string][]float64{}, map[string][]float64{}
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
				s.SinkDrops += r.SinkDrops
				s.RelayDrops += r.RelayDrops
				s.MaxLossPct = max(s.MaxLossPct, r.LossPct)
				sent = append(sent, r.SentPerS)
				if r.Kind == udpRate && r.Sent > 0 {
					late = append(late, float64(r.Late)/float64(r.Sent)*100)
				}
				loss = append(loss, r.LossPct)
				p50 = append(p50, r.P50Us)
				p99 = append(p99, r.P99Us)
				relay = append(relay, r.RelayUs)
				fwd = append(fwd, r.ForwardedPerS)
				other = append(other, r.OtherCPUPercent)
				busy = append(busy, r.CPU.value(rep.Measure)/r.WallS*100)
				inCall = append(inCall, r.InCallUs)
				if r.InCallNetUs != nil {
					inCallNet = append(inCallNet, *r.InCallNetUs)
				}
				if name == "xdp" {
					share = append(share, r.KernelShare)
				}
				for _, ms := range xdpMeasures {
					cost[ms] = append(cost[ms], r.CostUs[ms])
					if r.NetUs != nil {
						net[ms] = append(net[ms], r.NetUs[ms])
					}
				}
				switch {
				case sc.Kind == udpPeak:
					s.Each = append(s.Each, r.ForwardedPerS)
				case r.NetUs != nil:
					s.Each = append(s.Each, r.NetUs[rep.Measure])
				}
			}
			s.SentPerS, s.LatePct, s.LossPct, s.P50Us, s.P99Us = median(sent), median(late), median(loss), median(p50), median(p99)
			s.KernelShare, s.MinShare = median(share), minOf(share)
			s.RelayUs, s.OtherCPUPercent, s.BusyPct = median(relay), median(other), median(busy)
			s.InCallUs, s.InCallNetUs = median(inCall), median(inCallNet)
			s.ForwardedPerS, s.RateMin, s.RateMax = median(fwd), minOf(fwd), maxOf(fwd)
			for _, ms := range xdpMeasures {
				s.CostUs[ms] = median(cost[ms])
				if len(net[ms]) > 0 {
					if s.NetUs == nil {
						s.NetUs = map[string]float64{}
					}
					s.NetUs[ms] = median(net[ms])
				}
			}
			s.NetMin, s.NetMax = minOf(net[rep.Measure]), maxOf(net[rep.Measure])
			rep.Summaries = append(rep.Summaries, s)
		}
		rep.Comparisons = append(rep.Comparisons, compareXDP(rep, sc, find)...)
	}
	for _, r := range rep.Runs {
		if !r.Valid {
			rep.InvalidReason = append(rep.InvalidReason, fmt.Sprintf("round %d %s %s: %s", r.Round, r.Scenario, r.Target, firstLine(r.Failure)))
		}
	}
}

// compareXDP sets xdp against the others in one scenario: net CPU per
// datagram (rate) or forwarded rate (peak).
func compareXDP(rep *xdpReport, sc xdpScenario, find func(int, string, string) *xdpRun) []xdpComparison {
	get := func(name string) *xdpSummary {
		for i := range rep.Summaries {
			if s := &rep.Summaries[i]; s.Scenario == sc.Name && s.Target == name && s.Valid > 0 {
				return s
			}
		}
		return nil
	}
	x := get("xdp")
	if x == nil {
		return nil
	}
	d := get("direct")
	saturated := sc.Kind == udpRate && d != nil && d.BusyPct > xdpSaturated
	others := []string{"strait", "naive"}
	if sc.Kind == udpPeak {
		others = append(others, "direct")
	}
	var out []xdpComparison
	for _, name := range others {
		o := get(name)
		if o == nil {
			continue
		}
		c := xdpComparison{Scenario: sc.Name, Other: name, Saturated: saturated}
		var paired []float64
		for _, r := range rep.Runs {
			if r.Scenario != sc.Name || r.Target != "xdp" || !r.Valid || r.Noisy {
				continue
			}
			or := find(r.Round, sc.Name, name)
			switch {
			case or == nil:
			case sc.Kind == udpPeak:
				paired = append(paired, ratio(r.ForwardedPerS, or.ForwardedPerS))
			case r.NetUs != nil && or.NetUs != nil:
				paired = append(paired, ratio(r.NetUs[rep.Measure], or.NetUs[rep.Measure]))
			}
		}
		c.Pairs = len(paired)
		if sc.Kind == udpPeak {
			c.Rate, c.PairedRate = ratio(x.ForwardedPerS, o.ForwardedPerS), median(paired)
		} else if x.NetUs != nil && o.NetUs != nil {
			c.Share = map[string]float64{}
			for _, ms := range xdpMeasures {
				c.Share[ms] = ratio(x.NetUs[ms], o.NetUs[ms])
			}
			c.PairedShare = median(paired)
			c.InCallShare = ratio(x.InCallNetUs, o.NetUs[rep.Measure])
			c.OwnShare = ratio(x.InCallNetUs, o.RelayUs)
		}
		out = append(out, c)
	}
	return out
}

func printXDPHeader(w io.Writer, rep *xdpReport) {
	fmt.Fprintf(w, "strait benchmark (UDP XDP fast path), %s\n", rep.Started.Format("2006-01-02 15:04:05 UTC"))
	for _, kv := range rep.Environment {
		fmt.Fprintf(w, "  %-10s %s\n", kv[0]+":", kv[1])
	}
	fmt.Fprintf(w, "  %-10s %s\n", "network:", rep.Topology)
	fmt.Fprintf(w, "  %-10s xdp: strait proxy --xdp c1 --xdp o1 (native); strait: the same without --xdp (its user-space path); naive: udpnaive;\n", "targets:")
	fmt.Fprintf(w, "  %-10s each GOMAXPROCS=1 alone on CPU %d, started for its run and stopped after; direct: client to origin over d0–d1, no relay\n", "", rep.ProxyCPU)
	var sizes []string
	for _, sc := range rep.Scenarios {
		if sc.Kind == udpRate {
			sizes = append(sizes, strconv.Itoa(sc.Size))
		}
	}
	fmt.Fprintf(w, "  %-10s rate: %d requests/s evenly paced over %d flows (%d datagrams/s through a relay), %s-byte datagrams, echoed by the sink;\n",
		"load:", rep.Rate, rep.Flows, 2*rep.Rate, strings.Join(sizes, " and "))
	fmt.Fprintf(w, "  %-10s %gs measured after a %gs warm-up on the same flows; one process for clients and sink, asleep between sends, on CPU %d\n", "", rep.DurationS, rep.WarmupS, rep.LoadCPU)
	if rep.PeakS > 0 {
		fmt.Fprintf(w, "  %-10s peak: unpaced sendmmsg, %d datagrams a call, %d flows, %gs, to a sink that does not answer (both on CPU %d)\n", "", xdpPeakBatch, rep.Flows, rep.PeakS, rep.LoadCPU)
	}
	fmt.Fprintf(w, "  %-10s %d round(s), targets shuffled per round and test, seed %d\n", "", rep.Rounds, rep.Seed)
	fmt.Fprintf(w, "  %-10s busy time of all CPUs per forwarded datagram (%q measure), less direct's in the same round\n", "CPU:", rep.Measure)
	if rep.Nice != 0 {
		fmt.Fprintf(w, "  %-10s nice %d\n", "priority:", rep.Nice)
	}
	if rep.WaitQuietS > 0 || rep.MaxOther > 0 {
		fmt.Fprintf(w, "  %-10s each run waits up to %gs for other processes to use under 10%% of a CPU; runs during which they took over %.0f%% are not counted (0: all counted)\n",
			"noise:", rep.WaitQuietS, rep.MaxOther)
	}
	fmt.Fprintln(w)
}

func printXDP(w io.Writer, rep *xdpReport) {
	f2 := func(v float64) string { return fmt.Sprintf("%.2f", v) }
	for _, sc := range rep.Scenarios {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		if sc.Kind == udpRate {
			fmt.Fprintf(w, "== rate: %d-byte datagrams, %d requests/s over %d flows, %d × %gs\n", sc.Size, rep.Rate, sc.Flows, rep.Rounds, rep.DurationS)
			fmt.Fprintln(tw, "target\treq/s\tlate\tloss\tp50 µs\tp99 µs\tin kernel\tCPUs busy\tall-CPU µs/dgram\tnet\tmin–max\tprocs net\tin-call µs/dgram\tin-call net\trelay proc µs/dgram\tvalid\tother CPU\t  net of each counted run\t")
		} else {
			fmt.Fprintf(w, "== peak: %d-byte datagrams, unpaced, %d flows, %d × %gs\n", sc.Size, sc.Flows, rep.Rounds, rep.PeakS)
			fmt.Fprintln(tw, "target\tforwarded/s\tmin–max\tloss\tin kernel\tCPUs busy\tall-CPU µs/dgram\trelay proc µs/dgram\tsink drops\trelay drops\tvalid\tother CPU\t  forwarded/s of each counted run\t")
		}
		for _, s := range rep.Summaries {
			if s.Scenario != sc.Name {
				continue
			}
			row := []string{s.Target}
			share := "-"
			if s.Target == "xdp" && s.Valid > 0 {
				share = fmt.Sprintf("%.1f%%", s.KernelShare*100)
			}
			net, relay, inCallNet, minmax := "-", "-", "-", "-"
			if v, ok := s.NetUs[rep.Measure]; ok {
				net, minmax = f2(v), f2(s.NetMin)+"–"+f2(s.NetMax)
			}
			procsNet := "-"
			if v, ok := s.NetUs[measureProcs]; ok {
				procsNet = f2(v)
			}
			if s.Target != "direct" {
				relay, inCallNet = f2(s.RelayUs), f2(s.InCallNetUs)
			}
			var each []string
			for _, v := range s.Each {
				if sc.Kind == udpPeak {
					each = append(each, fmt.Sprintf("%.0fk", v/1000))
				} else {
					each = append(each, f2(v))
				}
			}
			switch {
			case s.Valid == 0:
				row = append(row, "FAILED")
			case sc.Kind == udpRate:
				row = append(row, thousands(s.SentPerS), fmt.Sprintf("%.1f%%", s.LatePct), fmt.Sprintf("%.2f%%", s.LossPct), fmt.Sprintf("%.1f", s.P50Us), fmt.Sprintf("%.1f", s.P99Us), share,
					fmt.Sprintf("%.0f%%", s.BusyPct), f2(s.CostUs[rep.Measure]), net, minmax, procsNet, f2(s.InCallUs), inCallNet, relay)
			default:
				row = append(row, thousands(s.ForwardedPerS), thousands(s.RateMin)+"–"+thousands(s.RateMax), fmt.Sprintf("%.1f%%", s.LossPct), share,
					fmt.Sprintf("%.0f%%", s.BusyPct), f2(s.CostUs[rep.Measure]), relay, strconv.FormatInt(s.SinkDrops, 10), strconv.FormatInt(s.RelayDrops, 10))
			}
			if s.Valid > 0 {
				counted := fmt.Sprintf("%d/%d", s.Valid, s.Runs)
				if s.Noisy > 0 {
					counted += fmt.Sprintf(" (%d noisy)", s.Noisy)
				}
				row = append(row, counted, fmt.Sprintf("%.0f%%", s.OtherCPUPercent), "  "+strings.Join(each, " "))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
		tw.Flush()
		for _, s := range rep.Summaries {
			if s.Scenario == sc.Name && s.Target == "direct" && sc.Kind == udpRate && s.Valid > 0 && s.BusyPct > xdpSaturated {
				fmt.Fprintf(w, "  WARNING: direct kept the CPUs %.0f%% busy: the load CPU ran saturated, where work added on it (the XDP program's, the\n", s.BusyPct)
				fmt.Fprintln(w, "  wake-ups a user-space relay causes) does not show as busy time. The all-CPU nets here read low; trust in-call and relay proc,")
				fmt.Fprintln(w, "  or lower -udp-rate.")
			}
		}
		for _, r := range rep.Runs {
			if r.Scenario == sc.Name && !r.Valid {
				fmt.Fprintf(w, "  FAILED round %d %s: %s\n", r.Round, r.Target, strings.ReplaceAll(r.Failure, "\n", "\n  "))
			}
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintf(w, "== xdp against the others (goal: ≥ %g× cheaper per datagram than strait's user-space path)\n", xdpGoal)
	fmt.Fprintln(w, "   rate, times cheaper: the other's net all-CPU µs per datagram ÷ xdp's, from the medians and [the median of per-round ratios]")
	fmt.Fprintln(w, "   (∞: xdp's net within the noise of direct's); in-call: the same ÷ xdp's net in-call time; own: the other's relay process")
	fmt.Fprintln(w, "   alone ÷ xdp's net in-call time (a floor). peak: xdp's forwarded/s ÷ the other's, from the medians [median of per-round ratios]")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "scenario\tagainst\tnet all-CPU (%s)\tprocs\tin-call\town\tforwarded/s\tpaired rounds\tgoal\t\n", rep.Measure)
	for _, c := range rep.Comparisons {
		cpu, procs, inCall, own, rate, goal := "-", "-", "-", "-", "-", ""
		if c.Share != nil {
			cpu = fmt.Sprintf("%s [%s]", cheaper(c.Share[rep.Measure]), cheaper(c.PairedShare))
			procs, inCall, own = cheaper(c.Share[measureProcs]), cheaper(c.InCallShare), cheaper(c.OwnShare)
			if c.Other == "strait" {
				goal = fmt.Sprintf("≥ %g×: %s", xdpGoal, xdpVerdict(c, rep.Measure))
			}
		}
		if c.Rate > 0 {
			rate = fmt.Sprintf("%.2f× [%.2f×]", c.Rate, c.PairedRate)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t\n", c.Scenario, c.Other, cpu, procs, inCall, own, rate, c.Pairs, goal)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintf(w, "columns: medians over counted runs. late = paced sends that left over %v after their time (the load CPU woke late or was busy).\n", udpLateAfter)
	fmt.Fprintln(w, "CPUs busy = the CPU time below ÷ wall time, in % of one CPU (direct's is nearly all the load CPU's: how near it ran to saturation).")
	fmt.Fprintln(w, "in kernel = the share of strait's datagrams its XDP program forwarded (strait_udp_xdp_datagrams_total")
	fmt.Fprintf(w, "{action=\"forwarded\"} ÷ that + strait_udp_datagrams_total); an xdp run under %.0f%% is FAILED. all-CPU µs/dgram = busy time of all CPUs\n", xdpMinKernelShare*100)
	fmt.Fprintln(w, "during the run (Σ CPUs wall − idle − iowait, /proc/stat, less other processes' CPU time) per datagram forwarded both ways (requests at")
	fmt.Fprintln(w, "the sink + replies at the clients); net = that less direct's in the same round: what the relay adds, wherever it ran; procs net = the")
	fmt.Fprintln(w, "same from our processes' and the kernel threads' CPU time. in-call = median time of the load's send calls per datagram (a request's")
	fmt.Fprintln(w, "write, the sink's echo): for direct and xdp the whole path runs inside them, so xdp's in-call net is the XDP path's cost, timed in one")
	fmt.Fprintln(w, "process; for the user-space relays it is only the hand-over to the relay. relay proc = the relay process's own CPU time per datagram.")
	fmt.Fprintln(w, "other CPU = processes not started here, in % of one CPU.")
	if len(rep.InvalidReason) > 0 {
		fmt.Fprintf(w, "INVALID RUNS: %d\n", len(rep.InvalidReason))
		for _, s := range rep.InvalidReason {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	fmt.Fprintln(w)
	printProcessLogs(w, rep.ProcessLogs)
}

// xdpVerdict says whether xdp met the goal against strait by every
// reading: the all-CPU shares (from the medians, and paired) and the
// in-call one. An all-CPU share at or below 0 (xdp's net below direct's:
// within the noise) passes; the in-call share, which resolves xdp's
// cost, must be above 0. On a saturated load CPU the all-CPU nets read
// low, and only the floor (strait's own process) can show the goal met.
func xdpVerdict(c xdpComparison, measure string) string {
	if c.Saturated {
		if c.OwnShare > 0 && c.OwnShare <= 1/xdpGoal {
			return "met (by its floor, own)"
		}
		return fmt.Sprintf("not shown (load CPU saturated; floor %s)", cheaper(c.OwnShare))
	}
	if c.InCallShare <= 0 || c.InCallShare > 1/xdpGoal {
		return "NOT met"
	}
	if c.Share[measure] > 1/xdpGoal || c.PairedShare > 1/xdpGoal {
		return "NOT met"
	}
	return "met"
}

// cheaper formats how many times cheaper xdp is, given its cost as a
// share of another's: 1 ÷ share, or ∞ when xdp's net cost is at or
// below 0 (within the noise of direct's).
func cheaper(share float64) string {
	if share <= 0 {
		return "∞"
	}
	return fmt.Sprintf("%.1f×", 1/share)
}

// printStoredXDP prints a stored -xdp report again.
func printStoredXDP(path string, data []byte) error {
	var rep xdpReport
	if err := json.Unmarshal(data, &rep); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	summarizeXDP(&rep)
	printXDPHeader(os.Stdout, &rep)
	printXDP(os.Stdout, &rep)
	return nil
}
