package http1

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/straitproxy/strait/header"
)

// The table tests over testdata/requests and testdata/responses. The file
// format is described in testdata/README.md.

// pfErrors names every rule of errors.go, as the files spell it.
// TestRequestRuleCoverage checks that it is complete.
var pfErrors = map[string]*Error{
	"ErrBareLF":            ErrBareLF,
	"ErrBareCR":            ErrBareCR,
	"ErrRequestLine":       ErrRequestLine,
	"ErrMethod":            ErrMethod,
	"ErrTarget":            ErrTarget,
	"ErrVersion":           ErrVersion,
	"ErrVersionNotSupp":    ErrVersionNotSupp,
	"ErrRequestLineTooBig": ErrRequestLineTooBig,
	"ErrHeaderTooBig":      ErrHeaderTooBig,
	"ErrTooManyFields":     ErrTooManyFields,
	"ErrObsFold":           ErrObsFold,
	"ErrFieldName":         ErrFieldName,
	"ErrSpaceBeforeColon":  ErrSpaceBeforeColon,
	"ErrFieldValue":        ErrFieldValue,
	"ErrMissingColon":      ErrMissingColon,
	"ErrLookalikeField":    ErrLookalikeField,
	"ErrConnectBody":       ErrConnectBody,
	"ErrMissingHost":       ErrMissingHost,
	"ErrMultipleHost":      ErrMultipleHost,
	"ErrInvalidHost":       ErrInvalidHost,
	"ErrContentLength":     ErrContentLength,
	"ErrMultipleCL":        ErrMultipleCL,
	"ErrCLAndTE":           ErrCLAndTE,
	"ErrTENotChunkedLast":  ErrTENotChunkedLast,
	"ErrTEInvalid":         ErrTEInvalid,
	"ErrTEUnsupported":     ErrTEUnsupported,
	"ErrTEInHTTP10":        ErrTEInHTTP10,
	"ErrBodyInGetHead":     ErrBodyInGetHead,
	"ErrChunkSize":         ErrChunkSize,
	"ErrChunkExt":          ErrChunkExt,
	"ErrChunkLineTooBig":   ErrChunkLineTooBig,
	"ErrChunkData":         ErrChunkData,
	"ErrStatusLine":        ErrStatusLine,
	"ErrTrailerTooBig":     ErrTrailerTooBig,
}

// pfStatus is the status each rule must map to (RFC 9110/9112).
var pfStatus = map[*Error]int{
	ErrRequestLineTooBig: 414,
	ErrHeaderTooBig:      431,
	ErrTooManyFields:     431,
	ErrTrailerTooBig:     431,
	ErrTEUnsupported:     501,
	ErrVersionNotSupp:    505,
	// every other rule: 400
}

// pfFile is one testdata file, loaded.
type pfFile struct {
	path   string
	dir    string // valid, invalid or smuggling
	wants  []pfWant
	limits Limits
	method string // responses: the method of the request answered
	msg    []byte
}

// pfWant is the expectation for one message of a file.
type pfWant struct {
	line    int   // line of the file that states it
	err     error // nil: ok; io.EOF, io.ErrUnexpectedEOF or an *Error
	bodyErr error // the error reading the body ends with; nil: a clean end
	checks  []pfCheck
}

type pfCheck struct {
	key, val string
	isNil    bool // the unquoted word nil: the slice must be nil
}

var pfDirective = regexp.MustCompile(`^[a-z]+:`)

func pfLoad(t testing.TB, path string) *pfFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := &pfFile{path: path, dir: filepath.Base(filepath.Dir(path)), method: "GET"}
	raw := false
	for n := 1; len(data) > 0 && data[0] == '#'; n++ {
		line, rest, _ := bytes.Cut(data, []byte("\n"))
		data = rest
		text := strings.TrimSpace(string(line[1:]))
		key, val, _ := strings.Cut(text, ":")
		val = strings.TrimSpace(val)
		switch {
		case text == "raw":
			raw = true
		case !pfDirective.MatchString(text):
			// a comment
		case key == "want":
			w, err := pfParseWant(val)
			if err != nil {
				t.Fatalf("%s:%d: %v", path, n, err)
			}
			w.line = n
			f.wants = append(f.wants, w)
		case key == "limits":
			if err := pfParseLimits(val, &f.limits); err != nil {
				t.Fatalf("%s:%d: %v", path, n, err)
			}
		case key == "method":
			f.method = val
		default:
			t.Fatalf("%s:%d: unknown directive %q", path, n, key)
		}
	}
	if len(f.wants) == 0 {
		t.Fatalf("%s: no '# want:' line", path)
	}
	if !raw {
		data = bytes.ReplaceAll(data, []byte("\n"), []byte("\r\n"))
	}
	if f.msg, err = pfUnescape(data); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f
}

// pfUnescape decodes \xHH escapes; every other byte stands for itself.
func pfUnescape(b []byte) ([]byte, error) {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+1 < len(b) && b[i+1] == 'x' {
			if i+4 > len(b) {
				return nil, fmt.Errorf("truncated \\x escape at byte %d", i)
			}
			v, err := strconv.ParseUint(string(b[i+2:i+4]), 16, 8)
			if err != nil {
				return nil, fmt.Errorf("bad \\x escape %q at byte %d", b[i:i+4], i)
			}
			out = append(out, byte(v))
			i += 3
			continue
		}
		out = append(out, b[i])
	}
	return out, nil
}

