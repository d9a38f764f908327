// Package lifecycle runs strait's config in a process and changes it
// without dropping a request.
//
// A reload builds the new config whole beside the running one (clusters,
// TLS, servers, new listeners bound) and only then swaps: a listener
// whose server is unchanged keeps it, and its socket, and takes the new
// routes at once; one whose server changed hands its socket to a new
// server while the old one drains; clusters whose config is unchanged
// keep their health, ejections and pooled connections. A binary upgrade
// hands every listening socket to a new process of the binary, waits
// until it is ready, then drains. A stop turns /ready to 503, waits the
// drain delay, and drains.
package lifecycle

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/internal/admin"
	"github.com/straitproxy/strait/internal/demo"
	"github.com/straitproxy/strait/internal/gateway"
	"github.com/straitproxy/strait/internal/observe"
	"github.com/straitproxy/strait/internal/sdnotify"
	"github.com/straitproxy/strait/internal/tcpproxy"
	"github.com/straitproxy/strait/internal/udpproxy"
	"github.com/straitproxy/strait/internal/udpxdp"
	"github.com/straitproxy/strait/internal/upgrade"
	"github.com/straitproxy/strait/proxy"
	"golang.org/x/sys/unix"
)

// Options are what a Process runs with besides its config.
type Options struct {
	// Name is the config file's, for messages.
	Name   string
	Logger *slog.Logger
	// Stderr gets the lines a person starting strait reads: where it
	// listens.
	Stderr io.Writer
	// AccessLogger is the servers' Options.AccessLogger.
	AccessLogger *slog.Logger
	Metrics      *observe.Metrics // nil: no admin API
	Tracer       *observe.Tracer
	// Load reads the config file again, for a reload; nil: the config
	// has no file (the proxy command), and reloads are refused.
	Load func() (*config.Config, error)
	// Handoff is what a parent process handed over in an upgrade.
	Handoff  *upgrade.Handoff
	Notifier *sdnotify.Notifier
	// PIDFile, if set, gets the pid once the process is ready.
	PIDFile string
	// UpgradeTimeout bounds how long a new process may take to be ready
	// (default 1 minute).
	UpgradeTimeout time.Duration
}

// Process is a running config.
type Process struct {
	o Options

	mu      sync.Mutex // one change at a time: reload, upgrade, stop
	cfg     *config.Config
	gw      *gateway.Gateway
	live    map[string]*live            // by liveKey
	sockets map[string]*net.TCPListener // every listening stream socket, by socketName
	packets map[string]*net.UDPConn     // every UDP socket listened on, by socketName
	udpFeat udpproxy.Features           // what the kernel offers UDP
	probed  bool                        // udpFeat is known
	// udpDraining are the udp servers a reload replaced, by address,
	// still relaying their flows' replies on the listener's sockets.
	udpMu       sync.Mutex
	udpDraining map[string][]*udpproxy.Server
	// xdp is the UDP fast path's program, loaded for the first udp
	// listener that asks for it (nil before, or if it cannot load).
	xdp     *udpxdp.Path
	api     *admin.API
	adminHS *http.Server
	demos   []*demo.Origin
	// retiring are servers a reload replaced or removed, draining.
	retiring sync.WaitGroup
	// upgrading: a binary upgrade is under way (reloads wait for its
	// end); handedOver: it succeeded, and this process only drains.
	upgrading, handedOver bool
	newPID                int // the process handed over to
	errc                  chan error
}

// live is a listener being served: the server and the socket it accepts
// on.
type live struct {
	l      gateway.Listener
	srv    server // *proxy.Server, *tcpproxy.Server for kind tcp, udpServer for kind udp
	sock   *net.TCPListener
	udp    []*net.UDPConn // kind udp's sockets, instead of sock
	served chan struct{}  // closed when Serve has returned
}

// liveKey names a live listener: its address, which a udp listener may
// share with a stream one.
func liveKey(l *gateway.Listener) string {
	if l.UDP != nil {
		return "udp " + l.Address
	}
	return l.Address
}

