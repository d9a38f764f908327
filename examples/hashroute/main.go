// Command hashroute is a custom proxy that sends each user to the same
// upstream: it picks from a cluster by consistent hashing (nginx's ring)
// on the X-User field, with strait's outlier ejection and retries, and
// drains an upstream on SIGUSR1 (to take it out for maintenance).
//
//	go run ./examples/hashroute -listen 127.0.0.1:8080 -upstream 127.0.0.1:9081 -upstream 127.0.0.1:9082
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/straitproxy/strait/cluster"
	"github.com/straitproxy/strait/config"
	"github.com/straitproxy/strait/proxy"
)

// phases sends requests to c, one cluster.Call per request in
// Session.Ctx.
func phases(c *cluster.Cluster) proxy.Phases {
	call := func(s *proxy.Session) *cluster.Call { return s.Ctx.(*cluster.Call) }
	return proxy.Phases{
		NewCtx:       func() any { return new(cluster.Call) },
		UpstreamPeer: func(s *proxy.Session) (*proxy.Peer, error) { return c.Peer(s, call(s)) },
		FailToConnect: func(s *proxy.Session, _ *proxy.Peer, e *proxy.Error) *proxy.Error {
			return c.FailToConnect(s, call(s), e)
		},
		ErrorWhileProxy: func(s *proxy.Session, _ *proxy.Peer, e *proxy.Error) *proxy.Error {
			return c.ErrorWhileProxy(s, call(s), e)
		},
		Logging: func(s *proxy.Session, e *proxy.Error) { c.Done(s, call(s), e) },
	}
}

// users is the cluster: the ring hashes X-User, so a user stays on one
// upstream while the set of upstreams holds.
func users(upstreams []string) (*cluster.Cluster, error) {
	return cluster.New(&config.Cluster{
		Name:      "users",
		Endpoints: upstreams,
		Balance:   "ring_hash",
		HashKey:   "header:X-User",
	}, cluster.Options{})
}

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	drain := flag.String("drain", "", "upstream to drain on SIGUSR1 (and undrain on SIGUSR2)")
	var upstreams list
	flag.Var(&upstreams, "upstream", "an upstream host:port (repeat the flag)")
	flag.Parse()
	c, err := users(upstreams)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Stop()
	srv, err := proxy.New(phases(c), proxy.Options{})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := proxy.Listen(context.Background(), "tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGUSR1, syscall.SIGUSR2)
		for s := range sig {
			var err error
			if s == syscall.SIGUSR1 {
				err = c.Drain(*drain)
			} else {
				err = c.Undrain(*drain)
			}
			log.Printf("%v %s: %v; endpoints: %+v", s, *drain, err, c.Endpoints())
		}
	}()
	log.Printf("listening on %s", ln.Addr())
	log.Fatal(srv.Serve(ln))
}
