package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// environment names the machine and every program version, in print order.
func (b *bench) environment(ctx context.Context) [][2]string {
	cmdOut := func(name string, args ...string) string {
		out, _ := exec.CommandContext(ctx, name, args...).CombinedOutput() // wrk -v exits 1
		return strings.TrimSpace(firstLine(string(out)))
	}
	cpuModel := "?"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	env := [][2]string{
		{"machine", fmt.Sprintf("%d CPUs (%s), Linux %s", runtime.NumCPU(), cpuModel, strings.TrimSpace(string(kernel)))},
		{"strait", b.straitDesc},
	}
	if b.base != "" {
		env = append(env, [2]string{"base", b.baseDesc})
	}
	return append(env,
		[2]string{"go", cmdOut("go", "env", "GOVERSION")},
		[2]string{"nginx", strings.TrimPrefix(cmdOut(nginxBin(), "-v"), "nginx version: ")},
		[2]string{"haproxy", cmdOut("haproxy", "-v")},
		[2]string{"wrk", cmdOut("wrk", "-v")},
	)
}

// describeRef names a committed revision.
func (b *bench) describeRef(ctx context.Context, ref string) string {
	cmd := exec.CommandContext(ctx, "git", "rev-parse", "--short", ref+"^{commit}")
	cmd.Dir = b.root
	out, _ := cmd.Output()
	return fmt.Sprintf("git revision %s (commit %s)", ref, strings.TrimSpace(string(out)))
}

// describeStrait names the strait source being built. It runs before the
// build, since the working tree may change while the benchmark runs.
func (b *bench) describeStrait(ctx context.Context) string {
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = b.root
		out, _ := cmd.Output()
		return strings.TrimSpace(string(out))
	}
	var straitDesc string
	if ref := b.cfg.straitRef; ref != "" {
		straitDesc = b.describeRef(ctx, ref)
	} else {
		straitDesc = "working tree at commit " + git("rev-parse", "--short", "HEAD")
		// Name the uncommitted state by the hash of its diff, so two runs
		// can tell whether they measured the same code.
		if diff := git("diff", "HEAD", "--", ".", ":(exclude)bench"); diff != "" {
			straitDesc += fmt.Sprintf(" + uncommitted changes (diff sha256 %.12x)", sha256.Sum256([]byte(diff)))
		}
	}
	return straitDesc
}

// ref is the target the ratios divide by the others: strait in reports
// from before -ref.
func (rep *loadReport) ref() string {
	if rep.Reference == "" {
		return "strait"
	}
	return rep.Reference
}

// printHeader prints the configuration of a run, from its report alone (so
// -print can show a stored one).
func printHeader(w io.Writer, rep *loadReport) {
	fmt.Fprintf(w, "strait benchmark, %s\n", rep.Started.Format("2006-01-02 15:04:05 UTC"))
	for _, kv := range rep.Environment {
		fmt.Fprintf(w, "  %-10s %s\n", kv[0]+":", kv[1])
	}
	fmt.Fprintf(w, "  %-10s proxy under test alone on CPU %d, one worker (strait and httputil GOMAXPROCS=1, nginx worker_processes 1, HAProxy nbthread 1);\n", "pinning:", rep.ProxyCPU)
	fmt.Fprintf(w, "  %-10s origin (nginx, 1 worker, static files) and wrk -t1 share CPU %d\n", "", rep.LoadCPU)
	fmt.Fprintf(w, "  %-10s wrk -t1 -c%d (close scenario: -c%d), %gs measured after a %gs warm-up, %d round(s), targets shuffled per round, seed %d\n",
		"load:", rep.Connections, rep.CloseConns, rep.DurationS, rep.WarmupS, rep.Rounds, rep.Seed)
	if rep.NoTickets {
		fmt.Fprintf(w, "  %-10s TLS targets issue no session tickets and keep no session cache: every handshake is a full one\n", "tls:")
	}
	if rep.Nice != 0 {
		fmt.Fprintf(w, "  %-10s origin, proxies and wrk run at nice %d (and the harness's autogroup)\n", "priority:", rep.Nice)
	}
	if rep.WaitQuietS > 0 || rep.MaxOther > 0 {
		fmt.Fprintf(w, "  %-10s each run waits up to %gs for other processes to use under 10%% of a CPU; runs during which they took over %.0f%% are not counted (0: all counted)\n",
			"noise:", rep.WaitQuietS, rep.MaxOther)
	}
	fmt.Fprintf(w, "  %-10s all four keep upstream connections alive (nginx keepalive 128, HAProxy http-reuse always, httputil 1000 idle per host, strait's pool)\n", "upstream:")
	var policies []string
	hashing := false
	for _, t := range rep.Targets {
		if p := balancePolicy(t); p != "" {
			policies = append(policies, t+" "+p)
			hashing = hashing || p == "ring_hash" || p == "maglev"
		}
	}
	if len(policies) > 0 {
		fmt.Fprintf(w, "  %-10s strait run -c FILE (defaults, access log off, GOMAXPROCS=1), one cluster over the origin's %d ports, balance: %s\n", "policies:", originPorts, strings.Join(policies, ", "))
		if hashing {
			fmt.Fprintf(w, "  %-10s ring_hash and maglev hash the client address (wrk's is always 127.0.0.1: one key, every request to one endpoint)\n", "")
		}
	}
	fmt.Fprintf(w, "  %-10s every ratio is %s ÷ target\n", "ratios:", rep.ref())
	fmt.Fprintf(w, "  %-10s %d for the harness and every process it starts\n", "open files:", rep.OpenFiles)
	fmt.Fprintln(w)
}

