package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// runRecord is one measured wrk run.
type runRecord struct {
	Round    int    `json:"round"`
	Position int    `json:"position"` // 1-based place in the round's shuffled order
	Target   string `json:"target"`
	Valid    bool   `json:"valid"`
	// Noisy: other processes took more than -max-other during the run;
	// valid, but not counted in the medians.
	Noisy   bool   `json:"noisy,omitempty"`
	Failure string `json:"failure,omitempty"`
	// Reloads is how many SIGHUPs a reload target was sent during the run.
	Reloads int `json:"reloads,omitempty"`
	wrkResult
	BytesPerResponse float64 `json:"bytes_per_response"` // body and head, from wrk's total
	// ProxyCPUPercent is the CPU time of the proxy's processes over the
	// run's wall time: near 100 means the proxy, not CPU 1, was the limit.
	ProxyCPUPercent float64 `json:"proxy_cpu_percent"`
	// ProxyCPUUsPerReq is that CPU time divided by the requests: a cost
	// that moves less with the machine's noise than req/s does.
	ProxyCPUUsPerReq float64 `json:"proxy_cpu_us_per_request"`
	// CoreBusyPercent is the whole proxy CPU's busy time (including
	// softirq work on the proxy's packets).
	CoreBusyPercent float64 `json:"proxy_core_busy_percent"`
	// InstrPerReq and CyclesPerReq are the proxy's instructions and CPU
	// cycles (user and kernel, from perf stat) per request: 0 without perf
	// or hardware counters.
	InstrPerReq  float64 `json:"proxy_instructions_per_request,omitempty"`
	CyclesPerReq float64 `json:"proxy_cycles_per_request,omitempty"`
	// IPCMin and IPCMax are the proxy's lowest and highest instructions
	// per cycle over the run's 250 ms intervals (see phases).
	IPCMin float64 `json:"proxy_ipc_min,omitempty"`
	IPCMax float64 `json:"proxy_ipc_max,omitempty"`
	// OtherCPUPercent is the CPU time every process not the harness's
	// took during the run, in % of one CPU: the noise from other work on a
	// shared machine.
	OtherCPUPercent float64 `json:"other_processes_cpu_percent"`
	// OriginConns is how many connections the origin accepted during the
	// run: a pooling proxy opens few; direct opens wrk's.
	OriginConns int64  `json:"origin_conns_opened"`
	WrkOutput   string `json:"wrk_output,omitempty"` // kept for failed runs
}

// summary is one target's medians over its valid runs in a scenario.
type summary struct {
	Target          string    `json:"target"`
	Valid           int       `json:"valid_runs"` // counted in the medians
	Noisy           int       `json:"noisy_runs"` // valid, left out by -max-other
	Runs            int       `json:"runs"`
	ReqPerSec       float64   `json:"median_req_per_sec"`
	P99Ms           float64   `json:"median_p99_ms"`
	P50Ms           float64   `json:"median_p50_ms"`
	ProxyCPUPercent float64   `json:"median_proxy_cpu_percent"`
	CPUUsPerReq     float64   `json:"median_proxy_cpu_us_per_request"`
	InstrPerReq     float64   `json:"median_proxy_instructions_per_request,omitempty"`
	CyclesPerReq    float64   `json:"median_proxy_cycles_per_request,omitempty"`
	OriginConns     float64   `json:"median_origin_conns_opened"`
	OtherCPUPercent float64   `json:"median_other_processes_cpu_percent"`
	AllReqPerSec    []float64 `json:"valid_req_per_sec"`
	// The Strait* ratios are those of the reference target (loadReport's
	// Reference: strait unless -ref or -targets says otherwise) over this
	// target's; the JSON names keep "strait" from before -ref.
	//
	// StraitReqPerSec and StraitP99 are strait's median divided by this
	// target's: above 1 strait is faster; below 1 its p99 is lower.
	StraitReqPerSec float64 `json:"strait_over_target_req_per_sec,omitempty"`
	StraitP99       float64 `json:"strait_over_target_p99,omitempty"`
	// StraitCPU is strait's median CPU time per request over this
	// target's (proxies only): below 1 strait spends less per request.
	StraitCPU float64 `json:"strait_over_target_cpu_per_request,omitempty"`
	// StraitInstr and StraitCycles are the same ratio for instructions and
	// cycles per request (perf stat).
	StraitInstr  float64 `json:"strait_over_target_instructions_per_request,omitempty"`
	StraitCycles float64 `json:"strait_over_target_cycles_per_request,omitempty"`
	// StraitPaired is the median over rounds of strait's req/s over this
	// target's in the same round: the machine's speed drifts between
	// rounds, and a ratio within a round cancels most of that drift.
	StraitPaired float64 `json:"strait_over_target_req_per_sec_paired,omitempty"`
	Pairs        int     `json:"paired_rounds,omitempty"`
	// StraitPairedP99 is the same for p99: strait's over this target's
	// within each round, median over rounds.
	StraitPairedP99 float64 `json:"strait_over_target_p99_paired,omitempty"`
	// StraitPhased and StraitPhasedP99 are the paired ratios over only the
	// rounds in which both runs met the proxy core at the same speed (see
	// phases); PhasedPairs counts them.
	StraitPhased    float64 `json:"strait_over_target_req_per_sec_same_phase,omitempty"`
	StraitPhasedP99 float64 `json:"strait_over_target_p99_same_phase,omitempty"`
	PhasedPairs     int     `json:"same_phase_rounds,omitempty"`
}

