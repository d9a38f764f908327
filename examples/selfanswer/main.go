// Command selfanswer is a custom proxy that answers some requests itself:
// /healthz gets "ok", requests without an API key get 401, and the rest go
// to the upstream with the key removed and a header added.
//
//	go run ./examples/selfanswer -listen 127.0.0.1:8080 -upstream 127.0.0.1:9081 -key secret
package main

import (
	"context"
	"flag"
	"log"

	"github.com/straitproxy/strait/proxy"
)

func phases(upstream, key string) proxy.Phases {
	peer := &proxy.Peer{Addr: upstream}
	return proxy.Phases{
		RequestFilter: func(s *proxy.Session) (bool, error) {
			switch {
			case s.Request.PathIs("/healthz"):
				return true, s.Respond(200, []byte("ok\n"), "Content-Type", "text/plain")
			case string(s.Request.Header.Get("X-Api-Key")) != key:
				return true, s.Respond(401, []byte("missing or wrong X-Api-Key\n"), "Content-Type", "text/plain")
			}
			return false, nil
		},
		UpstreamPeer: func(*proxy.Session) (*proxy.Peer, error) { return peer, nil },
		UpstreamRequestFilter: func(s *proxy.Session, req *proxy.Request) error {
			req.Header.Del("X-Api-Key") // the upstream never sees the key
			req.Header.Set("X-Authenticated", "yes")
			return nil
		},
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	upstream := flag.String("upstream", "127.0.0.1:9081", "upstream host:port")
	key := flag.String("key", "secret", "the API key clients must send")
	flag.Parse()
	srv, err := proxy.New(phases(*upstream, *key), proxy.Options{})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := proxy.Listen(context.Background(), "tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.Serve(ln))
}
