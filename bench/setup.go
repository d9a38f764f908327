package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// bench holds what one invocation set up: the temporary directory, the
// binaries, the origin, and every process started (to stop them at the end).
type bench struct {
	cfg        *config
	root       string // repository root
	tmp        string // configs, logs, pid files, the origin's files
	nofile     uint64 // RLIMIT_NOFILE the harness and its children run with
	strait     string // built binaries
	straitDesc string // which source strait was built from
	base       string // strait built from -base, if given
	baseDesc   string
	httpu      string
	origin     *proc
	oport      int   // origin: the files (what every single-upstream target uses)
	oports     []int // the same files on three ports, oport first: the endpoints of strait-* targets
	o2port     int   // the same files over HTTP/2 in cleartext (h2c): the origin of the *-h2up targets
	sport      int   // origin: stub_status, to count the connections it accepts
	started    time.Time
	tlsFiles   tlsFiles // the TLS targets' certificate, once generated

	restoreNice func() // undoes niceAutogroup

	mu    sync.Mutex
	procs []*proc
}

// payloads are the origin's files, by path. Sizes are the scenario sizes.
var payloads = map[string][]byte{
	"13":  []byte("Hello, World!"),
	"1k":  pattern(1 << 10),
	"64k": pattern(64 << 10),
}

// pattern returns n printable bytes that are not all equal, so a proxy that
// mangles or shifts a body is caught by the content check.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

func newBench(ctx context.Context, cfg *config) (*bench, error) {
	root, err := findRoot()
	if err != nil {
		return nil, err
	}
	if err := ensureTools(); err != nil {
		return nil, err
	}
	if err := checkCPUs(cfg); err != nil {
		return nil, err
	}
	nofile, err := raiseNofile(cfg)
	if err != nil {
		return nil, err
	}
	restoreNice, err := niceAutogroup(cfg.nice)
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "strait-bench-")
	if err != nil {
		return nil, err
	}
	// nginx started as root runs its workers as nobody: they must be able
	// to traverse the directory and read the files.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	b := &bench{cfg: cfg, root: root, tmp: tmp, nofile: nofile, started: time.Now(), restoreNice: restoreNice}
	if err := b.setup(ctx); err != nil {
		b.cleanup()
		return nil, err
	}
	return b, nil
}

func (b *bench) setup(ctx context.Context) error {
	fmt.Fprintf(os.Stderr, "bench: building strait and httputilproxy in %s\n", b.tmp)
	b.strait = filepath.Join(b.tmp, "strait")
	b.httpu = filepath.Join(b.tmp, "httputilproxy")
	b.straitDesc = b.describeStrait(ctx)
	straitSrc := b.root
	if b.cfg.straitRef != "" {
		// A committed revision, exported without touching the working
		// tree: for comparing revisions, or when the tree is mid-edit.
		straitSrc = filepath.Join(b.tmp, "src")
		if err := exportRef(ctx, b.root, b.cfg.straitRef, straitSrc); err != nil {
			return err
		}
	}
	bins := []struct{ dir, out, pkg string }{
		{straitSrc, b.strait, "./cmd/strait"},
		{b.root, b.httpu, "./bench/httputilproxy"},
	}
	if ref := b.cfg.baseRef; ref != "" {
		// A second strait, to compare two versions in one interleaved run.
		b.base = filepath.Join(b.tmp, "strait-base")
		b.baseDesc = b.describeRef(ctx, ref)
		baseSrc := filepath.Join(b.tmp, "base-src")
		if err := exportRef(ctx, b.root, ref, baseSrc); err != nil {
			return err
		}
		bins = append(bins, struct{ dir, out, pkg string }{baseSrc, b.base, "./cmd/strait"})
	}
	for _, bin := range bins {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", bin.out, bin.pkg)
		cmd.Dir = bin.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", bin.pkg, err, out)
		}
	}

	www := filepath.Join(b.tmp, "www")
	if err := os.Mkdir(www, 0o755); err != nil {
		return err
	}
	for name, data := range payloads {
		if err := os.WriteFile(filepath.Join(www, name), data, 0o644); err != nil {
			return err
		}
	}
	ports, err := freePorts(2 + originPorts)
	if err != nil {
		return err
	}
	b.sport, b.o2port, b.oports = ports[0], ports[1], ports[2:]
	b.oport = b.oports[0]
	conf, err := b.writeFile("origin.conf", b.originConf(www))
	if err != nil {
		return err
	}
	b.origin, err = b.start("origin", b.cfg.loadCPU, nil, nginxBin(), b.nginxArgs("origin", conf)...)
	if err != nil {
		return err
	}
	for _, port := range b.oports {
		if err := b.waitReady(ctx, b.origin, port, false, false); err != nil {
			return err
		}
	}
	return nil
}

