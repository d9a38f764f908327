// Command bench measures strait beside nginx, HAProxy and Go's
// httputil.ReverseProxy on this machine, in one run, interleaved, and prints
// ratios.
//
//	go run ./bench            # all scenarios, 5 rounds of 5 s runs (~11 min)
//	go run ./bench -quick     # smoke test: 1 round, 2 s, small responses only
//	go run ./bench -idle      # RSS per idle keep-alive connection (10,000 of them)
//	go run ./bench -grpc      # gRPC with ghz: CPU per call, calls/s, p99
//	go run ./bench -tcp       # TCP relays: iperf3 Gbit/s and CPU/GB, connections/s
//	go run ./bench -udp       # UDP relays: CPU per datagram at a fixed rate, loss, latency, peak
//	go run ./bench -h         # flags
//
// The method (see bench/README.md): on a small shared machine an absolute
// figure moves by 2× between runs, so only ratios measured side by side in
// one run mean anything. Every proxy under test gets CPU 0 alone with one
// worker; the origin (nginx) and the load generator (wrk) share CPU 1. Each
// round runs every target once in shuffled order, and the report gives
// medians over rounds, with "direct" (wrk straight to the origin) as the
// ceiling that CPU 1 allows.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is everything the flags decide.
type config struct {
	rounds           int
	duration         time.Duration
	warmup           time.Duration
	scenarios        []scenario
	targets          []string
	ref              string // the target every ratio is taken against
	connections      int
	closeConnections int
	seed             uint64
	quick            bool
	idle             bool
	grpc             bool
	tcp              bool
	tcpWorkers       int  // -tcp: the connections test's concurrent connections
	noTickets        bool // TLS targets without session tickets: every handshake a full one
	idleConns        int
	idleConcurrency  int
	idleSettle       time.Duration
	idleH2           bool // -idle over HTTP/2
	proxyCPU         int
	loadCPU          int
	resultsDir       string
	straitRef        string
	baseRef          string
	waitQuiet        time.Duration
	maxOther         float64
	nice             int
	print            string
	keep             bool

	udp      bool
	xdp      bool          // -xdp: the UDP XDP fast path against user space (xdp.go); uses the udp* settings
	udpRate  int           // -udp: requests/s of the rate test, over all flows
	udpFlows int           // -udp: client flows (source ports)
	udpSizes []int         // -udp: datagram sizes of the rate test
	udpPeak  time.Duration // -udp: length of a peak run (0: no peak test)
}

// defaultTargets are what a run measures unless -targets says otherwise.
// direct is no proxy at all: wrk straight to the origin.
var defaultTargets = []string{"direct", "strait", "nginx", "haproxy", "httputil"}

// balanceTargets are strait run from a generated config file (strait run
// -c FILE) whose one cluster holds the origin's three ports, one target
// per load-balancing policy: to compare what the policies cost per
// request, as ratios against strait-rr (-ref).
var balanceTargets = []struct{ name, policy string }{
	{"strait-rr", "round_robin"},
	{"strait-lr", "least_request"},
	{"strait-ring", "ring_hash"},
	{"strait-maglev", "maglev"},
	{"strait-random", "random"},
}

// reloadTargets are strait-rr reloaded every reloadEvery by SIGHUP while
// wrk runs: strait-reload with its routes changed (the servers and their
// connections stay), strait-reload-server with timeouts.idle changed (a
// new server takes each listening socket, and the old one's keep-alive
// connections close after their next request). Ratios against strait-rr
// are what reloading costs; any failed request fails the run.
var reloadTargets = []string{"strait-reload", "strait-reload-server"}

const reloadEvery = 100 * time.Millisecond

// balancePolicy is the policy of a balance target, or "".
func balancePolicy(name string) string {
	for _, t := range balanceTargets {
		if t.name == name {
			return t.policy
		}
	}
	return ""
}

// allTargets are the things wrk can be pointed at.
func allTargets() []string {
	out := append(slices.Clone(defaultTargets), "strait-metrics")
	out = append(out, tlsTargets...)
	out = append(out, h2OnlyTargets...)
	out = append(out, h2UpTargets...)
	for _, t := range balanceTargets {
		out = append(out, t.name)
	}
	return append(out, reloadTargets...)
}

