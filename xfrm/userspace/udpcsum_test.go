package userspace

import (
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"
)

// refUDP6Checksum is the UDP checksum of the datagram udp (its checksum
// field as it is) from src to dst, written independently of udpcsum.go:
// the pseudo-header is built as RFC 8200 section 8.1 draws it and summed
// with the datagram byte pair by byte pair, folding as it goes.
func refUDP6Checksum(src, dst netip.Addr, udp []byte) uint16 {
	ph := make([]byte, 0, 40+len(udp)+1)
	s, d := src.As16(), dst.As16()
	ph = append(ph, s[:]...)
	ph = append(ph, d[:]...)
	ph = binary.BigEndian.AppendUint32(ph, uint32(len(udp)))
	ph = append(ph, 0, 0, 0, 17)
	ph = append(ph, udp...)
	if len(ph)%2 == 1 {
		ph = append(ph, 0)
	}
	var acc uint32
	for i := 0; i < len(ph); i += 2 {
		acc += uint32(ph[i])<<8 | uint32(ph[i+1])
		acc = acc&0xffff + acc>>16
	}
	return ^uint16(acc)
}

// udp6Packet builds an IPv6 packet carrying a UDP datagram with payload
// and checksum field csum.
func udp6Packet(src, dst netip.Addr, sport, dport uint16, payload []byte, csum uint16) []byte {
	n := 8 + len(payload)
	p := make([]byte, 40, 40+n)
	p[0] = 6 << 4
	binary.BigEndian.PutUint16(p[4:6], uint16(n))
	p[6], p[7] = 17, 64
	s, d := src.As16(), dst.As16()
	copy(p[8:24], s[:])
	copy(p[24:40], d[:])
	p = binary.BigEndian.AppendUint16(p, sport)
	p = binary.BigEndian.AppendUint16(p, dport)
	p = binary.BigEndian.AppendUint16(p, uint16(n))
	p = binary.BigEndian.AppendUint16(p, csum)
	return append(p, payload...)
}

// zeroSumPayload returns a payload of n bytes (at least 2) that makes the
// UDP checksum of the datagram from src:sport to dst:dport compute to
// zero: its first two bytes are chosen so, and body follows them.
func zeroSumPayload(src, dst netip.Addr, sport, dport uint16, body []byte, n int) []byte {
	payload := make([]byte, n)
	copy(payload[2:], body)
	c := refUDP6Checksum(src, dst, udp6Packet(src, dst, sport, dport, payload, 0)[40:])
	// The sum of the rest is ^c; adding c to it gives 0xffff, whose
	// complement, the checksum, is zero.
	binary.BigEndian.PutUint16(payload, c)
	return payload
}

