package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"
)

// -tcp measures TCP relaying: strait (proxy --listen tcp:// --upstream
// tcp://, splice), nginx's stream module and HAProxy in mode tcp, each
// alone on -proxy-cpu with one worker, with everything else on -load-cpu.
// Two tests, each target once per round in a shuffled order:
//
//   - throughput: iperf3 (one stream, client to server) through the relay
//     to a long-running iperf3 server. Gbit/s, and the relay's CPU seconds
//     per GB relayed.
//   - connections: bench's tcpconn load generator (this binary in a helper
//     mode, -tcp-workers goroutines) opens a connection through the relay,
//     writes 1 KiB, reads 1 KiB and the origin's EOF, and closes, in a
//     loop; the origin (this binary in another helper mode) reads 1 KiB,
//     writes 1 KiB and closes first. Connections/s, failed connections,
//     and the relay's CPU seconds per 1000 connections.
//
// direct is the load straight to the origin: the ceiling CPU 1 allows.

// tcpTargets are what -tcp measures; "base" joins them with -base.
var tcpTargets = []string{"direct", "strait", "nginx", "haproxy"}

// tcpPeers are the relays strait is compared with.
var tcpPeers = []string{"haproxy", "nginx"}

// The two tests.
const (
	tcpThroughput  = "throughput"
	tcpConnections = "connections"
)

var tcpTests = []string{tcpThroughput, tcpConnections}

// tcpPayload is what a client writes and the origin answers in the
// connections test.
const tcpPayload = 1 << 10

// tcpMaxFailed is the share of failed connections above which a
// connections run is FAILED (not counted). A throughput run fails on any
// error.
const tcpMaxFailed = 0.001

// nginxStreamModule is where Debian's nginx-light (libnginx-mod-stream)
// puts the stream module; a config given with -c loads it itself.
const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// tcpHelperArg, as the first argument, runs this binary as the origin or
// the load generator of the connections test (see tcpHelper).
const tcpHelperArg = "-tcp-helper"

// tcpRun is one measured run.
type tcpRun struct {
	Round    int     `json:"round"`
	Position int     `json:"position"` // 1-based place in the round's shuffled order
	Test     string  `json:"test"`
	Target   string  `json:"target"`
	Valid    bool    `json:"valid"`
	Noisy    bool    `json:"noisy,omitempty"` // valid, but other processes took over -max-other
	Failure  string  `json:"failure,omitempty"`
	WallS    float64 `json:"wall_s"`

	// throughput
	Gbps          float64 `json:"gbit_per_s,omitempty"` // iperf3 end.sum_received.bits_per_second / 1e9
	BytesReceived int64   `json:"bytes_received,omitempty"`
	Retransmits   int64   `json:"retransmits,omitempty"` // iperf3 end.sum_sent.retransmits
	// connections
	Conns      int64    `json:"connections,omitempty"` // completed exchanges
	Failed     int64    `json:"failed_connections"`
	ConnPerSec float64  `json:"connections_per_s,omitempty"`
	Errors     []string `json:"sample_errors,omitempty"`
	// TimeWait is how many TIME_WAIT sockets connected to the relay's or
	// the origin's port exist after the run: ephemeral ports of the client
	// or the relay that cannot be reused for a while (0 when the origin
	// closes first and the relay passes that on).
	TimeWait int `json:"time_wait_to_listeners_after"`

	// RelayCPUS is the relay's own CPU time (user + system, all its
	// processes) during the run; CoreBusyS is -proxy-cpu's busy time
	// (including softirq work done there).
	RelayCPUS       float64 `json:"relay_cpu_s"`
	CoreBusyS       float64 `json:"proxy_core_busy_s"`
	RelayCPUPercent float64 `json:"relay_cpu_percent"`
	// Cost is RelayCPUS per GB received (throughput) or per 1000
	// completed connections (connections); CoreCost the same of CoreBusyS.
	Cost            float64 `json:"relay_cpu_cost"`
	CoreCost        float64 `json:"proxy_core_cost"`
	OtherCPUPercent float64 `json:"other_processes_cpu_percent"`
}

// rate is a run's headline figure: Gbit/s or connections/s.
func (r *tcpRun) rate() float64 {
	if r.Test == tcpThroughput {
		return r.Gbps
	}
	return r.ConnPerSec
}

// tcpSummary is one target's figures over its counted runs in one test.
type tcpSummary struct {
	Test            string    `json:"test"`
	Target          string    `json:"target"`
	Runs            int       `json:"runs"`
	Valid           int       `json:"valid_runs"` // counted
	Noisy           int       `json:"noisy_runs"`
	Rate            float64   `json:"median_rate"` // Gbit/s or connections/s
	RateMin         float64   `json:"min_rate"`
	RateMax         float64   `json:"max_rate"`
	Cost            float64   `json:"median_relay_cpu_cost"` // s/GB or s per 1000 connections
	CostMin         float64   `json:"min_relay_cpu_cost"`
	CostMax         float64   `json:"max_relay_cpu_cost"`
	CoreCost        float64   `json:"median_proxy_core_cost"`
	RelayCPUPercent float64   `json:"median_relay_cpu_percent"`
	Failed          int64     `json:"failed_connections_total"`
	MaxTimeWait     int       `json:"max_time_wait_to_listeners_after"`
	OtherCPUPercent float64   `json:"median_other_processes_cpu_percent"`
	OverDirect      float64   `json:"rate_over_direct,omitempty"`
	AllRates        []float64 `json:"counted_rates"`
}