// exportRef writes the tree of git revision ref into dir (git archive | tar).
func exportRef(ctx context.Context, root, ref, dir string) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	archive := exec.CommandContext(ctx, "git", "archive", "--format=tar", ref)
	archive.Dir = root
	var errBuf strings.Builder
	archive.Stderr = &errBuf
	tarCmd := exec.CommandContext(ctx, "tar", "-x", "-C", dir)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		return err
	}
	tarCmd.Stdin = pipe
	if err := archive.Start(); err != nil {
		return err
	}
	tarOut, tarErr := tarCmd.CombinedOutput()
	if err := archive.Wait(); err != nil {
		return fmt.Errorf("git archive %s: %v: %s", ref, err, errBuf.String())
	}
	if tarErr != nil {
		return fmt.Errorf("tar: %v: %s", tarErr, tarOut)
	}
	return nil
}

// cleanup stops every process started, in reverse order, and removes the
// temporary directory unless -keep.
func (b *bench) cleanup() {
	b.mu.Lock()
	procs := b.procs
	b.procs = nil
	b.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
	b.restoreNice()
	if b.cfg.keep {
		fmt.Fprintf(os.Stderr, "bench: kept %s\n", b.tmp)
		return
	}
	os.RemoveAll(b.tmp)
}

// niceAutogroup gives the harness's scheduling autogroup the nice level
// (when not 0), and returns what undoes it. With autogroups (Linux's
// default on desktops and in many VMs) a process's own nice only ranks it
// inside its session: against another session's busy processes it is the
// group's nice that counts.
func niceAutogroup(nice int) (func(), error) {
	const path = "/proc/self/autogroup"
	old, err := os.ReadFile(path)
	if nice == 0 || err != nil { // no autogroups: per-process nice is enough
		return func() {}, nil
	}
	// "/autogroup-9 nice 0"
	f := strings.Fields(string(old))
	if len(f) != 3 {
		return nil, fmt.Errorf("%s: unexpected %q", path, old)
	}
	if err := os.WriteFile(path, []byte(strconv.Itoa(nice)), 0); err != nil {
		return nil, fmt.Errorf("-nice %d: setting the autogroup's nice: %v (needs root)", nice, err)
	}
	return func() { os.WriteFile(path, []byte(f[2]), 0) }, nil
}

func (b *bench) writeFile(name, content string) (string, error) {
	path := filepath.Join(b.tmp, name)
	return path, os.WriteFile(path, []byte(content), 0o644)
}

// target is one thing wrk is pointed at: a proxy in front of the origin,
// or the origin itself (direct).
type target struct {
	name string
	port int
	tls  bool  // the proxy listens with TLS: https:// for wrk and the checks
	proc *proc // nil for direct
	// reload, for the reload targets, changes the config file and sends
	// SIGHUP; measure calls it every reloadEvery while wrk runs.
	reload func() error
}

// baseURL is the scheme, host and port wrk and the checks use for t.
func (t *target) baseURL() string {
	return baseURL(t.port, t.tls)
}

