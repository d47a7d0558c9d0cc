package server

import (
	"context"
	"time"
)

// deadline is one timer of the engine: a member's retransmission, a
// group's rekey or SA lifecycle, the pacer's next token, a drop log's
// flush. Its owner sets and stops it on the server's deadlines; fire runs
// on the loop when it falls due, after it has left the heap (so fire may
// set it again). The zero deadline is not scheduled.
type deadline struct {
	at time.Time
	// pos is the position in the heap plus one; 0 when not scheduled.
	pos  int
	fire func(ctx context.Context, now time.Time)
}

// deadlines is a binary min-heap of the engine's timers by time: the loop
// sleeps until the first, setting or moving one costs O(log n), and
// nothing walks all of them.
type deadlines struct {
	h []*deadline
}

// set schedules d at at, or moves it there if it is scheduled.
func (q *deadlines) set(d *deadline, at time.Time) {
	d.at = at
	if d.pos != 0 {
		q.fix(d.pos - 1)
		return
	}
	q.h = append(q.h, d)
	d.pos = len(q.h)
	q.up(len(q.h) - 1)
}

// setEarlier schedules d at at unless it is scheduled earlier already.
func (q *deadlines) setEarlier(d *deadline, at time.Time) {
	if d.pos == 0 || at.Before(d.at) {
		q.set(d, at)
	}
}

// stop removes d if it is scheduled.
func (q *deadlines) stop(d *deadline) {
	if d.pos == 0 {
		return
	}
	i, last := d.pos-1, len(q.h)-1
	if i != last {
		q.swap(i, last)
	}
	q.h[last] = nil
	q.h = q.h[:last]
	d.pos = 0
	if i != last {
		q.fix(i)
	}
}

// next is the earliest deadline, false when none is scheduled.
func (q *deadlines) next() (time.Time, bool) {
	if len(q.h) == 0 {
		return time.Time{}, false
	}
	return q.h[0].at, true
}

// runDue fires, earliest first, every deadline due by now, including those
// that the fired ones set at or before now.
func (q *deadlines) runDue(ctx context.Context, now time.Time) {
	for len(q.h) > 0 && !q.h[0].at.After(now) {
		d := q.h[0]
		q.stop(d)
		d.fire(ctx, now)
	}
}

// len is how many deadlines are scheduled.
func (q *deadlines) len() int { return len(q.h) }

func (q *deadlines) less(i, j int) bool { return q.h[i].at.Before(q.h[j].at) }

func (q *deadlines) swap(i, j int) {
	q.h[i], q.h[j] = q.h[j], q.h[i]
	q.h[i].pos, q.h[j].pos = i+1, j+1
}

func (q *deadlines) fix(i int) {
	if !q.down(i) {
		q.up(i)
	}
}

func (q *deadlines) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !q.less(i, p) {
			return
		}
		q.swap(i, p)
		i = p
	}
}

// down moves the element at i down to its place and reports whether it
// moved.
func (q *deadlines) down(i int) bool {
	start := i
	for {
		l := 2*i + 1
		if l >= len(q.h) {
			break
		}
		m := l
		if r := l + 1; r < len(q.h) && q.less(r, l) {
			m = r
		}
		if !q.less(m, i) {
			break
		}
		q.swap(i, m)
		i = m
	}
	return i > start
}
