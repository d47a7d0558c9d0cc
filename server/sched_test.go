package server

import (
	"context"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// TestDeadlines: set, move and stop at random, then fire: the deadlines
// fire in time order, each once, and only those scheduled; next is always
// the earliest.
func TestDeadlines(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rnd := rand.New(rand.NewPCG(3, 4))
	var q deadlines
	var fired []int
	ds := make([]deadline, 200)
	want := map[int]time.Time{}
	for i := range ds {
		ds[i].fire = func(context.Context, time.Time) { fired = append(fired, i) }
	}
	for range 5000 {
		i := rnd.IntN(len(ds))
		switch rnd.IntN(4) {
		case 0:
			q.stop(&ds[i])
			delete(want, i)
		case 1:
			at := t0.Add(time.Duration(rnd.IntN(1000)) * time.Millisecond)
			q.setEarlier(&ds[i], at)
			if w, ok := want[i]; !ok || at.Before(w) {
				want[i] = at
			}
		default:
			at := t0.Add(time.Duration(rnd.IntN(1000)) * time.Millisecond)
			q.set(&ds[i], at)
			want[i] = at
		}
		if q.len() != len(want) {
			t.Fatalf("%d scheduled, want %d", q.len(), len(want))
		}
		next, ok := q.next()
		var earliest time.Time
		for _, w := range want {
			if earliest.IsZero() || w.Before(earliest) {
				earliest = w
			}
		}
		if ok != (len(want) > 0) || (ok && !next.Equal(earliest)) {
			t.Fatalf("next %v %v, want %v", next, ok, earliest)
		}
	}
	q.runDue(context.Background(), t0.Add(500*time.Millisecond))
	var due []int
	for i, w := range want {
		if !w.After(t0.Add(500 * time.Millisecond)) {
			due = append(due, i)
		}
	}
	if len(fired) != len(due) || q.len() != len(want)-len(due) {
		t.Fatalf("fired %d, want %d; %d left", len(fired), len(due), q.len())
	}
	if !slices.IsSortedFunc(fired, func(a, b int) int { return want[a].Compare(want[b]) }) {
		t.Fatal("deadlines fired out of order")
	}
	// A deadline that sets itself again at or before now fires again in
	// the same run; later, not.
	var n int
	var again deadline
	again.fire = func(_ context.Context, now time.Time) {
		n++
		q.set(&again, now.Add(time.Duration(n-3)*time.Second))
	}
	q.set(&again, t0)
	q.runDue(context.Background(), t0)
	if n != 4 || q.len() != len(want)-len(due)+1 {
		t.Fatalf("a deadline set again at or before now fired %d times, want 4 (the fourth sets it after now)", n)
	}
}