type scenarioReport struct {
	scenario
	Connections int          `json:"connections"`
	Summaries   []summary    `json:"summaries"`
	Runs        []*runRecord `json:"runs"`
}

type loadReport struct {
	Started     time.Time           `json:"started"`
	Finished    time.Time           `json:"finished"`
	Seed        uint64              `json:"seed"`
	Rounds      int                 `json:"rounds"`
	DurationS   float64             `json:"duration_s"`
	WarmupS     float64             `json:"warmup_s"`
	ProxyCPU    int                 `json:"proxy_cpu"`
	LoadCPU     int                 `json:"load_cpu"`
	OpenFiles   uint64              `json:"open_files_limit"`
	Connections int                 `json:"connections"`
	CloseConns  int                 `json:"close_connections"`
	NoTickets   bool                `json:"tls_no_tickets,omitempty"`
	Targets     []string            `json:"targets"`
	Reference   string              `json:"reference,omitempty"` // the ratios' numerator; "" (older reports): strait
	WaitQuietS  float64             `json:"wait_quiet_s"`
	MaxOther    float64             `json:"max_other_percent"`
	Nice        int                 `json:"nice"`
	Environment [][2]string         `json:"environment"`
	Scenarios   []*scenarioReport   `json:"scenarios"`
	ProcessLogs map[string][]string `json:"process_logs_during_runs"`
}

func (b *bench) connsFor(sc scenario) int {
	if sc.Close {
		return b.cfg.closeConnections
	}
	return b.cfg.connections
}

