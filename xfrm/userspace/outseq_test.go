package userspace

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/xfrm/esp"
	"github.com/mpsa/mpsa/xfrm/seqlease"
)

// logRecorder is a slog.Handler that keeps every record's message and
// level.
type logRecorder struct {
	mu   sync.Mutex
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Level.String()+" "+rec.Message)
	return nil
}

// count returns how many records contain s.
func (r *logRecorder) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.msgs {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

// sendBatch routes, seals and sends n packets of the fake TUN through the
// pipeline backend's stages on the calling goroutine, and reports how many
// were routed for sending.
func (p *pipelineBackend) sendBatch(t *testing.T, n int) int {
	t.Helper()
	e := newOutElem(n)
	for i := range n {
		e.sizes[i] = copy(e.bufs[i][outOff:], ipv4UDP(p.dev.src, p.dev.dst, 9, []byte{byte(i)}))
	}
	if !p.b.routeBatch(e, n) {
		return 0
	}
	k := e.n
	e.out.acquire()
	e.seal(e.out.seal[0])
	e.out.release()
	p.b.sendElem(e)
	return k
}

// receiveSeqs reads ESP packets from rx until none arrives for a while
// and returns their sequence numbers, each checked and opened.
func (p *pipelineBackend) receiveSeqs(t *testing.T) []uint32 {
	t.Helper()
	var seqs []uint32
	buf := make([]byte, 2048)
	for {
		p.rx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		n, err := p.rx.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return seqs
		}
		if err != nil {
			t.Fatal(err)
		}
		_, seq, err := p.open.Open(buf[:n])
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		seqs = append(seqs, seq)
	}
}

// TestOutboundSeqNeverWraps: an SA that reaches sequence number 2^32-1
// sends that last packet and then none: the rest are dropped and counted
// as seq_exhausted, nothing leaves with a wrapped number (0, 1, ...), and
// the exhaustion is logged once.
func TestOutboundSeqNeverWraps(t *testing.T) {
	testenv.NeedRoot(t)
	logs := &logRecorder{}
	p := newPipelineBackendConfig(t, Config{Sealers: 1}, newFakeTUN(0, 0), slog.New(logs), nil)
	p.entry(t).sa.SetLastSeq(esp.MaxSeq - 10)
	if k := p.sendBatch(t, 64); k != 10 {
		t.Fatalf("%d packets routed, want the 10 numbers left", k)
	}
	if k := p.sendBatch(t, 64); k != 0 {
		t.Fatalf("%d packets routed after the last number", k)
	}
	seqs := p.receiveSeqs(t)
	if len(seqs) != 10 || seqs[0] != esp.MaxSeq-9 || seqs[9] != esp.MaxSeq {
		t.Fatalf("sent sequence numbers %v, want %d to %d", seqs, uint32(esp.MaxSeq-9), uint32(esp.MaxSeq))
	}
	if d := p.b.DropCounts(); d[DropSeqExhausted] != 54+64 || d[DropSAOutErrors] != 0 {
		t.Fatalf("drops %v, want %s = %d", d, DropSeqExhausted, 54+64)
	}
	if n := logs.count("last sequence number"); n != 1 {
		t.Fatalf("exhaustion logged %d times, want once: %q", n, logs.msgs)
	}
}

// TestOutboundSeqContinuesAfterRestart: with a lease directory, the same
// SA installed again (a restart of mpsad with the SA pushed again) numbers
// its packets above every number the first run could have sent, so that a
// receiver's replay window for this sender accepts them; removing the SA
// removes its lease, and leases of SAs that ended long ago are removed
// at start.
func TestOutboundSeqContinuesAfterRestart(t *testing.T) {
	testenv.NeedRoot(t)
	dir := filepath.Join(t.TempDir(), "seq")
	// The lease of an SA that ended long ago without Remove (a crash):
	// removed at start.
	stale := filepath.Join(dir, "c0000009")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stale, []byte("1048576\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-9 * 24 * time.Hour)
	if err := os.Chtimes(stale, long, long); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Sealers: 1, SeqLeaseDir: dir}
	p1 := newPipelineBackendConfig(t, cfg, newFakeTUN(0, 0), quietLogger(t), nil)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("the lease of an SA that ended 9 days ago is still there: %v", err)
	}
	if k := p1.sendBatch(t, 64); k != 64 {
		t.Fatalf("first run routed %d of 64", k)
	}
	first := p1.receiveSeqs(t)
	// The receiver's window for this sender on this SA.
	var w replayWindow
	for _, s := range first {
		if !w.check(s) {
			t.Fatalf("first run: %d refused", s)
		}
	}
	leaseFile := filepath.Join(dir, "50000001")
	if _, err := os.Stat(leaseFile); err != nil {
		t.Fatalf("no lease file: %v", err)
	}
	// A crash: nothing is removed.
	closeWithin(t, "first run", p1.b)

	p2 := newPipelineBackendConfig(t, cfg, newFakeTUN(0, 0), quietLogger(t), &p1.sa)
	if k := p2.sendBatch(t, 64); k != 64 {
		t.Fatalf("second run routed %d of 64", k)
	}
	second := p2.receiveSeqs(t)
	if len(first) != 64 || len(second) != 64 {
		t.Fatalf("received %d and %d packets, want 64 each", len(first), len(second))
	}
	if second[0] <= first[len(first)-1] {
		t.Fatalf("after the restart the SA numbers from %d, not above %d, which it sent before", second[0], first[len(first)-1])
	}
	for _, s := range second {
		if !w.check(s) {
			t.Fatalf("second run: %d dropped as a replay by the receiver", s)
		}
	}
	if err := p2.b.Remove(context.Background(), p2.sa.SPI); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leaseFile); !os.IsNotExist(err) {
		t.Fatalf("lease file still there after Remove: %v", err)
	}
}

