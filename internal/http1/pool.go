package http1

import (
	"math/bits"
	"sync"
)

// Read buffers come from pools in power-of-two sizes, starting small: most
// heads are under 1 KiB, so a connection only holds a large buffer while it
// parses a large head.
const (
	minBufSize  = 4 << 10
	numClasses  = 13 // 4 KiB .. 16 MiB
	maxPoolSize = minBufSize << (numClasses - 1)
)

var bufPools [numClasses]sync.Pool

// sizeClass returns the index of the smallest class holding n bytes, or -1
// if n is larger than any class.
func sizeClass(n int) int {
	if n <= minBufSize {
		return 0
	}
	c := bits.Len(uint(n-1)) - bits.Len(uint(minBufSize-1))
	if c >= numClasses {
		return -1
	}
	return c
}

// getBuf returns a buffer of at least n bytes. Pools hold *[]byte so that
// putting a buffer back does not allocate.
func getBuf(n int) *[]byte {
	c := sizeClass(n)
	if c < 0 {
		b := make([]byte, n)
		return &b
	}
	if p, _ := bufPools[c].Get().(*[]byte); p != nil {
		return p
	}
	b := make([]byte, minBufSize<<c)
	return &b
}

func putBuf(p *[]byte) {
	if c := sizeClass(len(*p)); c >= 0 && len(*p) == minBufSize<<c {
		bufPools[c].Put(p)
	}
}
