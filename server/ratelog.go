package server

import (
	"log/slog"
	"maps"
	"slices"
	"time"
)

// dropLog counts dropped control datagrams by reason and logs them at a
// rate that cannot flood the log: the first of each reason at once, then at
// most one line per reason per interval, saying how many were dropped
// since the last line. Drops held back are reported by flush once the
// interval has passed, so that a burst followed by silence is still
// logged with its full count. Not safe for concurrent use: it belongs to
// the server's loop.
type dropLog struct {
	log *slog.Logger
	// counted, if set, is told of every drop (the metrics).
	counted  func(reason string)
	interval time.Duration
	counts   map[string]uint64
	last     map[string]time.Time
	// since counts the drops of each reason not logged yet.
	since map[string]uint64
	// held, if set, is told when a drop is held back: a flush is due at
	// at (the server sets flushAt to it).
	held    func(at time.Time)
	flushAt deadline
}

func newDropLog(log *slog.Logger, interval time.Duration) *dropLog {
	return &dropLog{log: log, interval: interval, counts: map[string]uint64{}, last: map[string]time.Time{}, since: map[string]uint64{}}
}

// drop counts one datagram dropped for reason and maybe logs it with attrs.
// It reports whether the drop was held back as the first since the last
// line of its reason, that is whether a flush is now pending that was not
// before (the caller's timer must then be re-armed, see nextFlush).
func (d *dropLog) drop(now time.Time, reason string, attrs ...any) bool {
	if d.counted != nil {
		d.counted(reason)
	}
	return d.add(now, reason, 1, attrs...)
}

// add counts n datagrams dropped for reason, like drop but without telling
// counted.
func (d *dropLog) add(now time.Time, reason string, n uint64, attrs ...any) bool {
	if n == 0 {
		return false
	}
	d.counts[reason] += n
	d.since[reason] += n
	if last, ok := d.last[reason]; ok && now.Sub(last) < d.interval {
		first := d.since[reason] == n
		if first && d.held != nil {
			d.held(last.Add(d.interval))
		}
		return first
	}
	d.report(now, reason, attrs...)
	return false
}

func (d *dropLog) report(now time.Time, reason string, attrs ...any) {
	d.log.Warn("dropped control datagram", append([]any{"reason", reason, "dropped_since_last_report", d.since[reason]}, attrs...)...)
	d.last[reason] = now
	d.since[reason] = 0
}

// flush logs, for every reason whose interval has passed by now, the drops
// held back since its last line.
func (d *dropLog) flush(now time.Time) {
	for _, reason := range slices.Sorted(maps.Keys(d.since)) {
		if d.since[reason] > 0 && now.Sub(d.last[reason]) >= d.interval {
			d.report(now, reason)
		}
	}
}

// nextFlush is when flush has something to log, false if nothing is held
// back.
func (d *dropLog) nextFlush() (time.Time, bool) {
	var next time.Time
	for reason, n := range d.since {
		if n == 0 {
			continue
		}
		if t := d.last[reason].Add(d.interval); next.IsZero() || t.Before(next) {
			next = t
		}
	}
	return next, !next.IsZero()
}

func (d *dropLog) snapshot() map[string]uint64 {
	if len(d.counts) == 0 {
		return nil // nothing dropped
	}
	return maps.Clone(d.counts)
}
