package health

import (
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	grpchealth "google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestGRPCCheck: a gRPC check passes on SERVING only, for the server or a
// named service, and fails within its timeout against an origin that
// never answers.
func TestGRPCCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := grpchealth.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(ln)
	defer srv.Stop()
	hs.SetServingStatus("shop.Cart", healthpb.HealthCheckResponse_NOT_SERVING)

	check := func(service, addr string) error {
		c := &Checker{cfg: CheckConfig{Kind: "grpc", Timeout: 300 * time.Millisecond, Service: service}, grpc: newGRPCClient(nil)}
		defer c.grpc.CloseIdleConnections()
		return c.check(addr)
	}
	if err := check("", ln.Addr().String()); err != nil {
		t.Errorf("a SERVING server: %v", err)
	}
	if err := check("shop.Cart", ln.Addr().String()); err == nil {
		t.Error("a NOT_SERVING service passed")
	}
	if err := check("shop.Unknown", ln.Addr().String()); err == nil {
		t.Error("an unknown service passed")
	}

	// An HTTP/2 origin that takes the call and never answers.
	hang := make(chan struct{})
	defer close(hang)
	hln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	hsrv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-hang })}
	go hsrv.Serve(hln)
	defer hsrv.Close()
	start := time.Now()
	if err := check("", hln.Addr().String()); err == nil {
		t.Error("an origin that never answers passed")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the check took %v, past its 300 ms timeout", d)
	}
}
