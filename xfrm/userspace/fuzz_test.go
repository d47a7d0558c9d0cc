package userspace

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mpsa/mpsa/xfrm/esp"
)

// FuzzIPHeaders fuzzes the userspace data plane's IP header parsing: the
// inner header (addrs), which routes outbound packets and binds inbound
// ones to their sender, and the outer IPv4 header a raw socket delivers
// (ipv4HeaderLen). Neither may panic or read outside the packet, and what
// they return must agree with the header's own bytes.
func FuzzIPHeaders(f *testing.F) {
	f.Add(innerPacket(netip.MustParseAddr("10.0.1.1"), netip.MustParseAddr("10.0.9.1"), 1))
	f.Add(innerPacket(netip.MustParseAddr("fd01::1"), netip.MustParseAddr("fd09::1"), 2))
	f.Add([]byte{0x46, 0, 0, 24, 0, 0, 0, 0, 64, 50, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2, 1, 1, 1, 1})
	f.Add([]byte{0x4f, 0, 0, 20})
	f.Add([]byte{0x60})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		src, dst, ok := addrs(pkt)
		if ok {
			switch v := pkt[0] >> 4; {
			case v == 4 && len(pkt) >= 20:
				if src != netip.AddrFrom4([4]byte(pkt[12:16])) || dst != netip.AddrFrom4([4]byte(pkt[16:20])) {
					t.Fatalf("IPv4 addresses %s -> %s, header has %x", src, dst, pkt[12:20])
				}
			case v == 6 && len(pkt) >= 40:
				if src != netip.AddrFrom16([16]byte(pkt[8:24])) || dst != netip.AddrFrom16([16]byte(pkt[24:40])) {
					t.Fatalf("IPv6 addresses %s -> %s, header has %x", src, dst, pkt[8:40])
				}
			default:
				t.Fatalf("addrs accepted a %d-byte packet of version %d", len(pkt), v)
			}
		} else if len(pkt) >= 40 && pkt[0]>>4 == 6 || len(pkt) >= 20 && pkt[0]>>4 == 4 {
			t.Fatalf("addrs refused a complete IPv%d header", pkt[0]>>4)
		}
		if n, ok := ipv4HeaderLen(pkt); ok {
			if n < 20 || n > len(pkt) || n%4 != 0 || pkt[0]>>4 != 4 || int(binary.BigEndian.Uint16(pkt[2:4])) < n {
				t.Fatalf("ipv4HeaderLen = %d for %d bytes %x", n, len(pkt), pkt[:min(len(pkt), 24)])
			}
		}
	})
}

// FuzzInboundPacket sends fuzzed bytes through the whole inbound path:
// as received (an ESP packet that no key made, behind an outer IPv4
// header or not), which must be dropped, and as the inner packet of an
// ESP packet sealed with the SA's key from a peer, which must be
// delivered exactly when its header is complete, its source is that
// peer's and its destination local. Nothing may panic.
func FuzzInboundPacket(f *testing.F) {
	h := newInboundHarness(f, 1)
	f.Add(innerPacket(host(lanA4, 3), host(local4, 1), 1), false, uint32(0x7100_0001))
	f.Add(innerPacket(host(lanB6, 3), host(local6, 1), 1), true, uint32(0x7100_0001))
	f.Add(innerPacket(host(lanB4, 3), host(local4, 1), 1), false, uint32(0))
	f.Add([]byte{0x45, 0, 0, 20}, true, uint32(1))
	seq := uint32(0)
	f.Fuzz(func(t *testing.T, data []byte, fromB bool, spi uint32) {
		h.t = t
		from := peerA
		if fromB {
			from = peerB
		}
		// As received: no valid ICV, so nothing is delivered.
		raw := append(binary.BigEndian.AppendUint32(nil, spi), data...)
		if got := h.receive(0, arrival{from, raw}); len(got) != 0 {
			t.Fatalf("an ESP packet made of fuzz bytes was delivered")
		}
		h.receiveRawIPv4(t, from, data)

		// Sealed: delivered exactly when the checks allow it.
		if len(data) == 0 || data[0]>>4 != 4 && data[0]>>4 != 6 || len(data) > 1500 {
			return
		}
		seq++
		p, err := h.seal.AppendSeal(nil, data, seq)
		if err != nil {
			t.Fatal(err)
		}
		want := false
		if src, dst, ok := addrs(data); ok {
			own := []netip.Prefix{lanA4, lanA6}
			if fromB {
				own = []netip.Prefix{lanB4, lanB6}
			}
			want = (own[0].Contains(src) || own[1].Contains(src)) && (local4.Contains(dst) || local6.Contains(dst))
		}
		if got := h.receive(0, arrival{from, p}); (len(got) == 1) != want {
			t.Fatalf("sealed inner packet %x from %s: delivered %v, want %v", data[:min(len(data), 40)], from, len(got) == 1, want)
		}
	})
}

// receiveRawIPv4 hands data to openBatch as a raw IPv4 socket delivers a
// packet, outer header included; a packet no key made must be dropped.
func (h *inboundHarness) receiveRawIPv4(t *testing.T, from netip.Addr, data []byte) {
	l := h.lanes[0]
	l.grow(1)
	recvOff := inOff - esp.HeaderLen - esp.IVLen - 20
	n := copy(l.bufs[0][recvOff:], data)
	l.sizes[0] = n
	if w := h.b.openBatch(0, true, l.bufs[:1], l.sizes[:1], []netip.Addr{from}, recvOff, l.wbufs[:0]); len(w) != 0 {
		t.Fatalf("a raw IPv4 packet made of fuzz bytes was delivered")
	}
}
