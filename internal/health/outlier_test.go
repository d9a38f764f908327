package health

import (
	"testing"
	"time"
)

func TestOutlier(t *testing.T) {
	o := NewOutlier(4, OutlierConfig{Failures: 3, Base: time.Second, Max: 4 * time.Second})
	now := time.Hour
	o.Failure(0, now)
	o.Failure(0, now)
	o.Success(0) // the run is broken
	o.Failure(0, now)
	if o.Ejected(0, now) {
		t.Fatal("ejected after a broken run of failures")
	}
	o.Failure(0, now)
	if !o.Failure(0, now) || !o.Ejected(0, now) {
		t.Fatal("not ejected after 3 failures in a row")
	}
	if o.Ejected(0, now+time.Second+1) {
		t.Fatal("still ejected after the base time")
	}
	// Ejected again soon after: twice as long each time, up to Max; after
	// a quiet spell longer than Max, the base time again.
	at := now + time.Second // the first ejection's end
	for _, want := range []time.Duration{2 * time.Second, 4 * time.Second, 4 * time.Second} {
		at += 10 * time.Millisecond
		for range 3 {
			o.Failure(0, at)
		}
		if !o.Ejected(0, at+want-time.Millisecond) || o.Ejected(0, at+want+time.Millisecond) {
			t.Fatalf("ejection not %v long", want)
		}
		at += want
	}
	at += o.cfg.Max + time.Second
	for range 3 {
		o.Failure(0, at)
	}
	if !o.Ejected(0, at+time.Second-time.Millisecond) || o.Ejected(0, at+time.Second+time.Millisecond) {
		t.Fatal("after a quiet spell, the ejection is not the base time")
	}
	now = at + time.Second
	// At most half of 4 endpoints are ejected at once.
	now += time.Hour
	for i := range 4 {
		for range 3 {
			o.Failure(i, now)
		}
	}
	n := 0
	for i := range 4 {
		if o.Ejected(i, now) {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d of 4 endpoints ejected, want 2 (50%%)", n)
	}
}