// printLoad prints a run's tables, from its report alone.
func printLoad(w io.Writer, rep *loadReport) {
	ref := rep.ref()
	for _, s := range rep.Scenarios {
		fmt.Fprintf(w, "== %s: GET %s, %s; wrk -t1 -c%d, %d × %v\n", s.Name, s.Path, s.Desc, s.Connections, rep.Rounds, time.Duration(rep.DurationS*float64(time.Second)))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "target\treq/s\tp99\tp50\tvalid\tproxy CPU\tCPU µs/req\tinstr/req\tcycles/req\torigin conns\tother CPU\t%[1]s÷ req/s\t%[1]s÷ p99\t  req/s of each valid run\t\n", ref)
		for _, m := range s.Summaries {
			row := []string{m.Target}
			switch {
			case m.Runs == 0:
				row = append(row, "not run", "-", "-") // the scenario does not apply to it
			case m.Valid == 0:
				row = append(row, "FAILED", "-", "-")
			default:
				row = append(row, thousands(m.ReqPerSec), fmtMs(m.P99Ms), fmtMs(m.P50Ms))
			}
			counted := fmt.Sprintf("%d/%d", m.Valid, m.Runs)
			if m.Noisy > 0 {
				counted += fmt.Sprintf(" (%d noisy)", m.Noisy)
			}
			row = append(row, counted)
			if m.Target == "direct" || m.Valid == 0 {
				row = append(row, "-", "-")
			} else {
				row = append(row, fmt.Sprintf("%.0f%%", m.ProxyCPUPercent), fmt.Sprintf("%.1f", m.CPUUsPerReq))
			}
			if m.InstrPerReq > 0 {
				row = append(row, fmt.Sprintf("%.1fk", m.InstrPerReq/1000), fmt.Sprintf("%.1fk", m.CyclesPerReq/1000))
			} else {
				row = append(row, "-", "-")
			}
			if m.Valid == 0 {
				row = append(row, "-")
			} else {
				row = append(row, strconv.FormatFloat(m.OriginConns, 'f', -1, 64))
			}
			if m.Valid == 0 {
				row = append(row, "-")
			} else {
				row = append(row, fmt.Sprintf("%.0f%%", m.OtherCPUPercent))
			}
			if m.StraitReqPerSec > 0 {
				row = append(row, fmt.Sprintf("%.2f×", m.StraitReqPerSec), fmt.Sprintf("%.2f×", m.StraitP99))
			} else {
				row = append(row, "-", "-")
			}
			var each []string
			for _, v := range m.AllReqPerSec {
				each = append(each, fmt.Sprintf("%.1fk", v/1000))
			}
			row = append(row, "  "+strings.Join(each, " "))
			fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
		}
		tw.Flush()
		var failed []*runRecord
		for _, r := range s.Runs {
			if !r.Valid {
				failed = append(failed, r)
			}
		}
		for _, r := range failed {
			fmt.Fprintf(w, "  FAILED round %d %s: %s\n", r.Round, r.Target, strings.ReplaceAll(r.Failure, "\n", "\n  "))
			if r.WrkOutput != "" {
				fmt.Fprintf(w, "  wrk said:\n%s", indent(r.WrkOutput, "    | "))
			}
		}
		fmt.Fprintln(w)
	}

	// The ratios once more, all scenarios together.
	var others []string
	for _, t := range rep.Targets {
		if t != ref {
			others = append(others, t)
		}
	}
	if len(others) > 0 && slices.Contains(rep.Targets, ref) {
		fmt.Fprintf(w, "== %[1]s ÷ target, medians: req/s (above 1: %[1]s faster) and, in brackets, p99 (below 1: %[1]s's lower)\n", ref)
		ratioTable(w, rep, others, func(m summary) string {
			if m.StraitReqPerSec == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f× (%.2f×)", m.StraitReqPerSec, m.StraitP99)
		})
		fmt.Fprintf(w, "== %s ÷ target, median of the per-round ratios (each pair measured within the same round): req/s and, in brackets, p99\n", ref)
		ratioTable(w, rep, others, func(m summary) string {
			if m.Pairs == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f× (%.2f×) %d rounds", m.StraitPaired, m.StraitPairedP99, m.Pairs)
		})
		proxies := slices.DeleteFunc(slices.Clone(others), func(t string) bool { return t == "direct" })
		fmt.Fprintln(w, "== the same, over only the rounds in which both runs met the proxy core at the same speed (instructions per cycle; see bench/README.md)")
		ratioTable(w, rep, proxies, func(m summary) string {
			if m.PhasedPairs == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f× (%.2f×) %d rounds", m.StraitPhased, m.StraitPhasedP99, m.PhasedPairs)
		})
		// CPU per request does not move with other work sharing the
		// machine (it does with the CPU's own speed).
		fmt.Fprintf(w, "== %[1]s ÷ target, median proxy CPU time per request (below 1: %[1]s cheaper)\n", ref)
		ratioTable(w, rep, proxies, func(m summary) string {
			if m.StraitCPU == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f×", m.StraitCPU)
		})
		// Instructions do not move with the core's speed at all.
		fmt.Fprintf(w, "== %[1]s ÷ target, median instructions (and cycles) per request, perf stat (below 1: %[1]s cheaper)\n", ref)
		ratioTable(w, rep, proxies, func(m summary) string {
			if m.StraitInstr == 0 {
				return "-"
			}
			return fmt.Sprintf("%.2f× (%.2f×)", m.StraitInstr, m.StraitCycles)
		})
	}

	printTLSPairs(w, rep)

	fmt.Fprintln(w, "columns: medians over valid runs; proxy CPU = the proxy's CPU time ÷ wall time (100% = its core is the limit);")
	fmt.Fprintln(w, "CPU µs/req = the proxy's CPU time per request; instr/req and cycles/req = the proxy's instructions and cycles")
	fmt.Fprintln(w, "(user and kernel) per request from perf stat, when the CPU exposes its counters; origin conns = connections the origin accepted per run (pooling);")
	fmt.Fprintln(w, "other CPU = CPU time of processes not started by the harness during the run, in % of one CPU (noise).")
	fmt.Fprintln(w, "valid = runs counted in the medians. A run with any socket error, non-2xx/3xx response or short response")
	fmt.Fprint(w, "is FAILED and not counted")
	if rep.MaxOther > 0 {
		fmt.Fprintf(w, "; a run during which other processes took over %.0f%% of a CPU is noisy and not counted", rep.MaxOther)
	}
	fmt.Fprintln(w, ".")
	fmt.Fprintln(w)

	if len(rep.ProcessLogs) == 0 {
		fmt.Fprintln(w, "process logs: no proxy logged anything during the runs")
	}
	for _, name := range rep.Targets {
		if lines := rep.ProcessLogs[name]; len(lines) > 0 {
			fmt.Fprintf(w, "process log: %s logged %d line(s) during the runs:\n", name, len(lines))
			printGrouped(w, lines)
		}
	}
}

