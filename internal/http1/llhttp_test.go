package http1

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/straitproxy/strait/header"
)

// TestLLHTTPCorpus drives the Reader with the markdown test cases of
// nodejs/llhttp, the parser of Node.js (<corpora>/llhttp/request/*.md and
// response/*.md). Each case is a raw input (a ```http block) and the events
// llhttp emits for it (a ```log block): the spans of the method, target,
// fields and body, and "error code=N" where llhttp refuses the input.
//
// The expectations:
//
//   - Input llhttp refuses, the codec refuses too: reading a head or a body
//     returns an *Error. llhttp's "Data after `Connection: close`" is the one
//     refusal the codec leaves to its caller: it reports KeepAlive false, and
//     the proxy closes the connection without reading what follows.
//   - Input llhttp accepts, the codec parses too, message after message, and
//     both see the same method, target, version, status, reason, fields (in
//     order), body bytes and trailers. Where the input ends inside a message
//     the codec reports io.ErrUnexpectedEOF there.
//   - Except where the codec is deliberately stricter than llhttp. An
//     HTTP/1.1 request without Host (most llhttp cases have none) is
//     computed, not listed: the input as it is must be refused with
//     ErrMissingHost at the first such request, and the same input with
//     "Host: a" added after each such request line must then parse and
//     match llhttp. Every other deliberate refusal is listed case by case in
//     llhttpDeliberate with the rule it applies, and must be exactly that
//     error.
//   - And except where llhttp refuses what HTTP allows and the codec
//     deliberately accepts it: listed case by case, with the reason, in
//     llhttpTolerated.
//
// Any other difference fails the test: it is a codec bug, or a rule to be
// reviewed and then listed, never a reason to loosen the comparison.
//
// Every input is also fed to the codec one byte per Read, and must give
// exactly the same result: the head scanner and the body reader resume where
// they stopped.
func TestLLHTTPCorpus(t *testing.T) {
	dir := corporaDir(t, "llhttp")
	var cases []*llhttpCase
	for _, sub := range []string{"request", "response"} {
		files, err := filepath.Glob(filepath.Join(dir, sub, "*.md"))
		if err != nil {
			t.Fatal(err)
		}
		sort.Strings(files)
		for _, f := range files {
			cases = append(cases, llhttpLoad(t, dir, f)...)
		}
	}
	if len(cases) == 0 {
		t.Fatalf("no llhttp cases under %s", dir)
	}

	ran, failed := 0, 0
	skipped, outcomes := map[string]int{}, map[string]int{}
	used := map[string]bool{}
	for _, c := range cases {
		if why := c.skipReason(); why != "" {
			skipped[why]++
			continue
		}
		t.Run(c.key, func(t *testing.T) {
			ran++
			outcome := llhttpCheck(t, c, used)
			if t.Failed() {
				t.Logf("the case is at llhttp/%s", c.at)
				failed++
				return
			}
			outcomes[outcome]++
		})
	}
	for _, table := range []map[string]bool{llhttpKeys(llhttpDeliberate), llhttpKeys(llhttpTolerated)} {
		for key := range table {
			if !used[key] {
				t.Errorf("table entry %q matches no case that is run", key)
			}
		}
	}
	t.Logf("llhttp: %d cases; skipped %v; ran %d: %d differ, and where they agree: %v",
		len(cases), skipped, ran, failed, outcomes)
}

func llhttpKeys[V any](m map[string]V) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