// pfSplit splits s at spaces, keeping Go-quoted strings (after key=) whole.
func pfSplit(s string) ([]string, error) {
	var out []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, nil
		}
		i := 0
		for i < len(s) && s[i] != ' ' && s[i] != '\t' {
			if s[i] == '"' {
				q, err := strconv.QuotedPrefix(s[i:])
				if err != nil {
					return nil, fmt.Errorf("bad quoted string in %q", s)
				}
				i += len(q)
				continue
			}
			i++
		}
		out = append(out, s[:i])
		s = s[i:]
	}
}

// pfParseErr parses "ErrName/status", "unexpected-eof" or "eof".
func pfParseErr(s string) (error, error) {
	switch s {
	case "eof":
		return io.EOF, nil
	case "unexpected-eof":
		return io.ErrUnexpectedEOF, nil
	}
	name, st, ok := strings.Cut(s, "/")
	e := pfErrors[name]
	if e == nil {
		return nil, fmt.Errorf("unknown error %q", name)
	}
	if !ok {
		return nil, fmt.Errorf("%s: the status is missing (write %s/%d)", name, name, e.Status)
	}
	if status, err := strconv.Atoi(st); err != nil || status != e.Status {
		return nil, fmt.Errorf("%s: the file says status %s, the codec says %d", name, st, e.Status)
	}
	return e, nil
}

func pfParseWant(s string) (pfWant, error) {
	var w pfWant
	toks, err := pfSplit(s)
	if err != nil {
		return w, err
	}
	if len(toks) == 0 {
		return w, errors.New("empty want")
	}
	if toks[0] != "ok" {
		if len(toks) > 1 {
			return w, fmt.Errorf("an error want takes nothing after it: %q", s)
		}
		w.err, err = pfParseErr(toks[0])
		return w, err
	}
	for _, tok := range toks[1:] {
		key, val, ok := strings.Cut(tok, "=")
		if !ok {
			return w, fmt.Errorf("%q is not key=value", tok)
		}
		c := pfCheck{key: key, val: val}
		switch {
		case val == "nil":
			c.isNil = true
		case strings.HasPrefix(val, `"`):
			if c.val, err = strconv.Unquote(val); err != nil {
				return w, fmt.Errorf("%s: %v", tok, err)
			}
		}
		if key == "bodyerr" {
			if w.bodyErr, err = pfParseErr(val); err != nil {
				return w, err
			}
			continue
		}
		w.checks = append(w.checks, c)
	}
	return w, nil
}

func pfParseLimits(s string, l *Limits) error {
	toks, _ := pfSplit(s)
	for _, tok := range toks {
		key, val, _ := strings.Cut(tok, "=")
		n, err := strconv.Atoi(val)
		if err != nil {
			return fmt.Errorf("limits: %q", tok)
		}
		switch key {
		case "line":
			l.MaxRequestLine = n
		case "head":
			l.MaxHeaderBytes = n
		case "fields":
			l.MaxHeaderCount = n
		default:
			return fmt.Errorf("limits: unknown %q", key)
		}
	}
	return nil
}

// pfMode is one way of feeding a file to the Reader and reading bodies.
type pfMode struct {
	name string
	wrap func(io.Reader) io.Reader
	read func(*Body) ([]byte, error)
}

var pfModes = []pfMode{
	// All at once; bodies through WriteTo (io.Copy).
	{"whole", func(r io.Reader) io.Reader { return r }, func(b *Body) ([]byte, error) {
		var buf bytes.Buffer
		_, err := io.Copy(&buf, b)
		return buf.Bytes(), err
	}},
	// One byte per Read; bodies through Read with a small slice.
	{"onebyte", iotest.OneByteReader, func(b *Body) ([]byte, error) { return pfReadLoop(b, 7) }},
	// Half of what is asked; bodies through Read with a slice large enough
	// for the direct path.
	{"half", iotest.HalfReader, func(b *Body) ([]byte, error) { return pfReadLoop(b, 64<<10) }},
	// The last data comes with io.EOF; bodies through io.ReadAll.
	{"dataerr", iotest.DataErrReader, func(b *Body) ([]byte, error) { return io.ReadAll(b) }},
}

// pfReadLoop reads b to its end with Read and a slice of the given size.
func pfReadLoop(b io.Reader, size int) ([]byte, error) {
	var out []byte
	p := make([]byte, size)
	zeros := 0
	for {
		n, err := b.Read(p)
		out = append(out, p[:n]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		if n == 0 {
			if zeros++; zeros > 100 {
				return out, io.ErrNoProgress
			}
		}
	}
}

func pfFiles(t *testing.T, pattern string) []string {
	t.Helper()
	files, err := filepath.Glob(pattern)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no files match %s", pattern)
	}
	return files
}

func TestRequestFiles(t *testing.T) {
	for _, dir := range []string{"valid", "invalid", "smuggling"} {
		for _, path := range pfFiles(t, filepath.Join("testdata", "requests", dir, "*.txt")) {
			f := pfLoad(t, path)
			pfCheckDir(t, f)
			t.Run(dir+"/"+strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
				for _, m := range pfModes {
					t.Run(m.name, func(t *testing.T) { pfRun(t, f, m, true) })
				}
			})
		}
	}
}

