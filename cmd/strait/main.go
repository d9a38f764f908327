// Command strait runs the strait proxy.
//
//	strait                      run the embedded default config
//	strait run -c FILE [--pid-file FILE] [--watch]
//	                            run a config file; SIGHUP reloads it, SIGUSR2
//	                            upgrades to the binary at strait's path
//	strait validate -c FILE     check a config file
//	strait proxy --listen [https://]ADDR [--tls-cert FILE --tls-key FILE] --upstream URL [--upstream URL ...] [--try-timeout D] [--admin ADDR]
//	strait proxy --listen tcp://ADDR --upstream tcp://ADDR [--upstream tcp://ADDR ...]
//	strait proxy --listen udp://ADDR --upstream udp://IP:PORT [--upstream udp://IP:PORT ...] [--xdp IFACE ...]
//	strait version
//	strait help [COMMAND]
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/accesslog"
	"github.com/straitproxy/strait/internal/lifecycle"
	"github.com/straitproxy/strait/internal/observe"
	"github.com/straitproxy/strait/internal/sdnotify"
	"github.com/straitproxy/strait/internal/tlsconf"
	"github.com/straitproxy/strait/internal/upgrade"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 {
		switch args[0] {
		case "help", "-h", "-help", "--help":
			if len(args) > 1 && args[0] == "help" {
				return run([]string{args[1], "-h"}, stdout, stderr)
			}
			usage(stdout)
			return 0
		case "version", "-version", "--version":
			fmt.Fprintln(stdout, "strait", version)
			return 0
		}
		// Flags without a command are run's: `strait -c FILE`.
		if !strings.HasPrefix(args[0], "-") {
			cmd, args = args[0], args[1:]
		}
	}
	switch cmd {
	case "run":
		return cmdRun(args, stdout, stderr)
	case "validate":
		return cmdValidate(args, stdout, stderr)
	case "proxy":
		return cmdProxy(args, stdout, stderr)
	}
	fmt.Fprintf(stderr, "strait: unknown command %q\n", cmd)
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  strait                      run the embedded default config
  strait run [-c FILE] [--pid-file FILE] [--watch]
                              run a config file (default: the embedded one);
                              SIGHUP (or --watch, or POST /reload) reloads it,
                              SIGUSR2 upgrades to the binary at strait's path,
                              SIGTERM drains and stops
  strait validate -c FILE     check a config file; errors name file, line and key
  strait proxy --listen [https://]ADDR [--tls-cert FILE --tls-key FILE] --upstream URL [--upstream URL ...]
               [--try-timeout D] [--access-log] [--admin ADDR]
                              proxy ADDR (host:port) to http://host:port upstreams
  strait proxy --listen tcp://ADDR --upstream tcp://ADDR [--upstream tcp://ADDR ...]
  strait proxy --listen udp://ADDR --upstream udp://IP:PORT [--upstream udp://IP:PORT ...] [--xdp IFACE ...]
                              relay TCP connections, bytes as they are
  strait version              print the version
  strait help [COMMAND]       print this, or a command's flags (also COMMAND -h)
`)
}

// parseFlags parses a command's flags. Help asked for with -h or --help
// goes to stdout and exits 0; a mistake is reported on stderr with the
// usage and exits 2. done says the command should return code now.
func parseFlags(fs *flag.FlagSet, synopsis string, args []string, stdout, stderr io.Writer) (code int, done bool) {
	// The flag package prints both help and errors to one writer; print
	// them here instead, each where it belongs.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	printUsage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: %s\n\nflags:\n", synopsis)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	err := fs.Parse(args)
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	switch {
	case err == nil:
		return 0, false
	case errors.Is(err, flag.ErrHelp):
		printUsage(stdout)
		return 0, true
	}
	fmt.Fprintf(stderr, "strait %s: %v\n", fs.Name(), err)
	printUsage(stderr)
	return 2, true
}

func cmdRun(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	file := fs.String("c", "", "config `file` (default: the embedded default config)")
	pidFile := fs.String("pid-file", "", "write the pid to this `file` once serving (a binary upgrade's new process writes its own)")
	watch := fs.Bool("watch", false, "reload the config file when it changes (as SIGHUP does)")
	if code, done := parseFlags(fs, "strait run [-c FILE] [--pid-file FILE] [--watch]", args, stdout, stderr); done {
		return code
	}
	ro := runOptions{name: *file, pidFile: *pidFile, watch: *watch}
	if *file == "" {
		ro.name = config.DefaultName
		return serve(config.Default(), ro, stdout, stderr)
	}
	cfg, err := config.Load(*file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return serve(cfg, ro, stdout, stderr)
}

func cmdValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	file := fs.String("c", "", "config `file`")
	const synopsis = "strait validate -c FILE"
	if code, done := parseFlags(fs, synopsis, args, stdout, stderr); done {
		return code
	}
	if *file == "" {
		fmt.Fprintln(stderr, "strait validate: -c FILE is required")
		fmt.Fprintf(stderr, "usage: %s\n", synopsis)
		return 2
	}
	cfg, err := config.Load(*file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// What run would load at start: the listeners' certificates and keys.
	for _, l := range cfg.Listeners {
		if l.TLS == nil {
			continue
		}
		var pairs []tlsconf.Pair
		for _, p := range l.TLS.Certificates {
			pairs = append(pairs, tlsconf.Pair{Cert: p.Cert, Key: p.Key})
		}
		if _, err := tlsconf.New(tlsconf.Config{Pairs: pairs}); err != nil {
			fmt.Fprintf(stderr, "%s: listener %s: %v\n", *file, cmp.Or(l.Name, l.Address), err)
			return 1
		}
	}
	fmt.Fprintf(stdout, "%s: ok\n", *file)
	return 0
}

type urlList []string

func (u *urlList) String() string     { return strings.Join(*u, ",") }
func (u *urlList) Set(v string) error { *u = append(*u, v); return nil }

// cmdProxy builds a one-listener config from flags: the same config the
// file would give, so both paths run the same code.
func cmdProxy(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	listen := fs.String("listen", "", "`address` to listen on (host:port; https://host:port for TLS; tcp://host:port to relay TCP; udp://host:port to relay UDP)")
	var upstreams urlList
	fs.Var(&upstreams, "upstream", "upstream `URL` (http://host:port, https://host:port, h2c://host:port for HTTP/2 in cleartext, tcp://host:port with --listen tcp://…, or udp://IP:port with --listen udp://…); repeat for more")
	accessLog := fs.Bool("access-log", false, "write one log line per request to standard error")
	tryTimeout := fs.Duration("try-timeout", 0, "bound each `try` of a request upstream (default none)")
	adminFlag := fs.String("admin", "", "serve the admin API (metrics, clusters) on this loopback `address` (default none)")
	tlsCert := fs.String("tls-cert", "", "with --listen https://…: the certificate chain (PEM `file`)")
	tlsKey := fs.String("tls-key", "", "with --listen https://…: its private key (PEM `file`)")
	pidFile := fs.String("pid-file", "", "write the pid to this `file` once serving")
	var xdpIfaces urlList
	fs.Var(&xdpIfaces, "xdp", "with --listen udp://…: forward answered flows in the kernel with XDP on this `interface` (the client-facing and the upstream-facing ones); repeat for more")
	const synopsis = "strait proxy --listen [https://|tcp://|udp://]ADDR [--tls-cert FILE --tls-key FILE] --upstream URL [--upstream URL ...] [--try-timeout D] [--access-log] [--admin ADDR] [--xdp IFACE ...]"
	if code, done := parseFlags(fs, synopsis, args, stdout, stderr); done {
		return code
	}
	if *listen == "" || len(upstreams) == 0 {
		fmt.Fprintln(stderr, "strait proxy: --listen and at least one --upstream are required")
		fmt.Fprintf(stderr, "usage: %s\n", synopsis)
		return 2
	}
	var endpoints []string
	scheme := ""
	for _, raw := range upstreams {
		u, err := url.Parse(raw)
		if err != nil || !slices.Contains([]string{"http", "https", "h2c", "tcp", "udp"}, u.Scheme) || u.Host == "" || (u.Path != "" && u.Path != "/") ||
			(u.Scheme == "tcp" || u.Scheme == "udp") && u.Port() == "" {
			fmt.Fprintf(stderr, "strait proxy: --upstream %q: want http://host:port, https://host:port, h2c://host:port, tcp://host:port or udp://IP:port\n", raw)
			return 2
		}
		if scheme != "" && u.Scheme != scheme {
			fmt.Fprintln(stderr, "strait proxy: the --upstream URLs mix schemes: one cluster speaks one protocol")
			return 2
		}
		scheme = u.Scheme
		host := u.Host
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443", "h2c": "80"}[scheme])
		}
		endpoints = append(endpoints, host)
	}
	route := config.Route{Cluster: "upstream", Timeouts: config.RouteTimeouts{UpstreamTotal: config.Duration(*tryTimeout)}}
	listener := config.Listener{Address: *listen, Routes: []config.Route{route}}
	if addr, ok := strings.CutPrefix(*listen, "udp://"); ok || scheme == "udp" {
		if !ok || scheme != "udp" || *tlsCert != "" || *tlsKey != "" || *tryTimeout != 0 {
			fmt.Fprintln(stderr, "strait proxy: --listen udp://… goes with --upstream udp://… only (no TLS flags, no --try-timeout)")
			return 2
		}
		listener = config.Listener{Address: addr, Kind: "udp", Cluster: "upstream"}
		if len(xdpIfaces) > 0 {
			listener.UDP.XDP = &config.UDPXDP{Interfaces: xdpIfaces}
		}
	} else if len(xdpIfaces) > 0 {
		fmt.Fprintln(stderr, "strait proxy: --xdp goes with --listen udp://…")
		return 2
	} else if addr, ok := strings.CutPrefix(*listen, "tcp://"); ok || scheme == "tcp" {
		if !ok || scheme != "tcp" || *tlsCert != "" || *tlsKey != "" || *tryTimeout != 0 {
			fmt.Fprintln(stderr, "strait proxy: --listen tcp://… goes with --upstream tcp://… only (no TLS flags, no --try-timeout)")
			return 2
		}
		listener = config.Listener{Address: addr, Kind: "tcp", Cluster: "upstream"}
	} else if addr, ok := strings.CutPrefix(*listen, "https://"); ok {
		if *tlsCert == "" || *tlsKey == "" {
			fmt.Fprintln(stderr, "strait proxy: --listen https://… needs --tls-cert and --tls-key")
			return 2
		}
		listener.Address = addr
		listener.TLS = &config.ListenerTLS{Certificates: []config.CertPair{{Cert: *tlsCert, Key: *tlsKey}}}
	} else if *tlsCert != "" || *tlsKey != "" {
		fmt.Fprintln(stderr, "strait proxy: --tls-cert and --tls-key go with --listen https://…")
		return 2
	} else {
		listener.Address = strings.TrimPrefix(*listen, "http://")
	}
	cfg := &config.Config{
		Listeners: []config.Listener{listener},
		Clusters:  []config.Cluster{{Name: "upstream", Endpoints: endpoints}},
	}
	switch scheme {
	case "https":
		cfg.Clusters[0].TLS = &config.ClusterTLS{} // verified against the system's roots
	case "h2c":
		cfg.Clusters[0].Protocol = "h2c"
	}
	if len(endpoints) > 1 && scheme != "tcp" && scheme != "udp" {
		// Resilient out of the box: outlier detection is on by default;
		// up to two retries on another endpoint, on the statuses of an
		// origin that could not serve.
		cfg.Limits.MaxAttempts = 3
		cfg.Clusters[0].RetryOn = []int{502, 503, 504}
		// Small setups have few requests in flight: when an endpoint
		// hangs, most of them wait on it together. Ten may retry at once
		// (a fifth of the requests in flight, past fifty).
		cfg.Clusters[0].RetryBudget.Min = 10
	}
	if *accessLog {
		cfg.AccessLog = config.AccessLogStderr
	}
	cfg.Admin.Address = config.AdminOff
	if *adminFlag != "" {
		if !config.AdminLoopback(*adminFlag) {
			fmt.Fprintf(stderr, "strait proxy: --admin %q: want a loopback address (beyond loopback the admin API needs a token: use a config file)\n", *adminFlag)
			return 2
		}
		cfg.Admin.Address = *adminFlag
	}
	return serve(cfg, runOptions{pidFile: *pidFile}, stdout, stderr)
}

// accessLogger returns the logger for the access log's lines, and the
// file behind it if there is one (to reopen on SIGUSR1, and close at
// exit).
func accessLogger(cfg *config.Config, stdout, stderr io.Writer) (*slog.Logger, *accesslog.File, error) {
	var w io.Writer
	var file *accesslog.File
	switch where := cfg.AccessLog; where {
	case "", config.AccessLogStderr:
		if cfg.AccessLogFormat == "" && len(cfg.AccessLogFields) == 0 && (cfg.LogLevel == "" || cfg.LogLevel == "info" || cfg.LogLevel == "debug") {
			return nil, nil, nil // with the error log, in its handler
		}
		w = stderr
	case config.AccessLogStdout:
		w = stdout
	default:
		f, err := accesslog.OpenFile(string(where))
		if err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return nil, nil, fmt.Errorf("access_log: cannot open %s: %w", where, err)
		}
		w, file = f, f
	}
	return slog.New(accesslog.NewHandler(w, cfg.AccessLogFormat, cfg.AccessLogFields)), file, nil
}

// runOptions are what serve takes from flags besides the config.
type runOptions struct {
	name    string // the config's file, config.DefaultName, or "" for the proxy command
	pidFile string
	watch   bool
}

// serve runs cfg until SIGINT or SIGTERM, then drains and exits 0. SIGHUP
// reloads the config file, SIGUSR2 upgrades to the binary at strait's
// path, SIGUSR1 reopens the access log.
func serve(cfg *config.Config, ro runOptions, stdout, stderr io.Writer) int {
	var level slog.Level // info, unless the config says
	level.UnmarshalText([]byte(cfg.LogLevel))
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	handoff, err := upgrade.Inherit()
	if err != nil {
		fmt.Fprintf(stderr, "strait: what the old process handed over: %v\n", err)
		return 1
	}
	access, accessFile, err := accessLogger(cfg, stdout, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "strait: %v\n", err)
		return 1
	}
	if accessFile != nil {
		defer accessFile.Close()
	}
	var metrics *observe.Metrics
	if lifecycle.AdminAddr(cfg) != "" {
		metrics = observe.NewMetrics()
	}
	tracer, err := observe.NewTracer(&cfg.Tracing, logger)
	if err != nil {
		fmt.Fprintf(stderr, "strait: %v\n", err)
		return 1
	}
	defer func() {
		// Export the spans still in the batch.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := tracer.Shutdown(ctx); err != nil {
			logger.Warn("tracing: spans lost at exit", "err", err)
		}
	}()
	o := lifecycle.Options{Name: ro.name, Logger: logger, Stderr: stderr, AccessLogger: access, Metrics: metrics, Tracer: tracer,
		Handoff: handoff, Notifier: sdnotify.New(os.Getenv), PIDFile: ro.pidFile}
	switch ro.name {
	case "":
	case config.DefaultName:
		o.Load = func() (*config.Config, error) { return config.Default(), nil }
	default:
		o.Load = func() (*config.Config, error) { return config.Load(ro.name) }
	}
	// Signals are caught before the process says it is ready: after an
	// upgrade a SIGHUP may come as soon as the pid file names this process
	// (systemd's ExecReload, logrotate), and Go's default for it is to exit.
	// They wait in the channel until the loop below.
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGHUP, syscall.SIGUSR2)
	proc := lifecycle.New(o)
	if err := proc.Start(cfg); err != nil {
		var le *lifecycle.ListenError
		if !errors.As(err, &le) {
			fmt.Fprintf(stderr, "strait: %v\n", err)
			return 1
		}
		// Someone trying strait on the default config learns which of its
		// fixed ports is taken, and how to do without it.
		whose := ""
		if ro.name == config.DefaultName {
			whose = "the default config's "
		}
		fmt.Fprintf(stderr, "strait: cannot start %s%s on %s: %s\n", whose, le.What, le.Addr, why(le.Err))
		if ro.name == config.DefaultName {
			fmt.Fprintf(stderr, "strait: %s; free those ports, or run a config of your own: strait run -c FILE (docs/config.md)\n", defaultPorts(cfg))
		}
		return 1
	}
	if err := proc.Ready(); err != nil {
		fmt.Fprintf(stderr, "strait: %v\n", err)
		proc.Stop(false)
		return 1
	}
	if ro.watch && o.Load != nil && ro.name != config.DefaultName {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go proc.Watch(ctx, ro.name, time.Second)
	}
	fmt.Fprintln(stderr, "strait: press Ctrl-C (or send SIGTERM) to stop")

	upgraded := make(chan error, 1)
	upgrading := false
	upgradeCtx, cancelUpgrade := context.WithCancel(context.Background())
	defer cancelUpgrade()
wait:
	for {
		select {
		case s := <-sig:
			switch s {
			case syscall.SIGUSR1:
				// logrotate moved the access log: write a new one.
				if accessFile != nil {
					if err := accessFile.Reopen(); err != nil {
						logger.Error("access_log: cannot reopen; lines go on to the old file", "path", string(cfg.AccessLog), "err", err)
					}
				}
			case syscall.SIGHUP:
				go proc.Reload("SIGHUP")
			case syscall.SIGUSR2:
				if upgrading {
					logger.Warn("upgrade: one is under way already")
					continue
				}
				upgrading = true
				go func() { upgraded <- proc.Upgrade(upgradeCtx) }()
			default:
				fmt.Fprintf(stderr, "strait: %v: draining\n", s)
				if upgrading {
					// Stop means stop: the new process is killed, unless it
					// was ready already, when it is told to stop too.
					proc.NotReady()
					cancelUpgrade()
					err := <-upgraded
					if err == nil {
						return stopBoth(proc, s, sig, logger, stderr)
					}
					logger.Info("upgrade: cancelled by the stop", "err", err)
				}
				break wait
			}
		case err := <-upgraded:
			upgrading = false
			if err != nil {
				logger.Error("upgrade failed; this process serves on", "err", err)
				continue
			}
			// A stop that came with the new process's readiness was meant
			// for the service: the new process gets it too.
			for pending := true; pending; {
				select {
				case s := <-sig:
					if s == syscall.SIGTERM || s == syscall.SIGINT {
						return stopBoth(proc, s, sig, logger, stderr)
					}
				default:
					pending = false
				}
			}
			fmt.Fprintln(stderr, "strait: upgraded: the new process serves; draining")
			go ignoreWhileDraining(sig, logger)
			if err := proc.Stop(true); err != nil {
				fmt.Fprintf(stderr, "strait: %v\n", err)
			}
			fmt.Fprintln(stderr, "strait: stopped")
			return 0
		case err := <-proc.Errors():
			fmt.Fprintf(stderr, "strait: %v\n", err)
			proc.Stop(false)
			return 1
		}
	}
	code := 0
	if err := proc.Stop(false); err != nil {
		fmt.Fprintf(stderr, "strait: %v\n", err)
		code = 1
	}
	fmt.Fprintln(stderr, "strait: stopped")
	return code
}

// stopBoth stops the process an upgrade just made ready, with the signal
// s that came during the upgrade, and this one.
func stopBoth(proc *lifecycle.Process, s os.Signal, sig <-chan os.Signal, logger *slog.Logger, stderr io.Writer) int {
	logger.Warn("upgrade: the new process became ready as the stop came; it is stopped too", "signal", s.String())
	proc.StopNew(s.(syscall.Signal))
	go ignoreWhileDraining(sig, logger)
	proc.Stop(true)
	fmt.Fprintln(stderr, "strait: stopped")
	return 0
}

// ignoreWhileDraining logs the signals an old process gets while it
// drains after handing over: the new process is the service now, and a
// SIGTERM sent to hurry the old one (as nginx's upgrade procedure has it)
// must not stop the new one.
func ignoreWhileDraining(sig <-chan os.Signal, logger *slog.Logger) {
	for s := range sig {
		logger.Warn("this process has handed over to a new one and drains; signal ignored (send it to the pid in the pid file)", "signal", s.String())
	}
}

// why is the reason a listen failed, without the address and system call
// that the message around it names already: "address already in use".
func why(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// defaultPorts says which addresses the default config, cfg, listens on.
func defaultPorts(cfg *config.Config) string {
	var ls, ds []string
	for _, l := range cfg.Listeners {
		ls = append(ls, l.Address)
	}
	if a := lifecycle.AdminAddr(cfg); a != "" {
		ls = append(ls, a+" (admin)")
	}
	for _, d := range cfg.DemoOrigins {
		ds = append(ds, d.Address)
	}
	return fmt.Sprintf("the embedded default config listens on %s and starts demo origins on %s",
		strings.Join(ls, ", "), strings.Join(ds, " and "))
}
