package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/straitproxy/strait/internal/proxytest"
)

// -grpc measures gRPC through strait, nginx (grpc_pass) and HAProxy
// (proto h2), each alone on -proxy-cpu, with ghz and a grpc-go origin
// (bench/grpcorigin) sharing -load-cpu. ghz and the origin saturate that
// CPU before a good proxy saturates its own, so calls/s says little about
// the proxies: the figure is the proxy's CPU time per call (µs), beside
// calls/s and p99.

// grpcTargets are the proxies -grpc measures, as the *-h2up targets: each
// to the origin over h2c. direct is ghz straight to the origin.
var grpcTargets = []string{"direct", "strait-h2up", "nginx-h2up", "haproxy-h2up"}

// grpcScenario is one ghz workload.
type grpcScenario struct {
	Name, Call, Data string
}

var grpcScenarios = []grpcScenario{
	// 50 calls in flight on one connection, 10-byte request and response.
	{"unary", "grpc.testing.TestService/UnaryCall", `{"response_size":10,"payload":{"body":"AAAAAAAAAAAAAA=="}}`},
	// A server stream of 10 messages of 100 bytes per call.
	{"stream", "grpc.testing.TestService/StreamingOutputCall", `{"response_parameters":[` +
		strings.TrimSuffix(strings.Repeat(`{"size":100},`, 10), ",") + `]}`},
}

// grpcRun is one measured ghz run.
type grpcRun struct {
	Round        int
	Scenario     string
	Target       string
	Calls        int64
	Errors       int64
	CallsPerSec  float64
	P99Ms        float64
	CPUUsPerCall float64 // the proxy's CPU per call; 0 for direct
	Failure      string  `json:",omitempty"`
}

func (b *bench) runGRPC(ctx context.Context) error {
	ghz, ok := lookTool("ghz")
	if !ok {
		return errors.New("ghz is not installed: go install github.com/bojand/ghz/cmd/ghz@v0.93.0")
	}
	origin := filepath.Join(b.tmp, "grpcorigin")
	build := exec.CommandContext(ctx, "go", "build", "-o", origin, "./bench/grpcorigin")
	build.Dir = b.root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./bench/grpcorigin: %v\n%s", err, out)
	}
	protoset, err := b.writeProtoset()
	if err != nil {
		return err
	}
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	b.o2port = ports[0] // the *-h2up configs' upstream
	op, err := b.start("grpcorigin", b.cfg.loadCPU, []string{"GOMAXPROCS=1"}, origin, "-addr", fmt.Sprintf("127.0.0.1:%d", b.o2port))
	if err != nil {
		return err
	}
	if err := waitTCP(ctx, op, b.o2port); err != nil {
		return err
	}
	targets := map[string]*target{}
	for _, name := range grpcTargets {
		t, err := b.startGRPCTarget(ctx, name)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		targets[name] = t
	}
	seed := b.cfg.seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	fmt.Fprintf(os.Stderr, "bench -grpc: %d rounds of %v, seed %d; proxies on CPU %d, ghz (-c 50, one connection) and the origin on CPU %d\n",
		b.cfg.rounds, b.cfg.duration, seed, b.cfg.proxyCPU, b.cfg.loadCPU)
	var runs []grpcRun
	for round := 1; round <= b.cfg.rounds; round++ {
		for _, sc := range grpcScenarios {
			order := slices.Clone(grpcTargets)
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for _, name := range order {
				if err := ctx.Err(); err != nil {
					return err
				}
				r := b.measureGRPC(ctx, ghz, protoset, targets[name], sc)
				r.Round = round
				runs = append(runs, r)
				fmt.Fprintf(os.Stderr, "  round %d %-6s %-13s %8.0f calls/s  p99 %6.2f ms  %6.1f µs/call  %s\n",
					round, sc.Name, name, r.CallsPerSec, r.P99Ms, r.CPUUsPerCall, r.Failure)
			}
		}
	}
	printGRPC(runs)
	return b.saveGRPC(runs, seed)
}