// closeSockets closes lv's sockets.
func (lv *live) closeSockets() {
	if lv.sock != nil {
		lv.sock.Close()
	}
	for _, c := range lv.udp {
		c.Close()
	}
}

// udpServer is a udpproxy.Server as a server: Serve is not called
// through it.
type udpServer struct{ *udpproxy.Server }

func (udpServer) Serve(net.Listener) error { panic("lifecycle: a udp server serves its own sockets") }

// server serves a listener: HTTP's proxy.Server, or tcpproxy's relays.
type server interface {
	Serve(net.Listener) error
	Shutdown(context.Context) error
}

// ListenError is a listening socket that could not be made.
type ListenError struct {
	What, Addr string // "listener NAME", "admin listener", "demo origin NAME"
	Err        error
}

func (e *ListenError) Error() string {
	return fmt.Sprintf("cannot start %s on %s: %v", e.What, e.Addr, e.Err)
}
func (e *ListenError) Unwrap() error { return e.Err }

// socketName names a listening socket to a new process: its kind and
// address as configured.
func socketName(kind, addr string) string { return kind + " " + addr }

// New returns a Process that will run with o.
func New(o Options) *Process {
	if o.UpgradeTimeout <= 0 {
		o.UpgradeTimeout = time.Minute
	}
	if o.Handoff == nil {
		o.Handoff, _ = upgrade.Inherit()
	}
	return &Process{o: o, live: make(map[string]*live), sockets: make(map[string]*net.TCPListener),
		packets: make(map[string]*net.UDPConn), errc: make(chan error, 8)}
}

// Errors reports listeners that failed while serving.
func (p *Process) Errors() <-chan error { return p.errc }

// Start runs cfg: demo origins, listeners, the admin API. On error what
// it started is stopped.
func (p *Process) Start(cfg *config.Config) (err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer func() {
		if err != nil {
			p.closeAll()
		}
	}()
	for _, d := range cfg.DemoOrigins {
		ln, err := p.listen("demo", d.Address)
		if err != nil {
			return &ListenError{"demo origin " + d.Name, d.Address, err}
		}
		p.demos = append(p.demos, demo.Serve(d.Name, ln))
	}
	gw, err := gateway.Build(cfg, p.o.Logger, gateway.Observe{Metrics: p.o.Metrics, Tracer: p.o.Tracer}, nil)
	if err != nil {
		return err
	}
	p.gw, p.cfg = gw, cfg
	p.probeUDP(cfg)
	if f := p.o.Handoff.File(stateFile); f != nil {
		p.takeState(f)
	}
	for _, l := range gw.Listeners {
		lv, err := p.newLive(l, nil)
		if err != nil {
			return err
		}
		p.live[liveKey(&l)] = lv
	}
	for _, lv := range p.live {
		p.serve(lv)
	}
	if m := p.o.Metrics; m != nil {
		m.SetClusters(gw.Clusters)
		m.SetPool(gw.Options.Pool)
		m.SetACME(gw.ACME())
		if err := p.startAdmin(cfg); err != nil {
			return err
		}
	}
	return nil
}

// Ready says the process serves: to a parent waiting in an upgrade, to
// systemd, in the pid file, and on /ready.
func (p *Process) Ready() error {
	if err := p.o.Handoff.Ready(); err != nil {
		return fmt.Errorf("telling the old process: %w", err)
	}
	if p.o.PIDFile != "" {
		if err := upgrade.WritePIDFile(p.o.PIDFile, os.Getpid()); err != nil {
			return fmt.Errorf("pid file: %w", err)
		}
	}
	if p.api != nil {
		p.api.SetReady(true)
	}
	if !p.o.Handoff.Parent() {
		// After an upgrade the old process names this one to systemd
		// (MAINPID=), which was ready already.
		p.o.Notifier.Ready("serving")
	}
	return nil
}

