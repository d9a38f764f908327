package health

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/straitproxy/strait/internal/grpcwire"
)

// newGRPCClient returns the HTTP/2 client of gRPC checks: in cleartext
// with prior knowledge (h2c), or over TLS with cfg. A check is a few
// fields and one small message each way, off the data path: net/http's
// HTTP/2 client does it, and google.golang.org/grpc is not needed.
func newGRPCClient(cfg *tls.Config) *http.Client {
	var protos http.Protocols
	t := &http.Transport{Protocols: &protos, DisableCompression: true, MaxIdleConnsPerHost: 1}
	if cfg == nil {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP2(true)
		t.TLSClientConfig = cfg.Clone()
		t.TLSClientConfig.NextProtos = []string{"h2"}
	}
	return &http.Client{Transport: t}
}

// checkGRPC asks the endpoint at addr for its health
// (grpc.health.v1.Health/Check): it passes if the call succeeds with
// SERVING. Connections are kept between checks, as a gRPC client keeps
// its channel.
func (c *Checker) checkGRPC(addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	defer cancel()
	scheme := "http"
	if c.cfg.TLS != nil {
		scheme = "https"
	}
	req, err := http.NewRequestWithContext(ctx, "POST", scheme+"://"+addr+grpcwire.HealthCheckPath,
		bytes.NewReader(grpcwire.HealthRequest(c.cfg.Service)))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	req.Header.Set("User-Agent", "strait-health-check")
	if c.cfg.Host != "" {
		req.Host = c.cfg.Host
	}
	resp, err := c.grpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	st := resp.Trailer.Get("Grpc-Status")
	if st == "" {
		st = resp.Header.Get("Grpc-Status") // trailers-only
	}
	if code, ok := grpcwire.ParseStatus([]byte(st)); !ok || code != grpcwire.OK {
		msg := resp.Trailer.Get("Grpc-Message") + resp.Header.Get("Grpc-Message")
		return fmt.Errorf("grpc-status %q %s", st, strings.TrimSpace(msg))
	}
	status, err := grpcwire.HealthStatus(body)
	if err != nil {
		return err
	}
	if status != grpcwire.Serving {
		return fmt.Errorf("grpc health: status %d, not SERVING", status)
	}
	return nil
}