// startGRPCTarget starts a proxy in front of the gRPC origin.
func (b *bench) startGRPCTarget(ctx context.Context, name string) (*target, error) {
	if name == "direct" {
		return &target{name: name, port: b.o2port}, nil
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	t := &target{name: name, port: ports[0]}
	cpu := b.cfg.proxyCPU
	var conf string
	switch name {
	case "strait-h2up":
		t.proc, err = b.start(name, cpu, []string{"GOMAXPROCS=1"}, b.strait,
			"proxy", "--listen", fmt.Sprintf("127.0.0.1:%d", t.port), "--upstream", fmt.Sprintf("h2c://127.0.0.1:%d", b.o2port))
	case "nginx-h2up":
		// nginx's grpc_pass needs an HTTP/2 listener for gRPC clients.
		conf = strings.Replace(b.nginxProxyConfH2Up(t.port), fmt.Sprintf("listen 127.0.0.1:%d;", t.port),
			fmt.Sprintf("listen 127.0.0.1:%d http2;", t.port), 1)
		if conf, err = b.writeFile("nginx-grpc.conf", conf); err == nil {
			t.proc, err = b.start(name, cpu, nil, nginxBin(), b.nginxArgs("nginx-h2up", conf)...)
		}
	case "haproxy-h2up":
		conf = strings.Replace(b.haproxyConfH2Up(t.port), fmt.Sprintf("bind 127.0.0.1:%d", t.port),
			fmt.Sprintf("bind 127.0.0.1:%d proto h2", t.port), 1)
		if conf, err = b.writeFile("haproxy-grpc.cfg", conf); err == nil {
			t.proc, err = b.start(name, cpu, nil, "haproxy", "-db", "-f", conf)
		}
	default:
		err = fmt.Errorf("unknown gRPC target %q", name)
	}
	if err != nil {
		return nil, err
	}
	return t, waitTCP(ctx, t.proc, t.port)
}

// waitTCP waits for port to accept, for up to 15 s.
func waitTCP(ctx context.Context, p *proc, port int) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if p.exited() {
			return fmt.Errorf("%s exited: %v\n%s", p.name, p.err, p.logTail(20))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s does not listen on %d: %v", p.name, port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// writeProtoset writes grpc.testing's descriptors for ghz.
func (b *bench) writeProtoset() (string, error) {
	data, err := proxytest.GRPCTestingProtoset()
	if err != nil {
		return "", err
	}
	path := filepath.Join(b.tmp, "test.protoset")
	return path, os.WriteFile(path, data, 0o644)
}

// ghzReport is what ghz's JSON output says that is used here.
type ghzReport struct {
	Count   int64   `json:"count"`
	RPS     float64 `json:"rps"`
	Latency []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"` // ns
	} `json:"latencyDistribution"`
	Status map[string]int64 `json:"statusCodeDistribution"`
}

// measureGRPC runs ghz once unmeasured (warm-up) and once measured.
func (b *bench) measureGRPC(ctx context.Context, ghz, protoset string, t *target, sc grpcScenario) grpcRun {
	r := grpcRun{Scenario: sc.Name, Target: t.name}
	// A run of a number of calls, not of a duration: ghz cancels the calls
	// in flight when a duration ends, which would count as failures. The
	// number is what the warm-up's rate makes in -duration.
	run := func(limit string) (ghzReport, error) {
		var rep ghzReport
		argv := b.pinned(b.cfg.loadCPU, []string{ghz, "--insecure", "--protoset", protoset, "--call", sc.Call,
			"-d", sc.Data, "-c", "50", limit, "--format", "json", "--cpus", "1", fmt.Sprintf("127.0.0.1:%d", t.port)})
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
		if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
			return rep, fmt.Errorf("ghz: %v\n%s%s", err, ee.Stderr, out)
		} else if err != nil {
			return rep, fmt.Errorf("ghz: %v", err)
		}
		return rep, json.Unmarshal(out, &rep)
	}
	warm, err := run("--total=" + strconv.Itoa(int(20000*max(b.cfg.warmup, time.Second).Seconds())))
	if err != nil || warm.RPS == 0 {
		r.Failure = fmt.Sprintf("warm-up: %v", err)
		return r
	}
	var pids []int
	if t.proc != nil {
		pids = t.proc.pids()
	}
	cpu0 := cpuSeconds(pids)
	rep, err := run("--total=" + strconv.Itoa(int(warm.RPS*b.cfg.duration.Seconds())))
	cpu1 := cpuSeconds(pids)
	if err != nil {
		r.Failure = err.Error()
		return r
	}
	r.Calls, r.CallsPerSec = rep.Count, rep.RPS
	r.Errors = rep.Count - rep.Status["OK"]
	for _, l := range rep.Latency {
		if l.Percentage == 99 {
			r.P99Ms = float64(l.Latency) / 1e6
		}
	}
	if t.proc != nil && rep.Count > 0 {
		r.CPUUsPerCall = (cpu1 - cpu0) * 1e6 / float64(rep.Count)
	}
	if r.Errors > 0 {
		r.Failure = fmt.Sprintf("%d calls failed: %v", r.Errors, rep.Status)
	}
	return r
}

// printGRPC prints medians over rounds per scenario and target, and the
// paired ratios of strait's CPU per call to each peer's.
func printGRPC(runs []grpcRun) {
	for _, sc := range grpcScenarios {
		fmt.Printf("\ngRPC %s: medians over rounds (failed runs left out)\n", sc.Name)
		fmt.Printf("  %-13s %10s %9s %12s\n", "target", "calls/s", "p99 ms", "CPU µs/call")
		for _, name := range grpcTargets {
			var cps, p99, cpu []float64
			for _, r := range runs {
				if r.Scenario == sc.Name && r.Target == name && r.Failure == "" {
					cps, p99, cpu = append(cps, r.CallsPerSec), append(p99, r.P99Ms), append(cpu, r.CPUUsPerCall)
				}
			}
			fmt.Printf("  %-13s %10.0f %9.2f %12.1f\n", name, median(cps), median(p99), median(cpu))
		}
		for _, peer := range []string{"nginx-h2up", "haproxy-h2up"} {
			var cpu, cps []float64
			for _, a := range runs {
				for _, p := range runs {
					if a.Scenario == sc.Name && p.Scenario == sc.Name && a.Round == p.Round && a.Target == "strait-h2up" &&
						p.Target == peer && a.Failure == "" && p.Failure == "" && p.CPUUsPerCall > 0 {
						cpu = append(cpu, a.CPUUsPerCall/p.CPUUsPerCall)
						cps = append(cps, a.CallsPerSec/p.CallsPerSec)
					}
				}
			}
			fmt.Printf("  strait ÷ %-13s CPU per call %.2f×, calls/s %.2f× (median of %d paired rounds)\n", peer, median(cpu), median(cps), len(cpu))
		}
	}
}

func (b *bench) saveGRPC(runs []grpcRun, seed uint64) error {
	dir := filepath.Join(b.root, b.cfg.resultsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(map[string]any{"seed": seed, "strait": b.straitDesc, "duration": b.cfg.duration.String(),
		"runs": runs}, "", "  ")
	path := filepath.Join(dir, b.started.Format("20060102-150405")+"-grpc.json")
	fmt.Fprintf(os.Stderr, "bench: results in %s\n", path)
	return os.WriteFile(path, data, 0o644)
}
