package route

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestNormalize(t *testing.T) {
	merge := PathOptions{MergeSlashes: true}
	keep := PathOptions{MergeSlashes: true, KeepEncodedSlash: true}
	for _, tc := range []struct {
		in   string
		o    PathOptions
		want string
		err  error
	}{
		{"/", merge, "/", nil},
		{"/a/b?x=1", merge, "/a/b?x=1", nil},
		{"*", merge, "*", nil},
		{"/public/../admin", merge, "/admin", nil},
		{"/public//../admin", merge, "/admin", nil},
		{"/public//../admin", PathOptions{}, "/public/admin", nil},
		{"//admin", merge, "/admin", nil},
		{"//admin", PathOptions{}, "//admin", nil},
		{"/%61dmin", merge, "/admin", nil},
		{"/./admin", merge, "/admin", nil},
		{"/public/.%2e/admin", merge, "/admin", nil},
		{"/public/%2E%2e/admin", merge, "/admin", nil},
		{"/a/b/./c/../d/", merge, "/a/b/d/", nil},
		{"/a/b/..", merge, "/a/", nil},
		{"/a/.", merge, "/a/", nil},
		{"/a/", merge, "/a/", nil},
		{"/.well-known/x", merge, "/.well-known/x", nil},
		{"/a%20b%7e", merge, "/a%20b~", nil},
		{"/a%2a", merge, "/a%2A", nil},
		{"/a/..?q=/../x", merge, "/?q=/../x", nil},
		{"/a;b/c", merge, "/a;b/c", nil},
		{"/admin%2f", keep, "/admin%2F", nil},
		{"/a%5cb", keep, "/a%5Cb", nil},
		{"/..", merge, "", ErrEscapesRoot},
		{"/a/../..", merge, "", ErrEscapesRoot},
		{"/%2e%2e/x", merge, "", ErrEscapesRoot},
		{"/admin%2f", merge, "", ErrEncodedSlash},
		{"/a%5Cb", merge, "", ErrEncodedSlash},
		{"/a%00", keep, "", ErrNUL},
		{"/a%zz", merge, "", ErrEncoding},
		{"/a%2", merge, "", ErrEncoding},
		{"/admin/..;/", merge, "", ErrDotParams},
		{"/a/.;x/b", merge, "", ErrDotParams},
		{"/;/admin", merge, "", ErrDotParams},
		{"/;x/admin", merge, "", ErrDotParams},
		{"/a;x/admin", merge, "/a;x/admin", nil},
		{"/x\\..\\admin", merge, "", ErrEncodedSlash},
		{"/x/..\\admin", merge, "", ErrEncodedSlash},
		{"/x\\y", keep, "/x\\y", nil},
	} {
		got, err := Normalize([]byte(tc.in), tc.o)
		if !errors.Is(err, tc.err) || err == nil && string(got) != tc.want {
			t.Errorf("Normalize(%q, %+v) = %q, %v; want %q, %v", tc.in, tc.o, got, err, tc.want, tc.err)
		}
	}
}

// TestNormalizeNoCopy: a path already normal is returned as it is.
func TestNormalizeNoCopy(t *testing.T) {
	in := []byte("/api/v1/users?id=7")
	got, err := Normalize(in, PathOptions{MergeSlashes: true})
	if err != nil || &got[0] != &in[0] {
		t.Fatalf("a normal path was copied (%v)", err)
	}
	if n := testing.AllocsPerRun(100, func() { Normalize(in, PathOptions{MergeSlashes: true}) }); n != 0 {
		t.Fatalf("%v allocations for a normal path", n)
	}
}

// FuzzNormalize checks what any normalised path is: normal (a second
// pass changes nothing), without dot-segments or, when merging, empty
// segments, rooted, and with its query as it came.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2E/x", "//a//b/", "/a/./b/..", "/a%2fb", "/x?y=/../z", "/..;/", "/%61%7E%41"} {
		f.Add([]byte(s), true, false)
	}
	f.Fuzz(func(t *testing.T, in []byte, mergeSlashes, keep bool) {
		if len(in) == 0 || in[0] != '/' {
			return
		}
		o := PathOptions{MergeSlashes: mergeSlashes, KeepEncodedSlash: keep}
		out, err := Normalize(in, o)
		if err != nil {
			return
		}
		again, err := Normalize(out, o)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("%q normalised to %q, then to %q (%v)", in, out, again, err)
		}
		path, query, _ := strings.Cut(string(out), "?")
		_, inQuery, _ := strings.Cut(string(in), "?")
		if query != inQuery {
			t.Fatalf("%q: query %q became %q", in, inQuery, query)
		}
		if path == "" || path[0] != '/' {
			t.Fatalf("%q normalised to %q: not rooted", in, out)
		}
		for _, seg := range strings.Split(path[1:], "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("%q normalised to %q: a dot-segment is left", in, out)
			}
		}
		if mergeSlashes && strings.Contains(path, "//") {
			t.Fatalf("%q normalised to %q: slashes not merged", in, out)
		}
	})
}
