// Command headerroute is a custom proxy that picks its upstream by a request
// header: "X-Backend: green" goes to -green, anything else to -blue.
//
//	go run ./examples/headerroute -listen 127.0.0.1:8080 -blue 127.0.0.1:9081 -green 127.0.0.1:9082
package main

import (
	"context"
	"flag"
	"log"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/proxy"
)

// phases routes on X-Backend.
func phases(blue, green string) proxy.Phases {
	bluePeer, greenPeer := &proxy.Peer{Addr: blue}, &proxy.Peer{Addr: green}
	return proxy.Phases{
		UpstreamPeer: func(s *proxy.Session) (*proxy.Peer, error) {
			if header.EqualFold(s.Request.Header.Get("X-Backend"), "green") {
				return greenPeer, nil
			}
			return bluePeer, nil
		},
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on")
	blue := flag.String("blue", "127.0.0.1:9081", "default upstream")
	green := flag.String("green", "127.0.0.1:9082", "upstream for X-Backend: green")
	flag.Parse()
	srv, err := proxy.New(phases(*blue, *green), proxy.Options{})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := proxy.Listen(context.Background(), "tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s", ln.Addr())
	log.Fatal(srv.Serve(ln))
}
