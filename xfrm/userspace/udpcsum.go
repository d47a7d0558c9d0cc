package userspace

import "encoding/binary"

// A UDP checksum that computes to zero is sent as 0xffff (RFC 768; RFC
// 8200 section 8.1 for IPv6), because a zero in the field means "no
// checksum". The kernel leaves the checksum of a packet it routes into the
// TUN to whoever reads it (CHECKSUM_PARTIAL, the virtio header's
// NEEDS_CSUM), and wireguard-go's TUN library completes it without that
// rule: about one UDP datagram in 65,536 left with a zero checksum. Over
// IPv4 that only drops the check; over IPv6, where a zero checksum is
// invalid, the receiver's kernel drops the datagram (Udp6InCsumErrors).
// fixUDP6ZeroChecksum mends such a datagram before it is sealed.

// fixUDP6ZeroChecksum sets the checksum of pkt, an IPv6 packet read from
// the TUN, to 0xffff when pkt is a UDP datagram (directly after the fixed
// header) whose checksum field is zero and whose checksum computes to
// zero; it reports whether it did. A zero field whose checksum does not
// compute to zero is a sender's choice (RFC 6935's zero-checksum tunnels)
// and stays. Only a zero field costs a checksum computation.
func fixUDP6ZeroChecksum(pkt []byte) bool {
	const hdr = 40
	if len(pkt) < hdr+8 || pkt[0]>>4 != 6 || pkt[6] != 17 || pkt[hdr+6] != 0 || pkt[hdr+7] != 0 {
		return false
	}
	udp := pkt[hdr:]
	n := int(binary.BigEndian.Uint16(udp[4:6]))
	if n < 8 || n > len(udp) {
		return false
	}
	// The pseudo-header: source, destination, the UDP length, the next
	// header; then the datagram, its checksum field zero.
	sum := sum16(pkt[8:40], 0) + uint64(n) + 17
	sum = sum16(udp[:n], sum)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	if sum != 0xffff {
		return false
	}
	udp[6], udp[7] = 0xff, 0xff
	return true
}

// sum16 adds b to sum as big-endian 16-bit words (an odd last byte padded
// with zero), without folding: 2^48 bytes would be needed to overflow.
func sum16(b []byte, sum uint64) uint64 {
	for len(b) >= 2 {
		sum += uint64(b[0])<<8 | uint64(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint64(b[0]) << 8
	}
	return sum
}
