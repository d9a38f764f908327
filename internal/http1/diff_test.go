package http1_test

// TestDifferentialStd reads the same messages with the codec and with
// net/http (http.ReadRequest, http.ReadResponse) and requires them to agree.
// Where both accept the first message of an input, they must agree on its
// request line or status, its fields, its framing and its body. Where only
// one accepts, the difference must be one of the deliberate ones listed
// below, each with its reason: the codec is stricter than net/http on
// purpose (it stands in front of servers that read framing differently), and
// net/http refuses a few things the RFCs allow.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/straitproxy/strait/internal/http1"
)

// dfCodecStricter lists, by the codec's error, what the codec refuses and
// net/http accepts.
var dfCodecStricter = map[*http1.Error]string{
	http1.ErrBareLF: "RFC 9112 §2.2 allows but does not require accepting a bare LF line end; the codec refuses it " +
		"(a peer that does not see that line break reads another message), net/http accepts it",
	http1.ErrBareCR: "RFC 9112 §2.2: a bare CR must be rejected or replaced by SP; net/http keeps it inside the status line's reason " +
		"(where a peer that ends lines at CR sees a field)",
	http1.ErrObsFold:          "RFC 9112 §5.2: a server must reject obs-fold or replace it; the codec rejects, net/http unfolds",
	http1.ErrSpaceBeforeColon: "RFC 9112 §5.1 requires 400; net/http keeps \"Name : v\" as a field named \"Name \" (how \"Transfer-Encoding :\" smuggling hides)",
	http1.ErrLookalikeField: "names such as Transfer_Encoding or Content--Length read as framing fields to CGI-style peers " +
		"that map '_' to '-'; net/http keeps them as ordinary fields",
	http1.ErrConnectBody:   "what follows a CONNECT head is tunnel data (RFC 9110 §9.3.6); net/http reads a Content-Length body",
	http1.ErrMissingHost:   "RFC 9112 §3.2 requires 400 for HTTP/1.1 without Host; net/http checks it in Server, not in ReadRequest",
	http1.ErrInvalidHost:   "the codec checks Host against RFC 3986 uri-host [\":\" port]; ReadRequest does not look at Host (Server does, loosely)",
	http1.ErrMultipleCL:    "RFC 9110 §8.6 lets a recipient reject repeated Content-Length even when equal; the codec does, net/http merges equal values",
	http1.ErrCLAndTE:       "RFC 9112 §6.1: both fields \"ought to be handled as an error\"; net/http drops Content-Length and reads chunked",
	http1.ErrTEInHTTP10:    "RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means faulty framing; net/http ignores the field and uses Content-Length",
	http1.ErrBodyInGetHead: "a chunked body on GET or HEAD has no defined meaning and peers disagree on reading it; net/http reads it",
	http1.ErrRequestLine: "the codec requires \"method SP request-target SP HTTP-version\" with a non-empty target; " +
		"net/http accepts an empty CONNECT target (it parses \"http://\" + target)",
	http1.ErrVersionNotSupp: "the codec answers 505 to versions other than HTTP/1.0 and 1.1; ReadRequest parses any HTTP/d.d and leaves that to the caller",
	http1.ErrTarget: "the codec refuses targets RFC 9112 §3.2 does not allow: characters RFC 3986 requires encoded (\" < > non-ASCII), " +
		"bad %-escapes in the query, \"*\" outside OPTIONS, userinfo, non-http schemes, CONNECT without host:port; net/url lets them through",
	http1.ErrChunkExt: "the codec checks the chunk-ext grammar of RFC 9112 §7.1.1 (whitespace after the size included); net/http drops extensions unparsed",
	http1.ErrStatusLine: "the codec requires \"HTTP/1.x SP 3DIGIT [SP reason]\", first digit 1-9, no controls in the reason; " +
		"net/http skips extra spaces and takes any HTTP/d.d and any code strconv.Atoi reads",
	http1.ErrTooManyFields: "the codec's MaxHeaderCount (100 by default); ReadRequest and ReadResponse have no count limit",
}

// dfSizeBWS finds a chunk-size line with whitespace before its extension.
var dfSizeBWS = regexp.MustCompile("\r\n[0-9a-fA-F]+[ \t]+;")

type dfStdRule struct {
	name   string
	match  func(in []byte, stdErr error) bool
	reason string
}

