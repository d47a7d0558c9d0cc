package kernel

import (
	"bytes"
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/xfrm/seqlease"
)

// TestReserveAhead: the record is written only when less than half the
// distance to keep is left, reaches at least the least distance ahead, and
// four intervals' worth at the rate seen since the last check, but never
// more than 16 times the least distance; it never passes 2^32-1.
func TestReserveAhead(t *testing.T) {
	const least = 1000
	iv := 5 * time.Second
	for _, tc := range []struct {
		name                 string
		reserved, high, sent uint32
		elapsed              time.Duration
		upTo                 uint32
		write                bool
	}{
		{"fresh lease, idle", 1000, 0, 0, 0, 1000, false},
		{"more than half left", 2000, 1499, 49, iv, 2000, false},
		{"half left", 2000, 1500, 50, iv, 2000, false},
		{"less than half left", 2000, 1501, 101, iv, 2501, true},
		// 10000 numbers in one interval: keep 40000 ahead, over the
		// cap of 16000.
		{"fast", 15000, 11000, 10000, iv, 27000, true},
		// 2000 numbers in half an interval: keep 16000 ahead.
		{"faster", 5000, 3000, 2000, iv / 2, 19000, true},
		{"capped however fast", 15000, 11000, 10000, iv / 100, 27000, true},
		{"past the record", 2000, 3000, 100, iv, 4000, true},
		{"no check before", 2000, 1800, 0, 0, 2800, true},
		{"near the end", seqlease.Max - 100, seqlease.Max - 10, 10, iv, seqlease.Max, true},
		{"at the end", seqlease.Max, seqlease.Max, 20, iv, seqlease.Max, false},
	} {
		upTo, write := reserveAhead(tc.reserved, tc.high, tc.sent, tc.elapsed, iv, least)
		if upTo != tc.upTo || write != tc.write {
			t.Errorf("%s: reserveAhead(%d, %d, %d, %v) = %d, %v; want %d, %v", tc.name, tc.reserved, tc.high, tc.sent, tc.elapsed, upTo, write, tc.upTo, tc.write)
		}
	}
}

// TestRecordRateLeavesOutMargin: a state deleted and added again between
// two checks raises the SA's number by SeqMargin without sending those
// numbers; the rate that decides how far the record reaches counts only
// the numbers sent.
func TestRecordRateLeavesOutMargin(t *testing.T) {
	var logs bytes.Buffer
	b := recordBackend(t, &logs) // least distance 1000
	const spi = 0x5000
	b.acquireRecord(t, spi)
	t0 := time.Unix(1e9, 0)
	b.writeRecords(b.planRecords([]stateInfo{outState(spi, "192.0.2.2", 100)}, t0))
	// The state toward 192.0.2.2 goes at 200 (its peer moved) and the
	// one toward 192.0.2.3 starts above it (200 + SeqMargin) and sends
	// 100.
	b.noteSeq(spi, 200)
	high := b.seq[spi] + 100
	b.writeRecords(b.planRecords([]stateInfo{outState(spi, "192.0.2.3", high)}, t0.Add(5*time.Second)))
	// 200 numbers sent in one interval: four intervals' worth, 800, is
	// below the least distance, which the record keeps ahead.
	if got, want := recorded(t, b, spi), high+1000; got != want {
		t.Errorf("record %d; want %d, the least distance ahead (the margin counted as numbers sent would ask for %d)", got, want, 4*(high-100))
	}
}

// recordBackend is a backend with a lease directory and no kernel, for
// the record logic; its log goes to logs.
func recordBackend(t *testing.T, logs *bytes.Buffer) *Backend {
	t.Helper()
	b := testBackend("192.0.2.1")
	b.cfg.SeqReserve = 1000
	b.cfg.SeqCheckInterval = 5 * time.Second
	b.log = slog.New(slog.NewTextHandler(logs, nil))
	b.cfg.SeqLeaseDir = filepath.Join(t.TempDir(), "seq")
	b.seq, b.recs, b.seqWarnings = map[uint32]uint32{}, map[uint32]*seqRecord{}, map[uint32]string{}
	if err := b.openLeases(); err != nil {
		t.Fatal(err)
	}
	return b
}