// listen returns the socket an old process handed over for kind and
// addr, or a new one.
func (p *Process) listen(kind, addr string) (*net.TCPListener, error) {
	name := socketName(kind, addr)
	ln, ok, err := p.o.Handoff.Listener(name)
	if err != nil {
		return nil, err
	}
	if !ok {
		if ln, err = proxy.Listen(context.Background(), "tcp", addr); err != nil {
			return nil, err
		}
	}
	tl, ok := ln.(*net.TCPListener)
	if !ok {
		ln.Close()
		return nil, fmt.Errorf("%s is not a TCP socket", name)
	}
	p.sockets[name] = tl
	return tl, nil
}

// probeUDP learns, once, what the kernel offers UDP relays, and says it
// if cfg has a udp listener.
func (p *Process) probeUDP(cfg *config.Config) {
	if p.probed || !slices.ContainsFunc(cfg.Listeners, func(l config.Listener) bool { return l.Kind == "udp" }) {
		return
	}
	p.probed = true
	feat, err := udpproxy.Probe()
	if err != nil {
		p.o.Logger.Warn("udp: cannot probe the kernel's UDP offloads; relaying without GSO and GRO", "err", err)
	}
	p.udpFeat = feat
	p.o.Logger.Info("udp: kernel offloads", "gso", feat.GSO, "gro", feat.GRO && feat.GSO)
}

// listenUDP returns the sockets, sharing addr with SO_REUSEPORT, that an
// old process handed over, and new ones up to n: all that were handed
// over are read (a socket left out would take its share of the clients
// and have no reader), and new ones join them. A socket bound where
// another udp listener's is (the same address written another way) is
// an error: the kernel would split the clients between them.
func (p *Process) listenUDP(addr string, n int) ([]*net.UDPConn, error) {
	var conns []*net.UDPConn
	fail := func(err error) ([]*net.UDPConn, error) {
		for i, c := range conns {
			c.Close()
			delete(p.packets, socketName("udp", fmt.Sprintf("%s #%d", addr, i)))
		}
		return nil, err
	}
	bind := addr
	for i := 0; ; i++ {
		name := socketName("udp", fmt.Sprintf("%s #%d", addr, i))
		c, ok, err := p.o.Handoff.PacketConn(name)
		if err != nil {
			return fail(err)
		}
		if !ok {
			if i >= n {
				break
			}
			lc := net.ListenConfig{Control: reusePort}
			pc, err := lc.ListenPacket(context.Background(), "udp", bind)
			if err != nil {
				return fail(err)
			}
			c = pc.(*net.UDPConn)
		}
		if i == 0 {
			bound := c.LocalAddr().String()
			for other, oc := range p.packets {
				if oc.LocalAddr().String() == bound && !strings.HasPrefix(other, socketName("udp", addr+" #")) {
					c.Close()
					return fail(fmt.Errorf("%s is bound already, by %s", bound, other))
				}
			}
		}
		bind = c.LocalAddr().String() // port 0: the others join the first's port
		p.packets[name] = c
		conns = append(conns, c)
	}
	return conns, nil
}

// reusePort sets SO_REUSEPORT: a udp listener's sockets share its
// address, each read by a loop of its own.
func reusePort(_, _ string, rc syscall.RawConn) error {
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); cerr != nil {
		return cerr
	}
	return err
}

// forgetUDP forgets addr's udp sockets as the process's own (they close
// with the server that drains on them).
func (p *Process) forgetUDP(addr string) {
	for name := range p.packets {
		if strings.HasPrefix(name, socketName("udp", addr+" #")) {
			delete(p.packets, name)
		}
	}
}

