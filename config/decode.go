package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxValues bounds the values one file may decode to. Aliases let a small
// file name the same list many times over; no real config comes near this.
const maxValues = 1 << 20

// decoder fills a Config from the YAML tree itself rather than through
// yaml.Decoder, so that each mistake is told in plain words at its own key
// and line, and so that validation knows which values could not be read
// and says nothing more about them.
type decoder struct {
	file   string
	errs   Errors
	failed map[string]bool // key paths whose values could not be read
	values int             // decoded so far, for maxValues
	tooBig *Error          // past maxValues: the one problem worth telling
}

// scalar is a type written as one YAML scalar with rules of its own.
type scalar interface {
	// set parses n and reports whether it is a valid value.
	set(n *yaml.Node) bool
	// want says what a valid value looks like: "a size like 64KiB".
	want() string
}

func (d *decoder) errorf(line int, path []any, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Key: keyString(path), Msg: fmt.Sprintf(format, args...)})
}

// fail reports a value that could not be read.
func (d *decoder) fail(line int, path []any, format string, args ...any) {
	d.failed[keyString(path)] = true
	d.errorf(line, path, format, args...)
}

// value decodes n into v. line is where n's key is (the item itself, in a
// list): a block value starts on the line after its key, but the key is
// what a reader looks for.
func (d *decoder) value(n *yaml.Node, line int, v reflect.Value, path []any) {
	if d.values++; d.values > maxValues {
		if d.tooBig == nil {
			d.tooBig = &Error{File: d.file, Line: line, Key: keyString(path),
				Msg: fmt.Sprintf("the file expands to more than %d values (through aliases?)", maxValues)}
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.ShortTag() == "!!null" {
		return // left out: the default
	}
	if s, ok := v.Addr().Interface().(scalar); ok {
		if n.Kind != yaml.ScalarNode || !s.set(n) {
			d.fail(line, path, "want %s, got %s", s.want(), got(n))
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer: // an optional block: set when it is written
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.value(n, line, v.Elem(), path)
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			d.fail(line, path, "want a mapping, got %s", kind(n))
			return
		}
		d.fields(n, v, path, make(map[string]bool))
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.fail(line, path, "want a list, got %s", kind(n))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			d.value(item, item.Line, s.Index(i), at(path, i))
		}
		v.Set(s)
	case reflect.String:
		if n.Kind != yaml.ScalarNode {
			d.fail(line, path, "want a string, got %s", kind(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Int:
		// Only integers: the YAML library would cut 1.5 down to 1.
		var x int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&x) != nil || v.OverflowInt(x) {
			d.fail(line, path, "want a whole number, got %s", got(n))
			return
		}
		v.SetInt(x)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			d.fail(line, path, "want true or false, got %s", got(n))
			return
		}
		v.SetBool(b)
	default:
		panic("config: no decoding for " + v.Type().String())
	}
}

// fields decodes a mapping's keys into the struct v. A merge key
// (<<: *base) adds the keys of the mappings it names that the mapping does
// not set itself; set holds the keys set so far.
func (d *decoder) fields(n *yaml.Node, v reflect.Value, path []any, set map[string]bool) {
	t := v.Type()
	own := make(map[string]int) // key → line, to catch one set twice
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			merges = append(merges, val)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			d.errorf(k.Line, path, "want a plain key, got %s", kind(k))
			continue
		}
		p := at(path, k.Value)
		if first, ok := own[k.Value]; ok {
			d.errorf(k.Line, p, "set twice (first on line %d)", first)
			continue
		}
		own[k.Value] = k.Line
		f, ok := field(t, k.Value)
		if !ok {
			if near := nearest(k.Value, keys(t)); near != "" {
				d.errorf(k.Line, p, "unknown key (did you mean %s?)", near)
			} else {
				d.errorf(k.Line, p, "unknown key (known: %s)", strings.Join(keys(t), ", "))
			}
			continue
		}
		if set[k.Value] {
			continue // set by a mapping that merges this one
		}
		set[k.Value] = true
		d.value(val, k.Line, v.Field(f), p)
	}
	for _, m := range merges {
		if m.Kind == yaml.AliasNode {
			m = m.Alias
		}
		srcs := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			srcs = m.Content
		}
		for _, src := range srcs {
			if src.Kind == yaml.AliasNode {
				src = src.Alias
			}
			if src.Kind != yaml.MappingNode {
				d.fail(src.Line, path, "want a mapping to merge (<<), got %s", kind(src))
				continue
			}
			d.fields(src, v, path, set)
		}
	}
}

// field returns the index of t's field whose yaml tag is key.
func field(t reflect.Type, key string) (int, bool) {
	for i := range t.NumField() {
		if yamlKey(t.Field(i)) == key {
			return i, true
		}
	}
	return 0, false
}

// keys lists t's keys in the order of its fields.
func keys(t reflect.Type) []string {
	var ks []string
	for i := range t.NumField() {
		if k := yamlKey(t.Field(i)); k != "" {
			ks = append(ks, k)
		}
	}
	return ks
}

func yamlKey(f reflect.StructField) string {
	k, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return k
}

// kind names what n is, for a message about a list or mapping that was
// wanted.
func kind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	}
	return "a string"
}

// got quotes a scalar, for a message about a scalar that was wanted: the
// text says more than its type. A list or mapping is named by its kind.
func got(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return strconv.Quote(n.Value)
	}
	return kind(n)
}

// nearest returns the key of known that key most likely misspells: the
// same but for case and underscores, or at most two edits away; "" if
// none is.
func nearest(key string, known []string) string {
	squash := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "_", "") }
	best, bestDist := "", 3
	for _, k := range known {
		if squash(k) == squash(key) {
			return k
		}
		if d := editDistance(key, k); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