func TestFixUDP6ZeroChecksum(t *testing.T) {
	src, dst := netip.MustParseAddr("fd00:1::2"), netip.MustParseAddr("fd00:2::2")
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 200 {
		n := 2 + rng.IntN(1400) // odd lengths too: the last byte is padded with zero
		head := make([]byte, n-2)
		for j := range head {
			head[j] = byte(rng.Uint32())
		}
		sport, dport := uint16(rng.Uint32()), uint16(rng.Uint32())
		pl := zeroSumPayload(src, dst, sport, dport, head, n)
		pkt := udp6Packet(src, dst, sport, dport, pl, 0)
		if c := refUDP6Checksum(src, dst, pkt[40:]); c != 0 && c != 0xffff {
			t.Fatalf("case %d: the crafted datagram's checksum computes to %#04x, not zero", i, c)
		}
		if !fixUDP6ZeroChecksum(pkt) {
			t.Fatalf("case %d (%d bytes): a zero checksum that computes to zero was left", i, n)
		}
		if got := binary.BigEndian.Uint16(pkt[46:48]); got != 0xffff {
			t.Fatalf("case %d: checksum field %#04x, want 0xffff", i, got)
		}
		// With 0xffff in the field the datagram verifies: the sum over
		// it, field included, is 0xffff (the reference's complement 0).
		if c := refUDP6Checksum(src, dst, pkt[40:]); c != 0 {
			t.Fatalf("case %d: the mended datagram does not verify (%#04x)", i, c)
		}
		// Any other datagram with a zero field is a sender's
		// zero-checksum choice and is left as it is.
		other := udp6Packet(src, dst, sport, dport, append([]byte{0x12, 0x34}, head...), 0)
		if refUDP6Checksum(src, dst, other[40:]) != 0 && fixUDP6ZeroChecksum(other) {
			t.Fatalf("case %d: a zero checksum that does not compute to zero was changed", i)
		}
		// A datagram with a checksum is never touched.
		withSum := udp6Packet(src, dst, sport, dport, head, 0)
		binary.BigEndian.PutUint16(withSum[46:], refUDP6Checksum(src, dst, withSum[40:]))
		before := append([]byte(nil), withSum...)
		if fixUDP6ZeroChecksum(withSum) || string(before) != string(withSum) {
			t.Fatalf("case %d: a datagram with a checksum was changed", i)
		}
	}
	// Not a UDP datagram in IPv6, or cut short: nothing happens.
	good := udp6Packet(src, dst, 1, 2, zeroSumPayload(src, dst, 1, 2, nil, 8), 0)
	for name, p := range map[string][]byte{
		"ipv4":         append([]byte{0x45}, good[1:]...),
		"tcp":          append(append(append([]byte(nil), good[:6]...), 6), good[7:]...),
		"short header": good[:47],
		"length over":  good[:len(good)-1],
	} {
		if fixUDP6ZeroChecksum(append([]byte(nil), p...)) {
			t.Errorf("%s: changed", name)
		}
	}
}

// TestUDP6ZeroChecksumCrosses sends, through the userspace data plane,
// IPv6 UDP datagrams whose checksum computes to zero: the sending kernel
// leaves the checksum to the TUN's reader, and the datagrams must reach
// the receiving socket with 0xffff in the field. Before udpcsum.go every
// one of them was dropped by the receiver's kernel (Udp6InCsumErrors),
// about one datagram in 65,536 of ordinary traffic.
func TestUDP6ZeroChecksumCrosses(t *testing.T) {
	g := newGroup(t, 2, 0)
	sa := g.newSA(0x1000_0701, testSuite)
	g.install(sa)
	g.setOutbound(sa.SPI)
	g.setPeers(6, 6)
	from, to := g.members[0], g.members[1]
	src, dst := netip.AddrPortFrom(from.host6(), 40001), netip.AddrPortFrom(to.host6(), 9301)
	var rx, tx *net.UDPConn
	if err := to.ns.Do(func() (err error) {
		rx, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	if err := from.ns.Do(func() (err error) {
		tx, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	csum := udpCsumErrors(t, to)
	const n = 20
	for i := range n {
		pl := zeroSumPayload(src.Addr(), dst.Addr(), src.Port(), dst.Port(), []byte{byte(i), 'z', 'e', 'r', 'o'}, 64+i)
		if c := refUDP6Checksum(src.Addr(), dst.Addr(), udp6Packet(src.Addr(), dst.Addr(), src.Port(), dst.Port(), pl, 0)[40:]); c != 0 {
			t.Fatalf("datagram %d: its checksum computes to %#04x, not zero", i, c)
		}
		if _, err := tx.Write(pl); err != nil {
			t.Fatal(err)
		}
	}
	got := map[byte]bool{}
	buf := make([]byte, 2048)
	_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(got) < n {
		m, err := rx.Read(buf)
		if err != nil {
			break
		}
		if m >= 3 {
			got[buf[2]] = true
		}
	}
	if len(got) != n {
		t.Errorf("%d of %d IPv6 UDP datagrams whose checksum computes to zero arrived; the receiver's UDP checksum errors grew by %d", len(got), n, udpCsumErrors(t, to)-csum)
	}
	if d := from.be.Drops(); d != (Drops{}) {
		t.Errorf("sender's drops %+v", d)
	}
}
