package server

import (
	"log/slog"
	"maps"
	"time"
)

// dropLog counts dropped control datagrams by reason and logs them at a
// rate that cannot flood the log: the first of each reason at once, then at
// most one line per reason per interval, saying how many were dropped
// since.
type dropLog struct {
	log *slog.Logger
	// counted, if set, is told of every drop (the metrics).
	counted  func(reason string)
	interval time.Duration
	counts   map[string]uint64
	last     map[string]time.Time
	since    map[string]uint64
}

func newDropLog(log *slog.Logger, interval time.Duration) *dropLog {
	return &dropLog{log: log, interval: interval, counts: map[string]uint64{}, last: map[string]time.Time{}, since: map[string]uint64{}}
}

// drop counts one datagram dropped for reason and maybe logs it with attrs.
func (d *dropLog) drop(now time.Time, reason string, attrs ...any) {
	if d.counted != nil {
		d.counted(reason)
	}
	d.counts[reason]++
	d.since[reason]++
	if last, ok := d.last[reason]; ok && now.Sub(last) < d.interval {
		return
	}
	d.log.Warn("dropped control datagram", append([]any{"reason", reason, "dropped_since_last_report", d.since[reason]}, attrs...)...)
	d.last[reason] = now
	d.since[reason] = 0
}

func (d *dropLog) snapshot() map[string]uint64 {
	if len(d.counts) == 0 {
		return nil // nothing dropped
	}
	return maps.Clone(d.counts)
}
