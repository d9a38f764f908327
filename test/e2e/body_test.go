package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// echoHandler reads the whole request body, then sends it back without a
// Content-Length (so chunked), in pieces with a flush between them, and
// with a trailer X-Body-Sha256. It tells in X-Request-Framing how the body
// arrived ("chunked" or "length N").
func echoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), 400)
			return
		}
		framing := "length " + strconv.FormatInt(r.ContentLength, 10)
		if len(r.TransferEncoding) > 0 {
			framing = strings.Join(r.TransferEncoding, ",")
		}
		sum := sha256.Sum256(body)
		w.Header().Set("Trailer", "X-Body-Sha256")
		w.Header().Set("X-Request-Framing", framing)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(200)
		f := w.(http.Flusher)
		const pieces = 4
		for i := range pieces {
			w.Write(body[i*len(body)/pieces : (i+1)*len(body)/pieces])
			f.Flush()
		}
		w.Header().Set("X-Body-Sha256", hex.EncodeToString(sum[:]))
	})
}

// finalHead drops interim (1xx) heads from what curl -D wrote: curl sends
// Expect: 100-continue on its own for bodies over 1 MiB.
func finalHead(h []byte) []byte {
	for bytes.HasPrefix(h, []byte("HTTP/1.1 1")) {
		i := bytes.Index(h, []byte("\r\n\r\n"))
		if i < 0 {
			break
		}
		h = h[i+4:]
	}
	return h
}