// newUDPLive makes the server of l, a udp listener, on socks or on
// sockets of its own.
func (p *Process) newUDPLive(l gateway.Listener, socks []*net.UDPConn) (*live, error) {
	o := *l.UDP
	o.Logger = p.o.Logger
	if p.gw.Options.AccessLog {
		o.AccessLog = cmp.Or(p.o.AccessLogger, p.o.Logger)
	}
	own := socks == nil // made here, closed here if the server cannot be
	if own {
		var err error
		if socks, err = p.listenUDP(l.Address, l.Sockets); err != nil {
			return nil, &ListenError{"listener " + l.Name, l.Address, err}
		}
		fmt.Fprintf(p.o.Stderr, "strait: listening on udp://%s (%s, %d sockets)\n", socks[0].LocalAddr(), l.Name, len(socks))
	} else if len(socks) != l.Sockets {
		p.o.Logger.Warn("udp: a reload does not change how many sockets a listener has; an upgrade or a restart does",
			"listener", l.Name, "sockets", len(socks), "configured", l.Sockets)
	}
	if len(o.XDPInterfaces) > 0 {
		o.XDP = p.loadXDP(o.MaxFlows)
	}
	srv, err := udpproxy.New(o, socks, p.udpFeat)
	if err != nil {
		if own {
			for _, c := range socks {
				c.Close()
			}
			p.forgetUDP(l.Address)
		}
		return nil, &ListenError{"listener " + l.Name, l.Address, err}
	}
	return &live{l: l, srv: udpServer{srv}, udp: socks, served: make(chan struct{})}, nil
}

// loadXDP returns the process's XDP program, loading it the first time
// with a flow table for four times maxFlows flows (reloads and other
// listeners share it), or nil if it cannot load (logged: flows stay in
// user space).
func (p *Process) loadXDP(maxFlows int) *udpxdp.Path {
	if p.xdp != nil {
		return p.xdp
	}
	x, err := udpxdp.Load(4*max(cmp.Or(maxFlows, udpproxy.DefaultMaxFlows), 4096), p.o.Logger)
	if err != nil {
		p.o.Logger.Warn("udp: the XDP program cannot load; flows stay in user space", "err", err)
		return nil
	}
	p.xdp = x
	if p.o.Metrics != nil {
		p.o.Metrics.SetXDP(x.Counters)
	}
	return x
}

// newLive makes the server of l, on sock or on a socket of its own.
func (p *Process) newLive(l gateway.Listener, sock *net.TCPListener) (*live, error) {
	if l.UDP != nil {
		return p.newUDPLive(l, nil)
	}
	if l.TCP != nil {
		o := *l.TCP
		o.ProxyProtocol = l.ProxyProtocol
		o.Logger = p.o.Logger
		if p.gw.Options.AccessLog { // access_log set, as for HTTP
			o.AccessLog = cmp.Or(p.o.AccessLogger, p.o.Logger)
		}
		return p.liveOn(l, tcpproxy.New(o), sock, "tcp")
	}
	o := p.gw.Options
	o.AccessLogger = p.o.AccessLogger
	o.Upgrades = l.Upgrades
	o.HTTP2.Off, o.HTTP2.Only = l.NoHTTP2, l.OnlyHTTP2
	o.ProxyProtocol = l.ProxyProtocol
	if l.TLS != nil {
		o.TLS, o.Timeouts.Handshake = l.TLS.TLS(), l.HandshakeTimeout
	}
	srv, err := proxy.New(l.Phases, o)
	if err != nil {
		return nil, err
	}
	scheme := "http"
	if l.TLS != nil {
		scheme = "https"
	}
	return p.liveOn(l, srv, sock, scheme)
}

// liveOn is srv serving l on sock, or on a socket of its own.
func (p *Process) liveOn(l gateway.Listener, srv server, sock *net.TCPListener, scheme string) (*live, error) {
	if sock == nil {
		var err error
		// Every stream listener's socket is named "http": a listener whose
		// kind a reload changes keeps its socket.
		if sock, err = p.listen("http", l.Address); err != nil {
			return nil, &ListenError{"listener " + l.Name, l.Address, err}
		}
		fmt.Fprintf(p.o.Stderr, "strait: listening on %s://%s (%s)\n", scheme, sock.Addr(), l.Name)
	}
	return &live{l: l, srv: srv, sock: sock, served: make(chan struct{})}, nil
}