// dfStdStricter lists what net/http refuses and the codec accepts, matched
// on the input and net/http's error.
var dfStdStricter = []dfStdRule{
	{"empty lines before the start line",
		func(in []byte, err error) bool {
			return bytes.HasPrefix(in, []byte("\r\n")) &&
				(strings.Contains(err.Error(), "malformed HTTP request") || strings.Contains(err.Error(), "malformed HTTP response"))
		},
		"RFC 9112 §2.2: a server should ignore at least one empty line before the request line (the codec also skips them " +
			"before a status line, as some servers send one after a 1xx); net/http does not"},
	{"Trailer field naming a framing field",
		func(_ []byte, err error) bool { return strings.Contains(err.Error(), "bad trailer key") },
		"RFC 9110 §6.6.2 does not forbid declaring them; the codec never lets a trailer field act as framing, so it relays the declaration"},
	{"whitespace between chunk size and extension",
		func(in []byte, err error) bool {
			return strings.Contains(err.Error(), "invalid byte in chunk length") && dfSizeBWS.Match(in)
		},
		"RFC 9112 §7.1.1 allows BWS before \";\" in a chunk extension; net/http takes the whitespace as part of the size"},
	{"chunk line of 4095 or 4096 bytes",
		func(_ []byte, err error) bool { return strings.Contains(err.Error(), "header line too long") },
		"the codec's chunk line limit (maxChunkLine) is 4096 bytes; net/http stops at its 4 KiB read buffer, CRLF included"},
}