// runLoad is the throughput benchmark: start every target once, then
// rounds × scenarios, each with the targets in a fresh shuffled order.
func (b *bench) runLoad(ctx context.Context) error {
	cfg := b.cfg
	seed := cfg.seed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	rng := rand.New(rand.NewPCG(seed, seed>>32|1))

	env := b.environment(ctx)
	rep := &loadReport{
		Started: b.started.UTC(), Seed: seed, Rounds: cfg.rounds,
		DurationS: cfg.duration.Seconds(), WarmupS: cfg.warmup.Seconds(),
		ProxyCPU: cfg.proxyCPU, LoadCPU: cfg.loadCPU, OpenFiles: b.nofile,
		WaitQuietS: cfg.waitQuiet.Seconds(), MaxOther: cfg.maxOther, Nice: cfg.nice,
		Connections: cfg.connections, CloseConns: cfg.closeConnections, NoTickets: cfg.noTickets, Targets: cfg.targets, Reference: cfg.ref,
		Environment: env, ProcessLogs: map[string][]string{},
	}
	printHeader(os.Stdout, rep)

	// All proxies run for the whole benchmark, idle while another is
	// measured: starting each one per run would add its cold start (Go's
	// heap growth, pool dials) to every run. An idle proxy uses no CPU.
	targets := map[string]*target{}
	logStart := map[string]int{}
	for _, name := range cfg.targets {
		t, err := b.startTarget(ctx, name)
		if err != nil {
			return err
		}
		// Every scenario's body must come through intact before any load.
		for _, sc := range cfg.scenarios {
			if !runs(name, sc) {
				continue
			}
			check := checkBody
			if sc.H2 {
				check = checkBodyH2
			}
			if err := check(t.baseURL(), sc.Path, payloads[strings.TrimPrefix(sc.Path, "/")]); err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
		}
		targets[name] = t
		if t.proc != nil {
			logStart[name] = len(t.proc.logLines())
		}
	}

	// Say up front when the machine is not quiet: the runs will be noisy.
	if pct := b.waitQuiet(ctx, 0); pct >= 10 {
		fmt.Fprintf(os.Stderr, "bench: warning: other processes are using %.0f%% of a CPU; expect noise (see the \"other CPU\" column; -wait-quiet waits)\n", pct)
	}
	per := cfg.duration + cfg.warmup
	total := time.Duration(cfg.rounds*len(cfg.scenarios)*len(cfg.targets)) * per
	fmt.Fprintf(os.Stderr, "bench: %d runs of %v (+%v warm-up): about %v; seed %d\n",
		cfg.rounds*len(cfg.scenarios)*len(cfg.targets), cfg.duration, cfg.warmup, total.Round(time.Second), seed)

	for _, sc := range cfg.scenarios {
		rep.Scenarios = append(rep.Scenarios, &scenarioReport{scenario: sc, Connections: b.connsFor(sc)})
	}
	for round := 1; round <= cfg.rounds; round++ {
		for i, sc := range cfg.scenarios {
			order := append([]string(nil), cfg.targets...)
			rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			order = slices.DeleteFunc(order, func(name string) bool { return !runs(name, sc) })
			for pos, name := range order {
				r := b.measure(ctx, targets[name], sc)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				r.Round, r.Position = round, pos+1
				rep.Scenarios[i].Runs = append(rep.Scenarios[i].Runs, r)
				progress(round, cfg.rounds, sc, pos+1, len(order), r)
			}
		}
	}
	rep.Finished = time.Now().UTC()

	for _, s := range rep.Scenarios {
		s.Summaries = summarize(cfg.targets, cfg.ref, s.Runs)
	}
	// What the proxies logged while measured (startup lines excluded): a
	// proxy that logs errors under load has something to report.
	for _, name := range cfg.targets {
		if t := targets[name]; t.proc != nil {
			if lines := t.proc.logLines(); len(lines) > logStart[name] {
				rep.ProcessLogs[name] = lines[logStart[name]:]
			}
		}
	}
	printLoad(os.Stdout, rep)
	return b.writeJSON(rep, "")
}

// runLoadGen runs the scenario's load generator: wrk, or h2load.
func (b *bench) runLoadGen(ctx context.Context, url string, conns int, d time.Duration, sc scenario) (wrkResult, string, error) {
	if sc.H2 {
		return b.runH2load(ctx, url, d)
	}
	return b.runWrk(ctx, url, conns, d, sc.Close)
}