func (b *Backend) acquireRecord(t *testing.T, spi uint32) *seqRecord {
	t.Helper()
	l, err := b.leases.Acquire(leaseName(spi), uint64(b.cfg.SeqReserve))
	if err != nil {
		t.Fatal(err)
	}
	r := &seqRecord{lease: l}
	b.recs[spi] = r
	return r
}

func recorded(t *testing.T, b *Backend, spi uint32) uint32 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(b.cfg.SeqLeaseDir, leaseName(spi)))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(n)
}

func outState(spi uint32, peer string, oseq uint32) stateInfo {
	return stateInfo{src: netip.MustParseAddr("192.0.2.1"), dst: netip.MustParseAddr(peer), spi: spi, reqid: DefaultReqID, oseq: oseq}
}

// TestRecordsFollowStates: checks over a dump of the states keep each
// SA's record on disk ahead of the highest number of its outbound states
// (every peer's state counts, and those deleted before; other SAs', other
// groups', other if_ids' and inbound states do not), writing only when
// the numbers near it, and say once when the numbers passed it.
func TestRecordsFollowStates(t *testing.T) {
	var logs bytes.Buffer
	b := recordBackend(t, &logs)
	const spi, other = 0x5000, 0x6000
	b.acquireRecord(t, spi)
	b.acquireRecord(t, other)
	if got := recorded(t, b, spi); got != 1000 {
		t.Fatalf("new record %d, want the least distance 1000", got)
	}
	t0 := time.Unix(1e9, 0)
	check := func(at time.Duration, states ...stateInfo) {
		t.Helper()
		b.writeRecords(b.planRecords(states, t0.Add(at)))
	}
	foreign := []stateInfo{
		{src: netip.MustParseAddr("192.0.2.1"), dst: netip.MustParseAddr("192.0.2.9"), spi: spi, reqid: 1, oseq: 1 << 30},                     // charon's
		{src: netip.MustParseAddr("192.0.2.1"), dst: netip.MustParseAddr("192.0.2.9"), spi: spi, reqid: DefaultReqID, ifid: 7, oseq: 1 << 30}, // another if_id
		{src: netip.IPv4Unspecified(), dst: netip.MustParseAddr("192.0.2.1"), spi: spi, reqid: DefaultReqID, oseq: 1 << 30},                   // inbound
	}
	check(0, append(foreign, outState(spi, "192.0.2.2", 100), outState(spi, "192.0.2.3", 400))...)
	if got := recorded(t, b, spi); got != 1000 {
		t.Errorf("record %d after a check at 400 of 1000, want 1000 unchanged", got)
	}
	// The peer 192.0.2.3 sends fast: 400 -> 900 in 5 s; keep four
	// intervals' worth (2000) ahead of 900.
	check(5*time.Second, outState(spi, "192.0.2.2", 120), outState(spi, "192.0.2.3", 900))
	if got := recorded(t, b, spi); got != 2900 {
		t.Errorf("record %d after 500 numbers in an interval up to 900, want 2900", got)
	}
	if got := recorded(t, b, other); got != 1000 {
		t.Errorf("the other SA's record moved to %d without states", got)
	}
	// A burst past the record: logged once, and written ahead.
	check(10*time.Second, outState(spi, "192.0.2.3", 5000))
	check(11*time.Second, outState(spi, "192.0.2.3", 5001))
	if n := strings.Count(logs.String(), "passed their record"); n != 1 {
		t.Errorf("the numbers passing the record logged %d times, want once:\n%s", n, logs.String())
	}
	if got := recorded(t, b, spi); got < 5000+1000 {
		t.Errorf("record %d after the burst to 5000, want at least 6000", got)
	}
	// A state deleted (its peer left) counts when no state is left.
	b.noteSeq(other, 3000)
	check(12 * time.Second)
	if got := recorded(t, b, other); got < 3000+SeqMargin {
		t.Errorf("record %d of an SA whose deleted state sent up to 3000, want at least %d", got, 3000+SeqMargin)
	}
}