// TestOutboundSeqLeaseFailClosed: when the next reservation cannot be
// written, numbers beyond the last one on disk are not sent: the packets
// are dropped as seq_lease and that is logged once; once the directory
// is writable again, packets flow.
func TestOutboundSeqLeaseFailClosed(t *testing.T) {
	testenv.NeedRoot(t)
	dir := filepath.Join(t.TempDir(), "seq")
	logs := &logRecorder{}
	p := newPipelineBackendConfig(t, Config{Sealers: 1, SeqLeaseDir: dir}, newFakeTUN(0, 0), slog.New(logs), nil)
	e := p.entry(t)
	reserved := e.lease.Reserved()
	if reserved != seqlease.DefaultStep {
		t.Fatalf("reserved %d, want %d", reserved, seqlease.DefaultStep)
	}
	// The root user ignores permissions: take the directory away.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	e.sa.SetLastSeq(reserved - 10)
	if k := p.sendBatch(t, 64); k != 10 {
		t.Fatalf("%d routed, want the 10 reserved numbers", k)
	}
	p.sendBatch(t, 64)
	seqs := p.receiveSeqs(t)
	if len(seqs) != 10 || seqs[9] != reserved {
		t.Fatalf("sent %v, want the 10 numbers up to %d", seqs, reserved)
	}
	if d := p.b.DropCounts(); d[DropSeqLease] != 54+64 {
		t.Fatalf("drops %v, want %s = %d", d, DropSeqLease, 54+64)
	}
	if n := logs.count("not yet reserved on disk"); n != 1 {
		t.Fatalf("logged %d times, want once: %q", n, logs.msgs)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "packets to be sent again", func() bool { return p.sendBatch(t, 8) > 0 })
	b, err := os.ReadFile(filepath.Join(dir, "50000001"))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32); err != nil || n <= uint64(reserved) {
		t.Fatalf("lease file %q after recovery, want above %d", b, reserved)
	}
}

// TestInstallWithUnwritableLease: an SA whose lease cannot be written is
// installed all the same, so that it receives; it sends nothing (dropped
// as seq_lease) until the lease is written, which happens by itself once
// the directory is back.
func TestInstallWithUnwritableLease(t *testing.T) {
	testenv.NeedRoot(t)
	dir := filepath.Join(t.TempDir(), "seq")
	p := newPipelineBackendConfig(t, Config{Sealers: 1, SeqLeaseDir: dir}, newFakeTUN(0, 0), quietLogger(t), nil)
	// The root user ignores permissions: take the directory away.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	sa := p.sa
	sa.SPI++
	if err := p.b.InstallInbound(ctx, sa); err != nil {
		t.Fatalf("InstallInbound with an unwritable lease: %v; want the SA installed for receiving", err)
	}
	if p.b.sas.Load().find(sa.SPI) == nil {
		t.Fatal("the SA is not installed")
	}
	if err := p.b.SetOutbound(ctx, sa.SPI); err != nil {
		t.Fatal(err)
	}
	if k := p.sendBatch(t, 8); k != 0 {
		t.Fatalf("%d packets routed with nothing reserved on disk", k)
	}
	if d := p.b.DropCounts(); d[DropSeqLease] != 8 {
		t.Fatalf("drops %v, want %s = 8", d, DropSeqLease)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "packets to be sent once the lease is written", func() bool { return p.sendBatch(t, 8) > 0 })
}
