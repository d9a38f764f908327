package http1_test

// Fuzz targets for the codec. Each target parses its input several times,
// with the bytes arriving in different ways (all at once, one at a time, in
// random pieces), and requires the same messages, bodies and error every
// time: a peer must not be able to change where a message ends by choosing
// how its bytes are split into TCP segments. The targets also check the
// invariants the codec promises for what it accepts, and that what it
// accepts survives being serialized again.
//
// The seeds are kept twice: in the tables below (f.Add) and as files under
// testdata/fuzz/<Target>/, which TestFuzzSeedFiles keeps in step with the
// tables (STRAIT_WRITE_FUZZ_SEEDS=1 rewrites them). Crashers the fuzzer finds
// are kept beside them as regression cases.

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/straitproxy/strait/header"
	"github.com/straitproxy/strait/internal/http1"
)

// ---------------------------------------------------------------------------
// Seeds

type fzSeed struct{ name, data string }

func fzPost(path, body string) string {
	return "POST " + path + " HTTP/1.1\r\nHost: example.com\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
		strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

func fzChunkedReq(body string) string {
	return "POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n" + body
}

func fzGet(extra string) string {
	return "GET / HTTP/1.1\r\nHost: example.com\r\n" + extra + "\r\n"
}

// fzBrowserGet is a request as a current browser sends it.
const fzBrowserGet = "GET /search?q=strait+proxy&lang=en HTTP/1.1\r\n" +
	"Host: www.example.com\r\n" +
	"Connection: keep-alive\r\n" +
	"sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n" +
	"sec-ch-ua-mobile: ?0\r\n" +
	"sec-ch-ua-platform: \"Linux\"\r\n" +
	"Upgrade-Insecure-Requests: 1\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n" +
	"Sec-Fetch-Site: none\r\n" +
	"Sec-Fetch-Mode: navigate\r\n" +
	"Sec-Fetch-User: ?1\r\n" +
	"Sec-Fetch-Dest: document\r\n" +
	"Accept-Encoding: gzip, deflate, br, zstd\r\n" +
	"Accept-Language: en-US,en;q=0.9,fr;q=0.8\r\n" +
	"Cookie: session=8f2a7c; theme=dark\r\n" +
	"If-None-Match: \"33a64df551425fcc55e4d42a148795d9f25f89d4\"\r\n" +
	"\r\n"

// fzLongChunkLine is a chunk-size line of n bytes (without its CRLF): the
// size "1" and one long extension.
func fzLongChunkLine(n int) string {
	return "1;x=" + strings.Repeat("a", n-4)
}

var fzRequestSeeds = []fzSeed{
	// Valid requests.
	{"get-minimal", fzGet("")},
	{"get-browser", fzBrowserGet},
	{"post-content-length", fzPost("/api/items", `{"name":"widget","qty":12}`)},
	{"post-content-length-zero", "POST /ping HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0\r\n\r\n"},
	{"post-chunked-ext-trailers", fzChunkedReq("5;name=value;q=\"quoted \\\" ext\"\r\nhello\r\n" +
		"6 ; foo = bar\r\n world\r\n0\r\nChecksum: abc123\r\nExpires: never\r\n\r\n")},
	{"post-chunked-uppercase-hex", fzChunkedReq("A\r\n0123456789\r\n00000\r\n\r\n")},
	{"pipelined-get-post-get", fzGet("") + fzPost("/a", "abc") +
		"GET /last HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"},
	{"pipelined-chunked-then-get", fzChunkedReq("3\r\nabc\r\n0\r\n\r\n") + fzGet("")},
	{"http10-keep-alive", "GET /index.html HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" +
		"GET /next.html HTTP/1.0\r\nHost: example.com\r\n\r\n"},
	{"http10-post", "POST /form HTTP/1.0\r\nContent-Length: 7\r\n\r\na=1&b=2"},
	{"absolute-form", "GET http://example.com:8080/path?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"},
	{"absolute-form-https-ipv6", "GET https://[2001:db8::1]:443/ HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n"},
	{"pipelined-absolute-then-origin", "GET http://first.example/ HTTP/1.1\r\nHost: first.example\r\n\r\n" +
		"GET /second HTTP/1.1\r\nHost: second.example\r\n\r\n"},
	{"options-asterisk", "OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"connect", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n"},
	{"connect-ipv6", "CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n"},
	{"expect-continue", "PUT /file HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndata"},
	{"websocket-upgrade", "GET /chat HTTP/1.1\r\nHost: example.com\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"},
	{"head", "HEAD /big HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"leading-empty-lines", "\r\n\r\n" + fzGet("")},
	{"obs-text-value", fzGet("X-Name: caf\xc3\xa9\r\n")},
	{"empty-value-and-ows", fzGet("X-Empty:\r\nX-Tabs:\t \tvalue \t\r\n")},
	{"host-empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n"},
	{"query-with-unencoded-chars", "GET /p?a={b}|c^d`e\\f HTTP/1.1\r\nHost: example.com\r\n\r\n"},

	// Framing that peers read differently: request smuggling shapes.
	{"cl-te", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX"},
	{"te-cl", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"},
	{"te-space-before-colon", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n"},
	{"te-tab-value", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n"},
	{"te-obs-fold", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"},
	{"te-leading-space-line", "POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\nHost: example.com\r\n\r\n0\r\n\r\n"},
	{"te-chunked-chunked", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"},
	{"te-two-fields", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"te-gzip-chunked", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
	{"te-chunked-gzip", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"},
	{"te-xchunked", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"},
	{"te-chunked-param", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n"},
	{"te-empty-element", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n"},
	{"te-uppercase", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n"},
	{"te-lookalike-underscore", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"},
	{"cl-lookalike-dashes", "POST / HTTP/1.1\r\nHost: example.com\r\nContent--Length: 5\r\n\r\nhello"},
	{"connect-with-body", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nContent-Length: 5\r\n\r\nhello"},
	{"te-http10", "POST / HTTP/1.0\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"te-on-get", "GET / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"bare-lf", "GET / HTTP/1.1\nHost: example.com\n\n"},
	{"bare-lf-in-field", "GET / HTTP/1.1\r\nHost: example.com\nX: y\r\n\r\n"},
	{"bare-cr-in-field", "GET / HTTP/1.1\r\nHost: example.com\rX: y\r\n\r\n"},
	{"bare-cr-request-line", "GET /\r HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"nul-in-value", "GET / HTTP/1.1\r\nHost: example.com\r\nX-Data: a\x00b\r\n\r\n"},
	{"ctl-in-value", "GET / HTTP/1.1\r\nHost: example.com\r\nX-Data: a\x1bb\r\n\r\n"},
	{"cl-duplicate-same", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"},
	{"cl-duplicate-differ", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde"},
	{"cl-list", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3, 3\r\n\r\nabc"},
	{"cl-plus", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: +3\r\n\r\nabc"},
	{"cl-negative", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: -1\r\n\r\n"},
	{"cl-hex", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0x3\r\n\r\nabc"},
	{"cl-overflow", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 99999999999999999999\r\n\r\n"},
	{"cl-leading-zeros", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 0003\r\n\r\nabc"},
	{"cl-truncated-body", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\nabc"},
	{"cl-empty", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length:\r\n\r\n"},
	{"chunk-size-overflow", fzChunkedReq("fffffffffffffffff\r\nx\r\n0\r\n\r\n")},
	{"chunk-size-max", fzChunkedReq("7fffffffffffffff\r\nx")},
	{"chunk-size-0x", fzChunkedReq("0x5\r\nhello\r\n0\r\n\r\n")},
	{"chunk-size-negative", fzChunkedReq("-1\r\nx\r\n0\r\n\r\n")},
	{"chunk-size-trailing-space", fzChunkedReq("5 \r\nhello\r\n0\r\n\r\n")},
	{"chunk-ext-bare-lf", fzChunkedReq("5;a\nhello\r\n0\r\n\r\n")},
	{"chunk-ext-bare-cr", fzChunkedReq("5;a\rb\r\nhello\r\n0\r\n\r\n")},
	{"chunk-ext-unterminated-quote", fzChunkedReq("5;a=\"b\r\nhello\r\n0\r\n\r\n")},
	{"chunk-data-no-crlf", fzChunkedReq("5\r\nhelloXX0\r\n\r\n")},
	{"chunk-data-bare-lf", fzChunkedReq("5\r\nhello\n0\r\n\r\n")},
	{"chunk-data-too-long", fzChunkedReq("3\r\nhello\r\n0\r\n\r\n")},
	{"chunk-line-4096", fzChunkedReq(fzLongChunkLine(4096) + "\r\nx\r\n0\r\n\r\n")},
	{"chunk-line-4097", fzChunkedReq(fzLongChunkLine(4097) + "\r\nx\r\n0\r\n\r\n")},
	{"chunked-trailer-obs-fold", fzChunkedReq("0\r\nX: a\r\n b\r\n\r\n")},
	{"chunked-trailer-framing-fields", "POST / HTTP/1.1\r\nHost: example.com\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\nContent-Length: 5\r\n\r\n"},
	{"chunked-truncated", fzChunkedReq("5\r\nhel")},
	{"host-missing", "GET / HTTP/1.1\r\nUser-Agent: x\r\n\r\n"},
	{"host-multiple", "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n"},
	{"host-userinfo", "GET / HTTP/1.1\r\nHost: user@example.com\r\n\r\n"},
	{"host-bad-port", "GET / HTTP/1.1\r\nHost: example.com:99999\r\n\r\n"},
	{"host-space", "GET / HTTP/1.1\r\nHost: exa mple.com\r\n\r\n"},
	{"absolute-form-pct-nul-host", "GET http://exa%00mple.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"connect-pct-slash-host", "CONNECT internal.example%2f.evil.example:443 HTTP/1.1\r\nHost: internal.example%2f.evil.example:443\r\n\r\n"},
	{"absolute-form-userinfo", "GET http://user:pw@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"absolute-form-other-scheme", "GET ftp://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"asterisk-not-options", "GET * HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"connect-no-port", "CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"connect-path", "CONNECT /rpc HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"version-2", "GET / HTTP/2.0\r\nHost: example.com\r\n\r\n"},
	{"version-lowercase", "GET / http/1.1\r\nHost: example.com\r\n\r\n"},
	{"version-http09", "GET /\r\n\r\n"},
	{"request-line-double-space", "GET  / HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"request-line-trailing-space", "GET / HTTP/1.1 \r\nHost: example.com\r\n\r\n"},
	{"target-with-space", "GET /a b HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"target-angle-quote", "GET /<script>\"x\" HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"target-fragment", "GET /page#frag HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"target-bad-percent", "GET /%zz HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"target-utf8", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"method-non-token", "G@T / HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"field-name-non-token", "GET / HTTP/1.1\r\nHost: example.com\r\nX(Y): z\r\n\r\n"},
	{"field-no-colon", "GET / HTTP/1.1\r\nHost: example.com\r\nNoColonHere\r\n\r\n"},
	{"field-empty-name", "GET / HTTP/1.1\r\nHost: example.com\r\n: value\r\n\r\n"},
	{"too-many-fields", fzGet(strings.Repeat("X-A: b\r\n", 100))},
	{"head-truncated", "GET / HTTP/1.1\r\nHost: exa"},
	{"only-crlf", "\r\n\r\n\r"},
	// Heads at the edges of the small limits of the fuzz targets
	// (MaxRequestLine 64, MaxHeaderBytes 256): a request line of exactly 64
	// bytes, and a head whose last field line ends at byte 256.
	{"small-limit-request-line-64", "GET /" + strings.Repeat("a", 64-len("GET / HTTP/1.1")) + " HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"small-limit-head-258", "GET / HTTP/1.1\r\nHost: example.com\r\nX-Pad: " +
		strings.Repeat("p", 256-len("GET / HTTP/1.1\r\nHost: example.com\r\nX-Pad: \r\n")) + "\r\n\r\n"},
	// A request line over the small limit that ends in a bare LF: refused
	// either way, and for the same reason whatever the read sizes.
	{"small-limit-long-line-bare-lf", "GET /" + strings.Repeat("a", 80) + " HTTP/1.1\nHost: example.com\r\n\r\n"},
}

var fzResponseSeeds = []fzSeed{
	{"200-content-length", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"},
	{"200-chunked-trailers", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status\r\n\r\n" +
		"5;ext=1\r\nhello\r\n0\r\nGrpc-Status: 0\r\nGrpc-Message: ok\r\n\r\n"},
	{"200-close-delimited", "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>until the connection closes</html>"},
	{"http10-keep-alive", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"},
	{"http10-close-delimited", "HTTP/1.0 200 OK\r\n\r\nbody"},
	{"204-with-cl", "HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"},
	{"304-with-te", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\nETag: \"x\"\r\n\r\n"},
	{"100-then-200", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	{"101-switching", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"},
	{"103-early-hints", "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"100-empty-line-200", "HTTP/1.1 100 Continue\r\n\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
	{"connect-200-tunnel", "HTTP/1.1 200 Connection Established\r\nContent-Length: 5\r\n\r\n\x16\x03\x01\x02\x00tunnel bytes"},
	{"te-lookalike", "HTTP/1.1 200 OK\r\nTransfer_Encoding: chunked\r\nContent-Length: 2\r\n\r\nok"},
	{"empty-reason", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n"},
	{"empty-reason-with-space", "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n"},
	{"pipelined-two", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb"},
	{"set-cookie-repeated", "HTTP/1.1 302 Found\r\nLocation: /login\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; HttpOnly\r\nContent-Length: 0\r\n\r\n"},
	{"connection-close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc"},
	{"content-length-zero", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"extra-bytes-after-body", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"},
	{"reason-obs-text", "HTTP/1.1 200 D\xe9j\xe0 vu\r\nContent-Length: 0\r\n\r\n"},
	{"status-999", "HTTP/1.1 999 Weird\r\nContent-Length: 0\r\n\r\n"},
	{"cl-te", "HTTP/1.1 200 OK\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"cl-duplicate-same", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"},
	{"cl-duplicate-differ", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!"},
	{"cl-invalid", "HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n"},
	{"te-gzip-chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"},
	{"te-gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nrawbytes"},
	{"te-http10", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"te-obs-fold", "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"},
	{"te-space-before-colon", "HTTP/1.1 200 OK\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n"},
	{"bare-lf", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok"},
	{"bare-cr", "HTTP/1.1 200 OK\rContent-Length: 2\r\n\r\nok"},
	{"nul-in-value", "HTTP/1.1 200 OK\r\nX: a\x00b\r\nContent-Length: 0\r\n\r\n"},
	{"status-leading-zero", "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n"},
	{"status-four-digits", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"},
	{"status-double-space", "HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"status-plus-sign", "HTTP/1.1 +20 OK\r\nContent-Length: 0\r\n\r\n"},
	{"version-2", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"version-lowercase", "http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"reason-ctl", "HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n"},
	{"chunk-size-overflow", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\nx\r\n0\r\n\r\n"},
	{"chunk-data-no-crlf", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n"},
	{"chunked-trailer-framing-fields", "HTTP/1.1 200 OK\r\nTrailer: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTransfer-Encoding: gzip\r\n\r\n"},
	{"cl-truncated", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"},
	{"head-truncated", "HTTP/1.1 200 OK\r\nContent-Le"},
}

var fzChunkedSeeds = []fzSeed{
	{"empty", "0\r\n\r\n"},
	{"one-chunk", "5\r\nhello\r\n0\r\n\r\n"},
	{"two-chunks", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"},
	{"uppercase-hex", "A\r\n0123456789\r\n0\r\n\r\n"},
	{"leading-zeros", "0005\r\nhello\r\n0000\r\n\r\n"},
	{"ext-token", "5;name=value\r\nhello\r\n0\r\n\r\n"},
	{"ext-name-only", "5;flag\r\nhello\r\n0;last\r\n\r\n"},
	{"ext-quoted", "5;q=\"a \\\"quoted\\\" \\\\ value\"\r\nhello\r\n0\r\n\r\n"},
	{"ext-bws", "5 ; a = b ;\tc\r\nhello\r\n0\r\n\r\n"},
	{"ext-many", "1;a;b=c;d=\"e\"\r\nx\r\n0\r\n\r\n"},
	{"trailers", "5\r\nhello\r\n0\r\nChecksum: 5d41402a\r\nX-Note:  spaced value \t\r\n\r\n"},
	{"trailer-empty-value", "0\r\nX-Empty:\r\n\r\n"},
	{"binary-data", "4\r\n\r\n\x00\xff\r\n0\r\n\r\n"},
	{"data-looks-like-last-chunk", "7\r\n\r\n0\r\n\r\n\r\n0\r\n\r\n"},
	{"big-chunk", "bb8\r\n" + strings.Repeat("0123456789", 300) + "\r\n0\r\n\r\n"},
	{"followed-by-next-request", "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"size-overflow", "10000000000000000\r\nx\r\n0\r\n\r\n"},
	{"size-max", "7fffffffffffffff\r\nx"},
	{"size-0x", "0x5\r\nhello\r\n0\r\n\r\n"},
	{"size-negative", "-5\r\nhello\r\n0\r\n\r\n"},
	{"size-plus", "+5\r\nhello\r\n0\r\n\r\n"},
	{"size-empty", "\r\nhello\r\n0\r\n\r\n"},
	{"size-trailing-space", "5 \r\nhello\r\n0\r\n\r\n"},
	{"size-leading-space", " 5\r\nhello\r\n0\r\n\r\n"},
	{"size-bare-lf", "5\nhello\r\n0\r\n\r\n"},
	{"ext-bare-lf", "5;a\nhello\r\n0\r\n\r\n"},
	{"ext-bare-cr", "5;a\rb\r\nhello\r\n0\r\n\r\n"},
	{"ext-no-name", "5;\r\nhello\r\n0\r\n\r\n"},
	{"ext-no-value", "5;a=\r\nhello\r\n0\r\n\r\n"},
	{"ext-unterminated-quote", "5;a=\"b\r\nhello\r\n0\r\n\r\n"},
	{"ext-ctl", "5;a=b\x01\r\nhello\r\n0\r\n\r\n"},
	{"data-no-crlf", "5\r\nhelloXX0\r\n\r\n"},
	{"data-bare-lf", "5\r\nhello\n0\r\n\r\n"},
	{"data-too-long", "3\r\nhello\r\n0\r\n\r\n"},
	{"last-chunk-bare-lf", "0\n\n"},
	{"trailer-bare-lf", "0\r\nX: y\n\r\n"},
	{"trailer-obs-fold", "0\r\nX: a\r\n b\r\n\r\n"},
	{"trailer-no-colon", "0\r\nnocolon\r\n\r\n"},
	{"trailer-space-before-colon", "0\r\nX : y\r\n\r\n"},
	{"trailer-nul", "0\r\nX: a\x00b\r\n\r\n"},
	{"trailer-too-many", "0\r\n" + strings.Repeat("X: y\r\n", 101) + "\r\n"},
	{"truncated-size", "5"},
	{"truncated-data", "5\r\nhel"},
	{"truncated-after-data", "5\r\nhello\r"},
	{"truncated-trailers", "0\r\nX: y\r\n"},
	{"line-4096", fzLongChunkLine(4096) + "\r\nx\r\n0\r\n\r\n"},
	{"line-4097", fzLongChunkLine(4097) + "\r\nx\r\n0\r\n\r\n"},
	{"line-long-bare-lf", fzLongChunkLine(4100) + "\nx\r\n0\r\n\r\n"},
	{"trailer-long-bare-lf", "0\r\nX-Long: " + strings.Repeat("t", 300) + "\n\r\n"},
}

// ---------------------------------------------------------------------------
// Parsing a whole input into comparable results

const (
	fzNil     = "\x00nil" // a nil slice; NUL never appears in what the codec accepts
	fzMaxMsgs = 64        // messages parsed per input at most
)

var errFzTooManyMessages = errors.New("fuzz: message limit reached")

type fzField struct{ Name, Value string }

// fzMsg is what a parse yields for one message, copied out of the Reader.
type fzMsg struct {
	// Requests.
	Method, Target  string
	Form            http1.TargetForm
	Authority, Host string // fzNil for a nil slice
	ExpectContinue  bool
	Upgrade         string
	// Responses.
	Status int
	Reason string
	// Both.
	Minor         int
	Fields        []fzField
	Framing       http1.Framing
	ContentLength int64
	KeepAlive     bool
	Body          string
	Trailer       []fzField
	BodyErr       error
	End           int // offset in the input where the message ended
}

type fzResult struct {
	Msgs []fzMsg
	Err  error // what ended the input: io.EOF after the last message
}

func fzStr(b []byte) string {
	if b == nil {
		return fzNil
	}
	return string(b)
}

// fzHeadFields is fzFields for a parsed head, whose fields AppendHeader
// writes without checking them (Header.Checked): each must be one that
// AppendField accepts and writes unchanged. A violation panics, which the
// fuzzer reports with its input.
func fzHeadFields(h *header.Header) []fzField {
	if h.Checked() != h.Len() {
		panic(fmt.Sprintf("%d of %d parsed fields are checked", h.Checked(), h.Len()))
	}
	for _, f := range h.Fields() {
		out, err := http1.AppendField(nil, f.Name, f.Value)
		if want := string(f.Name) + ": " + string(f.Value) + "\r\n"; err != nil || string(out) != want {
			panic(fmt.Sprintf("parsed field %q: %q: AppendField gives %q, %v", f.Name, f.Value, out, err))
		}
	}
	return fzFields(h)
}

func fzFields(h *header.Header) []fzField {
	var out []fzField
	for _, f := range h.Fields() {
		out = append(out, fzField{string(f.Name), string(f.Value)})
	}
	return out
}

// fzMode is one way for bytes to arrive and for a body to be read. read
// gets the source open returned.
type fzMode struct {
	name string
	open func(data []byte, rng *rand.Rand) io.Reader
	read func(b *http1.Body, src io.Reader, rng *rand.Rand) ([]byte, error)
}

// errFzReadyLied is the body error recorded when Body.Ready said the next
// call would not wait for the connection and it read from it.
var errFzReadyLied = errors.New("fuzz: Body.Ready reported buffered data, but the next call read the connection")

var fzModes = []fzMode{
	{"whole", // everything in one read; the body through WriteTo
		func(d []byte, _ *rand.Rand) io.Reader { return bytes.NewReader(d) },
		func(b *http1.Body, _ io.Reader, _ *rand.Rand) ([]byte, error) {
			var buf bytes.Buffer
			_, err := io.Copy(&buf, b)
			return buf.Bytes(), err
		}},
	{"one-byte", // a byte per read; the body through io.ReadAll
		func(d []byte, _ *rand.Rand) io.Reader { return iotest.OneByteReader(bytes.NewReader(d)) },
		func(b *http1.Body, _ io.Reader, _ *rand.Rand) ([]byte, error) { return io.ReadAll(b) }},
	{"data-err", // io.EOF with the last bytes; the body in large reads
		func(d []byte, _ *rand.Rand) io.Reader { return iotest.DataErrReader(bytes.NewReader(d)) },
		func(b *http1.Body, _ io.Reader, _ *rand.Rand) ([]byte, error) {
			return fzReadSizes(b, nil, func() int { return 8 << 10 })
		}},
	{"split", // random pieces, empty reads now and then; the body in random reads
		func(d []byte, rng *rand.Rand) io.Reader { return &fzSplitReader{data: d, rng: rng} },
		func(b *http1.Body, src io.Reader, rng *rand.Rand) ([]byte, error) {
			return fzReadSizes(b, src.(*fzSplitReader), func() int { return 1 + rng.IntN([]int{7, 300, 5000}[rng.IntN(3)]) })
		}},
	{"split-next", // random pieces; the body through Next, checking Ready
		func(d []byte, rng *rand.Rand) io.Reader { return &fzSplitReader{data: d, rng: rng} },
		func(b *http1.Body, src io.Reader, _ *rand.Rand) ([]byte, error) {
			s := src.(*fzSplitReader)
			var out []byte
			for idle := 0; idle < 1000; {
				ready, calls := b.Ready(), s.calls
				data, err := b.Next()
				out = append(out, data...)
				if ready && s.calls != calls {
					return out, errFzReadyLied
				}
				if err == io.EOF {
					return out, nil
				}
				if err != nil {
					return out, err
				}
				if len(data) == 0 {
					idle++
				} else {
					idle = 0
				}
			}
			return out, io.ErrNoProgress
		}},
}

// fzSplitReader returns its data in pieces of random size, sometimes an
// empty read, and sometimes io.EOF with the last piece.
type fzSplitReader struct {
	data  []byte
	rng   *rand.Rand
	empty int
	calls int // Read calls
}

func (s *fzSplitReader) Read(p []byte) (int, error) {
	s.calls++
	if len(s.data) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if s.empty < 3 && s.rng.IntN(16) == 0 {
		s.empty++
		return 0, nil
	}
	s.empty = 0
	most := min(len(p), len(s.data), []int{3, 17, 300, 5000}[s.rng.IntN(4)])
	n := copy(p, s.data[:1+s.rng.IntN(most)])
	s.data = s.data[n:]
	if len(s.data) == 0 && s.rng.IntN(2) == 0 {
		return n, io.EOF
	}
	return n, nil
}

// fzReadSizes reads b to its end with reads of the sizes size returns. With
// a split reader, it checks that Read does not read the connection when
// Ready says it need not.
func fzReadSizes(b *http1.Body, s *fzSplitReader, size func() int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 8<<10)
	for idle := 0; idle < 1000; {
		ready, calls := b.Ready(), 0
		if s != nil {
			calls = s.calls
		}
		n, err := b.Read(buf[:min(size(), len(buf))])
		out = append(out, buf[:n]...)
		if s != nil && ready && s.calls != calls {
			return out, errFzReadyLied
		}
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if n == 0 {
			idle++
		} else {
			idle = 0
		}
	}
	return out, io.ErrNoProgress
}

// fzCounter counts the bytes a Reader took from its source.
type fzCounter struct {
	r io.Reader
	n int
}

func (c *fzCounter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func fzRNG(data []byte, mode int) *rand.Rand {
	h := fnv.New64a()
	h.Write(data)
	return rand.New(rand.NewPCG(h.Sum64(), uint64(mode)))
}

// fzReadBody reads the body of the message r last read into m.
func fzReadBody(r *http1.Reader, m *fzMsg, mode fzMode, src io.Reader, rng *rand.Rand) {
	body := r.Body()
	data, err := mode.read(body, src, rng)
	m.Body, m.BodyErr = string(data), err
	if err == nil {
		m.Trailer = fzFields(&body.Trailer)
	}
}

// fzRequests parses every request in src, reading each body to its end.
func fzRequests(src io.Reader, lim http1.Limits, mode fzMode, rng *rand.Rand) fzResult {
	c := &fzCounter{r: src}
	r := http1.NewReader(c, lim)
	var req http1.Request // reused, as a server reuses it
	var res fzResult
	for {
		if len(res.Msgs) == fzMaxMsgs {
			res.Err = errFzTooManyMessages
			return res
		}
		if err := r.ReadRequest(&req); err != nil {
			res.Err = err
			return res
		}
		m := fzMsg{
			Method: string(req.Method), Target: string(req.Target), Minor: req.Minor,
			Fields: fzHeadFields(&req.Header), Form: req.Form,
			Authority: fzStr(req.Authority), Host: fzStr(req.Host),
			Framing: req.Framing, ContentLength: req.ContentLength,
			KeepAlive: req.KeepAlive, ExpectContinue: req.ExpectContinue, Upgrade: fzStr(req.Upgrade),
		}
		fzReadBody(r, &m, mode, src, rng)
		if m.BodyErr == nil {
			m.End = c.n - r.Buffered()
		}
		res.Msgs = append(res.Msgs, m)
		if m.BodyErr != nil {
			return res
		}
	}
}

// fzResponses parses every response in src as answers to method.
func fzResponses(src io.Reader, lim http1.Limits, method string, mode fzMode, rng *rand.Rand) fzResult {
	c := &fzCounter{r: src}
	r := http1.NewReader(c, lim)
	var resp http1.Response
	var res fzResult
	for {
		if len(res.Msgs) == fzMaxMsgs {
			res.Err = errFzTooManyMessages
			return res
		}
		if err := r.ReadResponse(&resp, []byte(method)); err != nil {
			res.Err = err
			return res
		}
		m := fzMsg{
			Minor: resp.Minor, Status: resp.Status, Reason: fzStr(resp.Reason),
			Fields: fzHeadFields(&resp.Header), Framing: resp.Framing,
			ContentLength: resp.ContentLength, KeepAlive: resp.KeepAlive,
		}
		fzReadBody(r, &m, mode, src, rng)
		if m.BodyErr == nil {
			m.End = c.n - r.Buffered()
		}
		res.Msgs = append(res.Msgs, m)
		if m.BodyErr != nil {
			return res
		}
	}
}

// fzSameAcrossModes parses data in every mode and fails unless every mode
// gives the same result. It returns the result.
func fzSameAcrossModes(t *testing.T, data []byte, what string, parse func(io.Reader, fzMode, *rand.Rand) fzResult) fzResult {
	t.Helper()
	var base fzResult
	for i, mode := range fzModes {
		rng := fzRNG(data, i)
		res := parse(mode.open(data, rng), mode, rng)
		if i == 0 {
			base = res
			continue
		}
		if !reflect.DeepEqual(res, base) {
			t.Fatalf("%s: reading %s gives a different result than reading it whole:\n%s:\n%s\nwhole:\n%s",
				what, fzQ(data), mode.name, fzDump(res), fzDump(base))
		}
	}
	return base
}

// fzQ quotes b for a failure message, shortened when long.
func fzQ[T string | []byte](b T) string {
	const most = 240
	if len(b) <= most {
		return strconv.Quote(string(b))
	}
	return fmt.Sprintf("%q...(%d bytes)", string(b[:most]), len(b))
}

func fzDump(res fzResult) string {
	var b strings.Builder
	for i, m := range res.Msgs {
		m.Body, m.Target = fzQ(m.Body), fzQ(m.Target)
		fmt.Fprintf(&b, "  msg %d: %+v\n", i, m)
	}
	fmt.Fprintf(&b, "  end: %v", res.Err)
	return b.String()
}

// ---------------------------------------------------------------------------
// Invariants

var fzLimitSets = []struct {
	name string
	lim  http1.Limits
}{
	{"default", http1.Limits{}},
	{"small", http1.Limits{MaxRequestLine: 64, MaxHeaderBytes: 256, MaxHeaderCount: 8}},
	// MaxRequestLine takes MaxHeaderBytes here: both limits meet on the
	// request line.
	{"tight", http1.Limits{MaxHeaderBytes: 96, MaxHeaderCount: 3}},
}

const fzTchars = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func fzIsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(fzTchars, s[i]) < 0 {
			return false
		}
	}
	return true
}

// fzNoCTL reports whether s holds only field-vchar, SP and HTAB: no CR, LF,
// NUL or other control.
func fzNoCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c != '\t' && (c < 0x20 || c == 0x7f) {
			return false
		}
	}
	return true
}

// fzValidValue reports whether v is a field value as the codec hands it
// out: no controls, and no whitespace at either end.
func fzValidValue(v string) bool { return fzNoCTL(v) && strings.Trim(v, " \t") == v }

func fzCheckFields(t *testing.T, what string, fields []fzField) {
	t.Helper()
	for _, f := range fields {
		if !fzIsToken(f.Name) || !fzValidValue(f.Value) {
			t.Fatalf("%s: invalid field accepted: %q: %q", what, f.Name, f.Value)
		}
	}
}

// fzFacts is what the framing fields say, worked out independently of the
// codec.
type fzFacts struct {
	host                             []string
	te, cl                           []string
	connClose, connKeep, connUpgrade bool
	expect100                        bool
	upgrade                          []string
}

func fzGather(fields []fzField) (f fzFacts) {
	for _, fl := range fields {
		switch strings.ToLower(fl.Name) {
		case "host":
			f.host = append(f.host, fl.Value)
		case "transfer-encoding":
			f.te = append(f.te, fl.Value)
		case "content-length":
			f.cl = append(f.cl, fl.Value)
		case "expect":
			f.expect100 = f.expect100 || strings.EqualFold(fl.Value, "100-continue")
		case "upgrade":
			f.upgrade = append(f.upgrade, fl.Value)
		case "connection":
			for _, tok := range strings.Split(fl.Value, ",") {
				switch strings.ToLower(strings.Trim(tok, " \t")) {
				case "close":
					f.connClose = true
				case "keep-alive":
					f.connKeep = true
				case "upgrade":
					f.connUpgrade = true
				}
			}
		}
	}
	return f
}

func (f fzFacts) keepAlive(minor int) bool {
	if minor == 0 {
		return f.connKeep && !f.connClose
	}
	return !f.connClose
}

// fzCheckBody checks a body against the framing of its head.
func fzCheckBody(t *testing.T, what string, m fzMsg) {
	t.Helper()
	if m.ContentLength < 0 || (m.Framing == http1.LengthBody) != (m.ContentLength > 0) {
		t.Fatalf("%s: framing %v with Content-Length %d", what, m.Framing, m.ContentLength)
	}
	if m.BodyErr != nil {
		return
	}
	fzCheckFields(t, what+" trailer", m.Trailer)
	switch {
	case m.Framing == http1.NoBody && m.Body != "":
		t.Fatalf("%s: body %q without framing", what, m.Body)
	case m.Framing == http1.LengthBody && int64(len(m.Body)) != m.ContentLength:
		t.Fatalf("%s: body of %d bytes, Content-Length %d", what, len(m.Body), m.ContentLength)
	case m.Framing != http1.ChunkedBody && len(m.Trailer) > 0:
		t.Fatalf("%s: trailer without chunked framing", what)
	}
}

// fzCheckLookalikes fails if a head holds a field name that reads as
// Content-Length or Transfer-Encoding once '-' and '_' are ignored.
func fzCheckLookalikes(t *testing.T, what string, fields []fzField) {
	t.Helper()
	for _, f := range fields {
		norm := strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(f.Name))
		if (norm == "contentlength" || norm == "transferencoding") &&
			!strings.EqualFold(f.Name, "content-length") && !strings.EqualFold(f.Name, "transfer-encoding") {
			t.Fatalf("%s: look-alike framing field %q accepted", what, f.Name)
		}
	}
}

func fzCheckRequest(t *testing.T, m fzMsg) {
	t.Helper()
	what := m.Method + " " + m.Target
	fzCheckFields(t, what, m.Fields)
	fzCheckLookalikes(t, what, m.Fields)
	fzCheckBody(t, what, m)
	f := fzGather(m.Fields)
	if !fzIsToken(m.Method) || m.Target == "" || (m.Minor != 0 && m.Minor != 1) {
		t.Fatalf("%s: bad request line accepted (minor %d)", what, m.Minor)
	}
	if len(f.te) > 0 && len(f.cl) > 0 {
		t.Fatalf("%s: request with both Transfer-Encoding and Content-Length accepted", what)
	}
	wantFraming := http1.NoBody
	var wantCL int64
	switch {
	case len(f.te) > 0:
		if m.Minor == 0 || m.Method == "GET" || m.Method == "HEAD" {
			t.Fatalf("%s: Transfer-Encoding accepted in HTTP/1.%d", what, m.Minor)
		}
		wantFraming = http1.ChunkedBody
	case len(f.cl) == 1:
		n, err := strconv.ParseInt(f.cl[0], 10, 64)
		if err != nil || n < 0 || strings.Trim(f.cl[0], "0123456789") != "" {
			t.Fatalf("%s: Content-Length %q accepted", what, f.cl[0])
		}
		if n > 0 {
			wantFraming, wantCL = http1.LengthBody, n
		}
	case len(f.cl) > 1:
		t.Fatalf("%s: %d Content-Length fields accepted", what, len(f.cl))
	}
	if m.Form == http1.AuthorityForm && (len(f.te) > 0 || wantFraming != http1.NoBody) {
		t.Fatalf("%s: CONNECT with a body accepted", what)
	}
	if m.Framing != wantFraming || m.ContentLength != wantCL {
		t.Fatalf("%s: framing %v/%d, want %v/%d", what, m.Framing, m.ContentLength, wantFraming, wantCL)
	}
	switch {
	case len(f.host) > 1, len(f.host) == 0 && m.Minor == 1:
		t.Fatalf("%s: %d Host fields accepted in HTTP/1.%d", what, len(f.host), m.Minor)
	case len(f.host) == 1 && m.Host != f.host[0], len(f.host) == 0 && m.Host != fzNil:
		t.Fatalf("%s: Host %q, fields %q", what, m.Host, f.host)
	}
	switch m.Form {
	case http1.OriginForm:
		if m.Target[0] != '/' || m.Authority != fzNil {
			t.Fatalf("%s: origin-form with authority %q", what, m.Authority)
		}
	case http1.AsteriskForm:
		if m.Target != "*" || m.Method != "OPTIONS" || m.Authority != fzNil {
			t.Fatalf("%s: asterisk-form with authority %q", what, m.Authority)
		}
	case http1.AuthorityForm:
		if m.Method != "CONNECT" || m.Authority != m.Target {
			t.Fatalf("%s: authority-form with authority %q", what, m.Authority)
		}
	case http1.AbsoluteForm:
		if m.Authority == fzNil || m.Authority == "" || !strings.Contains(m.Target, "//"+m.Authority) {
			t.Fatalf("%s: absolute-form with authority %q", what, m.Authority)
		}
	default:
		t.Fatalf("%s: unknown form %v", what, m.Form)
	}
	if m.KeepAlive != f.keepAlive(m.Minor) {
		t.Fatalf("%s: KeepAlive %v in HTTP/1.%d", what, m.KeepAlive, m.Minor)
	}
	if m.ExpectContinue != (f.expect100 && m.Minor == 1) {
		t.Fatalf("%s: ExpectContinue %v", what, m.ExpectContinue)
	}
	if m.Upgrade != fzNil && (!f.connUpgrade || m.Upgrade == "" || !strings.Contains(strings.Join(f.upgrade, "\n"), m.Upgrade)) {
		t.Fatalf("%s: Upgrade %q without Connection: upgrade and that Upgrade field", what, m.Upgrade)
	}
	if m.Upgrade == fzNil && f.connUpgrade && len(f.upgrade) == 1 && f.upgrade[0] != "" {
		t.Fatalf("%s: Upgrade %q not reported", what, f.upgrade[0])
	}
}

func fzCheckResponse(t *testing.T, m fzMsg, method string) {
	t.Helper()
	what := fmt.Sprintf("%s response %d", method, m.Status)
	fzCheckFields(t, what, m.Fields)
	fzCheckLookalikes(t, what, m.Fields)
	fzCheckBody(t, what, m)
	if m.Status < 100 || m.Status > 999 || (m.Minor != 0 && m.Minor != 1) || (m.Reason != fzNil && !fzNoCTL(m.Reason)) {
		t.Fatalf("%s: bad status line accepted (HTTP/1.%d, reason %q)", what, m.Minor, m.Reason)
	}
	f := fzGather(m.Fields)
	if len(f.te) > 0 && (len(f.cl) > 0 || m.Minor == 0) {
		t.Fatalf("%s: Transfer-Encoding with Content-Length or in HTTP/1.0 accepted", what)
	}
	if len(f.cl) > 1 {
		t.Fatalf("%s: %d Content-Length fields accepted", what, len(f.cl))
	}
	wantFraming, wantCL, keep := http1.CloseBody, int64(0), f.keepAlive(m.Minor)
	switch {
	case method == "HEAD" || m.Status < 200 || m.Status == 204 || m.Status == 304:
		wantFraming = http1.NoBody
	case method == "CONNECT" && m.Status < 300:
		wantFraming, keep = http1.NoBody, false // a tunnel follows
	case len(f.te) > 0:
		wantFraming = http1.ChunkedBody
	case len(f.cl) == 1:
		n, err := strconv.ParseInt(f.cl[0], 10, 64)
		if err != nil || strings.Trim(f.cl[0], "0123456789") != "" {
			t.Fatalf("%s: Content-Length %q accepted", what, f.cl[0])
		}
		wantFraming = http1.NoBody
		if n > 0 {
			wantFraming, wantCL = http1.LengthBody, n
		}
	default:
		keep = false
	}
	if m.Framing != wantFraming || m.ContentLength != wantCL || m.KeepAlive != keep {
		t.Fatalf("%s: framing %v/%d keep-alive %v, want %v/%d %v", what, m.Framing, m.ContentLength, m.KeepAlive, wantFraming, wantCL, keep)
	}
}

// fzCheckEnds checks that each message ends after the one before, within
// the input.
func fzCheckEnds(t *testing.T, res fzResult, n int) {
	t.Helper()
	prev := 0
	for i, m := range res.Msgs {
		if m.BodyErr == nil && (m.End <= prev || m.End > n) {
			t.Fatalf("message %d ends at %d, after %d, in %d bytes", i, m.End, prev, n)
		}
		prev = m.End
	}
}

func fzIsLimitErr(err error) bool {
	return errors.Is(err, http1.ErrRequestLineTooBig) || errors.Is(err, http1.ErrHeaderTooBig) ||
		errors.Is(err, http1.ErrTooManyFields) || errors.Is(err, http1.ErrTrailerTooBig)
}

// fzCheckLimits checks that smaller limits only ever turn a message into a
// limit error: whatever is read under them is read the same under the
// defaults, and any other error is the same error.
func fzCheckLimits(t *testing.T, results []fzResult) {
	t.Helper()
	for _, small := range results[1:] {
		fzCheckLimitsPair(t, small, results[0])
	}
}

func fzCheckLimitsPair(t *testing.T, small, def fzResult) {
	t.Helper()
	for i, m := range small.Msgs {
		if i >= len(def.Msgs) {
			t.Fatalf("message %d read under small limits only:\nsmall:\n%s\ndefault:\n%s", i, fzDump(small), fzDump(def))
		}
		d := def.Msgs[i]
		if fzIsLimitErr(m.BodyErr) {
			m.Body, m.Trailer, m.BodyErr, m.End = d.Body, d.Trailer, d.BodyErr, d.End
			if !reflect.DeepEqual(m, d) {
				t.Fatalf("message %d read differently under small limits:\nsmall:\n%s\ndefault:\n%s", i, fzDump(small), fzDump(def))
			}
			return
		}
		if !reflect.DeepEqual(m, d) {
			t.Fatalf("message %d read differently under small limits:\nsmall:\n%s\ndefault:\n%s", i, fzDump(small), fzDump(def))
		}
	}
	if !fzIsLimitErr(small.Err) && (len(small.Msgs) != len(def.Msgs) || small.Err != def.Err) {
		t.Fatalf("small limits end differently:\nsmall:\n%s\ndefault:\n%s", fzDump(small), fzDump(def))
	}
}

// fzHeader builds a header.Header from fields.
func fzHeader(fields []fzField) *header.Header {
	h := new(header.Header)
	for _, f := range fields {
		h.Add(f.Name, f.Value)
	}
	return h
}

// fzAppendBody appends m's body framed as m says: what a proxy forwards.
func fzAppendBody(t *testing.T, dst []byte, m fzMsg) []byte {
	t.Helper()
	if m.Framing != http1.ChunkedBody {
		return append(dst, m.Body...)
	}
	buf := bytes.NewBuffer(dst)
	var cw http1.ChunkedWriter
	cw.Reset(buf)
	for rest := m.Body; len(rest) > 0; {
		n := min(len(rest), 1+len(rest)/3)
		if _, err := cw.Write([]byte(rest[:n])); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := cw.Close(fzHeader(m.Trailer)); err != nil {
		t.Fatalf("ChunkedWriter refuses parsed trailer %q: %v", m.Trailer, err)
	}
	return buf.Bytes()
}

// fzForwardLimits are large enough for any head the default limits accept
// once serialized again ("name:value" becomes "name: value").
var fzForwardLimits = http1.Limits{MaxHeaderBytes: 1 << 20}

// fzCheckForwardRequest serializes an accepted HTTP/1.1 request again, as a
// proxy forwards it, and requires the codec to read back the same request.
func fzCheckForwardRequest(t *testing.T, m fzMsg) {
	t.Helper()
	if m.Minor != 1 || m.BodyErr != nil {
		return
	}
	out, err := http1.AppendRequestLine(nil, []byte(m.Method), []byte(m.Target))
	if err != nil {
		t.Fatalf("AppendRequestLine refuses a parsed request line %q %q: %v", m.Method, m.Target, err)
	}
	out, err = http1.AppendHeader(out, fzHeader(m.Fields))
	if err != nil {
		t.Fatalf("AppendHeader refuses parsed fields %q: %v", m.Fields, err)
	}
	out = fzAppendBody(t, append(out, "\r\n"...), m)
	got := fzRequests(bytes.NewReader(out), fzForwardLimits, fzModes[0], nil)
	m.End = len(out)
	if len(got.Msgs) != 1 || got.Err != io.EOF || !reflect.DeepEqual(got.Msgs[0], m) {
		t.Fatalf("forwarded request %s reads back differently:\n%s\nwant:\n%s", fzQ(out), fzDump(got), fzDump(fzResult{Msgs: []fzMsg{m}}))
	}
}

// fzCheckForwardResponse does the same for a response.
func fzCheckForwardResponse(t *testing.T, m fzMsg, method string) {
	t.Helper()
	if m.Minor != 1 || m.BodyErr != nil {
		return
	}
	reason := []byte(nil)
	if m.Reason != fzNil {
		reason = []byte(m.Reason)
	}
	out := http1.AppendStatusLine(nil, m.Status, reason)
	out, err := http1.AppendHeader(out, fzHeader(m.Fields))
	if err != nil {
		t.Fatalf("AppendHeader refuses parsed fields %q: %v", m.Fields, err)
	}
	out = fzAppendBody(t, append(out, "\r\n"...), m)
	got := fzResponses(bytes.NewReader(out), fzForwardLimits, method, fzModes[0], nil)
	m.End = len(out)
	if len(got.Msgs) == 1 && (m.Reason == fzNil || m.Reason == "") {
		got.Msgs[0].Reason = m.Reason // an empty reason is replaced by the standard one
	}
	if len(got.Msgs) != 1 || got.Err != io.EOF || !reflect.DeepEqual(got.Msgs[0], m) {
		t.Fatalf("forwarded response %s reads back differently:\n%s\nwant:\n%s", fzQ(out), fzDump(got), fzDump(fzResult{Msgs: []fzMsg{m}}))
	}
}

// ---------------------------------------------------------------------------
// Targets

// FuzzReadRequest reads its input as a connection's pipelined requests,
// with their bodies.
func FuzzReadRequest(f *testing.F) {
	for _, s := range fzRequestSeeds {
		f.Add([]byte(s.data))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var results []fzResult
		for _, ls := range fzLimitSets {
			res := fzSameAcrossModes(t, data, ls.name+" limits", func(src io.Reader, mode fzMode, rng *rand.Rand) fzResult {
				return fzRequests(src, ls.lim, mode, rng)
			})
			for _, m := range res.Msgs {
				fzCheckRequest(t, m)
			}
			fzCheckEnds(t, res, len(data))
			results = append(results, res)
		}
		fzCheckLimits(t, results)
		for _, m := range results[0].Msgs {
			fzCheckForwardRequest(t, m)
		}
	})
}

// FuzzReadResponse reads its input as responses to GET, to HEAD (no bodies)
// and to CONNECT (a 2xx is followed by a tunnel).
func FuzzReadResponse(f *testing.F) {
	for _, s := range fzResponseSeeds {
		f.Add([]byte(s.data))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, method := range []string{"GET", "HEAD", "CONNECT"} {
			var results []fzResult
			for _, ls := range fzLimitSets {
				res := fzSameAcrossModes(t, data, method+" "+ls.name+" limits", func(src io.Reader, mode fzMode, rng *rand.Rand) fzResult {
					return fzResponses(src, ls.lim, method, mode, rng)
				})
				for _, m := range res.Msgs {
					fzCheckResponse(t, m, method)
				}
				fzCheckEnds(t, res, len(data))
				results = append(results, res)
			}
			fzCheckLimits(t, results)
			for _, m := range results[0].Msgs {
				fzCheckForwardResponse(t, m, method)
			}
		}
	})
}

// fzChunkedHead is the head FuzzChunked puts before its input.
const fzChunkedHead = "POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"

type fzChunkedOut struct {
	Data     string
	Trailer  []fzField
	Err      error
	Consumed int // bytes of the body's framing consumed, once it ended
}

func (o fzChunkedOut) String() string {
	return fmt.Sprintf("{data %s trailer %q err %v consumed %d}", fzQ(o.Data), o.Trailer, o.Err, o.Consumed)
}

// fzDecodeChunked reads the chunked body that follows fzChunkedHead in src.
func fzDecodeChunked(t *testing.T, src io.Reader, lim http1.Limits, mode fzMode, rng *rand.Rand) fzChunkedOut {
	t.Helper()
	c := &fzCounter{r: src}
	r := http1.NewReader(c, lim)
	var req http1.Request
	if err := r.ReadRequest(&req); err != nil || req.Framing != http1.ChunkedBody {
		t.Fatalf("head %q: %v, framing %v", fzChunkedHead, err, req.Framing)
	}
	body := r.Body()
	data, err := mode.read(body, src, rng)
	out := fzChunkedOut{Data: string(data), Err: err}
	if err == nil {
		out.Trailer = fzFields(&body.Trailer)
		out.Consumed = c.n - r.Buffered() - len(fzChunkedHead)
	}
	return out
}

// FuzzChunked reads its input as a chunked request body, checks it against
// a plain decoder, and re-encodes what it decoded to read it again.
func FuzzChunked(f *testing.F) {
	for _, s := range fzChunkedSeeds {
		f.Add([]byte(s.data))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		in := append([]byte(fzChunkedHead), body...)
		for _, ls := range fzLimitSets {
			lim := ls.lim
			// Every way of reading gives the same result.
			var got fzChunkedOut
			for i, mode := range fzModes {
				rng := fzRNG(in, i)
				out := fzDecodeChunked(t, mode.open(in, rng), lim, mode, rng)
				if i == 0 {
					got = out
				} else if !reflect.DeepEqual(out, got) {
					t.Fatalf("%s limits: body %s decodes differently read %s:\n%s\nwhole:\n%s", ls.name, fzQ(body), mode.name, out, got)
				}
			}

			// The slow decoder agrees on whether the body is valid, on
			// its content and on where it ends.
			maxBytes, maxCount := lim.MaxHeaderBytes, lim.MaxHeaderCount
			if maxBytes == 0 {
				maxBytes, maxCount = http1.DefaultMaxHeaderBytes, http1.DefaultMaxHeaderCount
			}
			want, ok := fzRefChunked(body, maxBytes, maxCount)
			if ok != (got.Err == nil) {
				t.Fatalf("%s limits: body %s: codec error %v, reference decoder ok=%v", ls.name, fzQ(body), got.Err, ok)
			}
			if !ok {
				continue
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%s limits: body %s:\ncodec     %s\nreference %s", ls.name, fzQ(body), got, want)
			}

			// Round trip: encode what was decoded and decode it again.
			var enc bytes.Buffer
			enc.WriteString(fzChunkedHead)
			var cw http1.ChunkedWriter
			cw.Reset(&enc)
			rng := fzRNG(body, 99)
			for rest := got.Data; len(rest) > 0; {
				n := 1 + rng.IntN(len(rest))
				if _, err := cw.Write([]byte(rest[:n])); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
			}
			if err := cw.Close(fzHeader(got.Trailer)); err != nil {
				t.Fatalf("ChunkedWriter refuses decoded trailer %q: %v", got.Trailer, err)
			}
			again := fzDecodeChunked(t, bytes.NewReader(enc.Bytes()), fzForwardLimits, fzModes[0], nil)
			if again.Err != nil || again.Data != got.Data || !reflect.DeepEqual(again.Trailer, got.Trailer) ||
				again.Consumed != enc.Len()-len(fzChunkedHead) {
				t.Fatalf("re-encoded body %s decodes to %s, want %s", fzQ(enc.Bytes()[len(fzChunkedHead):]), again, got)
			}
		}
	})
}

// fzRefChunked is a slow, plain decoder of a chunked body under RFC 9112
// §7.1 as the codec applies it: CRLF line endings only, chunk lines of at
// most 4096 bytes, chunk sizes up to 2^63-1, extensions per §7.1.1, and a
// trailer section under the head's limits. ok is false for anything else,
// including a body cut short.
func fzRefChunked(b []byte, maxBytes, maxCount int) (out fzChunkedOut, ok bool) {
	pos := 0
	line := func(max int) (string, bool) {
		i := bytes.IndexByte(b[pos:], '\n')
		if i < 1 || b[pos+i-1] != '\r' {
			return "", false
		}
		l := b[pos : pos+i-1]
		if len(l) > max || bytes.IndexByte(l, '\r') >= 0 {
			return "", false
		}
		pos += i + 1
		return string(l), true
	}
	var data []byte
	for {
		l, ok := line(4096)
		if !ok {
			return out, false
		}
		hex := l[:len(l)-len(strings.TrimLeft(l, "0123456789abcdefABCDEF"))]
		size, err := strconv.ParseInt(hex, 16, 64)
		if err != nil || !fzRefChunkExt(l[len(hex):]) {
			return out, false
		}
		if size == 0 {
			break
		}
		if size > int64(len(b)-pos-2) || string(b[pos+int(size):pos+int(size)+2]) != "\r\n" {
			return out, false
		}
		data = append(data, b[pos:pos+int(size)]...)
		pos += int(size) + 2
	}
	out.Data = string(data)
	total := 0
	for {
		l, ok := line(maxBytes)
		if !ok {
			return out, false
		}
		if l == "" {
			out.Consumed = pos
			return out, true
		}
		total += len(l) + 2
		name, value, found := strings.Cut(l, ":")
		if total > maxBytes || len(out.Trailer) == maxCount || !found || !fzIsToken(name) {
			return out, false
		}
		value = strings.Trim(value, " \t")
		if !fzValidValue(value) {
			return out, false
		}
		out.Trailer = append(out.Trailer, fzField{name, value})
	}
}

// fzRefChunkExt reports whether s is *( BWS ";" BWS ext-name [ BWS "=" BWS
// ext-val ] ), with ext-val a token or a quoted-string.
func fzRefChunkExt(s string) bool {
	bws := func() { s = strings.TrimLeft(s, " \t") }
	token := func() bool {
		n := len(s) - len(strings.TrimLeft(s, fzTchars))
		s = s[n:]
		return n > 0
	}
	for s != "" {
		bws()
		if !strings.HasPrefix(s, ";") {
			return false
		}
		s = s[1:]
		bws()
		if !token() {
			return false
		}
		rest := strings.TrimLeft(s, " \t")
		if !strings.HasPrefix(rest, "=") {
			continue
		}
		s = rest[1:]
		bws()
		if !strings.HasPrefix(s, `"`) {
			if !token() {
				return false
			}
			continue
		}
		var ok bool
		if s, ok = fzRefQuotedRest(s[1:]); !ok {
			return false
		}
	}
	return true
}

// fzRefQuotedRest returns what follows a quoted-string whose opening quote
// has been taken: qdtext is HTAB, SP, %x21, %x23-5B, %x5D-7E and obs-text; a
// quoted-pair is a backslash and HTAB, SP, VCHAR or obs-text.
func fzRefQuotedRest(s string) (string, bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"':
			return s[i+1:], true
		case c == '\\':
			i++
			if i == len(s) || !fzNoCTL(s[i:i+1]) {
				return "", false
			}
		case !fzNoCTL(s[i : i+1]):
			return "", false
		}
	}
	return "", false
}

// ---------------------------------------------------------------------------
// Seed files

var fzSeedSets = []struct {
	target string
	seeds  []fzSeed
}{
	{"FuzzReadRequest", fzRequestSeeds},
	{"FuzzReadResponse", fzResponseSeeds},
	{"FuzzChunked", fzChunkedSeeds},
}

// fzSeedFile is a seed in the fuzzer's corpus file format.
func fzSeedFile(data string) string {
	return "go test fuzz v1\n[]byte(" + strconv.Quote(data) + ")\n"
}

// fzCorpus returns every input under testdata/fuzz/target: the seeds and
// the crashers the fuzzer kept, named by file.
func fzCorpus(t *testing.T, target string) []fzSeed {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", target)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []fzSeed
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		version, value, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		lit, ok := strings.CutPrefix(strings.TrimSpace(value), "[]byte(")
		lit, ok2 := strings.CutSuffix(lit, ")")
		data, err := strconv.Unquote(lit)
		if version != "go test fuzz v1" || !ok || !ok2 || err != nil {
			t.Fatalf("%s/%s: not a corpus file of one []byte", dir, e.Name())
		}
		out = append(out, fzSeed{e.Name(), data})
	}
	return out
}

// TestFuzzSeedFiles checks that every seed in the tables is also a file
// under testdata/fuzz, so that plain `go test` and the fuzzer start from the
// same corpus. With STRAIT_WRITE_FUZZ_SEEDS=1 it writes the files.
func TestFuzzSeedFiles(t *testing.T) {
	write := os.Getenv("STRAIT_WRITE_FUZZ_SEEDS") == "1"
	for _, set := range fzSeedSets {
		dir := filepath.Join("testdata", "fuzz", set.target)
		seen := map[string]bool{}
		for _, s := range set.seeds {
			if seen[s.name] {
				t.Errorf("%s: two seeds named %q", set.target, s.name)
			}
			seen[s.name] = true
			path := filepath.Join(dir, "seed-"+s.name)
			want := fzSeedFile(s.data)
			if write {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			if got, err := os.ReadFile(path); err != nil || string(got) != want {
				t.Errorf("%s is missing or differs from its seed; run with STRAIT_WRITE_FUZZ_SEEDS=1 to write it", path)
			}
		}
		if !write {
			fzCorpus(t, set.target) // every file parses
		}
	}
}