func main() {
	// The -tcp mode runs this binary again as its origin and load
	// generator, pinned to the load CPU (see tcpHelper).
	if len(os.Args) > 1 && os.Args[1] == tcpHelperArg {
		os.Exit(tcpHelper(os.Args[2:]))
	}
	// So does -udp, as its load generator and sink (see udpHelper).
	if len(os.Args) > 1 && os.Args[1] == udpHelperArg {
		os.Exit(udpHelper(os.Args[2:]))
	}
	// And -xdp, as its clients and sink in network namespaces.
	if len(os.Args) > 1 && os.Args[1] == xdpHelperArg {
		os.Exit(xdpHelper(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}

	if cfg.print != "" {
		printFile := printStored
		for suffix, show := range map[string]func(string, []byte) error{"-tcp.json": printStoredTCP, "-udp.json": printStoredUDP, "-xdp.json": printStoredXDP} {
			if strings.HasSuffix(cfg.print, suffix) {
				printFile = func(path string) error {
					data, err := os.ReadFile(path)
					if err != nil {
						return err
					}
					return show(path, data)
				}
			}
		}
		if err := printFile(cfg.print); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
		return 0
	}

	// Ctrl-C or SIGTERM cancels ctx: the loop stops, wrk is killed by
	// exec.CommandContext, and the deferred cleanup stops every process
	// the harness started.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if cfg.xdp {
		if err := xdpPreflight(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	}
	if cfg.tcp {
		tools = append(tools, struct{ cmd, pkg string }{"iperf3", "iperf3"})
	}
	if cfg.udp {
		tools = append(tools, struct{ cmd, pkg string }{"sockperf", "sockperf"})
	}
	b, err := newBench(ctx, cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer b.cleanup()

	switch {
	case cfg.grpc:
		err = b.runGRPC(ctx)
	case cfg.idle:
		err = b.runIdle(ctx)
	case cfg.tcp:
		err = b.runTCP(ctx)
	case cfg.udp:
		err = b.runUDP(ctx)
	case cfg.xdp:
		err = b.runXDP(ctx)
	default:
		err = b.runLoad(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted")
			return 130
		}
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	cfg := &config{}
	fs.IntVar(&cfg.rounds, "rounds", 5, "rounds; each runs every target once per scenario, in shuffled order")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "length of each measured wrk run (whole seconds)")
	fs.DurationVar(&cfg.warmup, "warmup", time.Second, "unmeasured wrk run before each measured one (0 for none)")
	scen := fs.String("scenarios", "small,1k,64k,close", "comma-separated scenarios: "+scenarioNames())
	targets := fs.String("targets", strings.Join(defaultTargets, ","), "comma-separated targets: "+strings.Join(allTargets(), ", ")+" (strait-metrics: strait with its admin API and metrics; the other strait-*: strait run -c FILE balancing over 3 origin ports with that policy)")
	fs.StringVar(&cfg.ref, "ref", "", "the `target` the ratio tables divide by the others (default: strait if measured, else the first target that is not direct)")
	fs.IntVar(&cfg.connections, "connections", 50, "wrk connections (-c) for the keep-alive scenarios")
	fs.IntVar(&cfg.closeConnections, "close-connections", 50, "wrk connections for the close scenario")
	fs.Uint64Var(&cfg.seed, "seed", 0, "shuffle seed (0: from the clock; printed either way)")
	fs.BoolVar(&cfg.quick, "quick", false, "smoke test: -rounds 1 -duration 2s -scenarios small")
	fs.BoolVar(&cfg.idle, "idle", false, "measure RSS per idle keep-alive connection instead of throughput")
	fs.BoolVar(&cfg.grpc, "grpc", false, "measure gRPC instead (ghz, unary and server streaming; strait, nginx grpc_pass, HAProxy; see bench/grpc.go)")
	fs.BoolVar(&cfg.tcp, "tcp", false, "measure TCP relays instead: iperf3 throughput and CPU per GB, connections/s and CPU per 1000 connections (strait proxy tcp://, nginx stream, HAProxy mode tcp; see bench/tcp.go)")
	fs.IntVar(&cfg.tcpWorkers, "tcp-workers", 32, "-tcp: concurrent connections of the connections test")
	fs.BoolVar(&cfg.udp, "udp", false, "measure UDP relays instead: CPU per forwarded datagram at a fixed rate, loss and latency, sockperf latency, peak rate with GSO (strait proxy udp://, nginx stream udp, a naive Go relay; see bench/udp.go)")
	fs.BoolVar(&cfg.xdp, "xdp", false, "measure strait's UDP XDP fast path instead: all-CPU time per forwarded datagram at a fixed rate, less a direct run, against its user-space path and the naive relay, and the peak rate, in network namespaces (needs root; -udp-rate, here 10000 by default, -udp-flows, -udp-sizes and -udp-peak set the load; see bench/xdp.go)")
	fs.IntVar(&cfg.udpRate, "udp-rate", 20000, "-udp: requests per second of the rate test, evenly paced over all flows (each answered: twice that in datagrams through a relay)")
	fs.IntVar(&cfg.udpFlows, "udp-flows", 4, "-udp: client flows (source ports) of the rate test, and of the peak test's second run")
	udpSizes := fs.String("udp-sizes", "64,1200", "-udp: comma-separated datagram sizes of the rate test, in bytes")
	fs.DurationVar(&cfg.udpPeak, "udp-peak", 3*time.Second, "-udp: length of each peak (GSO, unpaced) run; 0: no peak test")
	fs.IntVar(&cfg.idleConns, "idle-conns", 10000, "connections held open by -idle")
	tickets := fs.Bool("tls-tickets", true, "TLS targets issue session tickets; false: none (and no session cache), so the close scenario measures full handshakes (wrk resumes sessions it is given)")
	fs.IntVar(&cfg.idleConcurrency, "idle-concurrency", 200, "goroutines opening and using the -idle connections")
	fs.DurationVar(&cfg.idleSettle, "idle-settle", 2*time.Second, "-idle: wait between the last request and reading RSS")
	fs.BoolVar(&cfg.idleH2, "idle-h2", false, "-idle over HTTP/2: h2c (prior knowledge) or h2 by ALPN, on the targets that speak it")
	fs.IntVar(&cfg.proxyCPU, "proxy-cpu", 0, "CPU the proxy under test runs on, alone")
	fs.IntVar(&cfg.loadCPU, "load-cpu", 1, "CPU the origin and wrk share")
	fs.StringVar(&cfg.resultsDir, "results", "bench/results", "directory for the JSON report (relative to the repository root)")
	fs.StringVar(&cfg.straitRef, "strait-ref", "", "build strait from this git revision (git archive) instead of the working tree")
	fs.StringVar(&cfg.baseRef, "base", "", "also run strait built from this git `revision` as target \"base\", to compare two versions in one interleaved run (the ratio tables then include strait ÷ base)")
	fs.DurationVar(&cfg.waitQuiet, "wait-quiet", 0, "before each run, wait up to this long for other processes to use under 10% of a CPU (0: do not wait)")
	fs.Float64Var(&cfg.maxOther, "max-other", 0, "leave out of the medians runs during which other processes took more than this `percent` of a CPU (0: count all)")
	fs.IntVar(&cfg.nice, "nice", 0, "run the origin, the proxies and wrk at this nice `level` (e.g. -10, as root) to take CPU from other work on a shared machine")
	fs.StringVar(&cfg.print, "print", "", "print the tables of a stored JSON `report` (not -idle's) and exit")
	fs.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (configs, logs) and print its path")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: go run ./bench [flags]

Runs strait, nginx, HAProxy and httputil.ReverseProxy (each pinned alone to
-proxy-cpu) in front of an nginx origin, drives them with wrk (pinned with the
origin to -load-cpu), interleaved over rounds, and prints medians and ratios.
Installs nginx-light, haproxy and wrk with apt-get if missing and run as root.

flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (see -h)", fs.Args())
	}
	cfg.noTickets = !*tickets
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.quick {
		// -quick sets what it names unless the flag was given explicitly.
		if !set["rounds"] {
			cfg.rounds = 1
		}
		if !set["duration"] {
			cfg.duration = 2 * time.Second
		}
		if !set["scenarios"] {
			*scen = "small"
		}
		if !set["udp-peak"] {
			cfg.udpPeak = time.Second
		}
	}
	if cfg.xdp && !set["udp-rate"] {
		cfg.udpRate = xdpDefaultRate
	}
	for _, f := range strings.Split(*udpSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < udpHeader || n > 9000 {
			return nil, fmt.Errorf("-udp-sizes: %q is not a size from %d to 9000 bytes", f, udpHeader)
		}
		cfg.udpSizes = append(cfg.udpSizes, n)
	}

	var err error
	if cfg.scenarios, err = pickScenarios(*scen); err != nil {
		return nil, err
	}
	if cfg.targets, err = pickTargets(*targets, cfg.baseRef != ""); err != nil {
		return nil, err
	}
	if cfg.ref, err = pickRef(cfg.ref, cfg.targets); err != nil {
		return nil, err
	}
	switch {
	case cfg.rounds < 1:
		return nil, errors.New("-rounds must be at least 1")
	case cfg.duration < time.Second || cfg.duration%time.Second != 0:
		return nil, errors.New("-duration must be a whole number of seconds (wrk's -d)")
	case cfg.warmup < 0 || cfg.warmup%time.Second != 0:
		return nil, errors.New("-warmup must be 0 or a whole number of seconds")
	case cfg.connections < 1 || cfg.closeConnections < 1:
		return nil, errors.New("-connections and -close-connections must be at least 1")
	case cfg.tcpWorkers < 1:
		return nil, errors.New("-tcp-workers must be at least 1")
	case cfg.udpRate < 100 || cfg.udpRate > 500000:
		return nil, errors.New("-udp-rate must be from 100 to 500000 requests/s")
	case cfg.udpFlows < 1 || cfg.udpFlows > 64:
		return nil, errors.New("-udp-flows must be from 1 to 64")
	case cfg.udpPeak < 0:
		return nil, errors.New("-udp-peak must not be negative")
	case cfg.tcp && cfg.udp, cfg.xdp && (cfg.tcp || cfg.udp):
		return nil, errors.New("-tcp, -udp and -xdp are separate runs: choose one")
	case cfg.idleConns < 1 || cfg.idleConcurrency < 1:
		return nil, errors.New("-idle-conns and -idle-concurrency must be at least 1")
	case cfg.nice < -20 || cfg.nice > 19:
		return nil, errors.New("-nice must be in -20..19")
	case cfg.proxyCPU == cfg.loadCPU:
		return nil, errors.New("-proxy-cpu and -load-cpu must differ: the proxy gets its CPU alone")
	}
	return cfg, nil
}

// pickTargets parses -targets. With -base, "base" is a target too, and
// is added if the list does not name it.
func pickTargets(list string, base bool) ([]string, error) {
	known := allTargets()
	if base {
		known = append(known, "base")
	}
	var out []string
	for _, name := range strings.Split(list, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("unknown target %q (have %s; base needs -base)", name, strings.Join(known, ", "))
		}
		out = append(out, name)
	}
	if len(out) == 0 {
		return nil, errors.New("no targets")
	}
	if base && !slices.Contains(out, "base") {
		out = append(out, "base")
	}
	return out, nil
}

// pickRef checks -ref, or chooses the reference of the ratio tables:
// strait if it is measured, else the first target that is not direct
// (strait-rr in -targets strait-rr,strait-lr,strait-ring).
func pickRef(ref string, targets []string) (string, error) {
	if ref != "" {
		if !slices.Contains(targets, ref) {
			return "", fmt.Errorf("-ref %q is not among the targets (%s)", ref, strings.Join(targets, ", "))
		}
		return ref, nil
	}
	if slices.Contains(targets, "strait") {
		return "strait", nil
	}
	for _, t := range targets {
		if t != "direct" {
			return t, nil
		}
	}
	return targets[0], nil
}

// findRoot walks up from the working directory to the strait module, so
// `go run ./bench` works from the root and `go run .` from bench/.
func findRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(data), "module github.com/straitproxy/strait\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the strait repository (no go.mod for github.com/straitproxy/strait above the working directory)")
		}
		dir = parent
	}
}
