// Command connectwrap puts strait in front of the Connect conformance
// suite's reference server, for connectconformance's server mode
// (TestConnectConformance): it reads the runner's ServerCompatRequest,
// starts the reference server speaking gRPC over h2c, starts strait in
// front of it (TLS and client certificates as the request asks, gRPC-Web
// translated by a grpc_web route), and answers with strait's address. On
// SIGTERM it saves strait's metrics in the -out folder, so that the test
// can check what strait sent upstream, and stops both.
package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// The fields of ServerCompatRequest (connectrpc.conformance.v1) it reads.
type compatRequest struct {
	protocol, httpVersion uint64
	useTLS                bool
	clientCert            []byte
	receiveLimit          uint64
	cert, key             []byte // server_creds
}

func main() {
	straitBin := flag.String("strait", "", "the strait binary")
	refBin := flag.String("ref", "", "the referenceserver binary")
	out := flag.String("out", "", "where to write strait's metrics")
	flag.Parse()
	log.SetPrefix("connectwrap: ")
	in := bufio.NewReader(os.Stdin)
	raw, err := readFrame(in)
	if err != nil {
		log.Fatal(err)
	}
	req, err := parseRequest(raw)
	if err != nil {
		log.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "connectwrap")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The reference server speaks gRPC over h2c, whatever the client
	// speaks to strait.
	var up []byte
	up = protowire.AppendTag(up, 1, protowire.VarintType)
	up = protowire.AppendVarint(up, 2) // PROTOCOL_GRPC
	up = protowire.AppendTag(up, 2, protowire.VarintType)
	up = protowire.AppendVarint(up, 2) // HTTP_VERSION_2
	if req.receiveLimit > 0 {
		up = protowire.AppendTag(up, 6, protowire.VarintType)
		up = protowire.AppendVarint(up, req.receiveLimit)
	}
	ref := exec.Command(*refBin)
	ref.Stderr = os.Stderr
	refIn, _ := ref.StdinPipe()
	refOut, _ := ref.StdoutPipe()
	if err := ref.Start(); err != nil {
		log.Fatal(err)
	}
	defer ref.Process.Kill()
	writeFrame(refIn, up)
	resp, err := readFrame(bufio.NewReader(refOut))
	if err != nil {
		log.Fatalf("reference server: %v", err)
	}
	host, port := parseResponse(resp)
	if host == "" {
		host = "127.0.0.1"
	}

	listen, admin := freeAddr(), freeAddr()
	tlsConf := ""
	if req.useTLS {
		certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		os.WriteFile(certFile, req.cert, 0o600)
		os.WriteFile(keyFile, req.key, 0o600)
		tlsConf = fmt.Sprintf("\n    tls: {certificates: [{cert: %s, key: %s}]", certFile, keyFile)
		if len(req.clientCert) > 0 {
			caFile := filepath.Join(dir, "client-ca.pem")
			os.WriteFile(caFile, req.clientCert, 0o600)
			tlsConf += ", client_auth: required, client_ca: " + caFile
		}
		tlsConf += "}"
	}
	conf := fmt.Sprintf(`admin: {address: %s}
listeners:
  - address: %s%s
    routes: [{cluster: ref, grpc_web: {allow_origins: ["*"]}}]
clusters: [{name: ref, protocol: h2c, endpoints: ["%s"]}]
`, admin, listen, tlsConf, net.JoinHostPort(host, strconv.Itoa(int(port))))
	confFile := filepath.Join(dir, "strait.yaml")
	os.WriteFile(confFile, []byte(conf), 0o600)
	strait := exec.Command(*straitBin, "run", "-c", confFile)
	strait.Stderr = os.Stderr
	if err := strait.Start(); err != nil {
		log.Fatal(err)
	}
	defer strait.Process.Kill()
	if err := waitPort(listen, 10*time.Second); err != nil {
		log.Fatal(err)
	}

	var answer []byte
	answer = protowire.AppendTag(answer, 1, protowire.BytesType)
	answer = protowire.AppendString(answer, "127.0.0.1")
	answer = protowire.AppendTag(answer, 2, protowire.VarintType)
	_, p, _ := net.SplitHostPort(listen)
	pn, _ := strconv.Atoi(p)
	answer = protowire.AppendVarint(answer, uint64(pn))
	if req.useTLS {
		answer = protowire.AppendTag(answer, 3, protowire.BytesType)
		answer = protowire.AppendBytes(answer, req.cert)
	}
	writeFrame(os.Stdout, answer)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	if *out != "" {
		if r, err := http.Get("http://" + admin + "/metrics"); err == nil {
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			name := fmt.Sprintf("metrics-proto%d-http%d-tls%v-%d.txt", req.protocol, req.httpVersion, req.useTLS, os.Getpid())
			os.WriteFile(filepath.Join(*out, name), b, 0o644)
		}
	}
	strait.Process.Signal(syscall.SIGTERM)
	ref.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { strait.Wait(); ref.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
}

func readFrame(r io.Reader) ([]byte, error) {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	b := make([]byte, binary.BigEndian.Uint32(n[:]))
	_, err := io.ReadFull(r, b)
	return b, err
}

func writeFrame(w io.Writer, b []byte) {
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(b)))
	w.Write(n[:])
	w.Write(b)
}

func parseRequest(b []byte) (compatRequest, error) {
	var r compatRequest
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, errors.New("malformed ServerCompatRequest")
		}
		b = b[n:]
		switch {
		case typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return r, errors.New("malformed ServerCompatRequest")
			}
			b = b[n:]
			switch num {
			case 1:
				r.protocol = v
			case 2:
				r.httpVersion = v
			case 4:
				r.useTLS = v != 0
			case 6:
				r.receiveLimit = v
			}
		case typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return r, errors.New("malformed ServerCompatRequest")
			}
			b = b[n:]
			switch num {
			case 5:
				r.clientCert = v
			case 7: // TLSCreds
				for len(v) > 0 {
					f, _, k := protowire.ConsumeTag(v)
					if k < 0 {
						return r, errors.New("malformed TLSCreds")
					}
					val, m := protowire.ConsumeBytes(v[k:])
					if m < 0 {
						return r, errors.New("malformed TLSCreds")
					}
					if f == 1 {
						r.cert = val
					} else if f == 2 {
						r.key = val
					}
					v = v[k+m:]
				}
			}
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return r, errors.New("malformed ServerCompatRequest")
			}
			b = b[n:]
		}
	}
	return r, nil
}

func parseResponse(b []byte) (host string, port uint64) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return
		}
		switch num {
		case 1:
			v, _ := protowire.ConsumeString(b)
			host = v
		case 2:
			port, _ = protowire.ConsumeVarint(b)
		}
		b = b[m:]
	}
	return
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitPort(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("strait did not listen on %s: %w", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
