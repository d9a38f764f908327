package sockio

import (
	"testing"
	"time"

	"github.com/straitproxy/strait/internal/mono"
)

// TestDeadlineEnsure: a deadline is moved only when it falls outside the
// last quarter before now+d, and a limit is kept exactly.
func TestDeadlineEnsure(t *testing.T) {
	var dl Deadline
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
		dl.Ensure(set, st.now, d, st.limit)
		if got := sets > before; got != st.wantSet {
			t.Fatalf("step %d: set %v, want %v", i, got, st.wantSet)
		}
		if st.wantSet && !last.Equal(mono.Wall(st.wantAt)) {
			t.Fatalf("step %d: set to %v, want %v", i, last.Sub(mono.Wall(0)), st.wantAt)
		}
	}
}