// measure runs one warm-up and one measured wrk run against t.
func (b *bench) measure(ctx context.Context, t *target, sc scenario) *runRecord {
	r := &runRecord{Target: t.name}
	fail := func(format string, args ...any) *runRecord {
		r.Valid = false
		r.Failure = fmt.Sprintf(format, args...)
		return r
	}
	if t.proc != nil && t.proc.exited() {
		return fail("%s is not running (exited: %v)", t.name, t.proc.err)
	}
	if b.cfg.waitQuiet > 0 {
		b.waitQuiet(ctx, b.cfg.waitQuiet)
	}
	url := t.baseURL() + sc.Path
	conns := b.connsFor(sc)
	if b.cfg.warmup > 0 {
		// The warm-up's result is not used: it fills pools and caches and
		// lets Go's heap reach its working size.
		b.runLoadGen(ctx, url, conns, b.cfg.warmup, sc)
	}

	pids := t.proc.pids()
	ours := b.ourPIDs()
	acc0, accErr := b.originAccepts()
	other0 := otherCPUSeconds(ours)
	cpu0 := cpuSeconds(pids)
	busy0, tot0 := cpuBusy(b.cfg.proxyCPU)
	var perf *perfStat
	if t.proc != nil {
		perf = b.startPerf(pids)
	}
	start := time.Now()
	stopReloads := t.startReloads()
	res, out, err := b.runLoadGen(ctx, url, conns, b.cfg.duration, sc)
	r.Reloads = stopReloads()
	wall := time.Since(start).Seconds()
	counts, perfErr := perf.stop()
	busy1, tot1 := cpuBusy(b.cfg.proxyCPU)
	cpu1 := cpuSeconds(pids)
	other1 := otherCPUSeconds(ours)
	acc1, accErr1 := b.originAccepts()
	r.wrkResult = res
	r.OtherCPUPercent = (other1 - other0) / wall * 100

	if t.proc != nil {
		r.ProxyCPUPercent = (cpu1 - cpu0) / wall * 100
		if res.Requests > 0 {
			r.ProxyCPUUsPerReq = (cpu1 - cpu0) * 1e6 / float64(res.Requests)
			if perfErr == nil {
				r.InstrPerReq = counts.Instructions / float64(res.Requests)
				r.CyclesPerReq = counts.Cycles / float64(res.Requests)
				r.IPCMin, r.IPCMax = counts.IPCMin, counts.IPCMax
			}
		}
		if tot1 > tot0 {
			r.CoreBusyPercent = float64(busy1-busy0) / float64(tot1-tot0) * 100
		}
	}
	if accErr == nil && accErr1 == nil {
		r.OriginConns = acc1 - acc0 - 1 // the second status request's own connection
	} else {
		r.OriginConns = -1
	}
	if res.Requests > 0 {
		r.BytesPerResponse = res.BytesRead / float64(res.Requests)
	}

	switch {
	case err != nil:
		r.WrkOutput = out
		return fail("%v", err)
	case t.proc != nil && t.proc.exited():
		r.WrkOutput = out
		return fail("%s exited during the run: %v\n%s", t.name, t.proc.err, t.proc.logTail(20))
	case res.Requests == 0:
		r.WrkOutput = out
		return fail("no requests completed")
	case res.socketErrors() > 0:
		r.WrkOutput = out
		return fail("socket errors: connect %d, read %d, write %d, timeout %d",
			res.ConnectErrors, res.ReadErrors, res.WriteErrors, res.TimeoutErrors)
	case res.Non2xx > 0:
		r.WrkOutput = out
		return fail("%d responses were not 2xx or 3xx", res.Non2xx)
	case r.BytesPerResponse < float64(sc.Size)*0.98:
		// wrk counts bytes, not bodies; fewer bytes per response than the
		// body itself means truncated responses.
		r.WrkOutput = out
		return fail("responses average %.0f bytes, less than the %d-byte body", r.BytesPerResponse, sc.Size)
	}
	r.Valid = true
	r.Noisy = b.cfg.maxOther > 0 && r.OtherCPUPercent > b.cfg.maxOther
	return r
}

// startReloads calls t.reload every reloadEvery until the function it
// returns is called, which returns how many reloads were asked for.
func (t *target) startReloads() func() int {
	if t.reload == nil {
		return func() int { return 0 }
	}
	done := make(chan struct{})
	count := make(chan int, 1)
	go func() {
		n := 0
		tick := time.NewTicker(reloadEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				count <- n
				return
			case <-tick.C:
				if t.reload() == nil {
					n++
				}
			}
		}
	}()
	return func() int {
		close(done)
		return <-count
	}
}

// waitQuiet samples other processes' CPU use over half-second windows until
// it is under 10% of a CPU, for up to limit, and returns the last sample.
func (b *bench) waitQuiet(ctx context.Context, limit time.Duration) float64 {
	const window = 500 * time.Millisecond
	deadline := time.Now().Add(limit)
	ours := b.ourPIDs()
	for {
		before := otherCPUSeconds(ours)
		if sleep(ctx, window) != nil {
			return 0
		}
		pct := (otherCPUSeconds(ours) - before) / window.Seconds() * 100
		if pct < 10 || time.Now().After(deadline) {
			return pct
		}
	}
}

