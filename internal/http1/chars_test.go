package http1

import (
	"math/rand/v2"
	"testing"
)

// TestValueEnd compares the word-at-a-time scan with the table, for every
// byte value at every position of values of every length up to 24 (so in
// and after whole words), and for random values.
func TestValueEnd(t *testing.T) {
	want := func(b []byte) int {
		for i, c := range b {
			if !isValueChar[c] {
				return i
			}
		}
		return len(b)
	}
	for n := 0; n <= 24; n++ {
		for pos := 0; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				b := make([]byte, n)
				for i := range b {
					b[i] = 'a'
				}
				b[pos] = byte(c)
				if got, w := valueEnd(b), want(b); got != w {
					t.Fatalf("valueEnd(%q) = %d, want %d", b, got, w)
				}
			}
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		b := make([]byte, r.IntN(40))
		for i := range b {
			// Mostly valid bytes, some HTAB, DEL, controls and obs-text.
			switch r.IntN(10) {
			case 0:
				b[i] = byte(r.IntN(256))
			case 1:
				b[i] = '\t'
			default:
				b[i] = byte(0x20 + r.IntN(0x5f))
			}
		}
		if got, w := valueEnd(b), want(b); got != w {
			t.Fatalf("valueEnd(%q) = %d, want %d", b, got, w)
		}
	}
}