func TestResponseFiles(t *testing.T) {
	for _, dir := range []string{"valid", "invalid"} {
		for _, path := range pfFiles(t, filepath.Join("testdata", "responses", dir, "*.txt")) {
			f := pfLoad(t, path)
			pfCheckDir(t, f)
			t.Run(dir+"/"+strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) {
				for _, m := range pfModes {
					t.Run(m.name, func(t *testing.T) { pfRun(t, f, m, false) })
				}
			})
		}
	}
}

// pfCheckDir keeps the directories honest: valid/ holds no rejection,
// invalid/ holds at least one.
func pfCheckDir(t *testing.T, f *pfFile) {
	t.Helper()
	rejects := false
	for _, w := range f.wants {
		var e *Error
		rejects = rejects || errors.As(w.err, &e) || errors.As(w.bodyErr, &e) || w.err == io.ErrUnexpectedEOF
	}
	switch {
	case f.dir == "valid" && rejects:
		t.Errorf("%s: a file in valid/ expects a rejection", f.path)
	case f.dir == "invalid" && !rejects:
		t.Errorf("%s: a file in invalid/ expects no rejection", f.path)
	}
}

// pfRun reads the messages of f one after another and checks each against
// its want; after the last, the connection must be at a clean end.
func pfRun(t *testing.T, f *pfFile, m pfMode, isRequest bool) {
	r := NewReader(m.wrap(bytes.NewReader(f.msg)), f.limits)
	var req Request // reused across messages, as a server does
	var resp Response
	for i, w := range f.wants {
		var err error
		if isRequest {
			err = r.ReadRequest(&req)
		} else {
			err = r.ReadResponse(&resp, []byte(f.method))
		}
		where := fmt.Sprintf("%s:%d (message %d)", f.path, w.line, i+1)
		if w.err != nil {
			if !errors.Is(err, w.err) {
				t.Errorf("%s: got %v, want %v", where, pfErrString(err), pfErrString(w.err))
			}
			return
		}
		if err != nil {
			t.Errorf("%s: got %v, want ok", where, pfErrString(err))
			return
		}
		var framing Framing
		var cl int64
		if isRequest {
			framing, cl = req.Framing, req.ContentLength
		} else {
			framing, cl = resp.Framing, resp.ContentLength
		}
		if got := r.Body().Framing(); got != framing {
			t.Errorf("%s: Body().Framing() = %s, head says %s", where, pfFramingName(got), pfFramingName(framing))
		}
		if (framing == LengthBody) != (cl > 0) {
			t.Errorf("%s: framing %s with ContentLength %d", where, pfFramingName(framing), cl)
		}
		body, berr := m.read(r.Body())
		if !errors.Is(berr, w.bodyErr) {
			t.Errorf("%s: reading the body: got %v, want %v", where, pfErrString(berr), pfErrString(w.bodyErr))
		}
		if w.bodyErr == nil && berr == nil && !r.Body().Done() {
			t.Errorf("%s: body read to its end but Done() is false", where)
		}
		// The head is checked after the body has been read: reading the
		// body must leave it intact.
		for _, c := range w.checks {
			var msg string
			if isRequest {
				msg = pfCheckRequest(&req, r.Body(), body, c)
			} else {
				msg = pfCheckResponse(&resp, r.Body(), body, c)
			}
			if msg != "" {
				t.Errorf("%s: %s", where, msg)
			}
		}
		if isRequest {
			pfRequestInvariants(t, where, &req)
		} else {
			pfFieldInvariants(t, where, &resp.Header)
		}
		if w.bodyErr != nil {
			return
		}
	}
	var err error
	if isRequest {
		err = r.ReadRequest(&req)
	} else {
		err = r.ReadResponse(&resp, []byte(f.method))
	}
	if err != io.EOF {
		t.Errorf("%s: after the last message: got %v, want io.EOF (bytes left over?)", f.path, pfErrString(err))
	}
}

func pfErrString(err error) string {
	for name, e := range pfErrors {
		if err == e {
			return fmt.Sprintf("%s (%d)", name, e.Status)
		}
	}
	if err == nil {
		return "ok"
	}
	return err.Error()
}

var pfFramingNames = map[string]Framing{"none": NoBody, "length": LengthBody, "chunked": ChunkedBody, "close": CloseBody}

func pfFramingName(f Framing) string {
	for name, v := range pfFramingNames {
		if v == f {
			return name
		}
	}
	return strconv.Itoa(int(f))
}

var pfFormNames = map[string]TargetForm{"origin": OriginForm, "absolute": AbsoluteForm, "authority": AuthorityForm, "asterisk": AsteriskForm}

// pfBytes compares a slice with a check's value; nil must match nil.
func pfBytes(what string, got []byte, c pfCheck) string {
	switch {
	case c.isNil && got != nil:
		return fmt.Sprintf("%s = %q, want nil", what, got)
	case !c.isNil && got == nil:
		return fmt.Sprintf("%s = nil, want %q", what, c.val)
	case !c.isNil && string(got) != c.val:
		return fmt.Sprintf("%s = %q, want %q", what, got, c.val)
	}
	return ""
}

func pfEq[T comparable](what string, got T, want string, parse func(string) (T, bool)) string {
	w, ok := parse(want)
	if !ok {
		return fmt.Sprintf("%s: cannot parse %q", what, want)
	}
	if got != w {
		return fmt.Sprintf("%s = %v, want %v", what, got, w)
	}
	return ""
}