// tcpComparison is strait's figures over one peer's in one test.
type tcpComparison struct {
	Test string `json:"test"`
	Peer string `json:"peer"`
	// Ratios of medians: rate (above 1: strait faster) and CPU cost
	// (below 1: strait cheaper).
	Rate float64 `json:"strait_over_peer_rate"`
	Cost float64 `json:"strait_over_peer_cpu_cost"`
	// The same, median of the per-round ratios.
	PairedRate float64 `json:"strait_over_peer_rate_paired"`
	PairedCost float64 `json:"strait_over_peer_cpu_cost_paired"`
	Pairs      int     `json:"paired_rounds"`
}

type tcpReport struct {
	Started      time.Time         `json:"started"`
	Finished     time.Time         `json:"finished"`
	Seed         uint64            `json:"seed"`
	Rounds       int               `json:"rounds"`
	DurationS    float64           `json:"duration_s"`
	WarmupS      float64           `json:"warmup_s"`
	ProxyCPU     int               `json:"proxy_cpu"`
	LoadCPU      int               `json:"load_cpu"`
	Workers      int               `json:"connections_workers"`
	PayloadBytes int               `json:"connections_payload_bytes"`
	MaxFailed    float64           `json:"connections_max_failed_share"`
	PortRange    string            `json:"ip_local_port_range"`
	TWReuse      string            `json:"tcp_tw_reuse"`
	Targets      []string          `json:"targets"`
	WaitQuietS   float64           `json:"wait_quiet_s"`
	MaxOther     float64           `json:"max_other_percent"`
	Nice         int               `json:"nice"`
	Environment  [][2]string       `json:"environment"`
	Runs         []*tcpRun         `json:"runs"`
	Summaries    []tcpSummary      `json:"summaries"`
	Comparisons  []tcpComparison   `json:"comparisons"`
	BestRatePeer map[string]string `json:"best_rate_peer"` // per test
	BestCostPeer map[string]string `json:"best_cost_peer"`
	// ProcessLogs is what each relay logged during the runs, grouped:
	// strait logs a line per TCP connection, so the lines themselves
	// would be hundreds of thousands.
	ProcessLogs   map[string][]logGroup `json:"process_logs_during_runs"`
	InvalidReason []string              `json:"invalid,omitempty"` // why the run as a whole is not to be trusted
}

// tcpRelay is one relay process (or direct): throughput and connections
// each have their own, since a relay has one upstream.
type tcpRelay struct {
	name string
	port int
	proc *proc // nil for direct
}