// TestRecordWriteFailureListed: a record that cannot be written is logged
// once and listed by Warnings until a write succeeds.
func TestRecordWriteFailureListed(t *testing.T) {
	var logs bytes.Buffer
	b := recordBackend(t, &logs)
	const spi = 0x5000
	b.acquireRecord(t, spi)
	if err := os.RemoveAll(b.cfg.SeqLeaseDir); err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1e9, 0)
	b.writeRecords(b.planRecords([]stateInfo{outState(spi, "192.0.2.2", 900)}, t0))
	b.writeRecords(b.planRecords([]stateInfo{outState(spi, "192.0.2.2", 950)}, t0.Add(time.Second)))
	if w := b.Warnings(); len(w) != 1 || !strings.Contains(w[0], "power loss") {
		t.Errorf("warnings %q, want one about the record", w)
	}
	if n := strings.Count(logs.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d errors logged, want 1:\n%s", n, logs.String())
	}
	if err := os.MkdirAll(b.cfg.SeqLeaseDir, 0o700); err != nil {
		t.Fatal(err)
	}
	b.writeRecords(b.planRecords([]stateInfo{outState(spi, "192.0.2.2", 960)}, t0.Add(2*time.Second)))
	if w := b.Warnings(); len(w) != 0 || recorded(t, b, spi) < 960 {
		t.Errorf("after recovery: warnings %q, record %d", w, recorded(t, b, spi))
	}
}

// TestSettleRecords: at Close the record becomes the highest number read
// from the deleted states plus SeqMargin, below the reservation; an SA
// that sent nothing keeps the record it started with; one whose state
// could not be read keeps its reservation.
func TestSettleRecords(t *testing.T) {
	var logs bytes.Buffer
	b := recordBackend(t, &logs)
	const sent, idle, unread = 0x5000, 0x6000, 0x7000
	if err := b.leases.Raise(leaseName(idle), 77); err != nil {
		t.Fatal(err)
	}
	b.acquireRecord(t, sent)
	b.acquireRecord(t, idle)
	b.acquireRecord(t, unread).unread = true
	b.noteSeq(sent, 300)
	b.noteSeq(sent, 200)
	if err := b.settleRecords(); err != nil {
		t.Fatal(err)
	}
	if got := recorded(t, b, sent); got != 300+SeqMargin {
		t.Errorf("SA that sent up to 300: record %d, want %d", got, 300+SeqMargin)
	}
	if got := recorded(t, b, idle); got != 77 {
		t.Errorf("SA that sent nothing: record %d, want the 77 it started from", got)
	}
	if got := recorded(t, b, unread); got != 1000 {
		t.Errorf("SA with a state not read: record %d, want its reservation 1000", got)
	}
	if len(b.recs) != 0 {
		t.Errorf("%d records left after settling", len(b.recs))
	}
	// The note saturates at 2^32-1.
	b.noteSeq(1, seqlease.Max-5)
	if b.seq[1] != seqlease.Max {
		t.Errorf("note near the end %d, want 2^32-1", b.seq[1])
	}
}

// TestNewKeepsRecords runs New in a namespace (no ESP needed) with a
// lease directory: it creates the directory, removes the records of SAs
// that ended more than mpsa.MaxLifetime and a day ago, keeps the others
// and whatever is not a record, and Close leaves them as they were.
func TestNewKeepsRecords(t *testing.T) {
	ns := nettest.NewNS(t, "kseq")
	dir := filepath.Join(t.TempDir(), "state", "seq", "g")
	cfg := Config{NetNS: "/run/netns/" + ns.Name, Group: "g", Underlay: []netip.Addr{netip.MustParseAddr("192.0.2.1")},
		SeqLeaseDir: dir, Logger: slog.New(slog.DiscardHandler)}
	b, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-9 * 24 * time.Hour)
	for name, at := range map[string]time.Time{"0000a001": old, "0000a002": time.Now(), "notes.txt": old} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("4242\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	b, err = New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"0000a001": false, "0000a002": true, "notes.txt": true} {
		_, err := os.Stat(filepath.Join(dir, name))
		if got := err == nil; got != want {
			t.Errorf("%s there: %v, want %v", name, got, want)
		}
	}
	if got := recorded(t, b, 0xa002); got != 4242 {
		t.Errorf("record of a fresh SA %d after New and Close, want 4242 kept", got)
	}
}