// serve accepts on lv's socket with its server, in the background.
func (p *Process) serve(lv *live) {
	if m := p.o.Metrics; m != nil {
		switch srv := lv.srv.(type) {
		case *proxy.Server:
			m.AddServer(lv.l.Name, srv.Counters())
		case *tcpproxy.Server:
			m.AddTCP(lv.l.Name, &srv.Stats)
		case udpServer:
			m.AddUDP(lv.l.Name, &srv.Stats)
		}
	}
	if u, ok := lv.srv.(udpServer); ok {
		go func() {
			defer close(lv.served)
			if err := u.Server.Serve(); err != nil {
				p.errc <- fmt.Errorf("listener %s: %w", lv.l.Name, err)
			}
		}()
		return
	}
	lv.sock.SetDeadline(time.Time{}) // a gate before it may have left one
	g := &gate{TCPListener: lv.sock}
	go func() {
		defer close(lv.served)
		if err := lv.srv.Serve(g); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			p.errc <- fmt.Errorf("listener %s: %w", lv.l.Name, err)
		}
	}()
}

// gate is a listening socket as one server sees it: closing it ends that
// server's accepting, and leaves the socket open for the server or
// process that takes it over (the kernel drops the connections queued on
// a socket that closes).
type gate struct {
	*net.TCPListener
	once sync.Once
}

func (g *gate) Close() error {
	g.once.Do(func() { g.SetDeadline(time.Unix(1, 0)) })
	return nil
}

// retire drains lv's server in the background, for at most grace, and
// then, with closeSocket, closes its socket. It returns once the server
// has stopped accepting, so that another may take the socket.
func (p *Process) retire(lv *live, grace time.Duration, closeSocket bool) {
	p.retiring.Add(1)
	go func() {
		defer p.retiring.Done()
		d := lv.grace(grace)
		u, isUDP := lv.srv.(udpServer)
		switch {
		case isUDP && closeSocket:
			// A removed udp listener stops at once, and so do the
			// servers it replaced: their sockets, bound and no longer
			// read, would take their share of new clients (of a
			// listener added back at the address, too) while they
			// drained.
			d = 0
			p.stopDrainingUDP(lv.l.Address)
		case isUDP:
			p.drainingUDP(lv.l.Address, u.Server, true)
			defer p.drainingUDP(lv.l.Address, u.Server, false)
		}
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		lv.srv.Shutdown(ctx)
		if m := p.o.Metrics; m != nil {
			switch srv := lv.srv.(type) {
			case *proxy.Server:
				m.RetireServer(lv.l.Name, srv.Counters())
			case *tcpproxy.Server:
				m.RetireTCP(lv.l.Name, &srv.Stats)
			case udpServer:
				m.RetireUDP(lv.l.Name, &srv.Stats)
			}
		}
		if lv.udp != nil && closeSocket {
			// Replies of the flows that drained went out on them.
			<-lv.served
			lv.closeSockets()
		}
	}()
	if lv.udp != nil {
		return // the new server reads the sockets already; the old stopped
	}
	<-lv.served
	if closeSocket {
		lv.sock.Close()
	}
}

// drainingUDP adds srv to the udp servers draining at addr, or takes it
// out.
func (p *Process) drainingUDP(addr string, srv *udpproxy.Server, add bool) {
	p.udpMu.Lock()
	defer p.udpMu.Unlock()
	if add {
		if p.udpDraining == nil {
			p.udpDraining = make(map[string][]*udpproxy.Server)
		}
		p.udpDraining[addr] = append(p.udpDraining[addr], srv)
		return
	}
	p.udpDraining[addr] = slices.DeleteFunc(p.udpDraining[addr], func(s *udpproxy.Server) bool { return s == srv })
}

// stopDrainingUDP ends the drain of the udp servers draining at addr.
func (p *Process) stopDrainingUDP(addr string) {
	p.udpMu.Lock()
	defer p.udpMu.Unlock()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for _, srv := range p.udpDraining[addr] {
		go srv.Shutdown(done) // its drain's end, now
	}
}