// runTCP is the -tcp mode.
func (b *bench) runTCP(ctx context.Context) error {
	cfg := b.cfg
	iperf, ok := lookTool("iperf3")
	if !ok {
		return errors.New("iperf3 is not installed (apt-get install -y iperf3)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	targets := slices.Clone(tcpTargets)
	if b.base != "" {
		targets = append(targets, "base")
	}
	seed := cfg.seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(seed, seed>>32|1))

	env := b.environment(ctx)
	out, _ := exec.CommandContext(ctx, iperf, "--version").CombinedOutput()
	env = append(env, [2]string{"iperf3", strings.TrimSpace(firstLine(string(out)))})
	rep := &tcpReport{
		Started: b.started.UTC(), Seed: seed, Rounds: cfg.rounds,
		DurationS: cfg.duration.Seconds(), WarmupS: cfg.warmup.Seconds(),
		ProxyCPU: cfg.proxyCPU, LoadCPU: cfg.loadCPU, Workers: cfg.tcpWorkers,
		PayloadBytes: tcpPayload, MaxFailed: tcpMaxFailed,
		PortRange: sysctl("net/ipv4/ip_local_port_range"), TWReuse: sysctl("net/ipv4/tcp_tw_reuse"),
		Targets: targets, WaitQuietS: cfg.waitQuiet.Seconds(), MaxOther: cfg.maxOther, Nice: cfg.nice,
		Environment: env, ProcessLogs: map[string][]logGroup{},
	}
	printTCPHeader(os.Stdout, rep)

	// The origins, on the load CPU: an iperf3 server, and this binary as
	// the 1 KiB origin (GOMAXPROCS=1).
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	iperfPort, connPort := ports[0], ports[1]
	iperfArgs := []string{"-s", "-p", strconv.Itoa(iperfPort)}
	iperfSrv, err := b.start("iperf3-server", cfg.loadCPU, nil, iperf, iperfArgs...)
	if err != nil {
		return err
	}
	if err := waitListen(ctx, iperfSrv, iperfPort); err != nil {
		return err
	}
	connOrigin, err := b.start("tcpconn-origin", cfg.loadCPU, []string{"GOMAXPROCS=1"}, self,
		tcpHelperArg, "origin", "-addr", fmt.Sprintf("127.0.0.1:%d", connPort))
	if err != nil {
		return err
	}
	if err := waitListen(ctx, connOrigin, connPort); err != nil {
		return err
	}

	// Every relay runs for the whole benchmark, idle while another is
	// measured; one per test, since each has one upstream.
	relays := map[string]map[string]*tcpRelay{tcpThroughput: {}, tcpConnections: {}}
	upstreams := map[string]int{tcpThroughput: iperfPort, tcpConnections: connPort}
	var logged []*tcpRelay
	logStart := map[*tcpRelay]int{}
	for _, test := range tcpTests {
		for _, name := range targets {
			r, err := b.startTCPRelay(ctx, name, test, upstreams[test])
			if err != nil {
				return fmt.Errorf("%s (%s): %w", name, test, err)
			}
			if test == tcpConnections {
				// One exchange through it, checked byte for byte, before
				// any load.
				if err := tcpExchange(fmt.Sprintf("127.0.0.1:%d", r.port), pattern(tcpPayload), make([]byte, tcpPayload+1)); err != nil {
					return fmt.Errorf("%s: a 1 KiB exchange through it: %v", name, err)
				}
			}
			relays[test][name] = r
			if r.proc != nil {
				logStart[r] = len(r.proc.logLines())
				logged = append(logged, r)
			}
		}
	}

	if pct := b.waitQuiet(ctx, 0); pct >= 10 {
		fmt.Fprintf(os.Stderr, "bench: warning: other processes are using %.0f%% of a CPU; expect noise (see the \"other CPU\" column; -wait-quiet waits)\n", pct)
	}
	n := cfg.rounds * len(tcpTests) * len(targets)
	fmt.Fprintf(os.Stderr, "bench -tcp: %d runs of %v (+%v warm-up): about %v; seed %d\n",
		n, cfg.duration, cfg.warmup, (time.Duration(n) * (cfg.duration + cfg.warmup)).Round(time.Second), seed)

	for round := 1; round <= cfg.rounds; round++ {
		for _, test := range tcpTests {
			order := slices.Clone(targets)
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for pos, name := range order {
				if test == tcpThroughput && iperfSrv.exited() {
					// A broken test can end the server: start another.
					fmt.Fprintf(os.Stderr, "bench: the iperf3 server exited (%v); restarting it\n", iperfSrv.err)
					if iperfSrv, err = b.start("iperf3-server", cfg.loadCPU, nil, iperf, iperfArgs...); err != nil {
						return err
					}
					if err := waitListen(ctx, iperfSrv, iperfPort); err != nil {
						return err
					}
				}
				var r *tcpRun
				if test == tcpThroughput {
					r = b.measureIperf(ctx, iperf, relays[test][name], iperfPort)
				} else {
					r = b.measureConns(ctx, self, relays[test][name], connPort)
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.Round, r.Position = round, pos+1
				rep.Runs = append(rep.Runs, r)
				tcpProgress(round, cfg.rounds, pos+1, len(order), r)
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
	summarizeTCP(rep)
	printTCP(os.Stdout, rep)
	return b.writeJSON(rep, "-tcp")
}

// sysctl reads /proc/sys/PATH, one line.
func sysctl(path string) string {
	data, err := os.ReadFile("/proc/sys/" + path)
	if err != nil {
		return "?"
	}
	return strings.Join(strings.Fields(string(data)), " ")
}

// startTCPRelay starts the named relay on -proxy-cpu in front of
// 127.0.0.1:upstream, and waits for it to listen.
func (b *bench) startTCPRelay(ctx context.Context, name, test string, upstream int) (*tcpRelay, error) {
	if name == "direct" {
		return &tcpRelay{name: name, port: upstream}, nil
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	r := &tcpRelay{name: name, port: ports[0]}
	proc := name + "-tcp-" + test // the log file's and the config's name
	listen := fmt.Sprintf("127.0.0.1:%d", r.port)
	up := fmt.Sprintf("127.0.0.1:%d", upstream)
	cpu := b.cfg.proxyCPU
	switch name {
	case "strait", "base":
		bin := b.strait
		if name == "base" {
			bin = b.base
		}
		r.proc, err = b.start(proc, cpu, []string{"GOMAXPROCS=1"}, bin, "proxy", "--listen", "tcp://"+listen, "--upstream", "tcp://"+up)
	case "nginx":
		if _, err := os.Stat(nginxStreamModule); err != nil {
			return nil, fmt.Errorf("nginx's stream module: %v (apt-get install -y libnginx-mod-stream)", err)
		}
		var conf string
		if conf, err = b.writeFile(proc+".conf", b.nginxStreamConf(proc, listen, up)); err == nil {
			r.proc, err = b.start(proc, cpu, nil, nginxBin(), b.nginxArgs(proc, conf)...)
		}
	case "haproxy":
		var conf string
		if conf, err = b.writeFile(proc+".cfg", haproxyTCPConf(listen, up)); err == nil {
			r.proc, err = b.start(proc, cpu, nil, "haproxy", "-db", "-f", conf)
		}
	default:
		err = fmt.Errorf("unknown TCP target %q", name)
	}
	if err != nil {
		return nil, err
	}
	return r, waitListen(ctx, r.proc, r.port)
}

// nginxStreamConf is nginx relaying TCP with its stream module, one
// worker, its defaults otherwise (proxy_buffer_size 16k, no half-close).
func (b *bench) nginxStreamConf(name, listen, upstream string) string {
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
        listen %[6]s;
        proxy_pass %[7]s;
    }
}
`, b.nofile, d, name, nginxStreamModule, b.nofile-100, listen, upstream)
}

// haproxyTCPConf is HAProxy relaying TCP: one thread, timeouts set, no
// log; its defaults otherwise (no splice options).
func haproxyTCPConf(listen, upstream string) string {
	return fmt.Sprintf(`global
    nbthread 1
    maxconn 4000
    no strict-limits

defaults
    mode tcp
    maxconn 4000
    timeout connect 5s
    timeout client 300s
    timeout server 300s

frontend fe
    bind %s
    default_backend origin

backend origin
    server origin %s
`, listen, upstream)
}

// waitListen waits, for up to 15 s, until a socket listens on port
// (from /proc/net/tcp, without connecting: a probe connection would be a
// broken test to an iperf3 server).
func waitListen(ctx context.Context, p *proc, port int) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		if len(tcpSockets(func(local, _ int, state string) bool { return local == port && state == "0A" })) > 0 {
			return nil
		}
		if p != nil && p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.logTail(20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("nothing listens on port %d after 15 s", port)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// tcpSockets returns the local ports of the IPv4 and IPv6 TCP sockets
// that keep accepts (local port, remote port, state in hex as in
// /proc/net/tcp: 01 established, 06 TIME_WAIT, 0A listen).
func tcpSockets(keep func(local, remote int, state string) bool) []int {
	var out []int
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(l)
			if len(f) < 4 {
				continue
			}
			lp, rp := hexPort(f[1]), hexPort(f[2])
			if keep(lp, rp, f[3]) {
				out = append(out, lp)
			}
		}
	}
	return out
}

func hexPort(addr string) int {
	i := strings.LastIndexByte(addr, ':')
	v, _ := strconv.ParseInt(addr[i+1:], 16, 32)
	return int(v)
}

// timeWaitTo counts TIME_WAIT sockets connected to one of ports (from
// a client's or a relay's ephemeral port): what the connecting side of
// this run's connections holds and cannot reuse for a while.
func timeWaitTo(ports ...int) int {
	return len(tcpSockets(func(_, remote int, state string) bool {
		return state == "06" && slices.Contains(ports, remote)
	}))
}

// tcpCost is what measureIperf and measureConns read before and after a
// run.
type tcpCost struct {
	b       *bench
	pids    []int
	ours    map[int]bool
	start   time.Time
	cpu     float64
	busy    int64
	other   float64
	relayed bool
}

func (b *bench) startCost(r *tcpRelay) *tcpCost {
	c := &tcpCost{b: b, ours: b.ourPIDs(), relayed: r.proc != nil}
	if r.proc != nil {
		c.pids = r.proc.pids()
	}
	c.other = otherCPUSeconds(c.ours)
	c.cpu = cpuSeconds(c.pids)
	c.busy, _ = cpuBusy(b.cfg.proxyCPU)
	c.start = time.Now()
	return c
}

// stop fills the run's CPU figures; per is the run's gigabytes or
// thousands of connections.
func (c *tcpCost) stop(run *tcpRun, per float64) {
	run.WallS = time.Since(c.start).Seconds()
	busy, _ := cpuBusy(c.b.cfg.proxyCPU)
	cpu := cpuSeconds(c.pids)
	other := otherCPUSeconds(c.ours)
	run.OtherCPUPercent = (other - c.other) / run.WallS * 100
	run.CoreBusyS = float64(busy-c.busy) / clockTicks
	if !c.relayed {
		return
	}
	run.RelayCPUS = cpu - c.cpu
	run.RelayCPUPercent = run.RelayCPUS / run.WallS * 100
	if per > 0 {
		run.Cost = run.RelayCPUS / per
		run.CoreCost = run.CoreBusyS / per
	}
}

// iperfResult is what iperf3 -J says that is used here.
type iperfResult struct {
	End struct {
		SumSent struct {
			Bytes       int64 `json:"bytes"`
			Retransmits int64 `json:"retransmits"`
		} `json:"sum_sent"`
		SumReceived struct {
			Bytes         int64   `json:"bytes"`
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
}

// runIperf runs the iperf3 client on the load CPU against port for d.
func (b *bench) runIperf(ctx context.Context, iperf string, port int, d time.Duration) (iperfResult, error) {
	var res iperfResult
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	argv := b.pinned(b.cfg.loadCPU, []string{iperf, "-c", "127.0.0.1", "-p", strconv.Itoa(port),
		"-t", strconv.Itoa(int(d.Seconds())), "-J", "--connect-timeout", "5000"})
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		return res, fmt.Errorf("iperf3: %v (output not JSON: %v) %s", err, jerr, strings.TrimSpace(stderr.String()))
	}
	if res.Error != "" {
		return res, fmt.Errorf("iperf3: %s", res.Error)
	}
	if err != nil {
		return res, fmt.Errorf("iperf3: %v %s", err, strings.TrimSpace(stderr.String()))
	}
	return res, nil
}

// measureIperf runs one warm-up and one measured iperf3 through r.
func (b *bench) measureIperf(ctx context.Context, iperf string, r *tcpRelay, iperfPort int) *tcpRun {
	run := &tcpRun{Test: tcpThroughput, Target: r.name}
	if r.proc != nil && r.proc.exited() {
		run.Failure = fmt.Sprintf("%s is not running (exited: %v)", r.name, r.proc.err)
		return run
	}
	if b.cfg.waitQuiet > 0 {
		b.waitQuiet(ctx, b.cfg.waitQuiet)
	}
	if b.cfg.warmup > 0 {
		b.runIperf(ctx, iperf, r.port, b.cfg.warmup)
	}
	cost := b.startCost(r)
	res, err := b.runIperf(ctx, iperf, r.port, b.cfg.duration)
	run.BytesReceived = res.End.SumReceived.Bytes
	run.Gbps = res.End.SumReceived.BitsPerSecond / 1e9
	run.Retransmits = res.End.SumSent.Retransmits
	cost.stop(run, float64(run.BytesReceived)/1e9)
	run.TimeWait = timeWaitTo(r.port, iperfPort)
	switch {
	case err != nil:
		run.Failure = err.Error()
	case r.proc != nil && r.proc.exited():
		run.Failure = fmt.Sprintf("%s exited during the run: %v\n%s", r.name, r.proc.err, r.proc.logTail(20))
	case run.BytesReceived == 0:
		run.Failure = "no bytes received"
	default:
		run.Valid = true
	}
	run.Noisy = run.Valid && b.cfg.maxOther > 0 && run.OtherCPUPercent > b.cfg.maxOther
	return run
}

// tcpLoadResult is what the load generator helper prints, as JSON.
type tcpLoadResult struct {
	Conns    int64    `json:"connections"`
	Failed   int64    `json:"failed"`
	ElapsedS float64  `json:"elapsed_s"`
	Errors   []string `json:"sample_errors,omitempty"`
}

// runConnLoad runs bench's tcpconn load generator (this binary) on the
// load CPU against port for d.
func (b *bench) runConnLoad(ctx context.Context, self string, port int, d time.Duration) (tcpLoadResult, error) {
	var res tcpLoadResult
	ctx, cancel := context.WithTimeout(ctx, d+60*time.Second)
	defer cancel()
	argv := b.pinned(b.cfg.loadCPU, []string{self, tcpHelperArg, "load", "-addr", fmt.Sprintf("127.0.0.1:%d", port),
		"-workers", strconv.Itoa(b.cfg.tcpWorkers), "-duration", d.String()})
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return res, fmt.Errorf("tcpconn load generator: %v %s", err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return res, fmt.Errorf("tcpconn load generator: %v: %q", err, out)
	}
	return res, nil
}

// measureConns runs one warm-up and one measured connections run
// through r.
func (b *bench) measureConns(ctx context.Context, self string, r *tcpRelay, originPort int) *tcpRun {
	run := &tcpRun{Test: tcpConnections, Target: r.name}
	if r.proc != nil && r.proc.exited() {
		run.Failure = fmt.Sprintf("%s is not running (exited: %v)", r.name, r.proc.err)
		return run
	}
	if b.cfg.waitQuiet > 0 {
		b.waitQuiet(ctx, b.cfg.waitQuiet)
	}
	if b.cfg.warmup > 0 {
		b.runConnLoad(ctx, self, r.port, b.cfg.warmup)
	}
	cost := b.startCost(r)
	res, err := b.runConnLoad(ctx, self, r.port, b.cfg.duration)
	run.Conns, run.Failed, run.Errors = res.Conns, res.Failed, res.Errors
	if res.ElapsedS > 0 {
		run.ConnPerSec = float64(res.Conns) / res.ElapsedS
	}
	cost.stop(run, float64(res.Conns)/1000)
	run.TimeWait = timeWaitTo(r.port, originPort)
	switch {
	case err != nil:
		run.Failure = err.Error()
	case r.proc != nil && r.proc.exited():
		run.Failure = fmt.Sprintf("%s exited during the run: %v\n%s", r.name, r.proc.err, r.proc.logTail(20))
	case res.Conns == 0:
		run.Failure = "no connection completed"
	case float64(res.Failed) > tcpMaxFailed*float64(res.Conns+res.Failed):
		run.Failure = fmt.Sprintf("%d of %d connections failed (over %.1f%%)", res.Failed, res.Conns+res.Failed, tcpMaxFailed*100)
	default:
		run.Valid = true
	}
	run.Noisy = run.Valid && b.cfg.maxOther > 0 && run.OtherCPUPercent > b.cfg.maxOther
	return run
}

func tcpProgress(round, rounds, pos, n int, r *tcpRun) {
	head := fmt.Sprintf("round %d/%d %-11s %d/%d %-8s", round, rounds, r.Test, pos, n, r.Target)
	if !r.Valid {
		fmt.Fprintf(os.Stderr, "%s FAILED: %s\n", head, firstLine(r.Failure))
		return
	}
	if r.Noisy {
		head += " NOISY (not counted)"
	}
	var fig string
	if r.Test == tcpThroughput {
		fig = fmt.Sprintf("%6.2f Gbit/s  %d retransmits", r.Gbps, r.Retransmits)
		if r.Target != "direct" {
			fig += fmt.Sprintf("  relay CPU %3.0f%%  %.3f s/GB  (core busy %.3f s/GB)", r.RelayCPUPercent, r.Cost, r.CoreCost)
		}
	} else {
		fig = fmt.Sprintf("%8s conn/s  %d failed", thousands(r.ConnPerSec), r.Failed)
		if r.Target != "direct" {
			fig += fmt.Sprintf("  relay CPU %3.0f%%  %.3f s/1000 conns  (core busy %.3f)", r.RelayCPUPercent, r.Cost, r.CoreCost)
		}
	}
	if r.OtherCPUPercent >= 10 {
		fig += fmt.Sprintf("  (other processes took %.0f%% of a CPU)", r.OtherCPUPercent)
	}
	fmt.Fprintf(os.Stderr, "%s %s\n", head, fig)
}

// summarizeTCP fills rep's summaries, comparisons and best peers from
// its runs.
func summarizeTCP(rep *tcpReport) {
	rep.Summaries, rep.Comparisons = nil, nil
	rep.BestRatePeer, rep.BestCostPeer = map[string]string{}, map[string]string{}
	counted := func(r *tcpRun) bool { return r.Valid && !r.Noisy }
	for _, test := range tcpTests {
		var direct float64
		var sums []tcpSummary
		for _, name := range rep.Targets {
			s := tcpSummary{Test: test, Target: name}
			var rates, costs, core, pct, other []float64
			for _, r := range rep.Runs {
				if r.Test != test || r.Target != name {
					continue
				}
				s.Runs++
				s.Failed += r.Failed
				s.MaxTimeWait = max(s.MaxTimeWait, r.TimeWait)
				if r.Valid && r.Noisy {
					s.Noisy++
				}
				if !counted(r) {
					continue
				}
				s.Valid++
				rates = append(rates, r.rate())
				costs = append(costs, r.Cost)
				core = append(core, r.CoreCost)
				pct = append(pct, r.RelayCPUPercent)
				other = append(other, r.OtherCPUPercent)
			}
			s.AllRates = rates
			s.Rate, s.RateMin, s.RateMax = median(rates), minOf(rates), maxOf(rates)
			s.Cost, s.CostMin, s.CostMax = median(costs), minOf(costs), maxOf(costs)
			s.CoreCost, s.RelayCPUPercent, s.OtherCPUPercent = median(core), median(pct), median(other)
			if name == "direct" {
				direct = s.Rate
			}
			sums = append(sums, s)
		}
		for i := range sums {
			if direct > 0 && sums[i].Valid > 0 {
				sums[i].OverDirect = sums[i].Rate / direct
			}
		}
		rep.Summaries = append(rep.Summaries, sums...)

		get := func(name string) *tcpSummary {
			for i := range sums {
				if sums[i].Target == name && sums[i].Valid > 0 {
					return &sums[i]
				}
			}
			return nil
		}
		st := get("strait")
		for _, peer := range tcpPeers {
			p := get(peer)
			if p == nil {
				continue
			}
			if q := get(rep.BestRatePeer[test]); q == nil || p.Rate > q.Rate {
				rep.BestRatePeer[test] = peer
			}
			if q := get(rep.BestCostPeer[test]); q == nil || p.Cost < q.Cost {
				rep.BestCostPeer[test] = peer
			}
			if st == nil {
				continue
			}
			c := tcpComparison{Test: test, Peer: peer, Rate: st.Rate / p.Rate}
			if p.Cost > 0 {
				c.Cost = st.Cost / p.Cost
			}
			var pr, pc []float64
			for _, a := range rep.Runs {
				for _, o := range rep.Runs {
					if a.Test == test && o.Test == test && a.Round == o.Round && a.Target == "strait" && o.Target == peer &&
						counted(a) && counted(o) && o.rate() > 0 && o.Cost > 0 {
						pr = append(pr, a.rate()/o.rate())
						pc = append(pc, a.Cost/o.Cost)
					}
				}
			}
			c.PairedRate, c.PairedCost, c.Pairs = median(pr), median(pc), len(pr)
			rep.Comparisons = append(rep.Comparisons, c)
		}
	}
	rep.InvalidReason = nil
	for _, r := range rep.Runs {
		if !r.Valid {
			rep.InvalidReason = append(rep.InvalidReason, fmt.Sprintf("round %d %s %s: %s", r.Round, r.Test, r.Target, firstLine(r.Failure)))
		}
	}
}

func minOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Min(xs)
}

func maxOf(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	return slices.Max(xs)
}

func printTCPHeader(w io.Writer, rep *tcpReport) {
	fmt.Fprintf(w, "strait benchmark (TCP relays), %s\n", rep.Started.Format("2006-01-02 15:04:05 UTC"))
	for _, kv := range rep.Environment {
		fmt.Fprintf(w, "  %-10s %s\n", kv[0]+":", kv[1])
	}
	fmt.Fprintf(w, "  %-10s relay alone on CPU %d, one worker (strait GOMAXPROCS=1 proxy --listen tcp://, nginx stream worker_processes 1, HAProxy mode tcp nbthread 1);\n", "pinning:", rep.ProxyCPU)
	fmt.Fprintf(w, "  %-10s origins (iperf3 -s; bench's tcpconn origin, GOMAXPROCS=1) and the load (iperf3 -c; bench's tcpconn load generator, GOMAXPROCS=1) share CPU %d\n", "", rep.LoadCPU)
	fmt.Fprintf(w, "  %-10s throughput: iperf3 -c -t %g -J, one stream; connections: %d workers, each connect, write %d B, read %d B and the origin's EOF, close\n",
		"load:", rep.DurationS, rep.Workers, rep.PayloadBytes, rep.PayloadBytes)
	fmt.Fprintf(w, "  %-10s %gs measured after a %gs warm-up, %d round(s), targets shuffled per round and test, seed %d\n", "", rep.DurationS, rep.WarmupS, rep.Rounds, rep.Seed)
	fmt.Fprintf(w, "  %-10s ip_local_port_range %s, tcp_tw_reuse %s; the origin closes first, so TIME_WAIT stays on listening ports\n", "ports:", rep.PortRange, rep.TWReuse)
	if rep.Nice != 0 {
		fmt.Fprintf(w, "  %-10s origins, relays and load run at nice %d\n", "priority:", rep.Nice)
	}
	if rep.WaitQuietS > 0 || rep.MaxOther > 0 {
		fmt.Fprintf(w, "  %-10s each run waits up to %gs for other processes to use under 10%% of a CPU; runs during which they took over %.0f%% are not counted (0: all counted)\n",
			"noise:", rep.WaitQuietS, rep.MaxOther)
	}
	fmt.Fprintln(w)
}

// printTCP prints a -tcp report's tables, from the report alone.
func printTCP(w io.Writer, rep *tcpReport) {
	for _, test := range tcpTests {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		if test == tcpThroughput {
			fmt.Fprintf(w, "== TCP throughput: iperf3, one stream, %d × %gs\n", rep.Rounds, rep.DurationS)
			fmt.Fprintln(tw, "target\tGbit/s\tmin–max\t÷ direct\trelay CPU\tCPU s/GB\tmin–max\tCPU-core s/GB\tvalid\tother CPU\t  Gbit/s of each counted run\t")
		} else {
			fmt.Fprintf(w, "== TCP connections: %d workers, %d B each way, a new connection each, %d × %gs\n", rep.Workers, rep.PayloadBytes, rep.Rounds, rep.DurationS)
			fmt.Fprintln(tw, "target\tconn/s\tmin–max\t÷ direct\trelay CPU\tCPU s/1000 conns\tmin–max\tCPU-core s/1000\tfailed conns\tTIME_WAIT\tvalid\tother CPU\t  conn/s of each counted run\t")
		}
		for _, s := range rep.Summaries {
			if s.Test != test {
				continue
			}
			row := []string{s.Target}
			rate := func(v float64) string {
				if test == tcpThroughput {
					return fmt.Sprintf("%.2f", v)
				}
				return thousands(v)
			}
			if s.Valid == 0 {
				row = append(row, "FAILED", "-", "-")
			} else {
				row = append(row, rate(s.Rate), rate(s.RateMin)+"–"+rate(s.RateMax), fmt.Sprintf("%.2f×", s.OverDirect))
			}
			if s.Target == "direct" || s.Valid == 0 {
				row = append(row, "-", "-", "-", "-")
			} else {
				row = append(row, fmt.Sprintf("%.0f%%", s.RelayCPUPercent), fmt.Sprintf("%.3f", s.Cost),
					fmt.Sprintf("%.3f–%.3f", s.CostMin, s.CostMax), fmt.Sprintf("%.3f", s.CoreCost))
			}
			if test == tcpConnections {
				row = append(row, strconv.FormatInt(s.Failed, 10), strconv.Itoa(s.MaxTimeWait))
			}
			counted := fmt.Sprintf("%d/%d", s.Valid, s.Runs)
			if s.Noisy > 0 {
				counted += fmt.Sprintf(" (%d noisy)", s.Noisy)
			}
			row = append(row, counted, fmt.Sprintf("%.0f%%", s.OtherCPUPercent))
			var each []string
			for _, v := range s.AllRates {
				if test == tcpThroughput {
					each = append(each, fmt.Sprintf("%.2f", v))
				} else {
					each = append(each, fmt.Sprintf("%.1fk", v/1000))
				}
			}
			row = append(row, "  "+strings.Join(each, " "))
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
		tw.Flush()
		for _, r := range rep.Runs {
			if r.Test == test && !r.Valid {
				fmt.Fprintf(w, "  FAILED round %d %s: %s\n", r.Round, r.Target, strings.ReplaceAll(r.Failure, "\n", "\n  "))
				for _, e := range r.Errors {
					fmt.Fprintf(w, "    e.g. %s\n", e)
				}
			}
		}
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "== strait ÷ peer: rate (above 1: strait faster) and relay CPU per unit (below 1: strait cheaper); medians, and in brackets the median of per-round ratios")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "test\tpeer\trate\tCPU cost\tpaired rounds\t")
	for _, c := range rep.Comparisons {
		best := ""
		if rep.BestRatePeer[c.Test] == c.Peer {
			best += " best rate"
		}
		if rep.BestCostPeer[c.Test] == c.Peer {
			best += " best cost"
		}
		fmt.Fprintf(tw, "%s\t%s%s\t%.2f× (%.2f×)\t%.2f× (%.2f×)\t%d\t\n", c.Test, c.Peer, best, c.Rate, c.PairedRate, c.Cost, c.PairedCost, c.Pairs)
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, "columns: medians over counted runs, min–max beside; relay CPU = the relay's CPU time ÷ wall time (100%: the relay is the limit);")
	fmt.Fprintln(w, "CPU s/GB and s/1000 conns = the relay process's CPU time (user + system) per GB received by iperf3 or per 1000 completed connections;")
	fmt.Fprintln(w, "CPU-core = the relay CPU's busy time from /proc/stat per unit instead (adds softirq work and anything else on that core);")
	fmt.Fprintln(w, "÷ direct = the target's rate over direct's (the load CPU's ceiling); other CPU = processes not started by the harness, in % of a CPU;")
	fmt.Fprintln(w, "TIME_WAIT = the most TIME_WAIT sockets held by the connecting side (client or relay, on an ephemeral port) after a run.")
	fmt.Fprintf(w, "A throughput run with any iperf3 error, and a connections run with over %.1f%% failed connections, is FAILED and not counted.\n", rep.MaxFailed*100)
	if len(rep.InvalidReason) > 0 {
		fmt.Fprintf(w, "INVALID RUNS: %d\n", len(rep.InvalidReason))
		for _, s := range rep.InvalidReason {
			fmt.Fprintf(w, "  %s\n", s)
		}
	}
	fmt.Fprintln(w)
	printProcessLogs(w, rep.ProcessLogs)
}

// printProcessLogs prints what each relay logged during the runs,
// grouped (see groupLines), the ten most frequent kinds of line each.
func printProcessLogs(w io.Writer, logs map[string][]logGroup) {
	if len(logs) == 0 {
		fmt.Fprintln(w, "process logs: no relay logged anything during the runs")
	}
	keys := make([]string, 0, len(logs))
	for k := range logs {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		groups := logs[k]
		total := 0
		for _, g := range groups {
			total += g.Count
		}
		fmt.Fprintf(w, "process log: %s logged %d line(s) during the runs (numbers of 4 digits or more as N):\n", k, total)
		for i, g := range groups {
			if i == 10 {
				fmt.Fprintf(w, "    | ... and %d other kinds of line\n", len(groups)-10)
				break
			}
			fmt.Fprintf(w, "    | %6d × %s\n", g.Count, g.Line)
		}
	}
}

// printStoredTCP prints a stored -tcp report again.
func printStoredTCP(path string, data []byte) error {
	var rep tcpReport
	if err := json.Unmarshal(data, &rep); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	summarizeTCP(&rep)
	printTCPHeader(os.Stdout, &rep)
	printTCP(os.Stdout, &rep)
	return nil
}

// tcpHelper runs this binary as the connections test's origin or its load
// generator: bench -tcp-helper origin -addr A, or bench -tcp-helper load
// -addr A -workers N -duration D (prints a tcpLoadResult as JSON). The
// harness starts both pinned to the load CPU with GOMAXPROCS=1.
func tcpHelper(args []string) int {
	if len(args) < 1 {
		fmt.Fprintln(os.Stderr, "bench -tcp-helper: origin or load?")
		return 2
	}
	fs := flag.NewFlagSet("bench -tcp-helper "+args[0], flag.ContinueOnError)
	addr := fs.String("addr", "", "address to listen on (origin) or to connect to (load)")
	workers := fs.Int("workers", 32, "load: concurrent connections")
	d := fs.Duration("duration", 5*time.Second, "load: how long to start new connections")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	switch args[0] {
	case "origin":
		err := tcpOrigin(*addr) // returns only on failure
		fmt.Fprintln(os.Stderr, "bench tcpconn origin:", err)
		return 1
	case "load":
		res := tcpLoad(*addr, *workers, *d)
		json.NewEncoder(os.Stdout).Encode(res)
		return 0
	}
	fmt.Fprintf(os.Stderr, "bench -tcp-helper: unknown mode %q\n", args[0])
	return 2
}

// tcpOrigin serves the connections test: on each connection, read
// tcpPayload bytes, write the same pattern back, and close first (so the
// TIME_WAIT state is on the origin's listening port, not on a client's or
// a relay's ephemeral port). It returns only on failure.
func tcpOrigin(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	payload := pattern(tcpPayload)
	for {
		c, err := ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// EMFILE and the like: wait and go on.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go func() {
			defer c.Close()
			buf := make([]byte, tcpPayload)
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.ReadFull(c, buf); err != nil {
				return // a readiness probe, or a broken client
			}
			c.Write(payload)
		}()
	}
}

// tcpLoad is bench's tcpconn load generator: workers goroutines, each
// exchanging tcpPayload bytes on a new connection in a loop, starting new
// ones for d.
func tcpLoad(addr string, workers int, d time.Duration) tcpLoadResult {
	payload := pattern(tcpPayload)
	var ok, failed atomic.Int64
	var errs errorSample
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, tcpPayload+1)
			for time.Now().Before(deadline) {
				if err := tcpExchange(addr, payload, buf); err != nil {
					failed.Add(1)
					errs.add(err.Error())
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return tcpLoadResult{Conns: ok.Load(), Failed: failed.Load(), ElapsedS: time.Since(start).Seconds(), Errors: errs.sample()}
}

// tcpExchange connects to addr, writes payload, reads it back and then
// the origin's EOF, and closes: the client closes last, so it leaves no
// TIME_WAIT on its ephemeral port. buf must hold len(payload)+1 bytes.
func tcpExchange(addr string, payload, buf []byte) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(payload); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	n, err := io.ReadFull(c, buf[:len(payload)])
	if err != nil {
		return fmt.Errorf("read %d of %d bytes: %w", n, len(payload), err)
	}
	if !bytes.Equal(buf[:n], payload) {
		return errors.New("the answer differs from the origin's bytes")
	}
	if n, err := c.Read(buf[:1]); n != 0 || err != io.EOF {
		return fmt.Errorf("after the answer, want EOF: read %d bytes, %v", n, err)
	}
	return nil
}

// logGroup is a kind of log line and how often it occurred.
type logGroup struct {
	Count int    `json:"count"`
	Line  string `json:"line"`
}

var (
	reLongNumber = regexp.MustCompile(`\d{4,}`)
	reDurationMs = regexp.MustCompile(`"duration_ms":\d+`)
)

// groupLines groups log lines as printGrouped does (timestamps out), and
// also with every number of 4 digits or more (ports, byte counts) as N
// and duration_ms as N, most frequent first.
func groupLines(lines []string) []logGroup {
	index := map[string]int{}
	var out []logGroup
	for _, l := range lines {
		l = reNginxPfx.ReplaceAllString(l, "[$1] ")
		l = reLogTime.ReplaceAllString(l, "")
		l = reJSONTime.ReplaceAllString(l, "")
		l = reDurationMs.ReplaceAllString(l, `"duration_ms":N`)
		l = reLongNumber.ReplaceAllString(l, "N")
		i, ok := index[l]
		if !ok {
			i = len(out)
			index[l] = i
			out = append(out, logGroup{Line: l})
		}
		out[i].Count++
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Count > out[j].Count })
	return out
}