// TestChunked sends bodies both ways through strait: chunked and
// Content-Length uploads from curl, chunked echoes with a trailer back.
func TestChunked(t *testing.T) {
	needTool(t, "curl")
	origin := startGoOrigin(t, echoHandler())
	px := startStrait(t, clusterYAML(origin), nil)
	dir := t.TempDir()

	check := func(t *testing.T, payload []byte, extra []string, wantFraming string) {
		in := writeFile(t, dir, "in-"+strings.ReplaceAll(t.Name(), "/", "_"), payload)
		out := filepath.Join(dir, "out-"+strings.ReplaceAll(t.Name(), "/", "_"))
		hdrs := out + ".headers"
		args := append([]string{"-o", out, "-D", hdrs, "--data-binary", "@" + in, "-H", "Content-Type: application/octet-stream"}, extra...)
		mustCurl(t, append(args, px.URL+"/echo")...)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("echo differs: got %d bytes (sha256 %x), sent %d (sha256 %x)", len(got), sha256.Sum256(got), len(payload), sha256.Sum256(payload))
		}
		h, _ := os.ReadFile(hdrs)
		head := strings.ToLower(string(finalHead(h)))
		if !strings.HasPrefix(head, "http/1.1 200") {
			t.Fatalf("response head %q", h)
		}
		if !strings.Contains(head, "transfer-encoding: chunked\r\n") {
			t.Errorf("response is not chunked downstream:\n%s", h)
		}
		if !strings.Contains(head, "x-request-framing: "+wantFraming+"\r\n") {
			t.Errorf("origin saw the request body framed otherwise than %q:\n%s", wantFraming, h)
		}
		sum := sha256.Sum256(payload)
		// curl's -D writes trailer fields after the head.
		if !strings.Contains(head, "x-body-sha256: "+hex.EncodeToString(sum[:])+"\r\n") {
			t.Errorf("trailer X-Body-Sha256 missing or wrong in what curl received:\n%s", h)
		}
	}

	t.Run("ChunkedUpload", func(t *testing.T) {
		check(t, randomBytes(3<<20+12345), []string{"-H", "Transfer-Encoding: chunked"}, "chunked")
	})
	t.Run("ChunkedUploadSmall", func(t *testing.T) {
		// Read whole before the exchange (request buffering), it goes
		// with its length.
		check(t, []byte("x"), []string{"-H", "Transfer-Encoding: chunked"}, "length 1")
	})
	t.Run("ChunkedUploadStdin", func(t *testing.T) {
		payload := randomBytes(1<<20 + 7)
		out := filepath.Join(dir, "stdin.out")
		// -T - reads stdin, size unknown: curl sends it chunked (as a PUT).
		r := runCurlStdin(t, bytes.NewReader(payload), "-o", out, "-D", out+".headers", "-T", "-", px.URL+"/echo")
		if r.ExitCode != 0 {
			t.Fatalf("curl -T -: exit %d: %s", r.ExitCode, r.Stderr)
		}
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, payload) {
			t.Fatalf("echo differs: %d bytes, sent %d", len(got), len(payload))
		}
		h, _ := os.ReadFile(out + ".headers")
		if !strings.Contains(strings.ToLower(string(finalHead(h))), "x-request-framing: chunked\r\n") {
			t.Errorf("origin did not see a chunked body:\n%s", h)
		}
	})
	t.Run("ContentLengthUpload", func(t *testing.T) {
		payload := randomBytes(4 << 20)
		check(t, payload, nil, "length "+strconv.Itoa(len(payload)))
	})
	t.Run("HTTP10Client", func(t *testing.T) {
		// An HTTP/1.0 client cannot take chunked: strait must relay the
		// chunked echo close-delimited.
		payload := randomBytes(300<<10 + 3)
		in := writeFile(t, dir, "http10.bin", payload)
		out := filepath.Join(dir, "http10.out")
		mustCurl(t, "--http1.0", "-o", out, "-D", out+".headers", "--data-binary", "@"+in, px.URL+"/echo")
		got, _ := os.ReadFile(out)
		if !bytes.Equal(got, payload) {
			t.Fatalf("echo to an HTTP/1.0 client: %d bytes, sent %d", len(got), len(payload))
		}
		h, _ := os.ReadFile(out + ".headers")
		head := strings.ToLower(string(h))
		if strings.Contains(head, "transfer-encoding") || !strings.Contains(head, "connection: close\r\n") {
			t.Errorf("response to HTTP/1.0 is not close-delimited:\n%s", h)
		}
	})
	t.Run("GoClientTrailer", func(t *testing.T) {
		// The same through net/http's client, which exposes trailers.
		payload := randomBytes(200 << 10)
		req, _ := http.NewRequest("POST", px.URL+"/echo", io.NopCloser(bytes.NewReader(payload)))
		req.ContentLength = -1 // chunked
		resp, err := newClient(true).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil || !bytes.Equal(got, payload) {
			t.Fatalf("echo: %d bytes, err %v; sent %d", len(got), err, len(payload))
		}
		sum := sha256.Sum256(payload)
		if tr := resp.Trailer.Get("X-Body-Sha256"); tr != hex.EncodeToString(sum[:]) {
			t.Fatalf("trailer X-Body-Sha256 = %q, want %x", tr, sum)
		}
	})
}

// TestExpectContinue: a client that asks for 100-continue gets it from
// strait at once, not after curl's one-second wait.
func TestExpectContinue(t *testing.T) {
	needTool(t, "curl")
	origin := startGoOrigin(t, echoHandler())
	px := startStrait(t, clusterYAML(origin), nil)
	dir := t.TempDir()
	payload := randomBytes(1 << 20)
	in := writeFile(t, dir, "body.bin", payload)
	out := filepath.Join(dir, "out.bin")
	// Make sure curl waits at most its default 1 s for the 100, so that a
	// missing 100 Continue shows as a slow call.
	r := mustCurl(t, "-v", "-o", out, "-H", "Expect: 100-continue", "--expect100-timeout", "1",
		"--data-binary", "@"+in, px.URL+"/echo")
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo differs: %d bytes, sent %d", len(got), len(payload))
	}
	if !strings.Contains(r.Stderr, "< HTTP/1.1 100 Continue") {
		t.Errorf("curl did not receive HTTP/1.1 100 Continue:\n%s", tail(r.Stderr, 30))
	}
	if r.Elapsed > 700*time.Millisecond {
		t.Errorf("the upload took %v: curl waited for a 100 Continue that did not come in time", r.Elapsed)
	}
	t.Logf("1 MiB POST with Expect: 100-continue took %v", r.Elapsed)
}