func pfInt(s string) (int64, bool) {
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func pfBool(s string) (bool, bool) {
	b, err := strconv.ParseBool(s)
	return b, err == nil
}

func pfLookup[T any](m map[string]T) func(string) (T, bool) {
	return func(s string) (T, bool) { v, ok := m[s]; return v, ok }
}

// pfCheckCommon handles the keys requests and responses share. ok is false
// for a key it does not know.
func pfCheckCommon(h *header.Header, b *Body, body []byte, framing Framing, cl int64, keepAlive bool, c pfCheck) (msg string, ok bool) {
	switch {
	case c.key == "framing":
		if want, ok := pfFramingNames[c.val]; !ok || framing != want {
			return fmt.Sprintf("Framing = %s, want %s", pfFramingName(framing), c.val), true
		}
		return "", true
	case c.key == "cl":
		return pfEq("ContentLength", cl, c.val, pfInt), true
	case c.key == "keepalive":
		return pfEq("KeepAlive", keepAlive, c.val, pfBool), true
	case c.key == "fields":
		return pfEq("Header.Len()", int64(h.Len()), c.val, pfInt), true
	case c.key == "names":
		var names []string
		for _, f := range h.Fields() {
			names = append(names, string(f.Name))
		}
		if got := strings.Join(names, ","); got != c.val {
			return fmt.Sprintf("field names = %q, want %q", got, c.val), true
		}
		return "", true
	case strings.HasPrefix(c.key, "h."):
		return pfBytes("Header.Get("+c.key[2:]+")", h.Get(c.key[2:]), c), true
	case strings.HasPrefix(c.key, "count."):
		return pfEq("Header.Count("+c.key[6:]+")", int64(h.Count(c.key[6:])), c.val, pfInt), true
	case c.key == "body":
		if string(body) != c.val {
			return fmt.Sprintf("body = %q, want %q", pfShort(body), pfShort([]byte(c.val))), true
		}
		return "", true
	case c.key == "bodylen":
		return pfEq("len(body)", int64(len(body)), c.val, pfInt), true
	case c.key == "trailers":
		return pfEq("Trailer.Len()", int64(b.Trailer.Len()), c.val, pfInt), true
	case strings.HasPrefix(c.key, "trailer."):
		return pfBytes("Trailer.Get("+c.key[8:]+")", b.Trailer.Get(c.key[8:]), c), true
	}
	return "", false
}

func pfShort(b []byte) []byte {
	if len(b) > 200 {
		return append(b[:200:200], "..."...)
	}
	return b
}

func pfCheckRequest(req *Request, b *Body, body []byte, c pfCheck) string {
	if msg, ok := pfCheckCommon(&req.Header, b, body, req.Framing, req.ContentLength, req.KeepAlive, c); ok {
		return msg
	}
	switch c.key {
	case "method":
		return pfBytes("Method", req.Method, c)
	case "target":
		return pfBytes("Target", req.Target, c)
	case "minor":
		return pfEq("Minor", int64(req.Minor), c.val, pfInt)
	case "form":
		return pfEq("Form", req.Form, c.val, pfLookup(pfFormNames))
	case "authority":
		return pfBytes("Authority", req.Authority, c)
	case "host":
		return pfBytes("Host", req.Host, c)
	case "expect":
		return pfEq("ExpectContinue", req.ExpectContinue, c.val, pfBool)
	case "upgrade":
		return pfBytes("Upgrade", req.Upgrade, c)
	}
	return fmt.Sprintf("unknown request key %q", c.key)
}

func pfCheckResponse(resp *Response, b *Body, body []byte, c pfCheck) string {
	if msg, ok := pfCheckCommon(&resp.Header, b, body, resp.Framing, resp.ContentLength, resp.KeepAlive, c); ok {
		return msg
	}
	switch c.key {
	case "status":
		return pfEq("Status", int64(resp.Status), c.val, pfInt)
	case "reason":
		return pfBytes("Reason", resp.Reason, c)
	case "minor":
		return pfEq("Minor", int64(resp.Minor), c.val, pfInt)
	}
	return fmt.Sprintf("unknown response key %q", c.key)
}

// pfRequestInvariants checks what must hold for every accepted request,
// whatever the file says.
func pfRequestInvariants(t *testing.T, where string, req *Request) {
	t.Helper()
	if (req.Form == OriginForm || req.Form == AsteriskForm) && req.Authority != nil {
		t.Errorf("%s: %v target %q has Authority %q, want nil", where, req.Form, req.Target, req.Authority)
	}
	if req.Form == AuthorityForm && string(req.Method) != "CONNECT" {
		t.Errorf("%s: authority-form with method %q", where, req.Method)
	}
	if req.Form == AsteriskForm && string(req.Method) != "OPTIONS" {
		t.Errorf("%s: asterisk-form with method %q", where, req.Method)
	}
	if req.Header.Count("Host") == 0 && req.Host != nil {
		t.Errorf("%s: no Host field but Host = %q", where, req.Host)
	}
	if req.Minor != 0 && req.Minor != 1 {
		t.Errorf("%s: Minor = %d", where, req.Minor)
	}
	pfFieldInvariants(t, where, &req.Header)
}

func pfFieldInvariants(t *testing.T, where string, h *header.Header) {
	t.Helper()
	for _, f := range h.Fields() {
		if !isToken(f.Name) {
			t.Errorf("%s: field name %q is not a token", where, f.Name)
		}
		if v := header.TrimSpace(f.Value); len(v) != len(f.Value) {
			t.Errorf("%s: field value %q keeps surrounding whitespace", where, f.Value)
		}
		for _, c := range f.Value {
			if !isValueChar[c] {
				t.Errorf("%s: field value %q holds %#x", where, f.Value, c)
			}
		}
	}
}

// TestRequestRuleCoverage checks that pfErrors lists every rule declared in
// errors.go, that each maps to the status the RFCs name, and that every rule
// is exercised by at least one testdata file.
func TestRequestRuleCoverage(t *testing.T) {
	fset := token.NewFileSet()
	file, err := parser.ParseFile(fset, "errors.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var declared []string
	for _, d := range file.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, s := range g.Specs {
			for _, n := range s.(*ast.ValueSpec).Names {
				if strings.HasPrefix(n.Name, "Err") {
					declared = append(declared, n.Name)
				}
			}
		}
	}
	for _, name := range declared {
		if pfErrors[name] == nil {
			t.Errorf("errors.go declares %s, which pfErrors (parse_test.go) does not list", name)
		}
	}
	if len(pfErrors) != len(declared) {
		t.Errorf("pfErrors lists %d rules, errors.go declares %d", len(pfErrors), len(declared))
	}
	for name, e := range pfErrors {
		want, ok := pfStatus[e]
		if !ok {
			want = 400
		}
		if e.Status != want {
			t.Errorf("%s.Status = %d, want %d", name, e.Status, want)
		}
		if e.Reason == "" || !strings.HasPrefix(e.Error(), "http1: ") {
			t.Errorf("%s.Error() = %q", name, e.Error())
		}
	}

	used := map[error][]string{}
	for _, pattern := range []string{"testdata/requests/*/*.txt", "testdata/responses/*/*.txt"} {
		for _, path := range pfFiles(t, pattern) {
			for _, w := range pfLoad(t, path).wants {
				used[w.err] = append(used[w.err], path)
				used[w.bodyErr] = append(used[w.bodyErr], path)
			}
		}
	}
	var missing []string
	for name, e := range pfErrors {
		if len(used[e]) == 0 {
			missing = append(missing, name)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("rules no testdata file exercises: %v", missing)
	}
}

// pfRead parses msg as one request, all at once or a byte at a time.
func pfRead(msg string, lim Limits, oneByte bool) (*Request, error) {
	var src io.Reader = strings.NewReader(msg)
	if oneByte {
		src = iotest.OneByteReader(src)
	}
	var req Request
	err := NewReader(src, lim).ReadRequest(&req)
	return &req, err
}

// TestRequestLimitBoundaries checks each head limit on both sides of its
// bound, with the head read at once and a byte at a time: how a message is
// split into reads must not change whether it is accepted.
func TestRequestLimitBoundaries(t *testing.T) {
	type tc struct {
		name string
		msg  string
		lim  Limits
		want error
	}
	var cases []tc

	// Request line of exactly n bytes (CRLF not counted).
	line := func(n int) string {
		const fixed = "GET / HTTP/1.1"
		return "GET /" + strings.Repeat("a", n-len(fixed)) + " HTTP/1.1"
	}
	for _, limit := range []int{64, DefaultMaxRequestLine} {
		lim := Limits{MaxRequestLine: limit}
		if limit == DefaultMaxRequestLine {
			lim = Limits{}
		}
		for _, n := range []int{limit - 1, limit, limit + 1, limit + 100} {
			var want error
			if n > limit {
				want = ErrRequestLineTooBig
			}
			cases = append(cases, tc{fmt.Sprintf("request-line-%d/limit-%d", n, limit), line(n) + "\r\nHost: x\r\n\r\n", lim, want})
		}
		// A long line that never ends is refused once it passes the limit.
		cases = append(cases, tc{fmt.Sprintf("request-line-unterminated/limit-%d", limit), line(limit + 10), lim, ErrRequestLineTooBig})
	}

	// Head of exactly n bytes, start line and final CRLF included.
	head := func(n int) string {
		const fixed = "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: \r\n\r\n"
		return "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + strings.Repeat("p", n-len(fixed)) + "\r\n\r\n"
	}
	for _, limit := range []int{256, DefaultMaxHeaderBytes} {
		lim := Limits{MaxHeaderBytes: limit}
		if limit == DefaultMaxHeaderBytes {
			lim = Limits{}
		}
		for _, n := range []int{limit - 1, limit, limit + 1, limit + 2, limit + 3, limit + 100} {
			var want error
			if n > limit {
				want = ErrHeaderTooBig
			}
			cases = append(cases, tc{fmt.Sprintf("head-%d/limit-%d", n, limit), head(n), lim, want})
		}
	}

	// Number of fields (Host included).
	fields := func(n int) string {
		var b strings.Builder
		b.WriteString("GET / HTTP/1.1\r\nHost: x\r\n")
		for i := 1; i < n; i++ {
			fmt.Fprintf(&b, "X-F%d: v\r\n", i)
		}
		return b.String() + "\r\n"
	}
	for _, limit := range []int{5, DefaultMaxHeaderCount} {
		lim := Limits{MaxHeaderCount: limit}
		if limit == DefaultMaxHeaderCount {
			lim = Limits{}
		}
		cases = append(cases,
			tc{fmt.Sprintf("fields-%d/limit-%d", limit, limit), fields(limit), lim, nil},
			tc{fmt.Sprintf("fields-%d/limit-%d", limit+1, limit), fields(limit + 1), lim, ErrTooManyFields})
	}

	// Empty lines before the request line count against its limit.
	cases = append(cases,
		tc{"leading-crlf-within-limit", strings.Repeat("\r\n", 10) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n", Limits{MaxRequestLine: 64}, nil},
		tc{"leading-crlf-over-limit", strings.Repeat("\r\n", 40) + "GET / HTTP/1.1\r\nHost: x\r\n\r\n", Limits{MaxRequestLine: 64}, ErrRequestLineTooBig})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, oneByte := range []bool{false, true} {
				_, err := pfRead(c.msg, c.lim, oneByte)
				if err != c.want {
					t.Errorf("oneByte=%v: got %v, want %v", oneByte, pfErrString(err), pfErrString(c.want))
				}
			}
		})
	}

	// A chunk-size line of exactly n bytes (CRLF not counted), against
	// maxChunkLine.
	for _, n := range []int{maxChunkLine - 1, maxChunkLine, maxChunkLine + 1} {
		ext := ";a=" + strings.Repeat("x", n-len("5;a="))
		msg := "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5" + ext + "\r\nhello\r\n0\r\n\r\n"
		var want error
		if n > maxChunkLine {
			want = ErrChunkLineTooBig
		}
		t.Run(fmt.Sprintf("chunk-line-%d/max-%d", n, maxChunkLine), func(t *testing.T) {
			for _, oneByte := range []bool{false, true} {
				var src io.Reader = strings.NewReader(msg)
				if oneByte {
					src = iotest.OneByteReader(src)
				}
				r := NewReader(src, Limits{})
				var req Request
				if err := r.ReadRequest(&req); err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(r.Body())
				if err != want || (want == nil && string(body) != "hello") {
					t.Errorf("oneByte=%v: got %q, %v; want %v", oneByte, body, pfErrString(err), pfErrString(want))
				}
			}
		})
	}
}