// llhttpDeliberate lists the inputs llhttp accepts and the codec refuses on
// purpose, keyed by file/title, with the rule (docs/http1.md, "What is
// refused") that refuses them. Requests are judged with Host added where
// HTTP/1.1 needs it, so the rule listed is the one that applies besides the
// Host rule. The refusal must be exactly this error.
var llhttpDeliberate = map[string]*Error{
	// llhttp reads the bytes after a CONNECT head as tunnel data whatever
	// its Content-Length says; a CONNECT carrying framing fields is refused
	// here rather than guessed at (RFC 9110 §9.3.6: CONNECT has no content).
	"request/method.md/CONNECT with body": ErrConnectBody,
	// The asterisk-form target is only for a server-wide OPTIONS (RFC 9112
	// §3.2.4). SSDP's M-SEARCH * is multicast UDP, not HTTP through a proxy;
	// "PRI * HTTP/1.1" is the start of the HTTP/2 preface, which llhttp
	// pauses on to hand over and strait does not speak on an HTTP/1 port.
	"request/method.md/M-SEARCH request":  ErrTarget,
	"request/method.md/PRI request HTTP2": ErrTarget,
	// A fragment is never sent (RFC 9110 §7.1); '"' must be percent-encoded
	// (RFC 3986 §2); userinfo in a target is refused (RFC 9110 §4.2.4: treat
	// it as an error). The two transfer-encoding cases are about
	// "deflate, chunked", which the codec would refuse too (501,
	// ErrTEUnsupported), but their target ends in "#hey" and is refused
	// first.
	"request/uri.md/Quotes in URI":                                                                  ErrTarget,
	"request/uri.md/Fragment in URI":                                                                ErrTarget,
	"request/uri.md/`host:port` and basic auth":                                                     ErrTarget,
	"request/transfer-encoding.md/POST with `chunked` as last transfer-encoding":                    ErrTarget,
	"request/transfer-encoding.md/POST with `chunked` as last transfer-encoding (multiple headers)": ErrTarget,
	// The codec speaks HTTP only: RTSP/1.0 and ICE/1.0 are not an
	// HTTP-version (RFC 9112 §2.3). In a status line every version problem
	// is ErrStatusLine; HTTP/0.9 had no status line at all.
	"request/method.md/SOURCE request with ICE":    ErrVersion,
	"request/method.md/OPTIONS request with RTSP":  ErrVersion,
	"request/method.md/ANNOUNCE request with RTSP": ErrVersion,
	"response/sample.md/RTSP response":             ErrStatusLine,
	"response/sample.md/ICE response":              ErrStatusLine,
	"response/sample.md/HTTP version 0.9":          ErrStatusLine,
	// HTTP/0.9 simple requests ("GET /" without a version) are not served.
	"request/sample.md/No HTTP version": ErrRequestLine,
	// A response whose Transfer-Encoding does not end in chunked is
	// delimited by the close of the connection (RFC 9112 §6.3 rule 4), which
	// llhttp accepts; the codec decodes chunked only and refuses any other
	// coding rather than relay a body it cannot re-frame.
	"response/transfer-encoding.md/`chunked` before other transfer-encoding":                             ErrTENotChunkedLast,
	"response/transfer-encoding.md/multiple transfer-encoding where chunked is not the last one":         ErrTENotChunkedLast,
	"response/transfer-encoding.md/`chunkedchunked` transfer-encoding does not enable chunked enconding": ErrTENotChunkedLast,
}

// llhttpTolerated lists the inputs llhttp refuses and the codec accepts on
// purpose, with the reason. They must parse without error.
var llhttpTolerated = map[string]string{
	// llhttp knows a fixed list of methods and refuses any other, and RTSP's
	// methods with HTTP. A method is any token (RFC 9110 §9.1) and the set
	// is extensible (§16.1): a proxy relays methods it does not know.
	"request/invalid.md/HTTP protocol and ANNOUNCE method": "extension method (any token)",
	"request/invalid.md/Invalid method":                    "extension method (any token)",
}

// llhttpCase is one case of the corpus.
type llhttpCase struct {
	key  string         // file/title, with "#2" etc. for a title repeated in a file
	at   string         // file:line of the http block
	meta map[string]any // the <!-- meta={...} --> object
	raw  []byte         // the input, normalised as llhttp's test runner does
	log  []string       // the log lines, with \t and \f unescaped as the runner does
}

func (c *llhttpCase) kind() string { s, _ := c.meta["type"].(string); return s }

// skipReason says why a case is not run, or "" to run it. Only the plain
// "request" and "response" types are llhttp's default, strict parse.
func (c *llhttpCase) skipReason() string {
	switch k := c.kind(); {
	case strings.Contains(k, "lenient"):
		// Parsed with one of llhttp's lenient flags (obs-fold, bare CR or
		// LF, spaces after a chunk size, data after close, ...): leniencies
		// strait does not adopt.
		return "lenient"
	case strings.HasSuffix(k, "-finish"):
		// What llhttp_finish() says at the end of the input: a call of
		// llhttp's API the codec has no equivalent of.
		return "finish"
	case k != "request" && k != "response":
		return "type " + k
	}
	if _, ok := c.meta["pause"]; ok {
		// A callback pauses the parser at an event: a test of llhttp's
		// pause/resume API, whose log interleaves the pauses.
		return "pause"
	}
	if _, ok := c.meta["skipBody"]; ok {
		// on_headers_complete tells llhttp to skip the body (as for a
		// response to HEAD): the log depends on that callback.
		return "skipBody"
	}
	return ""
}

