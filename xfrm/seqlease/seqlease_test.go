package seqlease

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpsa/mpsa/mpsa"
)

func openDir(t *testing.T) *Dir {
	t.Helper()
	d, err := OpenDir(filepath.Join(t.TempDir(), "state", "seq"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// onDisk returns the reservation recorded in the lease file.
func onDisk(t *testing.T, d *Dir, name string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.Path(), name))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		t.Fatalf("lease file %q: %v", b, err)
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestContinuesAfterRestart: a second Acquire of the same name, as after a
// restart, starts above everything the first could have used, and a
// removed lease starts from 0 again.
func TestContinuesAfterRestart(t *testing.T) {
	d := openDir(t)
	l, err := d.Acquire("c0000001", 100)
	if err != nil {
		t.Fatal(err)
	}
	if l.Start() != 0 || l.Reserved() != 100 || onDisk(t, d, "c0000001") != 100 {
		t.Fatalf("new lease: start %d, reserved %d, on disk %d; want 0, 100, 100", l.Start(), l.Reserved(), onDisk(t, d, "c0000001"))
	}
	// Use numbers up to 70: at half the step (50), the next step is written.
	for seq := uint32(1); seq <= 70; seq++ {
		if !l.Allows(seq) {
			t.Fatalf("%d refused", seq)
		}
	}
	waitFor(t, "the next reservation", func() bool { return l.Reserved() == 200 })
	if got := onDisk(t, d, "c0000001"); got != 200 {
		t.Fatalf("on disk %d, want 200", got)
	}

	// The process dies here; the SA is pushed again after the restart.
	d2, err := OpenDir(d.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := d2.Acquire("c0000001", 100)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Start() != 200 || l2.Reserved() != 300 || onDisk(t, d, "c0000001") != 300 {
		t.Fatalf("after restart: start %d, reserved %d, on disk %d; want 200, 300, 300", l2.Start(), l2.Reserved(), onDisk(t, d, "c0000001"))
	}

	// Another SA's lease is independent.
	other, err := d2.Acquire("c0000002", 100)
	if err != nil || other.Start() != 0 {
		t.Fatalf("other SA: start %d, %v", other.Start(), err)
	}

	if err := l2.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d.Path(), "c0000001")); !os.IsNotExist(err) {
		t.Fatalf("lease file still there after Remove: %v", err)
	}
	if err := l2.Reserve(500); err == nil {
		t.Fatal("Reserve after Remove succeeded")
	}
	if l2.Allows(301) {
		t.Fatal("Allows permits an unreserved number after Remove")
	}
	if err := l2.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	l3, err := d2.Acquire("c0000001", 100)
	if err != nil || l3.Start() != 0 {
		t.Fatalf("after Remove: start %d, %v; want a fresh lease", l3.Start(), err)
	}
}

// TestNeverPermitsUnrecorded: under concurrent callers, every number
// Allows permits is recorded on disk at that moment, and the numbers are
// permitted without gaps as the writes keep up.
func TestNeverPermitsUnrecorded(t *testing.T) {
	d := openDir(t)
	l, err := d.Acquire("a", 64)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	next := uint32(1)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				mu.Lock()
				seq := next
				if seq > 5000 {
					mu.Unlock()
					return
				}
				if !l.Allows(seq) {
					mu.Unlock()
					time.Sleep(50 * time.Microsecond) // the write is behind
					continue
				}
				next++
				if disk := onDisk(t, d, "a"); uint64(seq) > disk {
					t.Errorf("%d permitted with %d on disk", seq, disk)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if r := l.Reserved(); r < 5000 || r > 5000+2*64 {
		t.Fatalf("reserved %d after 5000 numbers with a step of 64", r)
	}
}

// TestWriteFailureRefuses: when the next reservation cannot be written,
// numbers beyond the last one written are refused (fail closed), and
// permitted again once a write succeeds.
func TestWriteFailureRefuses(t *testing.T) {
	d := openDir(t)
	l, err := d.Acquire("b", 10)
	if err != nil {
		t.Fatal(err)
	}
	// Root ignores permissions: take the directory away instead.
	if err := os.RemoveAll(d.Path()); err != nil {
		t.Fatal(err)
	}
	for seq := uint32(1); seq <= 10; seq++ {
		if !l.Allows(seq) {
			t.Fatalf("%d refused within the reservation", seq)
		}
	}
	waitFor(t, "the failed write", func() bool { return l.Err() != nil })
	if l.Allows(11) {
		t.Fatal("11 permitted, but only up to 10 is on disk")
	}
	if err := os.MkdirAll(d.Path(), 0o700); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a write after the retry delay", func() bool { return l.Allows(11) })
	if l.Err() != nil || onDisk(t, d, "b") < 11 {
		t.Fatalf("after recovery: err %v, on disk %d", l.Err(), onDisk(t, d, "b"))
	}
}

// TestAcquireWriteFailure: a first reservation that cannot be written
// does not fail Acquire (the SA can still receive) but permits no number
// until a write succeeds, which Allows retries; a lease that cannot be
// read still fails it.
func TestAcquireWriteFailure(t *testing.T) {
	d := openDir(t)
	// Root ignores permissions: take the directory away (no file: a new
	// SA, read as 0).
	if err := os.RemoveAll(d.Path()); err != nil {
		t.Fatal(err)
	}
	l, err := d.Acquire("c", 10)
	if err != nil {
		t.Fatalf("Acquire with an unwritable first reservation: %v; want the lease, refusing numbers", err)
	}
	if l.Err() == nil || l.Start() != 0 || l.Reserved() != 0 {
		t.Fatalf("err %v, start %d, reserved %d; want the write error and nothing reserved", l.Err(), l.Start(), l.Reserved())
	}
	if l.Allows(1) {
		t.Fatal("1 permitted, but nothing is on disk")
	}
	if err := os.MkdirAll(d.Path(), 0o700); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a write after the retry delay", func() bool { return l.Allows(1) })
	if l.Err() != nil || onDisk(t, d, "c") < 1 {
		t.Fatalf("after recovery: err %v, on disk %d", l.Err(), onDisk(t, d, "c"))
	}
	if err := os.Mkdir(filepath.Join(d.Path(), "unreadable"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Acquire("unreadable", 10); err == nil {
		t.Error("a lease that cannot be read was accepted")
	}
}

// TestCapsAtMax: a lease never reserves past 2^32-1, and one recorded
// there leaves the SA no number to send.
func TestCapsAtMax(t *testing.T) {
	d := openDir(t)
	if err := os.WriteFile(filepath.Join(d.Path(), "x"), []byte(strconv.Itoa(Max-5)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := d.Acquire("x", DefaultStep)
	if err != nil {
		t.Fatal(err)
	}
	if l.Start() != Max-5 || l.Reserved() != Max || onDisk(t, d, "x") != Max {
		t.Fatalf("start %d, reserved %d, on disk %d", l.Start(), l.Reserved(), onDisk(t, d, "x"))
	}
	if !l.Allows(Max) {
		t.Fatal("Max refused")
	}
	l2, err := d.Acquire("x", DefaultStep)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Start() != Max {
		t.Fatalf("start %d, want %d: every number may have been used", l2.Start(), uint32(Max))
	}
}

// TestRefusesBadFiles: a lease file that cannot be parsed is an error
// that says what to do, not a fresh start; names that are not plain file
// names are refused; leftovers of an interrupted write are removed.
func TestRefusesBadFiles(t *testing.T) {
	d := openDir(t)
	for _, content := range []string{"", "12x\n", "-1\n", "4294967296\n"} {
		if err := os.WriteFile(filepath.Join(d.Path(), "bad"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := d.Acquire("bad", 0)
		if err == nil || !strings.Contains(err.Error(), "corrupt") || !strings.Contains(err.Error(), "remove the file") {
			t.Errorf("lease file %q: %v", content, err)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", "../x", "*"} {
		if _, err := d.Acquire(name, 0); err == nil {
			t.Errorf("name %q accepted", name)
		}
	}
	tmp := filepath.Join(d.Path(), ".ok.123")
	if err := os.WriteFile(tmp, []byte("99"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Acquire("ok", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !os.IsNotExist(err) {
		t.Fatal("temporary file of an interrupted write left behind")
	}
	if _, err := OpenDir("", nil); err == nil {
		t.Fatal("empty directory path accepted")
	}
}

// TestAllowsNoAllocs: the per-packet check does not allocate while no
// write is due.
func TestAllowsNoAllocs(t *testing.T) {
	l, err := openDir(t).Acquire("n", DefaultStep)
	if err != nil {
		t.Fatal(err)
	}
	if a := testing.AllocsPerRun(1000, func() { l.Allows(1000) }); a != 0 {
		t.Fatalf("Allows allocates %.1f times", a)
	}
}

func BenchmarkAllows(b *testing.B) {
	d, err := OpenDir(b.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	l, err := d.Acquire("n", DefaultStep)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		l.Allows(1000)
	}
}

// TestPrune: leases and temporary files last written longer ago than the
// age go, newer ones and files that are not leases stay.
func TestPrune(t *testing.T) {
	d := openDir(t)
	now := time.Now()
	files := map[string]time.Duration{
		"old":          200 * time.Hour,
		".old.12345":   200 * time.Hour,
		"fresh":        time.Hour,
		"README.txt":   200 * time.Hour, // not a lease name
		".hidden":      200 * time.Hour, // not a temporary file of a lease
		"edge-younger": 167 * time.Hour,
	}
	for name, ago := range files {
		p := filepath.Join(d.Path(), name)
		if err := os.WriteFile(p, []byte("1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-ago), now.Add(-ago)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(d.Path(), "olddir"), 0o700); err != nil {
		t.Fatal(err)
	}
	n, err := d.Prune(168*time.Hour, now)
	if err != nil || n != 2 {
		t.Fatalf("Prune removed %d, %v; want 2", n, err)
	}
	for name := range files {
		_, err := os.Stat(filepath.Join(d.Path(), name))
		if gone := os.IsNotExist(err); gone != (name == "old" || name == ".old.12345") {
			t.Errorf("%s: gone %v", name, gone)
		}
	}
	if _, err := os.Stat(filepath.Join(d.Path(), "olddir")); err != nil {
		t.Error("a directory was removed")
	}
}

// TestSettle: a stopped sender records its last number exactly, below the
// rest of its reservation, and the next Acquire continues right after
// it; a record never goes below the start of the lease; a settled lease
// permits and reserves nothing more.
func TestSettle(t *testing.T) {
	d := openDir(t)
	l, err := d.Acquire("k", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Settle(123); err != nil {
		t.Fatal(err)
	}
	if got := onDisk(t, d, "k"); got != 123 {
		t.Fatalf("on disk %d after Settle(123), want 123 (not the reservation 1000)", got)
	}
	if l.Allows(124) || !l.Allows(123) {
		t.Error("a settled lease permits numbers above its record, or not those up to it")
	}
	if err := l.Reserve(5000); err == nil || onDisk(t, d, "k") != 123 {
		t.Errorf("Reserve after Settle: %v, on disk %d", err, onDisk(t, d, "k"))
	}
	if err := l.Settle(200); err == nil {
		t.Error("second Settle succeeded")
	}

	l2, err := d.Acquire("k", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if l2.Start() != 123 || l2.Reserved() != 1123 {
		t.Fatalf("after Settle: start %d, reserved %d; want 123, 1123", l2.Start(), l2.Reserved())
	}
	// Nothing sent in this run: the record stays at the start, where an
	// earlier run may have sent.
	if err := l2.Settle(0); err != nil {
		t.Fatal(err)
	}
	if got := onDisk(t, d, "k"); got != 123 {
		t.Fatalf("Settle(0) on a lease that started at 123 recorded %d", got)
	}
	// A sender that outran its reservation records what it used.
	l3, err := d.Acquire("k", 10)
	if err != nil {
		t.Fatal(err)
	}
	if err := l3.Settle(5000); err != nil || onDisk(t, d, "k") != 5000 {
		t.Fatalf("Settle above the reservation: %v, on disk %d; want 5000", err, onDisk(t, d, "k"))
	}
	if err := l3.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(d.Path(), "k")); !os.IsNotExist(err) {
		t.Fatal("Remove after Settle left the file")
	}
}

// TestSettleWriteFailure: a Settle that cannot write says so (the
// reservation written before, higher, is what a restart then finds).
func TestSettleWriteFailure(t *testing.T) {
	d := openDir(t)
	l, err := d.Acquire("w", 1000)
	if err != nil {
		t.Fatal(err)
	}
	// Root ignores permissions: take the directory away instead.
	if err := os.RemoveAll(d.Path()); err != nil {
		t.Fatal(err)
	}
	if err := l.Settle(10); err == nil || l.Err() == nil {
		t.Fatalf("Settle without its directory: %v, Err %v; want an error", err, l.Err())
	}
}

// TestRaise: Raise records numbers used outside a lease when they are
// above the file's record, creates the file if needed, never lowers it,
// and refuses what Acquire refuses.
func TestRaise(t *testing.T) {
	d := openDir(t)
	if err := d.Raise("r", 500); err != nil || onDisk(t, d, "r") != 500 {
		t.Fatalf("Raise on no file: %v, on disk %d", err, onDisk(t, d, "r"))
	}
	if err := d.Raise("r", 400); err != nil || onDisk(t, d, "r") != 500 {
		t.Fatalf("Raise below the record: %v, on disk %d; want 500 kept", err, onDisk(t, d, "r"))
	}
	if err := d.Raise("r", 900); err != nil || onDisk(t, d, "r") != 900 {
		t.Fatalf("Raise above the record: %v, on disk %d; want 900", err, onDisk(t, d, "r"))
	}
	l, err := d.Acquire("r", 100)
	if err != nil || l.Start() != 900 {
		t.Fatalf("Acquire after Raise: start %d, %v; want 900", l.Start(), err)
	}
	if err := os.WriteFile(filepath.Join(d.Path(), "bad"), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Raise("bad", 1); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("Raise on a corrupt file: %v", err)
	}
	if err := d.Raise("../x", 1); err == nil {
		t.Error("Raise accepted a name that is not a file name")
	}
}

// TestOpenPruned: opening with a prune age removes the leases older than
// it and keeps the others; PruneAge is the longest SA lifetime and a day.
func TestOpenPruned(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "seq")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for name, ago := range map[string]time.Duration{"ended": PruneAge + time.Hour, "live": PruneAge - time.Hour} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("1\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, now.Add(-ago), now.Add(-ago)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := OpenPruned(dir, PruneAge, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ended")); !os.IsNotExist(err) {
		t.Errorf("the lease older than PruneAge is still there: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "live")); err != nil {
		t.Errorf("the younger lease is gone: %v", err)
	}
	if PruneAge != mpsa.MaxLifetime+24*time.Hour {
		t.Errorf("PruneAge %v, want the longest SA lifetime and a day", PruneAge)
	}
}