func baseURL(port int, secure bool) string {
	if secure {
		return fmt.Sprintf("https://127.0.0.1:%d", port)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", port)
}

// startTarget starts the named proxy on CPU proxyCPU, in front of the
// origin, and waits until a request through it is answered by the origin.
func (b *bench) startTarget(ctx context.Context, name string) (*target, error) {
	if name == "direct" {
		return &target{name: name, port: b.oport}, nil
	}
	ports, err := freePorts(1)
	if err != nil {
		return nil, err
	}
	t := &target{name: name, port: ports[0], tls: isTLSTarget(name)}
	listen := fmt.Sprintf("127.0.0.1:%d", t.port)
	upstream := fmt.Sprintf("http://127.0.0.1:%d", b.oport)
	cpu := b.cfg.proxyCPU
	var certs tlsFiles
	if t.tls {
		if certs, err = b.tlsCert(); err != nil {
			return nil, err
		}
	}
	switch name {
	case "strait", "base", "strait-metrics":
		// The binary's own defaults; the access log is off unless asked.
		// strait-metrics adds the admin API, and with it the metrics the
		// data path counts.
		bin := b.strait
		if name == "base" {
			bin = b.base
		}
		args := []string{"proxy", "--listen", listen, "--upstream", upstream}
		if name == "strait-metrics" {
			args = append(args, "--admin", "127.0.0.1:0")
		}
		t.proc, err = b.start(name, cpu, []string{"GOMAXPROCS=1"}, bin, args...)
	case "strait-tls":
		// As strait, with TLS on the listener; plain HTTP upstream.
		args := []string{"proxy", "--listen", "https://" + listen,
			"--tls-cert", certs.cert, "--tls-key", certs.key, "--upstream", upstream}
		if b.cfg.noTickets {
			var conf string
			if conf, err = b.writeFile(name+".yaml", b.straitTLSConf(t.port, certs)); err != nil {
				break
			}
			args = []string{"run", "-c", conf}
		}
		t.proc, err = b.start(name, cpu, []string{"GOMAXPROCS=1"}, b.strait, args...)
	case "nginx-tls":
		var conf string
		if conf, err = b.writeFile("nginx-tls.conf", b.nginxProxyConfTLS(t.port, certs)); err == nil {
			t.proc, err = b.start(name, cpu, nil, nginxBin(), b.nginxArgs("nginx-tls", conf)...)
		}
	case "haproxy-tls":
		var conf string
		if conf, err = b.writeFile("haproxy-tls.cfg", b.haproxyConfTLS(t.port, certs)); err == nil {
			t.proc, err = b.start(name, cpu, nil, "haproxy", "-db", "-f", conf)
		}
	case "nginx-h2c":
		var conf string
		if conf, err = b.writeFile("nginx-h2c.conf", b.nginxProxyConfH2C(t.port)); err == nil {
			t.proc, err = b.start(name, cpu, nil, nginxBin(), b.nginxArgs("nginx-h2c", conf)...)
		}
	case "haproxy-h2c":
		var conf string
		if conf, err = b.writeFile("haproxy-h2c.cfg", b.haproxyConfH2C(t.port)); err == nil {
			t.proc, err = b.start(name, cpu, nil, "haproxy", "-db", "-f", conf)
		}
	case "strait-h2up":
		// As strait, to the origin's HTTP/2 port (h2c).
		t.proc, err = b.start(name, cpu, []string{"GOMAXPROCS=1"}, b.strait,
			"proxy", "--listen", listen, "--upstream", fmt.Sprintf("h2c://127.0.0.1:%d", b.o2port))
	case "nginx-h2up":
		var conf string
		if conf, err = b.writeFile("nginx-h2up.conf", b.nginxProxyConfH2Up(t.port)); err == nil {
			t.proc, err = b.start(name, cpu, nil, nginxBin(), b.nginxArgs("nginx-h2up", conf)...)
		}
	case "haproxy-h2up":
		var conf string
		if conf, err = b.writeFile("haproxy-h2up.cfg", b.haproxyConfH2Up(t.port)); err == nil {
			t.proc, err = b.start(name, cpu, nil, "haproxy", "-db", "-f", conf)
		}
	case "httputil":
		t.proc, err = b.start(name, cpu, []string{"GOMAXPROCS=1"}, b.httpu, "-listen", listen, "-upstream", upstream)
	case "nginx":
		var conf string
		if conf, err = b.writeFile("nginx.conf", b.nginxProxyConf(t.port)); err == nil {
			t.proc, err = b.start(name, cpu, nil, nginxBin(), b.nginxArgs("nginx", conf)...)
		}
	case "haproxy":
		var conf string
		if conf, err = b.writeFile("haproxy.cfg", b.haproxyConf(t.port)); err == nil {
			// -db: stay in the foreground, one process, so its PID is ours.
			t.proc, err = b.start(name, cpu, nil, "haproxy", "-db", "-f", conf)
		}
	case "strait-reload", "strait-reload-server":
		var conf string
		if conf, err = b.writeFile(name+".yaml", b.straitBalanceConf(t.port, "round_robin")); err == nil {
			t.proc, err = b.start(name, cpu, []string{"GOMAXPROCS=1"}, b.strait, "run", "-c", conf)
			n := 0
			t.reload = func() error {
				n++
				path, idle := fmt.Sprintf("/reload-%d", n), "75s"
				if name == "strait-reload-server" {
					path, idle = "", fmt.Sprintf("%ds", 60+n%2)
				}
				if _, err := b.writeFile(name+".yaml", b.straitReloadConf(t.port, "round_robin", path, idle)); err != nil {
					return err
				}
				return syscall.Kill(t.proc.pid(), syscall.SIGHUP)
			}
		}
	default:
		policy := balancePolicy(name)
		if policy == "" {
			err = fmt.Errorf("unknown target %q", name)
			break
		}
		// strait-rr, strait-lr, ...: the same binary from a config file,
		// one cluster over the origin's three ports, balanced by the
		// target's policy.
		var conf string
		if conf, err = b.writeFile(name+".yaml", b.straitBalanceConf(t.port, policy)); err == nil {
			t.proc, err = b.start(name, cpu, []string{"GOMAXPROCS=1"}, b.strait, "run", "-c", conf)
		}
	}
	if err != nil {
		return nil, err
	}
	if err := b.waitReady(ctx, t.proc, t.port, t.tls, slices.Contains(h2OnlyTargets, name)); err != nil {
		return nil, err
	}
	return t, nil
}

// waitReady polls GET /13 on port (over TLS when secure) until it returns the
// origin's body, for up to 15 s, failing early if the process exits.
func (b *bench) waitReady(ctx context.Context, p *proc, port int, secure, h2Only bool) error {
	check := checkBody
	if h2Only {
		check = checkBodyH2
	}
	deadline := time.Now().Add(15 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited during startup: %v\n%s", p.name, p.err, p.logTail(20))
		}
		if last = check(baseURL(port, secure), "/13", payloads["13"]); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s did not answer on port %d within 15 s: %v\n%s", p.name, port, last, p.logTail(20))
}

// checkBody fetches path from base (http:// or https://127.0.0.1:PORT) on
// a fresh connection and requires a 200 with exactly want as body: wrk
// only looks at status codes, so this is what shows that a proxy passes
// bodies through intact. Over TLS it does not verify the run's self-signed
// certificate (as wrk does not), and speaks HTTP/1.1, as wrk does.
func checkBody(base, path string, want []byte) error {
	tr := &http.Transport{
		DisableKeepAlives: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}},
		TLSNextProto:      map[string]func(string, *tls.Conn) http.RoundTripper{},
	}
	return checkWith(tr, 1, base, path, want)
}