// llhttpLoad reads the cases of one markdown file: each is a heading, an
// HTML comment <!-- meta={...} -->, a ```http block and a ```log block.
func llhttpLoad(t *testing.T, dir, file string) []*llhttpCase {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rel, _ := filepath.Rel(dir, file)
	rel = filepath.ToSlash(rel)

	metaRe := regexp.MustCompile(`^<!--\s*meta=(.*?)\s*-->\s*$`)
	var (
		cases  []*llhttpCase
		title  string
		meta   map[string]any
		input  *string
		line   int
		fence  string // the info string of the open block; "" outside one
		block  []string
		titles = map[string]int{}
	)
	for i, l := range strings.Split(string(data), "\n") {
		if fence != "" {
			if strings.TrimSpace(l) != "```" {
				block = append(block, l)
				continue
			}
			// mdgator gives a block's text with a newline after every line.
			text := ""
			if len(block) > 0 {
				text = strings.Join(block, "\n") + "\n"
			}
			switch fence {
			case "http":
				input = &text
			case "log":
				if input == nil || meta == nil {
					t.Fatalf("%s:%d: log block without meta and http block", rel, i+1)
				}
				raw, err := llhttpNormalize(*input)
				if err != nil {
					t.Fatalf("%s:%d: %v", rel, line, err)
				}
				titles[title]++
				key := rel + "/" + title
				if n := titles[title]; n > 1 {
					key += "#" + strconv.Itoa(n)
				}
				cases = append(cases, &llhttpCase{
					key: key, at: rel + ":" + strconv.Itoa(line), meta: meta, raw: raw, log: llhttpLogLines(text),
				})
				meta, input = nil, nil
			}
			fence = ""
			continue
		}
		switch {
		case strings.HasPrefix(l, "```"):
			fence, block, line = strings.TrimSpace(strings.TrimPrefix(l, "```")), nil, i+1
			if fence == "" {
				fence = "text"
			}
		case strings.HasPrefix(l, "#"):
			title = strings.TrimSpace(strings.TrimLeft(l, "#"))
			meta, input = nil, nil
		case metaRe.MatchString(l):
			meta = map[string]any{}
			if err := json.Unmarshal([]byte(metaRe.FindStringSubmatch(l)[1]), &meta); err != nil {
				t.Fatalf("%s:%d: meta: %v", rel, i+1, err)
			}
		}
	}
	return cases
}

var (
	llhttpEscapedNL = regexp.MustCompile(`\\(\r\n|\r|\n)`)
	llhttpNL        = regexp.MustCompile(`\r\n|\r|\n`)
	llhttpHexEsc    = regexp.MustCompile(`\\x([0-9a-fA-F]+)`)
	llhttpOctEsc    = regexp.MustCompile(`\\([0-7]{1,3})`)
)

// llhttpNormalize turns the text of a ```http block into the bytes llhttp's
// test runner (test/md-test.ts) feeds the parser, in its order:
//
//  1. drop the block's last newline;
//  2. drop escaped newlines: a backslash at the end of a line joins it to
//     the next, so a line "HTTP/1.1 200 \r\n\" gives one CRLF, not two;
//  3. turn every newline (CRLF, CR or LF) into CRLF;
//  4. unescape \r, \n, \t and \f, then \xHH... and octal \NNN into the
//     character of that code.
//
// The runner hands the result to the parser as a command-line argument,
// that is in UTF-8: a character above 0x7F from an escape (\xff) is two
// bytes, as the offsets in the logs confirm ("\xffValue2" has len=8).
func llhttpNormalize(s string) ([]byte, error) {
	s = strings.TrimSuffix(s, "\n")
	s = llhttpEscapedNL.ReplaceAllString(s, "")
	s = llhttpNL.ReplaceAllString(s, "\r\n")
	s = strings.ReplaceAll(s, `\r`, "\r")
	s = strings.ReplaceAll(s, `\n`, "\n")
	s = strings.ReplaceAll(s, `\t`, "\t")
	s = strings.ReplaceAll(s, `\f`, "\f")
	char := func(digits string, base int) string {
		v, _ := strconv.ParseUint(digits, base, 64)
		return string(utf8.AppendRune(nil, rune(v&0xffff))) // JavaScript's String.fromCharCode
	}
	s = llhttpHexEsc.ReplaceAllStringFunc(s, func(m string) string { return char(m[2:], 16) })
	s = llhttpOctEsc.ReplaceAllStringFunc(s, func(m string) string { return char(m[1:], 8) })
	if strings.Contains(s, "${") {
		return nil, errors.New("inline JavaScript ${...} in an http block is not supported")
	}
	return []byte(s), nil
}