// pfSegments is a reader that returns its segments one per Read (a segment
// longer than the caller's slice over several), like packets on a socket.
type pfSegments struct{ segs [][]byte }

func (s *pfSegments) Read(p []byte) (int, error) {
	for len(s.segs) > 0 && len(s.segs[0]) == 0 {
		s.segs = s.segs[1:]
	}
	if len(s.segs) == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.segs[0])
	s.segs[0] = s.segs[0][n:]
	return n, nil
}

// TestRequestPipelinedBodies reads requests with bodies of every framing
// sent back to back in one stream, with bodies larger than the buffer, and
// checks that each message and body comes out whole.
func TestRequestPipelinedBodies(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 2000) // 32000 bytes
	chunked := func(parts ...[]byte) string {
		var b strings.Builder
		for _, p := range parts {
			fmt.Fprintf(&b, "%x\r\n%s\r\n", len(p), p)
		}
		return b.String() + "0\r\nX-Sum: 42\r\n\r\n"
	}
	type msg struct {
		head, body string
		method     string
		trailer    string
	}
	msgs := []msg{
		{head: "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n", method: "GET"},
		{head: "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n", body: "hello", method: "POST"},
		{head: "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", body: "hello, world", method: "POST", trailer: "42"},
		{head: fmt.Sprintf("PUT /4 HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", len(big)), body: string(big), method: "PUT"},
		{head: "\r\nGET /5 HTTP/1.1\r\nHost: a\r\n\r\n", method: "GET"}, // a stray CRLF between requests
		{head: "PATCH /6 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", body: string(big[:20000]) + "tail", method: "PATCH", trailer: "42"},
		{head: "DELETE /7 HTTP/1.0\r\nContent-Length: 1\r\n\r\n", body: "x", method: "DELETE"},
	}
	var stream []byte
	for _, m := range msgs {
		stream = append(stream, m.head...)
		switch {
		case strings.Contains(m.head, "chunked"):
			body := []byte(m.body)
			stream = append(stream, chunked(body[:len(body)/3], body[len(body)/3:])...)
		default:
			stream = append(stream, m.body...)
		}
	}
	for _, mode := range pfModes {
		for _, readers := range []struct {
			name string
			src  func() io.Reader
		}{
			{"stream", func() io.Reader { return bytes.NewReader(stream) }},
			{"segments-of-1000", func() io.Reader {
				var segs [][]byte
				for s := stream; len(s) > 0; {
					n := min(1000, len(s))
					segs = append(segs, s[:n])
					s = s[n:]
				}
				return &pfSegments{segs: segs}
			}},
		} {
			t.Run(mode.name+"/"+readers.name, func(t *testing.T) {
				r := NewReader(mode.wrap(readers.src()), Limits{})
				var req Request
				for i, m := range msgs {
					if err := r.ReadRequest(&req); err != nil {
						t.Fatalf("request %d: %v", i+1, err)
					}
					if want := fmt.Sprintf("/%d", i+1); string(req.Method) != m.method || string(req.Target) != want {
						t.Fatalf("request %d: %s %s, want %s %s", i+1, req.Method, req.Target, m.method, want)
					}
					body, err := mode.read(r.Body())
					if err != nil {
						t.Fatalf("request %d: body: %v", i+1, err)
					}
					if string(body) != m.body {
						t.Fatalf("request %d: body of %d bytes, want %d", i+1, len(body), len(m.body))
					}
					if got := r.Body().Trailer.Get("X-Sum"); string(got) != m.trailer {
						t.Errorf("request %d: trailer X-Sum = %q, want %q", i+1, got, m.trailer)
					}
					if string(req.Header.Get("Host")) != "a" && req.Minor == 1 {
						t.Errorf("request %d: head changed while its body was read: Host = %q", i+1, req.Header.Get("Host"))
					}
				}
				if err := r.ReadRequest(&req); err != io.EOF {
					t.Fatalf("after the last request: %v, want io.EOF", err)
				}
			})
		}
	}
}