// dfCases are hand-written messages: where the two parsers are most likely
// to read the same bytes differently, and one example of each deliberate
// difference above.
var dfCases = []struct {
	name, kind, in string // kind: "req" or "resp"
}{
	{"mixed-case-names", "req", "GET / HTTP/1.1\r\nhOsT: example.com\r\nx-LOWER-upper: v\r\nACCEPT: */*\r\n\r\n"},
	{"repeated-fields-order", "req", "GET / HTTP/1.1\r\nHost: example.com\r\nAccept: a\r\nX: 1\r\naccept: b\r\nX: 2\r\n\r\n"},
	{"value-whitespace", "req", "GET / HTTP/1.1\r\nHost: example.com\r\nA:no-space\r\nB: \t tabs and spaces \t \r\nC:\r\nD: inner  \t  spaces\r\n\r\n"},
	{"value-obs-text", "req", "GET / HTTP/1.1\r\nHost: example.com\r\nX-Name: caf\xc3\xa9 \xff\r\n\r\n"},
	{"pragma-no-cache", "req", "GET / HTTP/1.1\r\nHost: example.com\r\nPragma: no-cache\r\n\r\n"},
	{"host-port-ipv6", "req", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n"},
	{"host-underscore", "req", "GET / HTTP/1.1\r\nHost: my_host.internal\r\n\r\n"},
	{"absolute-form-other-host", "req", "GET http://origin.example:8080/p?q=1 HTTP/1.1\r\nHost: ignored.example\r\n\r\n"},
	{"absolute-form-no-path", "req", "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"connect", "req", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"},
	{"options-asterisk", "req", "OPTIONS * HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"target-special-chars", "req", "GET /a/%2F/b;p?x={1}|2^3`4\\5&y=%41 HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"method-extension", "req", "PROPFIND /dav HTTP/1.1\r\nHost: example.com\r\nDepth: 1\r\nContent-Length: 0\r\n\r\n"},
	{"cl-leading-zeros-and-ows", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length:  007 \t\r\n\r\n1234567tail"},
	{"te-ows-and-case", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: \t Chunked \r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
	{"chunked-ext-trailers", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"4;a=b;c=\"d e\"\r\nwiki\r\n5\r\npedia\r\ne\r\n in\r\n\r\nchunks.\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n"},
	{"chunked-hex-case-zeros", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n00a\r\n0123456789\r\nB\r\n0123456789a\r\n000\r\n\r\n"},
	{"http10-keep-alive", "req", "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"},
	{"http10-default-close", "req", "GET / HTTP/1.0\r\nHost: example.com\r\n\r\n"},
	{"http11-close-and-upgrade", "req", "GET / HTTP/1.1\r\nHost: example.com\r\nConnection: Upgrade, close\r\nUpgrade: h2c\r\n\r\n"},
	{"expect-continue", "req", "PUT /f HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok"},
	{"pipelined-first-only", "req", "POST /a HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: example.com\r\n\r\n"},

	{"dev-bare-lf", "req", "GET / HTTP/1.1\nHost: example.com\n\n"},
	{"dev-obs-fold", "req", "GET / HTTP/1.1\r\nHost: example.com\r\nX-Long: a\r\n\tb\r\n\r\n"},
	{"dev-space-before-colon", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"},
	{"dev-missing-host", "req", "GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"},
	{"dev-host-bad-port", "req", "GET / HTTP/1.1\r\nHost: example.com:http\r\n\r\n"},
	{"dev-duplicate-cl", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"},
	{"dev-cl-and-te", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"dev-te-http10", "req", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"},
	{"dev-chunked-get", "req", "GET / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"dev-connect-empty-target", "req", "CONNECT  HTTP/1.1\r\nHost: example.com:443\r\n\r\n"},
	{"dev-te-lookalike", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer_Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"},
	{"dev-connect-body", "req", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nContent-Length: 2\r\n\r\nhi"},
	{"dev-version-1.2", "req", "GET / HTTP/1.2\r\nHost: example.com\r\n\r\n"},
	{"dev-target-quote", "req", "GET /\"quoted\" HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"dev-target-bad-query-escape", "req", "GET /?a=%zz HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"dev-target-userinfo", "req", "GET http://user@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"dev-chunk-ext-space", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n"},
	{"dev-chunk-ext-garbage", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n3;@@@\r\nabc\r\n0\r\n\r\n"},
	{"dev-too-many-fields", "req", "GET / HTTP/1.1\r\nHost: example.com\r\n" + strings.Repeat("X: y\r\n", 100) + "\r\n"},
	{"dev-leading-crlf", "req", "\r\nGET / HTTP/1.1\r\nHost: example.com\r\n\r\n"},
	{"dev-trailer-declares-cl", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nTrailer: Content-Length\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	{"dev-chunk-line-4096", "req", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n" +
		fzLongChunkLine(4096) + "\r\nx\r\n0\r\n\r\n"},

	{"resp-content-length", "resp", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"},
	{"resp-chunked-trailers", "resp", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status\r\n\r\n5;x=y\r\nhello\r\n0\r\nGrpc-Status: 0\r\n\r\n"},
	{"resp-close-delimited", "resp", "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<p>to the end</p>"},
	{"resp-http10-keep-alive", "resp", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok"},
	{"resp-connection-close", "resp", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"},
	{"resp-no-reason", "resp", "HTTP/1.1 204\r\n\r\n"},
	{"resp-empty-reason", "resp", "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n"},
	{"resp-reason-obs-text", "resp", "HTTP/1.1 200 Tr\xe8s bien\r\nContent-Length: 0\r\n\r\n"},
	{"resp-304-te", "resp", "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"},
	{"resp-204-cl", "resp", "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n"},
	{"resp-100-continue", "resp", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"resp-pragma", "resp", "HTTP/1.1 200 OK\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n"},
	{"resp-set-cookie", "resp", "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\nContent-Length: 0\r\n\r\n"},
	{"resp-dev-leading-crlf", "resp", "\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"resp-dev-double-space", "resp", "HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n"},
	{"resp-dev-obs-fold", "resp", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n"},
	{"resp-dev-cl-and-te", "resp", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
}

// dfResult is what one parser made of the first message of an input.
type dfResult struct {
	err error // nil if the head and the body were read

	method, target, host string
	status               string // net/http's Response.Status: "200 OK"
	minor                int
	fields               []string // "name: value", names lowercased, sorted
	chunked              bool
	contentLength        int64 // net/http's convention: -1 for chunked
	keepAlive            bool
	body                 string
	trailer              []string
}

func (d dfResult) String() string {
	if d.err != nil {
		return "error: " + d.err.Error()
	}
	return fmt.Sprintf("%s %s %s HTTP/1.%d host=%q chunked=%v cl=%d keep-alive=%v\n  fields %q\n  body %s trailer %q",
		d.method, d.target, d.status, d.minor, d.host, d.chunked, d.contentLength, d.keepAlive, d.fields, fzQ(d.body), d.trailer)
}

func dfPairs(fields []fzField) []string {
	var out []string // nil when empty, as from dfStdPairs
	for _, f := range fields {
		out = append(out, strings.ToLower(f.Name)+": "+f.Value)
	}
	slices.Sort(out)
	return out
}

func dfStdPairs(h http.Header) []string {
	var out []string
	for name, vs := range h {
		for _, v := range vs {
			out = append(out, strings.ToLower(name)+": "+v)
		}
	}
	slices.Sort(out)
	return out
}

// dfStdView adjusts the codec's fields to what net/http makes of the same
// fields: ReadRequest takes Host out (into Request.Host, compared apart),
// Transfer-Encoding goes into TransferEncoding, Trailer out of a chunked
// message into Trailer, "Pragma: no-cache" adds Cache-Control, and
// ReadResponse drops Connection from an HTTP/1.1 response that closes.
func dfStdView(fields []fzField, chunked, response bool, minor int) []fzField {
	f := fzGather(fields)
	hasCC, pragma := false, ""
	for _, fl := range fields {
		switch strings.ToLower(fl.Name) {
		case "cache-control":
			hasCC = true
		case "pragma":
			if pragma == "" {
				pragma = fl.Value + "\x00" // first one only
			}
		}
	}
	var out []fzField
	for _, fl := range fields {
		switch strings.ToLower(fl.Name) {
		case "transfer-encoding":
			continue
		case "host":
			if !response {
				continue
			}
		case "trailer":
			if chunked {
				continue
			}
		case "connection":
			if response && minor == 1 && f.connClose {
				continue
			}
		}
		out = append(out, fl)
	}
	if !hasCC && pragma == "no-cache\x00" {
		out = append(out, fzField{"Cache-Control", "no-cache"})
	}
	return out
}

func dfCodecRequest(in []byte) dfResult {
	r := http1.NewReader(bytes.NewReader(in), http1.Limits{})
	var req http1.Request
	if err := r.ReadRequest(&req); err != nil {
		return dfResult{err: err}
	}
	body, err := io.ReadAll(r.Body())
	if err != nil {
		return dfResult{err: err}
	}
	d := dfResult{
		method: string(req.Method), target: string(req.Target), minor: req.Minor,
		host: string(req.Host), chunked: req.Framing == http1.ChunkedBody,
		contentLength: req.ContentLength, keepAlive: req.KeepAlive,
		body: string(body), trailer: dfPairs(fzFields(&r.Body().Trailer)),
	}
	if req.Authority != nil { // it takes precedence over Host, as in net/http
		d.host = string(req.Authority)
	}
	if d.chunked {
		d.contentLength = -1
	}
	d.fields = dfPairs(dfStdView(fzFields(&req.Header), d.chunked, false, req.Minor))
	return d
}

func dfStdRequest(in []byte) dfResult {
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(in)))
	if err != nil {
		return dfResult{err: err}
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return dfResult{err: err}
	}
	if req.ProtoMajor != 1 {
		return dfResult{err: fmt.Errorf("HTTP/%d.%d", req.ProtoMajor, req.ProtoMinor)}
	}
	return dfResult{
		method: req.Method, target: req.RequestURI, minor: req.ProtoMinor, host: req.Host,
		fields: dfStdPairs(req.Header), chunked: slices.Equal(req.TransferEncoding, []string{"chunked"}),
		contentLength: req.ContentLength, keepAlive: !req.Close,
		body: string(body), trailer: dfStdPairs(req.Trailer),
	}
}

func dfCodecResponse(in []byte, method string) dfResult {
	r := http1.NewReader(bytes.NewReader(in), http1.Limits{})
	var resp http1.Response
	if err := r.ReadResponse(&resp, []byte(method)); err != nil {
		return dfResult{err: err}
	}
	body, err := io.ReadAll(r.Body())
	if err != nil {
		return dfResult{err: err}
	}
	fields := fzFields(&resp.Header)
	d := dfResult{
		status: fmt.Sprintf("%03d", resp.Status), minor: resp.Minor,
		chunked: len(fzGather(fields).te) > 0, keepAlive: resp.KeepAlive,
		body: string(body), trailer: dfPairs(fzFields(&r.Body().Trailer)),
	}
	if resp.Reason != nil {
		d.status += " " + string(resp.Reason)
	}
	if resp.Framing == http1.LengthBody {
		d.contentLength = resp.ContentLength
	}
	d.fields = dfPairs(dfStdView(fields, d.chunked, true, resp.Minor))
	return d
}

func dfStdResponse(in []byte, method string) dfResult {
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(in)), &http.Request{Method: method})
	if err != nil {
		return dfResult{err: err}
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return dfResult{err: err}
	}
	if resp.ProtoMajor != 1 {
		return dfResult{err: fmt.Errorf("HTTP/%d.%d", resp.ProtoMajor, resp.ProtoMinor)}
	}
	d := dfResult{
		status: resp.Status, minor: resp.ProtoMinor,
		fields: dfStdPairs(resp.Header), chunked: slices.Equal(resp.TransferEncoding, []string{"chunked"}),
		keepAlive: !resp.Close, body: string(body), trailer: dfStdPairs(resp.Trailer),
	}
	if d.chunked || resp.ContentLength < 0 || method == "HEAD" || len(body) == 0 {
		d.contentLength = 0 // compared only for a Content-Length body
	} else {
		d.contentLength = resp.ContentLength
	}
	return d
}

type dfInput struct {
	name string
	kind string // "req" or "resp"
	in   []byte
}

func dfInputs(t *testing.T) []dfInput {
	var ins []dfInput
	for _, s := range fzCorpus(t, "FuzzReadRequest") {
		ins = append(ins, dfInput{"FuzzReadRequest/" + s.name, "req", []byte(s.data)})
	}
	for _, s := range fzCorpus(t, "FuzzChunked") {
		ins = append(ins, dfInput{"FuzzChunked/" + s.name, "req", []byte(fzChunkedHead + s.data)})
	}
	for _, s := range fzCorpus(t, "FuzzReadResponse") {
		ins = append(ins, dfInput{"FuzzReadResponse/" + s.name, "resp", []byte(s.data)})
	}
	for _, c := range dfCases {
		ins = append(ins, dfInput{"case/" + c.name, c.kind, []byte(c.in)})
	}
	return ins
}

// dfCompare reads the first message of in with both parsers (as a request,
// or as a response to method) and returns how they relate: "agree", "both
// refuse", or the allow-list entry that covers their difference. problem is
// set when they disagree in a way no entry covers.
func dfCompare(in []byte, kind, method string) (outcome, problem string) {
	var codec, std dfResult
	if kind == "req" {
		codec, std = dfCodecRequest(in), dfStdRequest(in)
	} else {
		codec, std = dfCodecResponse(in, method), dfStdResponse(in, method)
	}
	switch {
	case codec.err == nil && std.err == nil:
		if !reflect.DeepEqual(codec, std) {
			return "", fmt.Sprintf("both accept %s, differently:\ncodec:    %v\nnet/http: %v", fzQ(in), codec, std)
		}
		return "agree", ""
	case codec.err != nil && std.err != nil:
		return "both refuse", ""
	case codec.err != nil:
		var e *http1.Error
		if !errors.As(codec.err, &e) || dfCodecStricter[e] == "" {
			return "", fmt.Sprintf("codec refuses %s (%v), net/http accepts:\n%v", fzQ(in), codec.err, std)
		}
		return "codec: " + e.Reason, ""
	}
	i := slices.IndexFunc(dfStdStricter, func(s dfStdRule) bool { return s.match(in, std.err) })
	if i < 0 {
		return "", fmt.Sprintf("net/http refuses %s (%v), codec accepts:\n%v", fzQ(in), std.err, codec)
	}
	return "net/http: " + dfStdStricter[i].name, ""
}

func TestDifferentialStd(t *testing.T) {
	hits := map[string][]string{} // outcome -> inputs
	for _, in := range dfInputs(t) {
		methods := []string{""}
		if in.kind == "resp" {
			methods = []string{"GET", "HEAD"}
		}
		for _, method := range methods {
			name := in.name
			if method != "" {
				name += " (" + method + ")"
			}
			outcome, problem := dfCompare(in.in, in.kind, method)
			if problem != "" {
				t.Errorf("%s: %s", name, problem)
				continue
			}
			hits[outcome] = append(hits[outcome], name)
		}
	}
	t.Logf("agree: %d, both refuse: %d", len(hits["agree"]), len(hits["both refuse"]))
	keys := make([]string, 0, len(hits))
	for k := range hits {
		if k != "agree" && k != "both refuse" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		t.Logf("%s: %d: %s", k, len(hits[k]), strings.Join(hits[k], ", "))
	}
	for e := range dfCodecStricter {
		if len(hits["codec: "+e.Reason]) == 0 {
			t.Logf("allow-list entry not used: codec: %s", e.Reason)
		}
	}
	for _, s := range dfStdStricter {
		if len(hits["net/http: "+s.name]) == 0 {
			t.Logf("allow-list entry not used: net/http: %s", s.name)
		}
	}
}