// originAccepts reads the origin's "accepts" counter from stub_status. The
// status request is itself an accepted connection.
func (b *bench) originAccepts() (int64, error) {
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/status", b.sport))
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	// Active connections: 1
	// server accepts handled requests
	//  12 12 34
	lines := strings.Split(string(body), "\n")
	if len(lines) < 3 {
		return 0, fmt.Errorf("stub_status: %q", body)
	}
	f := strings.Fields(lines[2])
	if len(f) < 1 {
		return 0, fmt.Errorf("stub_status: %q", body)
	}
	return strconv.ParseInt(f[0], 10, 64)
}

func progress(round, rounds int, sc scenario, pos, n int, r *runRecord) {
	head := fmt.Sprintf("round %d/%d %-5s %d/%d %-13s", round, rounds, sc.Name, pos, n, r.Target)
	if !r.Valid {
		fmt.Fprintf(os.Stderr, "%s FAILED: %s\n", head, firstLine(r.Failure))
		return
	}
	if r.Noisy {
		head += " NOISY (not counted)"
	}
	cpu := ""
	if r.Target != "direct" {
		cpu = fmt.Sprintf("  proxy CPU %3.0f%%  %.1f µs/req", r.ProxyCPUPercent, r.ProxyCPUUsPerReq)
		if r.InstrPerReq > 0 {
			cpu += fmt.Sprintf("  %.1fk instr/req  %.1fk cycles/req", r.InstrPerReq/1000, r.CyclesPerReq/1000)
			if r.IPCMax > 0 {
				cpu += fmt.Sprintf("  IPC %.2f-%.2f", r.IPCMin, r.IPCMax)
			}
		}
	}
	noise := ""
	if r.OtherCPUPercent >= 10 {
		noise = fmt.Sprintf("  (other processes took %.0f%% of a CPU)", r.OtherCPUPercent)
	}
	fmt.Fprintf(os.Stderr, "%s %8s req/s  p99 %s%s%s\n", head, thousands(r.ReqPerSec), fmtMs(r.P99Ms), cpu, noise)
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// summarize takes medians over the valid runs of each target, and the
// ratios of the reference target's (ref's) medians to each target's.
func summarize(targets []string, ref string, runs []*runRecord) []summary {
	var out []summary
	for _, name := range targets {
		s := summary{Target: name}
		var rps, p99, p50, cpu, us, ins, cyc, oc, other []float64
		for _, r := range runs {
			if r.Target != name {
				continue
			}
			s.Runs++
			if !r.Valid {
				continue
			}
			if r.Noisy {
				s.Noisy++
				continue
			}
			s.Valid++
			rps = append(rps, r.ReqPerSec)
			p99 = append(p99, r.P99Ms)
			p50 = append(p50, r.P50Ms)
			cpu = append(cpu, r.ProxyCPUPercent)
			us = append(us, r.ProxyCPUUsPerReq)
			if r.InstrPerReq > 0 {
				ins = append(ins, r.InstrPerReq)
			}
			if r.CyclesPerReq > 0 {
				cyc = append(cyc, r.CyclesPerReq)
			}
			other = append(other, r.OtherCPUPercent)
			if r.OriginConns >= 0 {
				oc = append(oc, float64(r.OriginConns))
			}
		}
		s.AllReqPerSec = rps
		s.ReqPerSec, s.P99Ms, s.P50Ms = median(rps), median(p99), median(p50)
		s.ProxyCPUPercent, s.CPUUsPerReq, s.OriginConns = median(cpu), median(us), median(oc)
		s.OtherCPUPercent = median(other)
		s.InstrPerReq, s.CyclesPerReq = median(ins), median(cyc)
		out = append(out, s)
	}
	var st *summary
	for i := range out {
		if out[i].Target == ref && out[i].Valid > 0 {
			st = &out[i]
		}
	}
	phase := phases(runs)
	samePhase := func(a, b *runRecord) bool {
		pa := phase(a)
		return (pa == phaseFast || pa == phaseSlow) && pa == phase(b)
	}
	for i := range out {
		if st != nil && out[i].Valid > 0 && out[i].Target != ref {
			out[i].StraitReqPerSec = st.ReqPerSec / out[i].ReqPerSec
			out[i].StraitP99 = st.P99Ms / out[i].P99Ms
			if out[i].Target != "direct" && out[i].CPUUsPerReq > 0 {
				out[i].StraitCPU = st.CPUUsPerReq / out[i].CPUUsPerReq
			}
			if st.InstrPerReq > 0 && out[i].InstrPerReq > 0 {
				out[i].StraitInstr = st.InstrPerReq / out[i].InstrPerReq
			}
			if st.CyclesPerReq > 0 && out[i].CyclesPerReq > 0 {
				out[i].StraitCycles = st.CyclesPerReq / out[i].CyclesPerReq
			}
			rps := func(r *runRecord) float64 { return r.ReqPerSec }
			p99 := func(r *runRecord) float64 { return r.P99Ms }
			ratios := pairedRatios(runs, ref, out[i].Target, rps, nil)
			out[i].StraitPaired, out[i].Pairs = median(ratios), len(ratios)
			out[i].StraitPairedP99 = median(pairedRatios(runs, ref, out[i].Target, p99, nil))
			if out[i].Target != "direct" {
				ratios = pairedRatios(runs, ref, out[i].Target, rps, samePhase)
				out[i].StraitPhased, out[i].PhasedPairs = median(ratios), len(ratios)
				out[i].StraitPhasedP99 = median(pairedRatios(runs, ref, out[i].Target, p99, samePhase))
			}
		}
	}
	return out
}

// pairedRatios returns, for each round in which both a and b have a
// counted run (and keep accepts the pair), value(a's run) ÷ value(b's).
func pairedRatios(runs []*runRecord, a, b string, value func(*runRecord) float64, keep func(ra, rb *runRecord) bool) []float64 {
	counted := func(r *runRecord) bool { return r.Valid && !r.Noisy }
	byRound := map[int]map[string]*runRecord{}
	for _, r := range runs {
		if counted(r) && (r.Target == a || r.Target == b) {
			if byRound[r.Round] == nil {
				byRound[r.Round] = map[string]*runRecord{}
			}
			byRound[r.Round][r.Target] = r
		}
	}
	var out []float64
	for _, m := range byRound {
		ra, rb := m[a], m[b]
		if ra != nil && rb != nil && value(ra) > 0 && value(rb) > 0 && (keep == nil || keep(ra, rb)) {
			out = append(out, value(ra)/value(rb))
		}
	}
	return out
}

// Core speeds a run can meet (see phases).
const (
	phaseUnknown = iota // no perf counters
	phaseFast
	phaseSlow
	phaseMixed // the speed changed during the run
)

// phases tells at which speed each run (with perf counters) met the
// proxy's core. The cores of these shared machines switch between two
// speeds, often several times a second: cycles per request about double
// while instructions stay. A run's instructions per cycle in each 250 ms
// interval, against the best its target reached in the scenario, say
// which: fast if every interval was at 85% of that best or more, slow if
// every one was at 60% or less, mixed otherwise. A run that met the slow
// speed for a tenth of its time has the slow speed's latency as its p99,
// so only pure runs are paired for p99. (Results stored before intervals
// were counted have the whole run's figure only.)
func phases(runs []*runRecord) func(*runRecord) int {
	span := func(r *runRecord) (lo, hi float64) {
		if r.IPCMax > 0 {
			return r.IPCMin, r.IPCMax
		}
		if r.CyclesPerReq == 0 {
			return 0, 0
		}
		ipc := r.InstrPerReq / r.CyclesPerReq
		return ipc, ipc
	}
	best := map[string]float64{}
	for _, r := range runs {
		if r.Valid {
			_, hi := span(r)
			best[r.Target] = max(best[r.Target], hi)
		}
	}
	return func(r *runRecord) int {
		lo, hi := span(r)
		b := best[r.Target]
		switch {
		case hi == 0 || b == 0:
			return phaseUnknown
		case lo >= 0.85*b:
			return phaseFast
		case hi <= 0.6*b:
			return phaseSlow
		}
		return phaseMixed
	}
}

// median of xs (mean of the middle two for an even count); 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