// TestResponseBufferedAfterBody checks that Buffered reports what an
// upstream sent after a response's body, and nothing when it sent nothing.
func TestResponseBufferedAfterBody(t *testing.T) {
	for _, c := range []struct {
		name, msg string
		method    string
		want      int
	}{
		{"length-then-junk", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloJUNK", "GET", 4},
		{"length-exact", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "GET", 0},
		{"chunked-then-junk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n", "GET", 17},
		{"chunked-exact", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "GET", 0},
		{"204-then-junk", "HTTP/1.1 204 No Content\r\n\r\nxx", "GET", 2},
		{"head-then-body", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "HEAD", 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, mode := range pfModes {
				r := NewReader(mode.wrap(strings.NewReader(c.msg)), Limits{})
				var resp Response
				if err := r.ReadResponse(&resp, []byte(c.method)); err != nil {
					t.Fatalf("%s: %v", mode.name, err)
				}
				if _, err := mode.read(r.Body()); err != nil {
					t.Fatalf("%s: body: %v", mode.name, err)
				}
				got := r.Buffered()
				if c.want == 0 && got != 0 {
					t.Errorf("%s: Buffered() = %d after the whole stream, want 0", mode.name, got)
				}
				// With small reads the junk may not have arrived yet; when
				// it has, Buffered must count it.
				if c.want > 0 && (got < 0 || got > c.want || (mode.name == "whole" && got != c.want)) {
					t.Errorf("%s: Buffered() = %d, want %d", mode.name, got, c.want)
				}
				// TakeBuffered hands over exactly those bytes (the end of
				// the stream) and consumes them.
				if rest := r.TakeBuffered(); len(rest) != got || !strings.HasSuffix(c.msg, string(rest)) || r.Buffered() != 0 {
					t.Errorf("%s: TakeBuffered() = %q, then Buffered() = %d", mode.name, rest, r.Buffered())
				}
			}
		})
	}
}

