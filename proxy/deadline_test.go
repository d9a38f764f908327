package proxy

import (
	"testing"
	"time"
)

// TestDeadlineEnsure: a deadline is moved only when it falls outside the
// last quarter before now+d, a limit is kept exactly, and a forgotten one
// is always set.
func TestDeadlineEnsure(t *testing.T) {
	var dl deadline
	sets := 0
	var last time.Time
	set := func(at time.Time) error { sets++; last = at; return nil }
	const d = 100 * time.Millisecond
	steps := []struct {
		now, limit time.Duration
		wantSet    bool
		wantAt     time.Duration
	}{
		{now: time.Second, wantSet: true, wantAt: time.Second + d}, // none known
		{now: time.Second + 20*time.Millisecond, wantSet: false},   // within a quarter
		{now: time.Second + 26*time.Millisecond, wantSet: true, wantAt: time.Second + 126*time.Millisecond},
		{now: time.Second, wantSet: true, wantAt: time.Second + d}, // later than wanted
		{now: time.Second, limit: time.Second + 50*time.Millisecond, wantSet: true, wantAt: time.Second + 50*time.Millisecond},
		{now: time.Second + time.Millisecond, limit: time.Second + 50*time.Millisecond, wantSet: false},
	}
	for i, st := range steps {
		before := sets
		dl.ensure(set, st.now, d, st.limit)
		if got := sets > before; got != st.wantSet {
			t.Fatalf("step %d: set %v, want %v", i, got, st.wantSet)
		}
		if st.wantSet && !last.Equal(wallOf(st.wantAt)) {
			t.Fatalf("step %d: set to %v, want %v", i, last.Sub(epoch), st.wantAt)
		}
	}
	dl.forget()
	before := sets
	dl.ensure(set, time.Second+time.Millisecond, 50*time.Millisecond, time.Second+50*time.Millisecond)
	if sets == before {
		t.Fatal("a forgotten deadline was not set")
	}
}
