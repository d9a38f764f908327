// Package budget bounds the memory strait holds for requests in flight,
// for the whole process: buffered request bodies now, and later HTTP/2
// flow-control windows and UDP batches. A per-request limit is not a bound
// (10,000 slow clients each holding 64 KiB hold 640 MiB); a budget is.
package budget

import "sync/atomic"

// Budget is a number of bytes that users take and give back. It is safe
// for concurrent use.
type Budget struct {
	limit   int64
	used    atomic.Int64
	refused atomic.Int64
}

// New returns a budget of limit bytes.
func New(limit int64) *Budget { return &Budget{limit: limit} }

// Take counts n bytes against the budget, and reports false, counting
// nothing, if they do not fit.
func (b *Budget) Take(n int64) bool {
	if b.used.Add(n) > b.limit {
		b.used.Add(-n)
		b.refused.Add(1)
		return false
	}
	return true
}

// Release gives back n bytes taken.
func (b *Budget) Release(n int64) { b.used.Add(-n) }

// Limit is the budget's size in bytes.
func (b *Budget) Limit() int64 { return b.limit }

// Used is the bytes taken now.
func (b *Budget) Used() int64 { return b.used.Load() }

// Refused counts the Takes that did not fit.
func (b *Budget) Refused() int64 { return b.refused.Load() }
