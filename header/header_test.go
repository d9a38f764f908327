package header

import (
	"bytes"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// hdrDump renders h as "Name: value|Name: value" for comparisons.
func hdrDump(h *Header) string {
	var parts []string
	for _, f := range h.Fields() {
		parts = append(parts, string(f.Name)+": "+string(f.Value))
	}
	return strings.Join(parts, "|")
}

func TestHeaderZeroValue(t *testing.T) {
	var h Header
	if h.Len() != 0 || h.Fields() != nil || h.Get("X") != nil || h.Has("X") || h.Count("X") != 0 || h.Del("X") != 0 {
		t.Error("the zero Header is not empty")
	}
	h.Reset()
	h.DelFunc(func(Field) bool { return true })
	if h.Len() != 0 {
		t.Error("Reset or DelFunc on the zero Header added fields")
	}
}

func TestHeaderGetHasCount(t *testing.T) {
	var h Header
	h.Add("Content-Type", "text/html")
	h.Add("set-cookie", "a=1")
	h.Add("Set-Cookie", "b=2")
	h.Add("X-Empty", "")
	h.Add("SET-COOKIE", "c=3")

	if got := h.Get("content-type"); string(got) != "text/html" {
		t.Errorf("Get(content-type) = %q", got)
	}
	if got := h.Get("Set-Cookie"); string(got) != "a=1" {
		t.Errorf("Get returns the first: %q, want a=1", got)
	}
	if got := h.Get("X-EMPTY"); got == nil || len(got) != 0 {
		t.Errorf("Get of an empty value = %#v, want empty and not nil", got)
	}
	if got := h.Get("X-Missing"); got != nil {
		t.Errorf("Get of a missing field = %q, want nil", got)
	}
	for name, want := range map[string]int{"set-cookie": 3, "SET-COOKIE": 3, "Content-Type": 1, "x-empty": 1, "Set-Cookie2": 0, "Set-Cooki": 0, "": 0} {
		if got := h.Count(name); got != want {
			t.Errorf("Count(%q) = %d, want %d", name, got, want)
		}
		if got := h.Has(name); got != (want > 0) {
			t.Errorf("Has(%q) = %v", name, got)
		}
	}
	if h.Len() != 5 {
		t.Errorf("Len() = %d", h.Len())
	}
	// Names keep the case they were added with.
	if got := hdrDump(&h); got != "Content-Type: text/html|set-cookie: a=1|Set-Cookie: b=2|X-Empty: |SET-COOKIE: c=3" {
		t.Errorf("fields: %s", got)
	}
}

func TestHeaderAddCopies(t *testing.T) {
	var h Header
	name, value := []byte("X-Name"), []byte("value")
	h.AddBytes(name, value)
	copy(name, "Y-XXXX")
	copy(value, "zzzzz")
	if got := hdrDump(&h); got != "X-Name: value" {
		t.Errorf("AddBytes did not copy: %s", got)
	}
	// Many Adds: the arena grows and moves; earlier fields stay intact, and
	// appending to a returned value cannot overwrite the next field.
	for i := range 200 {
		h.Add(fmt.Sprintf("X-%d", i), strings.Repeat("v", i))
	}
	for i := range 200 {
		if got := h.Get(fmt.Sprintf("x-%d", i)); string(got) != strings.Repeat("v", i) {
			t.Fatalf("field %d = %q after growth", i, got)
		}
	}
	v := h.Get("X-1")
	_ = append(v, "OVERWRITE"...)
	if got := h.Get("X-2"); string(got) != "vv" {
		t.Errorf("appending to a value changed the next field: X-2 = %q", got)
	}
	f := h.Fields()[1]
	_ = append(f.Name, "!!!!"...)
	if got := h.Fields()[1]; string(got.Name) != "X-0" || string(got.Value) != "" {
		t.Errorf("appending to a name changed the field: %q: %q", got.Name, got.Value)
	}
}

func TestHeaderAddRef(t *testing.T) {
	buf := []byte("Host: example.com")
	var h Header
	h.AddRef(buf[:4], buf[6:])
	if got := h.Get("host"); string(got) != "example.com" || &got[0] != &buf[6] {
		t.Errorf("AddRef: %q, not referring to the caller's bytes", got)
	}
}

func TestHeaderSet(t *testing.T) {
	var h Header
	h.Add("A", "1")
	h.Add("X-Dup", "first")
	h.Add("B", "2")
	h.Add("x-dup", "second")
	h.Add("C", "3")
	h.Add("X-DUP", "third")

	h.Set("X-Dup", "only")
	if got := hdrDump(&h); got != "A: 1|X-Dup: only|B: 2|C: 3" {
		t.Errorf("Set replaced in place: %s", got)
	}
	h.Set("x-new", "appended")
	if got := hdrDump(&h); got != "A: 1|X-Dup: only|B: 2|C: 3|x-new: appended" {
		t.Errorf("Set of a new field: %s", got)
	}
	h.Set("a", "")
	if got := h.Get("A"); got == nil || len(got) != 0 || h.Fields()[0].Name[0] != 'A' {
		t.Errorf("Set to empty: %q, name %q", got, h.Fields()[0].Name)
	}
	// Set copies its value.
	v := []byte("mutable")
	h.Set("B", string(v))
	copy(v, "XXXXXXX")
	if got := h.Get("B"); string(got) != "mutable" {
		t.Errorf("Set did not copy: %q", got)
	}
}

func TestHeaderDel(t *testing.T) {
	var h Header
	for _, kv := range [][2]string{{"A", "1"}, {"Connection", "close"}, {"B", "2"}, {"connection", "x"}, {"C", "3"}} {
		h.Add(kv[0], kv[1])
	}
	if n := h.Del("CONNECTION"); n != 2 {
		t.Errorf("Del = %d, want 2", n)
	}
	if got := hdrDump(&h); got != "A: 1|B: 2|C: 3" {
		t.Errorf("after Del: %s", got)
	}
	if n := h.Del("connection"); n != 0 {
		t.Errorf("second Del = %d", n)
	}
	// The slots freed are cleared, so no reference to dropped bytes stays
	// behind in the backing array.
	all := h.fields[:cap(h.fields)]
	for i := h.Len(); i < len(all) && i < 5; i++ {
		if all[i].Name != nil || all[i].Value != nil {
			t.Errorf("slot %d keeps %q: %q after Del", i, all[i].Name, all[i].Value)
		}
	}

	h.Add("X-Hop", "1")
	h.Add("Keep", "k")
	h.Add("x-hop", "2")
	var seen []string
	h.DelFunc(func(f Field) bool {
		seen = append(seen, string(f.Name))
		return EqualFold(f.Name, "x-hop") || EqualFold(f.Name, "b")
	})
	if got := hdrDump(&h); got != "A: 1|C: 3|Keep: k" {
		t.Errorf("after DelFunc: %s", got)
	}
	if !slices.Equal(seen, []string{"A", "B", "C", "X-Hop", "Keep", "x-hop"}) {
		t.Errorf("DelFunc visited %v", seen)
	}
	h.DelFunc(func(Field) bool { return true })
	if h.Len() != 0 {
		t.Errorf("DelFunc(all) left %d", h.Len())
	}
}

func TestHeaderChecked(t *testing.T) {
	var h Header
	for _, n := range []string{"A", "B", "C", "D"} {
		h.AddChecked([]byte(n), []byte("v"))
	}
	h.Add("E", "v")
	h.AddChecked([]byte("F"), []byte("v")) // after an unchecked field: not in the run
	steps := []struct {
		do   func()
		want int
	}{
		{func() {}, 4},
		{func() { h.Del("F") }, 4},
		{func() { h.Del("B") }, 3}, // A C D
		{func() { h.DelFunc(func(f Field) bool { return f.Name[0] == 'E' }) }, 3}, // after the run
		{func() { h.Set("D", "new") }, 2},                                         // the run ends at D
		{func() { h.Set("G", "new") }, 2},                                         // appended
		{func() { h.DelFunc(func(f Field) bool { return f.Name[0] == 'A' }) }, 1},
	}
	for i, s := range steps {
		s.do()
		if got := h.Checked(); got != s.want {
			t.Fatalf("step %d: Checked() = %d, want %d (%s)", i, got, s.want, hdrDump(&h))
		}
	}
	var c Header
	c.CopyFrom(&h)
	if c.Checked() != 1 || hdrDump(&c) != hdrDump(&h) {
		t.Errorf("CopyFrom: Checked() = %d, %s", c.Checked(), hdrDump(&c))
	}
	h.Reset()
	if h.Checked() != 0 {
		t.Errorf("after Reset, Checked() = %d", h.Checked())
	}
}

func TestHeaderCopyFrom(t *testing.T) {
	buf := []byte("X-Ref: referenced")
	var src Header
	src.Add("A", "1")
	src.AddRef(buf[:5], buf[7:])
	src.Add("b", "")

	var dst Header
	dst.Add("Old", "gone")
	dst.CopyFrom(&src)
	if got := hdrDump(&dst); got != "A: 1|X-Ref: referenced|b: " {
		t.Fatalf("CopyFrom: %s", got)
	}
	// dst owns its bytes: changing the source's buffer or resetting and
	// refilling the source leaves it intact.
	copy(buf, "ZZZZZZZZZZZZZZZZZ")
	src.Reset()
	src.Add("C", "overwrites the arena")
	if got := hdrDump(&dst); got != "A: 1|X-Ref: referenced|b: " {
		t.Errorf("CopyFrom did not copy: %s", got)
	}
	var empty Header
	dst.CopyFrom(&empty)
	if dst.Len() != 0 {
		t.Errorf("CopyFrom(empty) left %d fields", dst.Len())
	}
}

func TestHeaderReset(t *testing.T) {
	buf := []byte("Name: value")
	var h Header
	h.AddRef(buf[:4], buf[6:])
	h.Add("X", "y")
	fields := h.fields[:2]
	h.Reset()
	if h.Len() != 0 || h.Has("Name") {
		t.Fatal("Reset left fields")
	}
	// Reset clears references into buffers that may be reused.
	for i, f := range fields {
		if f.Name != nil || f.Value != nil {
			t.Errorf("slot %d still refers to %q: %q after Reset", i, f.Name, f.Value)
		}
	}
}

// TestHeaderReuseAllocs pins the promise of the package: a Header reset and
// refilled for each message stops allocating once it has grown.
func TestHeaderReuseAllocs(t *testing.T) {
	var h Header
	value := []byte("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8")
	fill := func() {
		h.Reset()
		h.Add("Host", "www.example.com")
		h.Add("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36")
		h.AddBytes([]byte("Accept"), value)
		h.Add("Accept-Language", "en-US,en;q=0.9")
		for range 20 {
			h.Add("X-Many", "v")
		}
		h.Set("Host", "other.example.com")
		h.Del("X-Nothing")
		h.AddRef(value[:6], value)
	}
	fill()
	if n := testing.AllocsPerRun(100, fill); n != 0 {
		t.Errorf("refilling a warmed-up Header: %v allocations, want 0", n)
	}
	var dst Header
	dst.CopyFrom(&h)
	if n := testing.AllocsPerRun(100, func() { dst.CopyFrom(&h) }); n != 0 {
		t.Errorf("CopyFrom into a warmed-up Header: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		_ = h.Get("accept-language")
		_ = h.Count("x-many")
		_ = h.Has("nothing")
		_ = HasElement(value, "*/*;q=0.8")
		for range Elements(value) {
		}
	}); n != 0 {
		t.Errorf("lookups: %v allocations, want 0", n)
	}
}

func TestEqualFold(t *testing.T) {
	for _, c := range []struct {
		b, s string
		want bool
	}{
		{"", "", true},
		{"Content-Length", "content-length", true},
		{"CONTENT-LENGTH", "content-length", true},
		{"content-length", "CONTENT-LENGTH", true},
		{"cOnTeNt-LeNgTh", "Content-Length", true},
		{"Content-Length", "Content-Lengt", false},
		{"Content-Length", "Content-Lengthx", false},
		{"a", "b", false},
		{"keep-alive", "keep-alivf", false},
		// Only ASCII letters fold: bytes 0x20 apart that are not letters
		// stay different.
		{"@", "`", false},
		{"[", "{", false},
		{"]", "}", false},
		{"^", "~", false},
		{"_", "\x7f", false},
		{"\xc1", "\xe1", false}, // Latin-1 Á and á
		{"\xc9", "\xe9", false},
		{"0", "\x10", false},
		// The Kelvin sign (U+212A) folds to "k" in Unicode, and the long s
		// (U+017F) to "s": not here.
		{"\u212aeep-alive", "keep-alive", false},
		{"keep-alive", "\u212aeep-alive", false},
		{"tran\u017Ffer-encoding", "transfer-encoding", false},
		{"\u212a", "k", false},
		{"\u212a", "K", false},
		{"\u212a", "\u212a", true},
		{"\xe2\x84\xaa", "\xe2\x84\x8a", false},
	} {
		if got := EqualFold([]byte(c.b), c.s); got != c.want {
			t.Errorf("EqualFold(%q, %q) = %v, want %v", c.b, c.s, got, c.want)
		}
	}
	// Every pair of bytes: equal under folding exactly when they are the
	// same byte or the same ASCII letter.
	for a := range 256 {
		for b := range 256 {
			lower := func(c int) int {
				if 'A' <= c && c <= 'Z' {
					return c + 'a' - 'A'
				}
				return c
			}
			want := lower(a) == lower(b)
			if got := EqualFold([]byte{byte(a)}, string([]byte{byte(b)})); got != want {
				t.Fatalf("EqualFold(%#x, %#x) = %v, want %v", a, b, got, want)
			}
		}
	}
	var h Header
	h.Add("\u212aeep", "x")
	if h.Has("keep") || h.Get("KEEP") != nil {
		t.Error("a non-ASCII name matched an ASCII one")
	}
}

func TestElements(t *testing.T) {
	for _, c := range []struct {
		value string
		want  []string
	}{
		{"", nil},
		{"close", []string{"close"}},
		{"a,b", []string{"a", "b"}},
		{"a, b ,c", []string{"a", "b", "c"}},
		{" \t a \t ", []string{"a"}},
		{",", nil},
		{",,,", nil},
		{" , \t, ", nil},
		{"a,,b", []string{"a", "b"}},
		{",a,", []string{"a"}},
		{", , a , , b , ,", []string{"a", "b"}},
		{"a b, c\td", []string{"a b", "c\td"}},
		{"keep-alive, Upgrade", []string{"keep-alive", "Upgrade"}},
		{"\"a, b\", c", []string{"\"a", "b\"", "c"}}, // no quoted-string parsing
		{"x;q=1, y", []string{"x;q=1", "y"}},
		{"\x80\xff, \xe9", []string{"\x80\xff", "\xe9"}},
	} {
		var got []string
		for e := range Elements([]byte(c.value)) {
			if len(e) == 0 {
				t.Errorf("Elements(%q) yielded an empty element", c.value)
			}
			got = append(got, string(e))
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("Elements(%q) = %q, want %q", c.value, got, c.want)
		}
	}

	// Stopping early stops the iteration.
	n := 0
	for e := range Elements([]byte("a, b, c, d")) {
		n++
		if string(e) == "b" {
			break
		}
	}
	if n != 2 {
		t.Errorf("break after b: %d elements visited", n)
	}
	// Elements refer into the value.
	v := []byte("  first , second")
	for e := range Elements(v) {
		if &e[0] != &v[2] {
			t.Error("the element does not refer into the value")
		}
		break
	}
}

func TestElementsHasElement(t *testing.T) {
	for _, c := range []struct {
		value, token string
		want         bool
	}{
		{"close", "close", true},
		{"Close", "close", true},
		{"keep-alive, CLOSE", "close", true},
		{" , ,close, ,", "close", true},
		{"\tclose\t", "close", true},
		{"closed", "close", false},
		{"xclose", "close", false},
		{"close-ish", "close", false},
		{"clo se", "close", false},
		{"", "close", false},
		{",,", "close", false},
		{"a,,b", "", false}, // empty elements are skipped, never matched
		{"upgrade, keep-alive", "Upgrade", true},
		{"\u212aeep-alive", "keep-alive", false},
	} {
		if got := HasElement([]byte(c.value), c.token); got != c.want {
			t.Errorf("HasElement(%q, %q) = %v, want %v", c.value, c.token, got, c.want)
		}
	}
}

func TestHeaderTrimSpace(t *testing.T) {
	for in, want := range map[string]string{
		"":              "",
		" ":             "",
		"\t \t":         "",
		"a":             "a",
		" \ta b\t ":     "a b",
		"\r a \n":       "\r a \n", // only SP and HTAB are OWS
		"\u00a0a\u00a0": "\u00a0a\u00a0",
	} {
		if got := TrimSpace([]byte(in)); !bytes.Equal(got, []byte(want)) {
			t.Errorf("TrimSpace(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestDelMask: DelMask removes what DelFunc removes for the same positions,
// and keeps the count of checked fields in step.
func TestDelMask(t *testing.T) {
	for _, mask := range []uint64{0, 1, 1 << 2, 1<<0 | 1<<3 | 1<<4, 1 << 5, 1 << 40, ^uint64(0)} {
		var want, got Header
		for i := range 6 {
			name := []byte{'A' + byte(i)}
			if i < 3 {
				want.AddChecked(name, name)
				got.AddChecked(name, name)
			} else {
				want.AddBytes(name, name)
				got.AddBytes(name, name)
			}
		}
		i := 0
		want.DelFunc(func(Field) bool { d := i < 64 && mask&(1<<i) != 0; i++; return d })
		got.DelMask(mask)
		if !reflect.DeepEqual(got.fields, want.fields) || got.checked != want.checked {
			t.Errorf("mask %b: fields %q (checked %d), want %q (checked %d)", mask, got.fields, got.checked, want.fields, want.checked)
		}
	}
}

// TestFieldsUnchecks: fields given out by Fields may be changed through the
// slice, so none of them counts as checked afterwards; Field gives a copy
// and keeps them checked.
func TestFieldsUnchecks(t *testing.T) {
	var h Header
	h.AddChecked([]byte("A"), []byte("1"))
	h.AddChecked([]byte("B"), []byte("2"))
	if f := h.Field(1); string(f.Name) != "B" || h.Checked() != 2 {
		t.Fatalf("Field(1) = %q, checked %d", f.Name, h.Checked())
	}
	h.Fields()[0].Value = []byte("x\r\nInjected: 1")
	if h.Checked() != 0 {
		t.Errorf("Checked() = %d after Fields(), want 0", h.Checked())
	}
}

// TestChanges: every call that may change a header moves its count of
// changes; reading does not.
func TestChanges(t *testing.T) {
	var h Header
	h.Add("A", "1")
	h.AddChecked([]byte("C"), []byte("3"))
	for name, change := range map[string]func(){
		"Add":      func() { h.Add("B", "2") },
		"AddBytes": func() { h.AddBytes([]byte("B"), []byte("2")) },
		"AddRef":   func() { h.AddRef([]byte("B"), []byte("2")) },
		"Set":      func() { h.Set("A", "9") },
		"Del":      func() { h.Del("B") },
		"DelFunc":  func() { h.DelFunc(func(Field) bool { return false }) },
		"DelMask":  func() { h.DelMask(1 << 5) },
		"Fields":   func() { h.Fields() },
		"Reset":    func() { h.Reset(); h.Add("A", "1") },
		"CopyFrom": func() { var o Header; o.Add("X", "y"); h.CopyFrom(&o) },
	} {
		before := h.Changes()
		change()
		if h.Changes() == before {
			t.Errorf("%s did not count as a change", name)
		}
	}
	before := h.Changes()
	h.Get("a")
	h.Has("a")
	h.Count("a")
	h.Len()
	if h.Len() > 0 {
		h.Field(0)
	}
	if h.Changes() != before {
		t.Error("reading counted as a change")
	}
}
