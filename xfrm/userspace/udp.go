package userspace

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ESP in UDP (RFC 3948): the socket options and control messages of UDP
// segmentation (GSO, on send) and coalescing (GRO, on receive). The socket
// itself is an espSocket with a port; its send side is a sendQueue.
const (
	// maxGSOSegments is the kernel's limit on segments in one
	// UDP_SEGMENT send (UDP_MAX_SEGMENTS).
	maxGSOSegments = 64
	// solUDP and the UDP socket options of linux/udp.h.
	solUDP     = unix.IPPROTO_UDP
	udpSegment = 103 // UDP_SEGMENT: u16 segment size, on send
	udpGRO     = 104 // UDP_GRO: int, on receive
)

// cmsgSegSpace is the size of the control buffer of one UDP_SEGMENT
// message (a u16).
func cmsgSegSpace() int { return unix.CmsgSpace(2) }

// cmsgGROSpace is the size of the control buffer for the UDP_GRO size on
// receive (an int).
func cmsgGROSpace() int { return unix.CmsgSpace(4) }

// groSize returns the UDP_GRO segment size in a received control buffer,
// 0 if there is none. The socket asks for no other control message, so
// only the first is looked at.
func groSize(oob []byte) int {
	hl := unix.CmsgLen(0)
	if len(oob) < hl+4 {
		return 0
	}
	c := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	if c.Level != solUDP || c.Type != udpGRO || int(c.Len) < hl+4 {
		return 0
	}
	return int(*(*int32)(unsafe.Pointer(&oob[hl])))
}