// printTLSPairs compares strait-tls with the other TLS targets, round by
// round, when the run has them: the tables above divide strait's
// cleartext figures by theirs.
func printTLSPairs(w io.Writer, rep *loadReport) {
	if rep.ref() != "strait" || !slices.Contains(rep.Targets, "strait-tls") {
		return
	}
	var peers []string
	for _, t := range rep.Targets {
		if strings.HasSuffix(t, "-tls") && t != "strait-tls" {
			peers = append(peers, t)
		}
	}
	if len(peers) == 0 {
		return
	}
	fmt.Fprintln(w, "== strait-tls ÷ target, median of the per-round ratios: req/s, (p99) and CPU µs per request")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\t"+strings.Join(peers, "\t")+"\t")
	rps := func(r *runRecord) float64 { return r.ReqPerSec }
	p99 := func(r *runRecord) float64 { return r.P99Ms }
	cpu := func(r *runRecord) float64 { return r.ProxyCPUUsPerReq }
	for _, s := range rep.Scenarios {
		row := []string{s.Name}
		for _, t := range peers {
			c := "-"
			if r := pairedRatios(s.Runs, "strait-tls", t, rps, nil); len(r) > 0 {
				c = fmt.Sprintf("%.2f× (%.2f×) CPU %.2f× %d rounds", median(r),
					median(pairedRatios(s.Runs, "strait-tls", t, p99, nil)), median(pairedRatios(s.Runs, "strait-tls", t, cpu, nil)), len(r))
			}
			row = append(row, c)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// ratioTable prints one row per scenario and one column per target.
func ratioTable(w io.Writer, rep *loadReport, targets []string, cell func(summary) string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\t"+strings.Join(targets, "\t")+"\t")
	for _, s := range rep.Scenarios {
		row := []string{s.Name}
		for _, t := range targets {
			c := "-"
			for _, m := range s.Summaries {
				if m.Target == t {
					c = cell(m)
				}
			}
			row = append(row, c)
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintln(w)
}

// Timestamps that make otherwise equal log lines differ: Go's log
// package prefix, slog's JSON "time" field, HAProxy's "(pid)".
var (
	reLogTime  = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(\.\d+)? `)
	reJSONTime = regexp.MustCompile(`"time":"[^"]*",?`)
	reNginxPfx = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d \[(\w+)\] \d+#\d+: (\*\d+ )?`)
)

// printGrouped prints log lines once each, without their timestamps, with
// how often each occurred, most frequent first (at most 15 kinds): a
// proxy that logs one error per aborted request says the same thing
// thousands of times.
func printGrouped(w io.Writer, lines []string) {
	count := map[string]int{}
	var order []string
	for _, l := range lines {
		l = reNginxPfx.ReplaceAllString(l, "[$1] ")
		l = reLogTime.ReplaceAllString(l, "")
		l = reJSONTime.ReplaceAllString(l, "")
		if count[l] == 0 {
			order = append(order, l)
		}
		count[l]++
	}
	sort.SliceStable(order, func(i, j int) bool { return count[order[i]] > count[order[j]] })
	for i, l := range order {
		if i == 15 {
			fmt.Fprintf(w, "    | ... and %d other kinds of line\n", len(order)-15)
			break
		}
		fmt.Fprintf(w, "    | %6d × %s\n", count[l], l)
	}
}

// printStored prints a report written by an earlier run.
func printStored(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var rep loadReport
	if err := json.Unmarshal(data, &rep); err != nil {
		return fmt.Errorf("%s: %v", path, err)
	}
	if len(rep.Scenarios) == 0 {
		return fmt.Errorf("%s: no scenarios (an -idle report?)", path)
	}
	if len(rep.Targets) == 0 { // reports from before these fields existed
		for _, m := range rep.Scenarios[0].Summaries {
			rep.Targets = append(rep.Targets, m.Target)
		}
		for _, s := range rep.Scenarios {
			if s.Close {
				rep.CloseConns = s.Connections
			} else {
				rep.Connections = s.Connections
			}
		}
	}
	// Recompute, so a stored report gains columns added since.
	for _, s := range rep.Scenarios {
		s.Summaries = summarize(rep.Targets, rep.ref(), s.Runs)
	}
	printHeader(os.Stdout, &rep)
	printLoad(os.Stdout, &rep)
	return nil
}

// writeJSON writes v to <results>/<timestamp><suffix>.json and says where.
func (b *bench) writeJSON(v any, suffix string) error {
	dir := b.cfg.resultsDir
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(b.root, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, b.started.UTC().Format("20060102-150405")+suffix+".json")
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return err
	}
	rel, err := filepath.Rel(b.root, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		rel = path
	}
	fmt.Fprintf(os.Stdout, "\nresults: %s\n", rel)
	return nil
}

// thousands formats a rate as an integer with comma separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func fmtMs(ms float64) string {
	if ms < 10 {
		return fmt.Sprintf("%.2f ms", ms)
	}
	return fmt.Sprintf("%.1f ms", ms)
}

func indent(s, prefix string) string {
	var sb strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		sb.WriteString(prefix + l + "\n")
	}
	return sb.String()
}
