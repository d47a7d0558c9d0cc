package server

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// logLine is one line of the drop log as the JSON handler writes it.
type logLine struct {
	Msg    string `json:"msg"`
	Reason string `json:"reason"`
	Since  uint64 `json:"dropped_since_last_report"`
	Src    string `json:"src"`
}

type dropLogBench struct {
	t      *testing.T
	buf    bytes.Buffer
	d      *dropLog
	t0     time.Time
	counts map[string]int
}

func newDropLogBench(t *testing.T) *dropLogBench {
	b := &dropLogBench{t: t, t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), counts: map[string]int{}}
	b.d = newDropLog(slog.New(slog.NewJSONHandler(&b.buf, nil)), 10*time.Second)
	b.d.counted = func(reason string) { b.counts[reason]++ }
	return b
}

func (b *dropLogBench) at(d time.Duration) time.Time { return b.t0.Add(d) }

// lines returns the lines logged since the last call.
func (b *dropLogBench) lines() []logLine {
	b.t.Helper()
	var ls []logLine
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var ll logLine
		if err := json.Unmarshal([]byte(l), &ll); err != nil {
			b.t.Fatalf("log line %q: %v", l, err)
		}
		if ll.Msg != "dropped control datagram" {
			b.t.Fatalf("log line %q", l)
		}
		ls = append(ls, ll)
	}
	b.buf.Reset()
	return ls
}

func (b *dropLogBench) expect(want ...logLine) {
	b.t.Helper()
	got := b.lines()
	if len(got) != len(want) {
		b.t.Fatalf("logged %+v, want %+v", got, want)
	}
	for i := range got {
		if got[i] != want[i] {
			b.t.Fatalf("line %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func line(reason string, since uint64, src string) logLine {
	return logLine{Msg: "dropped control datagram", Reason: reason, Since: since, Src: src}
}

// TestDropLogRateLimit: the first drop of a reason is logged at once with
// its attributes; then at most one line per reason per interval, carrying
// the number dropped since the previous line; reasons do not hold each
// other back; every drop is counted.
func TestDropLogRateLimit(t *testing.T) {
	b := newDropLogBench(t)
	const a, c = "spi_mismatch", "malformed"
	if b.d.drop(b.at(0), a, "src", "a0") {
		t.Error("a logged drop reported a pending flush")
	}
	b.expect(line(a, 1, "a0"))

	// Three more of a within the interval: held back; only the first
	// of them makes a flush pending.
	for i, src := range []string{"a1", "a2", "a3"} {
		if pending := b.d.drop(b.at(time.Second), a, "src", src); pending != (i == 0) {
			t.Errorf("drop %d held back: pending %v, want %v", i+1, pending, i == 0)
		}
	}
	b.expect()
	// Another reason is not held back by a's interval.
	b.d.drop(b.at(2*time.Second), c, "src", "c0")
	b.expect(line(c, 1, "c0"))
	// Just before a's interval has passed: still held back.
	b.d.drop(b.at(10*time.Second-time.Nanosecond), a, "src", "a4")
	b.expect()
	// At the end of the interval: one line with the drops since the last
	// one (a1 to a5), and the attributes of the one that made it.
	b.d.drop(b.at(10*time.Second), a, "src", "a5")
	b.expect(line(a, 5, "a5"))
	// c's interval runs from c's own line.
	b.d.drop(b.at(11*time.Second), c, "src", "c1")
	b.expect()
	b.d.drop(b.at(12*time.Second), c, "src", "c2")
	b.expect(line(c, 2, "c2"))

	if got := b.d.snapshot(); got[a] != 6 || got[c] != 3 || len(got) != 2 {
		t.Errorf("counts %v, want %s 6, %s 3", got, a, c)
	}
	if b.counts[a] != 6 || b.counts[c] != 3 {
		t.Errorf("metrics told %v, want %s 6, %s 3", b.counts, a, c)
	}
}

// TestDropLogFlush: drops held back are logged by flush once their
// interval has passed, even if no drop follows; nextFlush says when.
func TestDropLogFlush(t *testing.T) {
	b := newDropLogBench(t)
	const a, c = "no_control_child", "overload"
	if _, ok := b.d.nextFlush(); ok {
		t.Fatal("a flush is pending with nothing dropped")
	}
	b.d.drop(b.at(0), a, "src", "a0")
	b.expect(line(a, 1, "a0"))
	if _, ok := b.d.nextFlush(); ok {
		t.Fatal("a flush is pending with every drop logged")
	}
	b.d.drop(b.at(time.Second), a, "src", "a1")
	b.d.drop(b.at(2*time.Second), a, "src", "a2")
	// add counts several at once (the overload count) and does not tell
	// the metrics.
	b.d.add(b.at(3*time.Second), c, 7, "detail", "behind")
	b.d.add(b.at(4*time.Second), c, 2)
	b.expect(line(c, 7, ""))
	if next, ok := b.d.nextFlush(); !ok || !next.Equal(b.at(10*time.Second)) {
		t.Fatalf("next flush %v %v, want %v", next, ok, b.at(10*time.Second))
	}
	b.d.flush(b.at(10*time.Second - time.Nanosecond))
	b.expect()
	b.d.flush(b.at(10 * time.Second))
	b.expect(line(a, 2, ""))
	if next, ok := b.d.nextFlush(); !ok || !next.Equal(b.at(13*time.Second)) {
		t.Fatalf("next flush %v %v, want %v (overload's)", next, ok, b.at(13*time.Second))
	}
	// A flush line starts a new interval: a drop just after it is held.
	b.d.drop(b.at(11*time.Second), a, "src", "a3")
	b.expect()
	b.d.flush(b.at(15 * time.Second))
	b.expect(line(c, 2, ""))
	b.d.flush(b.at(20 * time.Second))
	b.expect(line(a, 1, ""))
	if _, ok := b.d.nextFlush(); ok {
		t.Fatal("a flush is pending after everything was logged")
	}
	b.d.flush(b.at(time.Hour))
	b.expect()
	if got := b.d.snapshot(); got[a] != 4 || got[c] != 9 {
		t.Errorf("counts %v", got)
	}
	if b.counts[c] != 0 || b.counts[a] != 4 {
		t.Errorf("metrics told %v, want only %s (4)", b.counts, a)
	}
}