// TestRequestKeepAliveRules checks the persistence rules of RFC 9112 §9.3
// for requests and responses.
func TestRequestKeepAliveRules(t *testing.T) {
	for _, c := range []struct {
		minor  int
		fields string // Connection fields, one per line
		want   bool
	}{
		{1, "", true},
		{1, "Connection: close", false},
		{1, "Connection: CLOSE", false},
		{1, "Connection: keep-alive", true},
		{1, "Connection: foo, close", false},
		{1, "Connection: ,, close ,", false},
		{1, "Connection: upgrade,\tClose", false},
		{1, "Connection: closed", true},
		{1, "Connection: close-ish, xclose", true},
		{1, "Connection: foo\r\nConnection: close", false},
		{1, "Connection: keep-alive, close", false},
		{0, "", false},
		{0, "Connection: keep-alive", true},
		{0, "Connection: Keep-Alive", true},
		{0, "Connection: foo , keep-alive ", true},
		{0, "Connection: keep-alive\r\nConnection: close", false},
		{0, "Connection: keep-alive, close", false},
		{0, "Connection: keep-alive-x", false},
		{0, "Connection: close", false},
	} {
		name := fmt.Sprintf("1.%d/%s", c.minor, c.fields)
		fields := c.fields
		if fields != "" {
			fields += "\r\n"
		}
		t.Run(name, func(t *testing.T) {
			msg := fmt.Sprintf("GET / HTTP/1.%d\r\nHost: x\r\n%s\r\n", c.minor, fields)
			req, err := pfRead(msg, Limits{}, false)
			if err != nil {
				t.Fatalf("request: %v", err)
			}
			if req.KeepAlive != c.want {
				t.Errorf("request KeepAlive = %v, want %v", req.KeepAlive, c.want)
			}
			msg = fmt.Sprintf("HTTP/1.%d 200 OK\r\nContent-Length: 0\r\n%s\r\n", c.minor, fields)
			var resp Response
			if err := NewReader(strings.NewReader(msg), Limits{}).ReadResponse(&resp, []byte("GET")); err != nil {
				t.Fatalf("response: %v", err)
			}
			if resp.KeepAlive != c.want {
				t.Errorf("response KeepAlive = %v, want %v", resp.KeepAlive, c.want)
			}
		})
	}
}