// llhttpLogLines splits a log block into lines, unescaping \t and \f as the
// runner does with the expected output.
func llhttpLogLines(text string) []string {
	text = strings.ReplaceAll(text, `\t`, "\t")
	text = strings.ReplaceAll(text, `\f`, "\f")
	return strings.Split(strings.TrimSuffix(text, "\n"), "\n")
}

// llhttpMsg is a message as llhttp saw it.
type llhttpMsg struct {
	begin       int    // offset of "message begin"
	method, url string // requests
	protocol    string // "HTTP", "RTSP", "ICE"
	version     string // as in the start line: "1.1"
	minor       int    // from "headers complete ... v=1/N"
	status      int    // responses
	reason      string // responses: span[status] is the reason phrase
	headers     [][2]string
	trailers    [][2]string
	body        []byte
	headersDone bool // "headers complete"
	headEnd     int  // offset of "headers complete"
	complete    bool // "message complete"
}

// llhttpResult is what a log says about the whole input.
type llhttpResult struct {
	msgs      []*llhttpMsg
	errCode   int // 0: no error
	errReason string
	errOff    int
}

const (
	// llhttp pauses on a CONNECT or Upgrade request and on the HTTP/2
	// preface (HPE_PAUSED_UPGRADE, HPE_PAUSED_H2_UPGRADE): not a refusal but
	// the end of HTTP/1 on the connection.
	llhttpPausedUpgrade   = 22
	llhttpPausedH2Upgrade = 23
	// HPE_CLOSED_CONNECTION: data after a message that closes the connection.
	llhttpClosedConn = 5
)

func (r *llhttpResult) paused() bool {
	return r.errCode == llhttpPausedUpgrade || r.errCode == llhttpPausedH2Upgrade
}

func (r *llhttpResult) rejected() bool { return r.errCode != 0 && !r.paused() }

// where says in which message, and in its head or its body, llhttp stopped
// with its error.
func (r *llhttpResult) where() string {
	for i := len(r.msgs) - 1; i >= 0; i-- {
		if m := r.msgs[i]; m.begin <= r.errOff {
			if m.headersDone && r.errOff > m.headEnd {
				return fmt.Sprintf("message %d body", i)
			}
			return fmt.Sprintf("message %d head", i)
		}
	}
	return "message 0 head"
}

var (
	llhttpSpanRe    = regexp.MustCompile(`^off=(\d+) len=(\d+) span\[([a-z_]+)\]="(.*)"$`)
	llhttpCRLFRe    = regexp.MustCompile(`^off=(\d+) len=1 span\[([a-z_]+)\]=(cr|lf)$`)
	llhttpEventRe   = regexp.MustCompile(`^off=(\d+) (.*)$`)
	llhttpHeadersRe = regexp.MustCompile(`^headers complete (method|status)=(\d+) v=(\d+)/(\d+) flags=[0-9a-f]+ content_length=\d+$`)
	llhttpErrorRe   = regexp.MustCompile(`^error code=(\d+) reason="(.*)"$`)
)

