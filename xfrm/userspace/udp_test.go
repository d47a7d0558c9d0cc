package userspace

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/testenv"
)

// loopbackUDP opens an ESP-in-UDP socket on 127.0.0.1 and a plain
// receiver, and returns the destination of the receiver. Segmentation is
// forced on: the tests below check the queue's coalescing and its
// fallback, which need no UDP_SEGMENT in the kernel.
func loopbackUDP(t *testing.T) (*espSocket, *net.UDPConn, *dest) {
	t.Helper()
	s, err := openESPSocket(netip.MustParseAddr("127.0.0.1"), true, 0, 128, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	s.tx.gso.Store(true)
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rx.Close() })
	d := newDest(netip.MustParseAddr("127.0.0.1"), uint16(rx.LocalAddr().(*net.UDPAddr).Port))
	return s, rx, &d
}

func packets(n, size int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = bytes.Repeat([]byte{byte(i + 1)}, size)
	}
	return out
}

// TestUDPQueueCoalesces checks which packets share a UDP_SEGMENT message:
// a run to one destination, none longer than the first, at most 64, and a
// shorter one ends the run.
func TestUDPQueueCoalesces(t *testing.T) {
	s, _, d := loopbackUDP(t)
	other := newDest(netip.MustParseAddr("127.0.0.2"), testESPInUDPPort)
	var want []int // packets per message
	q := func(p []byte, to *dest) { s.tx.queue(p, to, len(p)) }
	for _, p := range packets(3, 1000) {
		q(p, d)
	}
	q(make([]byte, 600), d) // shorter: joins, then ends the message
	q(make([]byte, 600), d)
	want = append(want, 4, 1)
	q(make([]byte, 1000), &other) // another destination
	q(make([]byte, 1200), &other) // longer than the first: new message
	want = append(want, 1, 1)
	for _, p := range packets(70, 100) { // 64 at most
		q(p, d)
	}
	want = append(want, 64, 6)
	var got []int
	for _, m := range s.tx.meta[:s.tx.nmsg] {
		got = append(got, m.count)
	}
	if !slices.Equal(got, want) {
		t.Errorf("packets per message %v, want %v", got, want)
	}
	s.tx.nmsg, s.tx.niov = 0, 0
}

// TestUDPSocketStopsSegmentingOnEIO: when a segmented send fails with EIO
// (what older kernels answer when the device cannot checksum UDP), the
// socket sends the same packets again one datagram each, over the real
// socket, and segments no more. The refusal is simulated, so the kernel
// need not know UDP_SEGMENT.
func TestUDPSocketStopsSegmentingOnEIO(t *testing.T) {
	s, rx, d := loopbackUDP(t)
	send := s.tx.fn
	refused := 0
	s.tx.fn = func(fd uintptr) bool {
		if s.tx.sending[0].hdr.Controllen > 0 {
			refused++
			s.tx.done, s.tx.errno = -1, unix.EIO
			return true
		}
		return send(fd)
	}
	pkts := packets(10, 1000)
	for _, p := range pkts {
		s.tx.queue(p, d, 1)
	}
	sent, inner, failed := s.tx.flush()
	if sent != 10 || inner != 10 || failed != 0 {
		t.Errorf("flush: sent %d, inner bytes %d, failed %d; want 10, 10, 0", sent, inner, failed)
	}
	if refused != 1 || s.tx.gso.Load() {
		t.Errorf("segmented sends refused %d, segmentation on %v; want 1 and off", refused, s.tx.gso.Load())
	}
	for _, p := range pkts[:5] {
		s.tx.queue(p, d, 1)
	}
	if s.tx.nmsg != 5 {
		t.Errorf("after the fallback 5 packets made %d messages, want 5", s.tx.nmsg)
	}
	if sent, _, _ := s.tx.flush(); sent != 5 {
		t.Errorf("second flush sent %d, want 5", sent)
	}
	_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2000)
	for i := 0; i < 15; i++ {
		n, err := rx.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if want := pkts[i%10]; !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: %d bytes of %x, want %d of %x", i, n, buf[0], len(want), want[0])
		}
	}
}

// TestUDPSplitCountsSentInnerBytes: a segmented message the kernel refuses
// (EMSGSIZE) goes again one datagram per packet; when one of those fails,
// the byte count is that of the inner packets actually sent.
func TestUDPSplitCountsSentInnerBytes(t *testing.T) {
	s, rx, d := loopbackUDP(t)
	send := s.tx.fn
	s.tx.fn = func(fd uintptr) bool {
		switch {
		case s.tx.sending[0].hdr.Controllen > 0:
			s.tx.done, s.tx.errno = -1, unix.EMSGSIZE
			return true
		case s.tx.sending[0].hdr.Iov == &s.tx.iovs[0]:
			s.tx.done, s.tx.errno = -1, unix.EHOSTUNREACH
			return true
		}
		return send(fd)
	}
	pkts := packets(4, 1000)
	for i, p := range pkts {
		s.tx.queue(p, d, 100*(i+1))
	}
	if s.tx.nmsg != 1 {
		t.Fatalf("4 packets of one size made %d messages, want 1", s.tx.nmsg)
	}
	sent, inner, failed := s.tx.flush()
	if sent != 3 || inner != 200+300+400 || failed != 1 {
		t.Errorf("flush: sent %d, inner bytes %d, failed %d; want 3, 900, 1", sent, inner, failed)
	}
	if !s.tx.gso.Load() {
		t.Error("segmentation turned off by EMSGSIZE, want it kept")
	}
	_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2000)
	for i := 1; i < 4; i++ {
		n, err := rx.Read(buf)
		if err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if !bytes.Equal(buf[:n], pkts[i]) {
			t.Fatalf("datagram %d: %d bytes of %x, want %d of %x", i, n, buf[0], len(pkts[i]), pkts[i][0])
		}
	}
}

// TestRawSocketNeverCoalesces: the send side of a raw ESP socket puts
// every packet in a message of its own.
func TestRawSocketNeverCoalesces(t *testing.T) {
	testenv.NeedRoot(t)
	s, err := openESPSocket(netip.MustParseAddr("127.0.0.1"), false, 0, 16, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	if s.tx.gso.Load() || s.gro {
		t.Errorf("raw socket: segmentation %v, GRO %v; want both off", s.tx.gso.Load(), s.gro)
	}
	d := newDest(netip.MustParseAddr("127.0.0.1"), 0)
	for _, p := range packets(5, 100) {
		s.tx.queue(p, &d, len(p))
	}
	if s.tx.nmsg != 5 {
		t.Errorf("5 packets made %d messages, want 5", s.tx.nmsg)
	}
	s.tx.nmsg, s.tx.niov = 0, 0
}