// grace is how long lv's connections may go on once it stops accepting:
// a TCP listener's drain_timeout, else the process's grace.
func (lv *live) grace(process time.Duration) time.Duration {
	return cmp.Or(lv.l.DrainTimeout, process)
}

func (p *Process) grace() time.Duration {
	return cmp.Or(time.Duration(p.cfg.Timeouts.Grace), proxy.DefaultGracePeriod)
}

// Reload loads the config file again and runs it; on any error the
// running config stays, and the errors are logged, counted and shown by
// the admin API. source says who asked (SIGHUP, admin, watch).
func (p *Process) Reload(source string) admin.ReloadResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	res := admin.ReloadResult{Time: time.Now(), Source: source}
	if p.cfg == nil {
		return p.busy(res, "the process is stopping")
	}
	if p.o.Load == nil {
		return p.busy(res, "no config file to reload: strait runs from flags")
	}
	switch {
	case p.handedOver:
		return p.busy(res, "this process has handed over to a new one after a binary upgrade, and drains: reload that one")
	case p.upgrading:
		return p.busy(res, "a binary upgrade is under way: the new process reads the file; reload after it")
	}
	p.o.Notifier.Reloading()
	defer p.o.Notifier.Ready("serving")
	cfg, err := p.o.Load()
	if err != nil {
		return p.reloaded(res, err)
	}
	p.keepRestartOnly(cfg)
	gw, err := gateway.Build(cfg, p.o.Logger, gateway.Observe{Metrics: p.o.Metrics, Tracer: p.o.Tracer}, p.gw)
	if err != nil {
		return p.reloaded(res, err)
	}

	// Everything that can fail, before anything changes: new servers,
	// new sockets.
	prevGW := p.gw
	p.gw = gw // newLive makes servers with the new options
	p.probeUDP(cfg)
	type change struct {
		old, next *live
	}
	var changes []change
	var swaps []gateway.Listener
	fail := func(err error) admin.ReloadResult {
		for _, c := range changes {
			// A server that never served ends at once; a udp one holds
			// duplicates of its sockets (and the XDP program's
			// interfaces) until it does.
			c.next.srv.Shutdown(context.Background())
			if c.old == nil {
				c.next.closeSockets()
				delete(p.sockets, socketName("http", c.next.l.Address))
				p.forgetUDP(c.next.l.Address)
			}
		}
		p.gw = prevGW
		gw.Retire(prevGW)
		return p.reloaded(res, err)
	}
	for _, l := range gw.Listeners {
		old := p.live[liveKey(&l)]
		if old != nil && old.l.SameServer(&l) {
			swaps = append(swaps, l)
			continue
		}
		var next *live
		var err error
		if l.UDP != nil {
			var socks []*net.UDPConn
			if old != nil {
				socks = old.udp
			}
			next, err = p.newUDPLive(l, socks)
		} else {
			var sock *net.TCPListener
			if old != nil {
				sock = old.sock
			}
			next, err = p.newLive(l, sock)
		}
		if err != nil {
			return fail(err)
		}
		changes = append(changes, change{old, next})
	}

	// The swap: nothing fails from here.
	grace := p.grace()
	next := make(map[string]*live, len(gw.Listeners))
	for _, l := range swaps {
		lv := p.live[liveKey(&l)]
		if l.TCP != nil || l.UDP != nil {
			next[liveKey(&l)] = lv // the same config and cluster
			continue
		}
		if !lv.l.SameConfig(&l) {
			res.Changes = append(res.Changes, "listener "+l.Name+": new routes")
		}
		// The server runs the phases of its own Switch: the new routes go
		// there; the rest of the new listener is the running one's.
		sw, phases := lv.l.Routes, lv.l.Phases
		sw.Take(l.Routes)
		lv.l = l
		lv.l.Routes, lv.l.Phases = sw, phases
		next[liveKey(&l)] = lv
	}
	for _, c := range changes {
		if c.old != nil {
			if c.old.l.Routes != nil && c.next.l.Routes != nil && c.old.l.SamePhases(&c.next.l) {
				// What the old server still serves while it drains (a
				// request on an idle keep-alive connection, an HTTP/2
				// stream opened before its GOAWAY) goes by the new routes.
				c.old.l.Routes.Take(c.next.l.Routes)
			}
			p.retire(c.old, grace, false)
			res.Changes = append(res.Changes, "listener "+c.next.l.Name+": a new server (its options changed); the old one drains")
		} else {
			res.Changes = append(res.Changes, "listener "+c.next.l.Name+": added")
		}
		p.serve(c.next)
		next[liveKey(&c.next.l)] = c.next
	}
	for key, lv := range p.live {
		if next[key] == nil {
			p.retire(lv, grace, true)
			if lv.udp != nil {
				p.forgetUDP(lv.l.Address)
			} else {
				delete(p.sockets, socketName("http", lv.l.Address))
			}
			res.Changes = append(res.Changes, "listener "+lv.l.Name+": removed; it drains")
		}
	}
	for _, name := range slices.Sorted(maps.Keys(gw.Clusters)) {
		if prevGW.Clusters[name] != gw.Clusters[name] {
			res.Changes = append(res.Changes, "cluster "+name+": new")
		}
	}
	for _, name := range slices.Sorted(maps.Keys(prevGW.Clusters)) {
		if gw.Clusters[name] != prevGW.Clusters[name] {
			res.Changes = append(res.Changes, "cluster "+name+": retired")
		}
	}
	p.live = next
	prevGW.Retire(gw)
	p.cfg = cfg
	if m := p.o.Metrics; m != nil {
		m.SetClusters(gw.Clusters)
		m.SetPool(gw.Options.Pool)
		m.SetACME(gw.ACME())
	}
	if p.api != nil {
		shown, err := showConfig(cfg)
		if err != nil {
			p.o.Logger.Warn("admin: cannot show the reloaded config", "err", err)
		}
		p.api.SetRunning(gw.Clusters, shown)
	}
	return p.reloaded(res, nil)
}

