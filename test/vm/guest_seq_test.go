//go:build mpsavm

package vm

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/xfrm/kernel"
	"github.com/mpsa/mpsa/xfrm/userspace"
)

// seqRecord reads the sequence-number record of spi in a lease directory.
func seqRecord(t *testing.T, dir string, spi uint32) uint32 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%08x", spi)))
	if err != nil {
		t.Fatalf("sequence-number record: %v", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 32)
	if err != nil {
		t.Fatalf("sequence-number record %q: %v", data, err)
	}
	return uint32(n)
}

// udpCsumErrors is the sum of UdpInCsumErrors and Udp6InCsumErrors in the
// namespace.
func (n *guestNS) udpCsumErrors(t *testing.T) int {
	t.Helper()
	total, found := 0, 0
	if err := n.do(func() error {
		snmp, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		lines := strings.Split(string(snmp), "\n")
		for i := 0; i+1 < len(lines); i++ {
			h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
			if len(h) > 0 && h[0] == "Udp:" && len(v) == len(h) && v[0] == "Udp:" {
				for j, name := range h {
					if name == "InCsumErrors" {
						k, _ := strconv.Atoi(v[j])
						total += k
						found++
					}
				}
				break
			}
		}
		snmp6, err := os.ReadFile("/proc/thread-self/net/snmp6")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(snmp6), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "Udp6InCsumErrors" {
				k, _ := strconv.Atoi(f[1])
				total += k
				found++
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if found != 2 {
		t.Fatalf("%s: UdpInCsumErrors or Udp6InCsumErrors not found", n.name)
	}
	return total
}

// startUserspace starts a userspace backend (TUN mpsa0) in m's namespace
// that receives on the underlay addresses local; it is closed when the
// test ends.
func startUserspace(t *testing.T, ctx context.Context, m *member, local ...netip.Addr) *userspace.Backend {
	t.Helper()
	var ub *userspace.Backend
	if err := m.ns.do(func() (err error) {
		ub, err = userspace.New(ctx, userspace.Config{TUNName: "mpsa0", MTU: 1400, Local: local, Logger: slog.New(slog.DiscardHandler)})
		return err
	}); err != nil {
		t.Fatalf("userspace backend: %v", err)
	}
	t.Cleanup(func() { _ = ub.Close() })
	return ub
}

// TestSeqAcrossRestarts: member 1's kernel backend, with a lease directory
// as mpsad gives it but a reservation of one number (so that the record
// is only what Close and New write), sends to members 2 and 3, more to 3,
// so that its two outbound states have different numbers. A graceful stop
// (Close) records the highest number of the SA's states plus
// kernel.SeqMargin, and after New with the same directory the states
// toward both peers start exactly there. A crash (no Close) leaves the
// states, whose numbers the next New records before it deletes them: after
// a second crash before the SA comes back, the states added start exactly
// above them.
func TestSeqAcrossRestarts(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ms := topology(t, "kseq", 3)
	a, p2, p3 := ms[0], ms[1], ms[2]
	sa := newSA(t, 0x71001, "aes128-sha256")
	inner := []bool{false}
	for _, m := range ms[1:] {
		b := startMember(t, ctx, kernel.Config{NetNS: m.ns.path(), Underlay: []netip.Addr{m.ul4}}, sa, []netip.Prefix{m.lanPrefix(false)}, peersOf(ms, m, inner, false))
		t.Cleanup(func() { _ = b.Flush(context.Background()) })
	}
	dir := filepath.Join(t.TempDir(), "seq", "kseq")
	// A reservation of one number and no periodic check: the record is
	// what Close and New write, nothing else (and a backend abandoned
	// below, a crash, writes nothing while the next one runs).
	cfg := kernel.Config{NetNS: a.ns.path(), Underlay: []netip.Addr{a.ul4}, SeqLeaseDir: dir,
		SeqReserve: 1, SeqCheckInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)}
	start := func() *kernel.Backend {
		t.Helper()
		return startMember(t, ctx, cfg, sa, []netip.Prefix{a.lanPrefix(false)}, peersOf(ms, a, inner, false))
	}
	ping := func(to *member, n int) {
		t.Helper()
		if got, err := a.ns.ping(a.lan4, to.lan4, n); got != n {
			t.Fatalf("ping %s: %d of %d answered (%v)", to.lan4, got, n, err)
		}
	}
	seqs := func() (uint32, uint32) {
		t.Helper()
		return a.ns.outboundSeq(t, p2.ul4, sa.SPI), a.ns.outboundSeq(t, p3.ul4, sa.SPI)
	}

	b := start()
	ping(p2, 2)
	ping(p3, 6)
	o2, o3 := seqs()
	if o2 == 0 || o3 <= o2 {
		t.Fatalf("outbound numbers %d to member 2 and %d to member 3; want more to member 3", o2, o3)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	want := max(o2, o3) + kernel.SeqMargin
	if got := seqRecord(t, dir, sa.SPI); got != want {
		t.Errorf("record after Close %d, want the highest number %d plus the margin: %d", got, max(o2, o3), want)
	}
	b = start()
	if n2, n3 := seqs(); n2 != want || n3 != want {
		t.Errorf("after a graceful restart the states start at %d (member 2) and %d (member 3); want both at %d, above the %d and %d sent before", n2, n3, want, o2, o3)
	}
	ping(p2, 1)
	ping(p3, 1)

	// A crash: b is abandoned, its states stay and the kernel goes on
	// with them.
	ping(p3, 3)
	o2, o3 = seqs()
	_ = b
	adopted, err := kernel.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want = max(o2, o3) + kernel.SeqMargin
	if got := seqRecord(t, dir, sa.SPI); got != want {
		t.Errorf("record after New adopted the crashed run's states %d, want %d (%d + the margin)", got, want, max(o2, o3))
	}
	if s, _ := a.ns.xfrmCounts(t); s != 0 {
		t.Errorf("%d states left after New adopted the crashed run's objects", s)
	}
	// It crashes too, before the controller pushes the SA again: only
	// the record remembers the numbers now.
	_ = adopted
	b = start()
	if n2, n3 := seqs(); n2 != want || n3 != want {
		t.Errorf("after two crashes the states start at %d (member 2) and %d (member 3); want both at %d, above the %d and %d sent before", n2, n3, want, o2, o3)
	}
	ping(p2, 1)
	ping(p3, 1)
	if err := b.Flush(ctx); err != nil {
		t.Error(err)
	}
}

// TestSeqRestartToUserspace: member 1 (kernel data plane, lease directory)
// sends a datagram every millisecond to member 2 (userspace data plane,
// which keeps an anti-replay window per SA and sender). Member 1's backend
// is stopped and started again mid-stream (mpsad restarting: Close, New,
// the same SA again); then, after a longer stream, it loses power: the
// kernel forgets its states and the record on disk is what the periodic
// check last wrote. After each restart every datagram arrives and member 2
// drops none as a replay. On a kernel backend without records (before
// kernel.Config.SeqLeaseDir) the datagrams after the restart are dropped
// as replays.
func TestSeqRestartToUserspace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ms := topology(t, "ksu", 2)
	kern, user := ms[0], ms[1]
	sa := newSA(t, 0x72001, "aes256-sha256")
	inner := []bool{false}
	ub := startUserspace(t, ctx, user, user.ul4)
	for _, step := range []func() error{
		func() error { return ub.InstallInbound(ctx, sa) },
		func() error {
			return ub.SetPeers(ctx, []netip.Prefix{user.lanPrefix(false)}, peersOf(ms, user, inner, false))
		},
		func() error { return ub.SetOutbound(ctx, sa.SPI) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	dir := filepath.Join(t.TempDir(), "seq", "ksu")
	// A small reservation checked often, so that the stream below
	// outgrows the first reservation and the record must follow it.
	const reserve = 256
	cfg := kernel.Config{NetNS: kern.ns.path(), Underlay: []netip.Addr{kern.ul4}, SeqLeaseDir: dir,
		SeqReserve: reserve, SeqCheckInterval: 100 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)}
	start := func() *kernel.Backend {
		t.Helper()
		return startMember(t, ctx, cfg, sa, []netip.Prefix{kern.lanPrefix(false)}, peersOf(ms, kern, inner, false))
	}
	dst := netip.AddrPortFrom(user.lan4, 9300)
	// stream sends before datagrams, calls restart (if not nil), sends
	// after more, and checks that every datagram sent after restart
	// returned arrived and that member 2 dropped none as a replay.
	stream := func(what string, before, after int, restart func()) {
		t.Helper()
		csum := user.ns.udpCsumErrors(t)
		s := startUDPStream(t, kern.ns, kern.lan4, user.ns, dst, time.Millisecond)
		if !s.waitSent(before, 30*time.Second) {
			t.Fatalf("%s: not %d datagrams sent within 30 s", what, before)
		}
		from := 0
		if restart != nil {
			restart()
			from = s.sent()
		}
		if !s.waitSent(after, 30*time.Second) {
			t.Fatalf("%s: not %d datagrams sent within 30 s after the restart", what, after)
		}
		sent, got := s.finish(5 * time.Second)
		var lost []string
		for _, m := range s.missing() {
			var n int
			if _, err := fmt.Sscanf(m, "#%d", &n); err == nil && n >= from {
				lost = append(lost, m)
			}
		}
		d := ub.Drops()
		t.Logf("%s: %d of %d datagrams arrived, %d sent after the restart; member 2's drops: %+v", what, got, sent, sent-from, d)
		if len(lost) > 0 || d.Replay != 0 {
			t.Errorf("%s: %d of the %d datagrams sent after the restart lost, %d dropped as replays by member 2 so far, its kernel's UDP checksum errors +%d; the first lost: %v",
				what, len(lost), sent-from, d.Replay, user.ns.udpCsumErrors(t)-csum, lost[:min(len(lost), 5)])
		}
	}

	kb := start()
	stream("graceful restart", 300, 300, func() {
		if err := kb.Close(); err != nil {
			t.Fatal(err)
		}
		kb = start()
	})

	// A longer stream, then a power loss. The record was reserve ahead
	// of the first number after the restart; the stream passes that, so
	// only the periodic check can keep the record ahead.
	first := kern.ns.outboundSeq(t, user.ul4, sa.SPI)
	stream("before the power loss", 0, 1000, nil)
	sent := kern.ns.outboundSeq(t, user.ul4, sa.SPI)
	if sent <= first+reserve {
		t.Fatalf("the stream sent up to %d, not past the first reservation %d", sent, first+reserve)
	}
	if err := waitFor(ctx, func() bool { return seqRecord(t, dir, sa.SPI) >= sent }); err != nil {
		t.Fatalf("the record %d never reached the kernel's number %d: %v", seqRecord(t, dir, sa.SPI), sent, err)
	}
	// The power goes: the kernel forgets the group's states and policies,
	// the disk keeps the record. (Close on the objects already gone would
	// record its reservation: the record is put back as it was.)
	path := filepath.Join(dir, fmt.Sprintf("%08x", sa.SPI))
	onDisk, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(onDisk)), 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	last := uint32(n)
	if _, err := kernel.FlushGroup(ctx, kernel.FlushConfig{NetNS: kern.ns.path(), ReqID: kernel.DefaultReqID, Priority: kernel.DefaultPriority}); err != nil {
		t.Fatal(err)
	}
	_ = kb.Close()
	if err := os.WriteFile(path, onDisk, 0o600); err != nil {
		t.Fatal(err)
	}
	kb = start()
	if got := kern.ns.outboundSeq(t, user.ul4, sa.SPI); got != last {
		t.Errorf("after the power loss the state starts at %d, want the record %d", got, last)
	}
	t.Logf("power loss after sequence number %d (the first reservation ended at %d), %d recorded", sent, first+reserve, last)
	stream("after the power loss", 0, 300, nil)
	if err := kb.Flush(ctx); err != nil {
		t.Error(err)
	}
}
