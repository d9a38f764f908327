// Package header holds HTTP header fields as a proxy must relay them: in the
// order and letter case they arrived, looked up without regard to case, and
// stored without allocating per message.
package header

import "math/bits"

// Field is one header field. Name and Value are the bytes as received (Value
// without surrounding whitespace) or as set by the program.
type Field struct {
	Name  []byte
	Value []byte
}

// Header is an ordered list of fields. The zero value is an empty header
// ready to use. Fields added with Add, Set or AddBytes are copied into an
// arena owned by the Header, which is reused after Reset, so a Header that is
// reset and refilled for each message stops allocating once it has grown to
// the size of the messages it carries.
//
// A Header is not safe for concurrent use.
type Header struct {
	fields  []Field
	arena   []byte
	checked int    // leading fields added with AddChecked and unchanged since
	changes uint32 // calls that may have changed it (Changes)
}

// Changes counts the calls that may have changed h (Fields among them).
// Two equal readings mean h is as it was: positions known from the first
// still hold.
func (h *Header) Changes() uint32 { return h.changes }

// Len returns the number of fields.
func (h *Header) Len() int { return len(h.fields) }

// Fields returns the fields in order, as a slice of h's own: a field set
// through it (f[i].Value = v) changes h. Since the caller may so change
// any of them, every field counts as unchecked afterwards (see Checked),
// and writers check each again. The bytes the fields refer to are valid
// until h is next changed and must not be modified in place.
func (h *Header) Fields() []Field {
	h.checked = 0
	h.changes++
	return h.fields
}

// Field returns the i'th field (0 <= i < Len). Its bytes must not be
// modified.
func (h *Header) Field(i int) Field { return h.fields[i] }

// Reset removes every field and keeps the memory for reuse.
func (h *Header) Reset() {
	h.changes++
	clear(h.fields) // drop references into buffers that may be reused
	h.fields = h.fields[:0]
	h.arena = h.arena[:0]
	h.checked = 0
}

// Get returns the value of the first field named name (compared without
// regard to ASCII case), or nil if there is none.
func (h *Header) Get(name string) []byte {
	for i := range h.fields {
		if EqualFold(h.fields[i].Name, name) {
			return h.fields[i].Value
		}
	}
	return nil
}

// Has reports whether a field named name is present.
func (h *Header) Has(name string) bool {
	for i := range h.fields {
		if EqualFold(h.fields[i].Name, name) {
			return true
		}
	}
	return false
}

// Count returns how many fields are named name.
func (h *Header) Count(name string) int {
	n := 0
	for i := range h.fields {
		if EqualFold(h.fields[i].Name, name) {
			n++
		}
	}
	return n
}

// Add appends a field, copying name and value.
func (h *Header) Add(name, value string) {
	start := len(h.arena)
	h.arena = append(h.arena, name...)
	h.arena = append(h.arena, value...)
	h.addFromArena(start, len(name))
}

// AddBytes appends a field, copying name and value.
func (h *Header) AddBytes(name, value []byte) {
	start := len(h.arena)
	h.arena = append(h.arena, name...)
	h.arena = append(h.arena, value...)
	h.addFromArena(start, len(name))
}

// addFromArena appends the field whose name starts at h.arena[start] and is
// nameLen long, followed by its value up to the end of the arena. If the
// append above moved the arena, earlier fields still point into the old
// array, which stays valid: bytes already handed out are never rewritten
// until Reset.
func (h *Header) addFromArena(start, nameLen int) {
	h.changes++
	b := h.arena[start:len(h.arena):len(h.arena)]
	h.fields = append(h.fields, Field{Name: b[:nameLen:nameLen], Value: b[nameLen:]})
}

// AddRef appends a field that refers to name and value without copying them.
// The caller guarantees that the bytes stay valid and unchanged while h
// holds them (until Reset). Parsers use it to index their read buffer.
func (h *Header) AddRef(name, value []byte) {
	h.changes++
	h.fields = append(h.fields, Field{Name: name, Value: value})
}

// AddChecked is AddRef for a parser that has checked the bytes as they
// must be on the wire: name is a token, and value holds only field-value
// characters, without surrounding whitespace. Writers skip their own checks
// of the leading fields so added (see Checked).
func (h *Header) AddChecked(name, value []byte) {
	if h.checked == len(h.fields) {
		h.checked++
	}
	h.AddRef(name, value)
}

// Checked returns how many of the leading fields were added with AddChecked
// and are unchanged since. Removing fields keeps the others checked; Set
// ends the run at the field it changes.
func (h *Header) Checked() int { return h.checked }

// Set replaces every field named name with one field name: value, keeping
// the position of the first one, or appends it if there was none.
func (h *Header) Set(name, value string) {
	h.changes++
	for i := range h.fields {
		if EqualFold(h.fields[i].Name, name) {
			start := len(h.arena)
			h.arena = append(h.arena, value...)
			h.fields[i].Value = h.arena[start:len(h.arena):len(h.arena)]
			h.checked = min(h.checked, i)
			h.delFrom(i+1, name)
			return
		}
	}
	h.Add(name, value)
}

// Del removes every field named name and returns how many it removed.
func (h *Header) Del(name string) int { return h.delFrom(0, name) }

func (h *Header) delFrom(from int, name string) int {
	h.changes++
	j, checked := from, h.checked
	for i := from; i < len(h.fields); i++ {
		if EqualFold(h.fields[i].Name, name) {
			if i < checked {
				h.checked--
			}
			continue
		}
		h.fields[j] = h.fields[i]
		j++
	}
	n := len(h.fields) - j
	clear(h.fields[j:])
	h.fields = h.fields[:j]
	return n
}

// DelFunc removes every field for which drop returns true.
func (h *Header) DelFunc(drop func(f Field) bool) {
	h.changes++
	j, checked := 0, h.checked
	for i := range h.fields {
		if drop(h.fields[i]) {
			if i < checked {
				h.checked--
			}
			continue
		}
		if i != j {
			h.fields[j] = h.fields[i]
		}
		j++
	}
	clear(h.fields[j:])
	h.fields = h.fields[:j]
}

// DelMask removes the fields whose position i, below 64, has bit i set in
// mask: DelFunc for a caller that already knows which fields go.
func (h *Header) DelMask(mask uint64) {
	if mask == 0 {
		return
	}
	h.changes++
	j := bits.TrailingZeros64(mask) // the fields before the first stay
	if j >= len(h.fields) {
		return
	}
	checked := h.checked
	for i := j; i < len(h.fields); i++ {
		if i < 64 && mask&(1<<i) != 0 {
			if i < checked {
				h.checked--
			}
			continue
		}
		h.fields[j] = h.fields[i]
		j++
	}
	clear(h.fields[j:])
	h.fields = h.fields[:j]
}

// CopyFrom makes h a copy of src that owns its bytes.
func (h *Header) CopyFrom(src *Header) {
	if h == src {
		return
	}
	h.Reset()
	for _, f := range src.fields {
		h.AddBytes(f.Name, f.Value)
	}
	h.checked = src.checked
}

// EqualFold reports whether b and s are equal under ASCII case folding.
// Field names are ASCII tokens, so Unicode folding (which would, for
// example, equate the Kelvin sign with "k") must not apply.
func EqualFold[S string | []byte](b []byte, s S) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c, d := b[i], s[i]
		if c == d {
			continue
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}