// checkWith is checkBody over tr, whose responses must be of HTTP major
// version proto.
func checkWith(tr *http.Transport, proto int, base, path string, want []byte) error {
	c := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	resp, err := c.Get(base + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.ProtoMajor != proto || resp.StatusCode != 200 || string(got) != string(want) {
		return fmt.Errorf("GET %s: %s %d, %d-byte body; want HTTP/%d 200 and the origin's %d bytes",
			path, resp.Proto, resp.StatusCode, len(got), proto, len(want))
	}
	return nil
}

// freePorts asks the kernel for n free loopback ports by listening on :0,
// holding all n open so they differ, then closing them. Another process
// could take one in between; on a benchmark machine that does not happen.
func freePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tools maps each command the harness runs to the Debian package with it.
var tools = []struct{ cmd, pkg string }{
	{"nginx", "nginx-light"},
	{"haproxy", "haproxy"},
	{"wrk", "wrk"},
	{"taskset", "util-linux"},
	{"perf", "linux-perf"},
}

// lookTool finds cmd on PATH or in /usr/sbin, where Debian puts nginx and
// haproxy and where a non-root PATH often does not look.
func lookTool(cmd string) (string, bool) {
	if p, err := exec.LookPath(cmd); err == nil {
		return p, true
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, cmd)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p, true
		}
	}
	return "", false
}