// busy refuses a reload that the process cannot make now, whatever the
// file says: logged and shown, not counted as a failed reload.
func (p *Process) busy(res admin.ReloadResult, why string) admin.ReloadResult {
	res.Errors, res.Conflict = []string{why}, true
	p.o.Logger.Warn("reload refused; the running config stays", "source", res.Source, "err", why)
	if p.api != nil {
		p.api.SetReloaded(res)
	}
	return res
}

// reloaded logs, counts and shows a reload's result.
func (p *Process) reloaded(res admin.ReloadResult, err error) admin.ReloadResult {
	res.OK = err == nil
	if err != nil {
		var es config.Errors
		if errors.As(err, &es) {
			for _, e := range es {
				res.Errors = append(res.Errors, e.Error())
			}
		} else {
			res.Errors = []string{cmp.Or(p.o.Name, "config") + ": " + err.Error()}
		}
		for _, e := range res.Errors {
			p.o.Logger.Error("reload refused; the running config stays", "source", res.Source, "err", e)
		}
	} else {
		p.o.Logger.Info("config reloaded", "source", res.Source, "changes", len(res.Changes))
		for _, c := range res.Changes {
			p.o.Logger.Info("reload: " + c)
		}
	}
	if p.o.Metrics != nil {
		p.o.Metrics.Reloaded(res.OK)
	}
	if p.api != nil {
		p.api.SetReloaded(res)
	}
	return res
}