// llhttpParseLog reads the log of c. Every span is checked against c.raw at
// its offset, which proves the input was normalised as llhttp's runner does.
func llhttpParseLog(t *testing.T, c *llhttpCase) *llhttpResult {
	t.Helper()
	res := &llhttpResult{}
	var (
		m         *llhttpMsg
		name, val string
		fieldDone bool // "header_field complete" seen, the field not yet stored
	)
	store := func() {
		if !fieldDone {
			return
		}
		f := [2]string{name, val}
		if m.headersDone {
			m.trailers = append(m.trailers, f)
		} else {
			m.headers = append(m.headers, f)
		}
		name, val, fieldDone = "", "", false
	}
	for _, l := range c.log {
		var span, value string
		if s := llhttpSpanRe.FindStringSubmatch(l); s != nil {
			off, _ := strconv.Atoi(s[1])
			n, _ := strconv.Atoi(s[2])
			span, value = s[3], s[4]
			if n != len(value) || off+n > len(c.raw) || string(c.raw[off:off+n]) != value {
				t.Fatalf("log line %q does not match the normalised input %q", l, c.raw)
			}
		} else if s := llhttpCRLFRe.FindStringSubmatch(l); s != nil {
			off, _ := strconv.Atoi(s[1])
			span, value = s[2], map[string]string{"cr": "\r", "lf": "\n"}[s[3]]
			if off >= len(c.raw) || string(c.raw[off]) != value {
				t.Fatalf("log line %q does not match the normalised input %q", l, c.raw)
			}
		}
		if span != "" {
			if m == nil {
				t.Fatalf("span before message begin: %q", l)
			}
			switch span {
			case "method":
				m.method += value
			case "url":
				m.url += value
			case "protocol":
				m.protocol += value
			case "version":
				m.version += value
			case "status":
				m.reason += value
			case "header_field":
				store() // the field before had no value
				name += value
			case "header_value":
				val += value
			case "body":
				m.body = append(m.body, value...)
			case "chunk_extension_name", "chunk_extension_value":
				// The codec checks chunk extensions and drops them.
			default:
				t.Fatalf("unknown span in %q", l)
			}
			continue
		}
		e := llhttpEventRe.FindStringSubmatch(l)
		if e == nil {
			t.Fatalf("unknown log line %q", l)
		}
		off, _ := strconv.Atoi(e[1])
		switch ev := e[2]; {
		case ev == "message begin":
			m = &llhttpMsg{begin: off}
			res.msgs = append(res.msgs, m)
		case ev == "header_field complete":
			fieldDone = true
		case ev == "header_value complete":
			store()
		case ev == "message complete":
			m.complete = true
		case llhttpHeadersRe.MatchString(ev):
			store()
			s := llhttpHeadersRe.FindStringSubmatch(ev)
			if s[1] == "status" {
				m.status, _ = strconv.Atoi(s[2])
			}
			m.minor, _ = strconv.Atoi(s[4])
			m.headersDone, m.headEnd = true, off
		case llhttpErrorRe.MatchString(ev):
			s := llhttpErrorRe.FindStringSubmatch(ev)
			res.errCode, _ = strconv.Atoi(s[1])
			res.errReason, res.errOff = s[2], off
		case ev == "method complete", ev == "url complete", ev == "protocol complete",
			ev == "version complete", ev == "status complete", ev == "chunk complete",
			ev == "chunk_extension_name complete", ev == "chunk_extension_value complete",
			ev == "reset", strings.HasPrefix(ev, "chunk header len="):
			// Progress with nothing to compare.
		default:
			t.Fatalf("unknown log event %q", l)
		}
	}
	return res
}

// llhttpWithHost returns raw with "Host: a\r\n" added after the request line
// of every HTTP/1.1 request whose head has no Host field, and the indexes of
// those requests. A request whose request line is followed by a line that
// starts with whitespace gets none: that line is what the case is about.
func llhttpWithHost(raw []byte, res *llhttpResult) ([]byte, map[int]bool) {
	added := map[int]bool{}
	var out []byte
	last := 0
	for i, m := range res.msgs {
		b := m.begin
		for b+1 < len(raw) && raw[b] == '\r' && raw[b+1] == '\n' {
			b += 2 // empty lines before the request line
		}
		eol := bytes.Index(raw[b:], []byte("\r\n"))
		if eol < 0 || !bytes.HasSuffix(raw[b:b+eol], []byte(" HTTP/1.1")) {
			continue
		}
		at := b + eol + 2
		if rest := raw[at:]; len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') || llhttpHeadHasHost(rest) {
			continue
		}
		out = append(out, raw[last:at]...)
		out = append(out, "Host: a\r\n"...)
		last = at
		added[i] = true
	}
	return append(out, raw[last:]...), added
}

// llhttpHeadHasHost reports whether the field lines at the start of b, up to
// the first empty line, include a Host field.
func llhttpHeadHasHost(b []byte) bool {
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSuffix(l, "\r")
		if l == "" {
			return false
		}
		if len(l) >= 5 && strings.EqualFold(l[:5], "host:") {
			return true
		}
	}
	return false
}

// llhttpCodecMsg is a message as the codec parsed it, copied out of the
// Reader.
type llhttpCodecMsg struct {
	method, target string // requests
	minor          int
	status         int    // responses
	reason         string // responses
	headers        [][2]string
	trailers       [][2]string
	framing        Framing
	keepAlive      bool
	body           []byte
	bodyErr        error // from reading the body to its end: nil at its end
}