func nginxBin() string {
	p, _ := lookTool("nginx")
	return p
}

// ensureTools installs missing packages with apt-get when root, and
// otherwise says exactly what to install.
func ensureTools() error {
	var missing []string
	for _, t := range tools {
		if _, ok := lookTool(t.cmd); !ok {
			missing = append(missing, t.pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("missing %s; install them (apt-get install -y %s) or run the harness as root, which installs them",
			strings.Join(missing, ", "), strings.Join(missing, " "))
	}
	fmt.Fprintf(os.Stderr, "bench: installing %s\n", strings.Join(missing, " "))
	install := func() error {
		cmd := exec.Command("apt-get", append([]string{"install", "-y", "--no-install-recommends"}, missing...)...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		return cmd.Run()
	}
	if err := install(); err != nil {
		// A fresh container has no package lists: update once and retry.
		upd := exec.Command("apt-get", "update")
		upd.Stdout, upd.Stderr = os.Stderr, os.Stderr
		if uerr := upd.Run(); uerr != nil {
			return fmt.Errorf("apt-get update: %v", uerr)
		}
		if err := install(); err != nil {
			return fmt.Errorf("apt-get install -y %s: %v", strings.Join(missing, " "), err)
		}
	}
	for _, t := range tools {
		if _, ok := lookTool(t.cmd); !ok {
			return fmt.Errorf("%s still missing after installing %s", t.cmd, t.pkg)
		}
	}
	return nil
}

// checkCPUs makes sure both CPUs exist and this process may run on them;
// pinning to a CPU outside the affinity mask would fail later and less
// clearly.
func checkCPUs(cfg *config) error {
	if runtime.NumCPU() < 2 {
		return fmt.Errorf("need 2 CPUs (the proxy alone on one, origin and wrk on the other); have %d", runtime.NumCPU())
	}
	for _, cpu := range []int{cfg.proxyCPU, cfg.loadCPU} {
		if out, err := exec.Command("taskset", "-c", strconv.Itoa(cpu), "true").CombinedOutput(); err != nil {
			return fmt.Errorf("cannot pin to CPU %d (taskset: %v: %s); choose others with -proxy-cpu and -load-cpu", cpu, err, out)
		}
	}
	return nil
}

// raiseNofile raises RLIMIT_NOFILE for the harness, and so for every child
// it starts: the -idle mode holds 10,000 client sockets here and as many in
// the proxy. It aims at 30,000, and settles for the hard limit if it cannot
// raise that (no CAP_SYS_RESOURCE, as in most containers).
//
// Calling syscall.Setrlimit also matters for the children: Go raises its
// own soft limit at startup but gives children the original one back
// unless the program set the limit itself.
func raiseNofile(cfg *config) (uint64, error) {
	const want = 30000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Max < want {
		up := syscall.Rlimit{Cur: want, Max: want}
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &up) == nil {
			lim = up
		}
	}
	if lim.Cur < want {
		lim.Cur = min(uint64(want), lim.Max)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("setrlimit NOFILE %d: %v", lim.Cur, err)
	}
	// -idle needs the client sockets plus a margin for everything else.
	if need := uint64(cfg.idleConns) + 500; cfg.idle && lim.Cur < need {
		return 0, fmt.Errorf("open-file limit is %d (hard %d); -idle with %d connections needs %d: raise it (ulimit -Hn) or lower -idle-conns",
			lim.Cur, lim.Max, cfg.idleConns, need)
	}
	return lim.Cur, nil
}