// TestRequestReaderRelease checks that Release gives the buffer back only
// when nothing is buffered, and that the Reader works on afterwards.
func TestRequestReaderRelease(t *testing.T) {
	const get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
	const post = "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"

	t.Run("before-first-read", func(t *testing.T) {
		r := NewReader(strings.NewReader(get), Limits{})
		if !r.Release() {
			t.Error("Release() = false on a Reader that holds no buffer")
		}
		var req Request
		if err := r.ReadRequest(&req); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("pipelined", func(t *testing.T) {
		// The first Read brings two requests; a later one brings a third.
		src := &pfSegments{segs: [][]byte{[]byte(get + post), []byte(get)}}
		r := NewReader(src, Limits{})
		var req Request
		if err := r.ReadRequest(&req); err != nil {
			t.Fatal(err)
		}
		if r.Buffered() == 0 {
			t.Fatal("Buffered() = 0 with a second request read")
		}
		if r.Release() {
			t.Fatal("Release() = true with a request buffered")
		}
		if r.bufp == nil {
			t.Fatal("the buffer was dropped with a request buffered")
		}
		if err := r.ReadRequest(&req); err != nil || string(req.Method) != "POST" {
			t.Fatalf("second request: %s, %v", req.Method, err)
		}
		if body, err := io.ReadAll(r.Body()); err != nil || string(body) != "hello" {
			t.Fatalf("second body: %q, %v", body, err)
		}
		if r.Buffered() != 0 {
			t.Fatalf("Buffered() = %d, want 0", r.Buffered())
		}
		if !r.Release() {
			t.Fatal("Release() = false with nothing buffered")
		}
		if r.bufp != nil || r.buf != nil {
			t.Fatal("Release() = true but the Reader still holds its buffer")
		}
		if !r.Release() {
			t.Error("a second Release() = false")
		}
		if err := r.ReadRequest(&req); err != nil || string(req.Method) != "GET" || string(req.Header.Get("Host")) != "x" {
			t.Fatalf("request after Release: %s %q, %v", req.Method, req.Header.Get("Host"), err)
		}
		if err := r.ReadRequest(&req); err != io.EOF {
			t.Fatalf("at the end: %v, want io.EOF", err)
		}
	})

	// Release while a body is half read, with nothing buffered: either
	// Release refuses, or the body still reads correctly afterwards.
	t.Run("mid-body", func(t *testing.T) {
		rest := strings.Repeat("w", 5000)
		for _, size := range []int{5, 4096} { // through the buffer; straight into p
			src := &pfSegments{segs: [][]byte{[]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5005\r\n\r\nhello"), []byte(rest)}}
			r := NewReader(src, Limits{})
			var req Request
			if err := r.ReadRequest(&req); err != nil {
				t.Fatal(err)
			}
			p := make([]byte, 5)
			if n, err := r.Body().Read(p); n != 5 || err != nil {
				t.Fatalf("first Read: %d, %v", n, err)
			}
			released := r.Release()
			func() {
				defer func() {
					if v := recover(); v != nil {
						t.Errorf("p=%d: Release() = %v mid-body, then Body.Read panicked: %v", size, released, v)
					}
				}()
				got, err := pfReadLoop(r.Body(), size)
				if string(got) != rest || err != nil {
					t.Errorf("p=%d: after Release() = %v, the rest of the body: %d bytes, %v; want %d bytes", size, released, len(got), err, len(rest))
				}
			}()
		}
	})
}

// TestRequestStructReuse reads requests of different forms into one
// Request, as a server does, and checks that nothing of one request leaks
// into the next.
func TestRequestStructReuse(t *testing.T) {
	stream := "GET http://a.example/x HTTP/1.1\r\nHost: a.example\r\nConnection: upgrade\r\nUpgrade: websocket\r\nExpect: 100-continue\r\n\r\n" +
		"GET /y HTTP/1.1\r\nHost: b.example\r\n\r\n" +
		"CONNECT c.example:443 HTTP/1.1\r\nHost: c.example:443\r\n\r\n" +
		"OPTIONS * HTTP/1.0\r\n\r\n"
	r := NewReader(strings.NewReader(stream), Limits{})
	var req Request
	for i, want := range []struct {
		form      TargetForm
		authority string // "" for nil
		host      string // "" for nil
		upgrade   string
		expect    bool
	}{
		{AbsoluteForm, "a.example", "a.example", "websocket", true},
		{OriginForm, "", "b.example", "", false},
		{AuthorityForm, "c.example:443", "c.example:443", "", false},
		{AsteriskForm, "", "", "", false},
	} {
		if err := r.ReadRequest(&req); err != nil {
			t.Fatalf("request %d: %v", i+1, err)
		}
		check := func(what string, got []byte, want string) {
			if (want == "") != (got == nil) || string(got) != want {
				t.Errorf("request %d: %s = %q, want %q (\"\" meaning nil)", i+1, what, got, want)
			}
		}
		if req.Form != want.form {
			t.Errorf("request %d: Form = %v, want %v", i+1, req.Form, want.form)
		}
		check("Authority", req.Authority, want.authority)
		check("Host", req.Host, want.host)
		check("Upgrade", req.Upgrade, want.upgrade)
		if req.ExpectContinue != want.expect {
			t.Errorf("request %d: ExpectContinue = %v", i+1, req.ExpectContinue)
		}
	}
}

// TestRequestErrorsAreSentinels checks that rejections are the package's
// sentinel values, comparable with == and errors.Is, and carry a status.
func TestRequestErrorsAreSentinels(t *testing.T) {
	_, err := pfRead("GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", Limits{}, false)
	if err != ErrObsFold || !errors.Is(err, ErrObsFold) {
		t.Fatalf("got %v, want ErrObsFold", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Status != 400 {
		t.Fatalf("errors.As: %v, %+v", errors.As(err, &e), e)
	}
}