// llhttpCodecRun is what the codec made of a whole input.
type llhttpCodecRun struct {
	msgs []llhttpCodecMsg
	// headErr is the error of the head read that ended the run: io.EOF at
	// the end of the input between messages. nil when the run ended
	// otherwise.
	headErr error
	// closed: the run stopped after a message with KeepAlive false, as the
	// proxy closes the connection; rest is the input left unread.
	closed bool
	rest   []byte
}

// where says in which message, and in its head or its body, the run ended.
func (r *llhttpCodecRun) where() string {
	if n := len(r.msgs); n > 0 && (r.msgs[n-1].bodyErr != nil || r.closed) {
		return fmt.Sprintf("message %d body", n-1)
	}
	return fmt.Sprintf("message %d head", len(r.msgs))
}

// err returns the error that ended the run, nil if it ended cleanly.
func (r *llhttpCodecRun) err() error {
	if n := len(r.msgs); n > 0 && r.msgs[n-1].bodyErr != nil {
		return r.msgs[n-1].bodyErr
	}
	if r.headErr == io.EOF {
		return nil
	}
	return r.headErr
}

func (r *llhttpCodecRun) String() string {
	var b strings.Builder
	for i, m := range r.msgs {
		fmt.Fprintf(&b, "\n  message %d: %q %q HTTP/1.%d %d %q fields %q body %q trailers %q keep-alive %v; body: %v",
			i, m.method, m.target, m.minor, m.status, m.reason, m.headers, m.body, m.trailers, m.keepAlive, corporaErr(m.bodyErr))
	}
	switch {
	case r.closed:
		fmt.Fprintf(&b, "\n  closed (KeepAlive false), leaving %q unread", r.rest)
	case r.headErr != nil:
		fmt.Fprintf(&b, "\n  next head: %v", corporaErr(r.headErr))
	}
	return b.String()
}

// llhttpRunCodec reads an input with the codec as a proxy does: message
// after message, each body read to its end, until an error, the end of the
// input, a message after which the connection closes (KeepAlive false), or
// limit messages (limit < 0: no limit). Responses answer GET: no case in the
// corpus that is run says otherwise (responses to HEAD are skipBody cases).
func llhttpRunCodec(src io.Reader, raw []byte, response bool, limit int) *llhttpCodecRun {
	counted := &llhttpCountingReader{r: src}
	rd := NewReader(counted, Limits{})
	run := &llhttpCodecRun{}
	for limit < 0 || len(run.msgs) < limit {
		var m llhttpCodecMsg
		if response {
			var resp Response
			if run.headErr = rd.ReadResponse(&resp, []byte("GET")); run.headErr != nil {
				return run
			}
			m.minor, m.status, m.reason = resp.Minor, resp.Status, string(resp.Reason)
			m.headers = llhttpFields(&resp.Header)
			m.framing, m.keepAlive = resp.Framing, resp.KeepAlive
		} else {
			var req Request
			if run.headErr = rd.ReadRequest(&req); run.headErr != nil {
				return run
			}
			m.method, m.target, m.minor = string(req.Method), string(req.Target), req.Minor
			m.headers = llhttpFields(&req.Header)
			m.framing, m.keepAlive = req.Framing, req.KeepAlive
		}
		m.body, m.bodyErr = io.ReadAll(rd.Body())
		m.trailers = llhttpFields(&rd.Body().Trailer)
		run.msgs = append(run.msgs, m)
		if m.bodyErr != nil {
			return run
		}
		if !m.keepAlive {
			run.closed = true
			run.rest = raw[counted.n-rd.Buffered():]
			return run
		}
	}
	return run
}

type llhttpCountingReader struct {
	r io.Reader
	n int
}