// keepRestartOnly keeps in cfg what a reload cannot change in a running
// process (the admin listener, tracing, logs, demo origins), and warns
// when the file changed them: a restart or an upgrade applies them.
func (p *Process) keepRestartOnly(cfg *config.Config) {
	old := p.cfg
	for _, k := range []struct {
		key       string
		now, next any
	}{
		{"admin", &old.Admin, &cfg.Admin}, {"tracing", &old.Tracing, &cfg.Tracing},
		{"log_level", &old.LogLevel, &cfg.LogLevel}, {"access_log", &old.AccessLog, &cfg.AccessLog},
		{"access_log_format", &old.AccessLogFormat, &cfg.AccessLogFormat},
		{"access_log_fields", &old.AccessLogFields, &cfg.AccessLogFields},
		{"demo_origins", &old.DemoOrigins, &cfg.DemoOrigins},
	} {
		now, next := reflect.ValueOf(k.now).Elem(), reflect.ValueOf(k.next).Elem()
		if !reflect.DeepEqual(now.Interface(), next.Interface()) {
			p.o.Logger.Warn("reload: "+k.key+" changed; it takes effect at the next restart or binary upgrade", "key", k.key)
			next.Set(now)
		}
	}
}

// Stop drains and ends the process: with delay, /ready answers 503 while
// the listeners still accept (load balancers notice), then accepting
// stops, requests in flight finish within the grace period, and idle
// connections close. After an upgrade (upgraded), the new process has
// the sockets, and systemd is not told this one stops.
func (p *Process) Stop(upgraded bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cfg == nil {
		return nil
	}
	if upgraded {
		// The new process answers on the same sockets: this one must not
		// tell a load balancer's probe it is not ready, and its demo
		// origins leave their connections to the new process's.
		p.stopAdmin()
		for _, o := range p.demos {
			o.Handover()
		}
	}
	if !upgraded {
		p.api.SetReady(false)
		p.o.Notifier.Stopping()
		if d := time.Duration(p.cfg.Timeouts.DrainDelay); d > 0 {
			p.o.Logger.Info("draining: /ready answers 503; accepting for the drain delay", "drain_delay", d)
			time.Sleep(d)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.grace())
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for _, lv := range p.live {
		wg.Go(func() {
			grace := lv.grace(p.grace())
			ctx, cancel := context.WithTimeout(context.Background(), grace)
			defer cancel()
			err := lv.srv.Shutdown(ctx)
			if errors.Is(err, context.DeadlineExceeded) {
				p.o.Logger.Warn("grace period over: connections still open were closed", "listener", lv.l.Name, "grace", grace.String())
				return
			}
			if err != nil {
				mu.Lock()
				failed = cmp.Or(failed, fmt.Errorf("listener %s: %w", lv.l.Name, err))
				mu.Unlock()
			}
		})
	}
	for _, lv := range p.live {
		// Once no server accepts on it, this process's copy of the socket
		// goes: after an upgrade the new process holds its own (or has
		// no listener there, and the socket must refuse connections, not
		// queue them for no one).
		<-lv.served
		lv.closeSockets()
	}
	wg.Wait()
	p.retiring.Wait() // bounded by their own grace
	p.stopAdmin()
	for _, o := range p.demos {
		o.Stop(ctx)
	}
	p.closeAll()
	if !upgraded && p.o.PIDFile != "" {
		removeIfOurs(p.o.PIDFile)
	}
	p.cfg = nil
	return failed
}

// stopAdmin stops the admin API: calls in flight have a second to end
// (a /events stream would hold it for minutes).
func (p *Process) stopAdmin() {
	if p.adminHS == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if p.adminHS.Shutdown(ctx) != nil {
		p.adminHS.Close()
	}
	p.adminHS = nil
}

// closeAll closes every socket and stops the gateway.
func (p *Process) closeAll() {
	for _, s := range p.sockets {
		s.Close()
	}
	clear(p.sockets)
	for _, c := range p.packets {
		c.Close()
	}
	clear(p.packets)
	if p.xdp != nil {
		p.xdp.Close()
	}
	p.gw.Stop()
	if p.gw != nil {
		p.gw.Options.Pool.CloseIdle()
	}
}

// removeIfOurs removes the pid file if it names this process.
func removeIfOurs(path string) {
	b, err := os.ReadFile(path)
	if err == nil && string(b) == fmt.Sprintf("%d\n", os.Getpid()) {
		os.Remove(path)
	}
}