func (c *llhttpCountingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// llhttpFields copies the fields of h.
func llhttpFields(h *header.Header) [][2]string {
	var out [][2]string
	for _, f := range h.Fields() {
		out = append(out, [2]string{string(f.Name), string(f.Value)})
	}
	return out
}

// llhttpRun runs the codec over raw twice, with the whole input at hand and
// one byte per Read, and fails the test if the two results differ.
func llhttpRun(t *testing.T, raw []byte, response bool, limit int) *llhttpCodecRun {
	t.Helper()
	run := llhttpRunCodec(bytes.NewReader(raw), raw, response, limit)
	slow := llhttpRunCodec(iotest.OneByteReader(bytes.NewReader(raw)), raw, response, limit)
	if a, b := run.String(), slow.String(); a != b {
		t.Errorf("input %q: the result depends on how the input arrives:\nwhole:%s\none byte per read:%s", raw, a, b)
	}
	return run
}

// llhttpCheck runs one case and returns how both parsers agreed.
func llhttpCheck(t *testing.T, c *llhttpCase, used map[string]bool) string {
	res := llhttpParseLog(t, c)
	response := c.kind() == "response"
	raw, added := c.raw, map[int]bool{}
	if !response {
		raw, added = llhttpWithHost(c.raw, res)
	}
	// After a pause on CONNECT or Upgrade the rest of the input is tunnelled
	// bytes, not HTTP: the codec reads the messages llhttp began, the last
	// being the one it paused on, and no more.
	limit := -1
	if res.paused() {
		limit = len(res.msgs)
	}
	want, deliberate := llhttpDeliberate[c.key]
	why, tolerated := llhttpTolerated[c.key]
	used[c.key] = deliberate || tolerated

	switch {
	case deliberate && res.rejected():
		t.Fatalf("listed in llhttpDeliberate, but llhttp refuses it (error %d %q): remove the entry", res.errCode, res.errReason)
	case tolerated:
		if !res.rejected() {
			t.Fatalf("listed in llhttpTolerated, but llhttp accepts it: remove the entry")
		}
		run := llhttpRun(t, raw, response, -1)
		if err := run.err(); err != nil {
			t.Errorf("llhttpTolerated says the codec accepts this (%s), but it says %v\ninput %q%s", why, corporaErr(err), raw, run)
		}
		t.Logf("llhttp: error %d %q at %d; the codec accepts it on purpose: %s", res.errCode, res.errReason, res.errOff, why)
		return "tolerated"

	case res.rejected():
		llhttpWantRefused(t, res, raw, response)
		return "both refuse"

	case deliberate:
		run := llhttpRun(t, raw, response, limit)
		if err := run.err(); !errors.Is(err, want) {
			t.Errorf("llhttpDeliberate: want %q, got %v\ninput %q%s", want.Reason, corporaErr(err), raw, run)
		}
		return "refused on purpose: " + want.Reason
	}

	if len(added) > 0 {
		// RFC 9112 §3.2: a server MUST respond 400 to an HTTP/1.1 request
		// without Host. As it is, the input must be refused with exactly
		// that at the first such request, after those before it parsed.
		first := slices.Min(slices.Collect(maps.Keys(added)))
		run := llhttpRun(t, c.raw, response, limit)
		if len(run.msgs) != first || !errors.Is(run.headErr, ErrMissingHost) {
			t.Errorf("want message %d refused with %q, got:%s\ninput %q", first, ErrMissingHost.Reason, run, c.raw)
		}
	}
	run := llhttpRun(t, raw, response, limit)
	if problems := llhttpCompare(res, run, added, response); len(problems) > 0 {
		t.Errorf("llhttp accepts this input, the codec differs:\n%s\ninput %q\ncodec:%s", strings.Join(problems, "\n"), raw, run)
	}
	if len(added) > 0 {
		return "both parse once Host is added"
	}
	return "both parse"
}

// llhttpWantRefused checks that the codec refuses an input llhttp refuses.
// Where the codec refuses elsewhere than llhttp (in an earlier message, or in
// the head where llhttp refused the body), the log says so: both refuse,
// but the case's own point is not what the codec refused.
func llhttpWantRefused(t *testing.T, res *llhttpResult, raw []byte, response bool) {
	t.Helper()
	refused := func(run *llhttpCodecRun) string {
		var e *Error
		how := ""
		switch err := run.err(); {
		case errors.As(err, &e) && e != ErrMissingHost:
			how = e.Reason
		case res.errCode == llhttpClosedConn && run.closed && strings.Trim(string(run.rest), "\r\n") != "":
			how = fmt.Sprintf("KeepAlive false: the proxy closes without reading %q", run.rest)
		default:
			return ""
		}
		if a, b := res.where(), run.where(); a != b {
			how += fmt.Sprintf(" (in %s; llhttp refuses %s)", b, a)
		}
		return how
	}
	run := llhttpRun(t, raw, response, -1)
	if how := refused(run); how != "" {
		t.Logf("llhttp: error %d %q at %d; codec: %s", res.errCode, res.errReason, res.errOff, how)
		return
	}
	if run.err() == io.ErrUnexpectedEOF {
		// The codec judges a head once it holds all of it, and a chunk-size
		// line once it holds the whole line, where llhttp judges each byte
		// as it comes: an input that stops short leaves the codec waiting.
		// Complete it with an empty line and judge again.
		done := append(slices.Clip(raw), "\r\n\r\n"...)
		if how := refused(llhttpRun(t, done, response, -1)); how != "" {
			t.Logf("llhttp: error %d %q at %d; codec: waits for the rest of the line or head, then: %s",
				res.errCode, res.errReason, res.errOff, how)
			return
		}
	}
	t.Errorf("llhttp refuses this input (error %d %q at offset %d), the codec does not.\ninput %q%s",
		res.errCode, res.errReason, res.errOff, raw, run)
}

// llhttpCompare lists the differences between what llhttp and the codec saw
// in an input both accept. added marks the requests given a Host.
func llhttpCompare(res *llhttpResult, run *llhttpCodecRun, added map[int]bool, response bool) []string {
	var out []string
	bad := func(i int, format string, args ...any) {
		out = append(out, fmt.Sprintf("message %d: ", i)+fmt.Sprintf(format, args...))
	}
	trim := func(fields [][2]string) [][2]string {
		// llhttp's value spans keep trailing whitespace; a field value does
		// not include it (RFC 9110 §5.5), and the codec drops it.
		var out [][2]string
		for _, f := range fields {
			out = append(out, [2]string{f[0], strings.TrimRight(f[1], " \t")})
		}
		return out
	}
	for i, m := range res.msgs {
		if i >= len(run.msgs) {
			// The codec has no head for this message: right only where the
			// input ends inside the head.
			if i == len(run.msgs) && !m.headersDone && run.headErr == io.ErrUnexpectedEOF {
				return out
			}
			bad(i, "llhttp reads it, the codec does not (next head: %v)", corporaErr(run.headErr))
			return out
		}
		g := run.msgs[i]
		if !m.headersDone {
			bad(i, "the codec reads a head llhttp did not finish")
			continue
		}
		if response {
			if g.status != m.status || g.reason != m.reason {
				bad(i, "status %d %q, llhttp %d %q", g.status, g.reason, m.status, m.reason)
			}
		} else if g.method != m.method || g.target != m.url {
			bad(i, "request line %q %q, llhttp %q %q", g.method, g.target, m.method, m.url)
		}
		if m.protocol != "HTTP" || g.minor != m.minor {
			bad(i, "version HTTP/1.%d, llhttp %s/%s", g.minor, m.protocol, m.version)
		}
		var want [][2]string
		if added[i] {
			want = append(want, [2]string{"Host", "a"})
		}
		if want = append(want, trim(m.headers)...); !slices.Equal(g.headers, want) {
			bad(i, "fields %q, llhttp %q", g.headers, want)
		}
		if want := trim(m.trailers); !slices.Equal(g.trailers, want) {
			bad(i, "trailers %q, llhttp %q", g.trailers, want)
		}
		if !bytes.Equal(g.body, m.body) {
			bad(i, "body %q, llhttp %q", g.body, m.body)
		}
		switch {
		case m.complete && g.bodyErr != nil:
			bad(i, "llhttp completes the message, the codec's body ends with %v", corporaErr(g.bodyErr))
		case m.complete:
		case i < len(res.msgs)-1:
			bad(i, "llhttp does not complete a message it reads past")
		case res.paused():
			// Paused inside this message (CONNECT): nothing more to compare.
		case g.bodyErr == nil && g.framing != CloseBody:
			// Only a body delimited by the end of the connection ends
			// without llhttp seeing its end (it does at llhttp_finish()).
			bad(i, "llhttp waits for more of the message, the codec ends it")
		case g.bodyErr != nil && g.bodyErr != io.ErrUnexpectedEOF:
			bad(i, "the input ends in the body, the codec says %v", corporaErr(g.bodyErr))
		}
	}
	if len(run.msgs) > len(res.msgs) {
		out = append(out, fmt.Sprintf("the codec reads %d messages, llhttp %d", len(run.msgs), len(res.msgs)))
	}
	if n := len(run.msgs); n == len(res.msgs) && n > 0 && run.msgs[n-1].bodyErr == nil && !res.paused() {
		// After the last message: the end of the input, or a close with
		// nothing but empty lines left.
		switch {
		case run.closed && strings.Trim(string(run.rest), "\r\n") != "":
			out = append(out, fmt.Sprintf("the codec stops after Connection: close, leaving %q that llhttp parses", run.rest))
		case !run.closed && run.headErr != io.EOF:
			out = append(out, fmt.Sprintf("after the last message the codec says %v", corporaErr(run.headErr)))
		}
	}
	return out
}
