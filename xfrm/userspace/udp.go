package userspace

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// maxGSOSegments is the kernel's limit on segments in one
	// UDP_SEGMENT send (UDP_MAX_SEGMENTS).
	maxGSOSegments = 64
	// solUDP and the UDP socket options of linux/udp.h.
	solUDP     = unix.IPPROTO_UDP
	udpSegment = 103 // UDP_SEGMENT: u16 segment size, on send
	udpGRO     = 104 // UDP_GRO: int, on receive
)

// udpSocket carries ESP in UDP (RFC 3948) from one local underlay address
// and port. Sends coalesce a run of ESP packets of one size to one peer
// into a single UDP_SEGMENT message (GSO: the kernel splits it into
// datagrams once, at the device); receives take datagrams that the kernel
// coalesced (UDP_GRO) and report their segment size. Where the kernel or
// the device refuses GSO (EIO), the socket falls back to one datagram per
// message; where UDP_GRO cannot be set, every message is one datagram.
// A segmented message the kernel refuses with EINVAL or EMSGSIZE (a
// segment larger than the route's MTU, which only fragmentation can carry)
// is sent again one datagram per packet.
type udpSocket struct {
	local netip.Addr
	file  *os.File
	rc    syscall.RawConn
	log   *slog.Logger
	// gso is cleared, for good, the first time a segmented send fails
	// with EIO. Only the outbound goroutine writes it.
	gso atomic.Bool
	gro bool
	tx  udpTx
	// rx is the receive batch of the socket's inbound goroutine; oob
	// holds one control buffer per message for the UDP_GRO size.
	rx    batchIO
	rxOOB []byte
}

// udpTx is the send batch: messages, each one or more iovecs (one per ESP
// packet) taken in order from iovs, and a control buffer per message for
// the segment size.
type udpTx struct {
	msgs []mmsghdr
	iovs []unix.Iovec
	oob  []byte
	meta []udpMsg
	// spare is room for split to rebuild meta in.
	spare []udpMsg
	nmsg  int
	niov  int
	// sending is the slice of msgs handed to the next sendmmsg.
	sending []mmsghdr
	done    int
	errno   syscall.Errno
	fn      func(fd uintptr) bool
}

// udpMsg describes one message of the send batch.
type udpMsg struct {
	dest    *dest
	first   int // index of its first iovec
	count   int // ESP packets in it
	segSize int // size of the first packet: every other is at most this
	total   int // payload bytes
	inner   int // inner bytes carried, for the counters
	closed  bool
}

// cmsgSegSpace is the size of the control buffer of one UDP_SEGMENT
// message (a u16).
func cmsgSegSpace() int { return unix.CmsgSpace(2) }

// cmsgGROSpace is the size of the control buffer for the UDP_GRO size on
// receive (an int).
func cmsgGROSpace() int { return unix.CmsgSpace(4) }

func openUDPSocket(local netip.Addr, port uint16, batch int, log *slog.Logger) (*udpSocket, error) {
	f, rc, err := openSocket(local, port, unix.SOCK_DGRAM, unix.IPPROTO_UDP, "ESP-in-UDP socket")
	if err != nil {
		return nil, err
	}
	s := &udpSocket{local: local, log: log, file: f, rc: rc}
	err = rc.Control(func(fd uintptr) {
		// A kernel that knows UDP_SEGMENT answers getsockopt for it.
		_, gsoErr := unix.GetsockoptInt(int(fd), solUDP, udpSegment)
		s.gso.Store(gsoErr == nil)
		s.gro = unix.SetsockoptInt(int(fd), solUDP, udpGRO, 1) == nil
	})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("ESP-in-UDP socket %s: %w", netip.AddrPortFrom(local, port), err)
	}
	s.tx = udpTx{
		msgs:  make([]mmsghdr, batch),
		iovs:  make([]unix.Iovec, batch),
		oob:   make([]byte, batch*cmsgSegSpace()),
		meta:  make([]udpMsg, batch),
		spare: make([]udpMsg, batch),
	}
	s.tx.fn = func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.tx.sending[0])), uintptr(len(s.tx.sending)), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN {
			return false
		}
		s.tx.done, s.tx.errno = int(r), e
		return true
	}
	s.rx = newBatchIO(s.rxMessages(batch))
	s.rxOOB = make([]byte, len(s.rx.msgs)*cmsgGROSpace())
	s.rx.fn = s.rx.recvmmsg
	return s, nil
}

// rxMessages is how many messages one receive asks for: with GRO each can
// hold up to maxGSOSegments ESP packets, so a few fill a batch of the
// TUN's size.
func (s *udpSocket) rxMessages(batch int) int {
	if s.gro {
		return max(1, batch/maxGSOSegments)
	}
	return batch
}

// maxPayload is the largest UDP payload one message to d may carry.
func maxPayload(d *dest) int {
	if d.family6 {
		return 65535 - 8
	}
	return 65535 - 20 - 8
}

// queue adds one ESP packet for d to the send batch; inner is the length
// of the inner packet it carries, for the byte counters. A packet joins
// the last message if that goes to d, the packet is no longer than the
// message's segments and the message has room; a shorter packet ends the
// message, as UDP_SEGMENT requires.
func (s *udpSocket) queue(pkt []byte, d *dest, inner int) {
	t := &s.tx
	if t.nmsg > 0 && s.gso.Load() {
		m := &t.meta[t.nmsg-1]
		if m.dest == d && !m.closed && len(pkt) <= m.segSize && m.count < maxGSOSegments && m.total+len(pkt) <= maxPayload(d) {
			t.iovs[t.niov].Base = &pkt[0]
			t.iovs[t.niov].SetLen(len(pkt))
			t.niov++
			m.count++
			m.total += len(pkt)
			m.inner += inner
			m.closed = len(pkt) < m.segSize
			return
		}
	}
	t.iovs[t.niov].Base = &pkt[0]
	t.iovs[t.niov].SetLen(len(pkt))
	t.meta[t.nmsg] = udpMsg{dest: d, first: t.niov, count: 1, segSize: len(pkt), total: len(pkt), inner: inner}
	t.niov++
	t.nmsg++
}

// full reports that the batch can take no further packet.
func (s *udpSocket) full() bool { return s.tx.niov == len(s.tx.iovs) }

// pending reports whether packets are queued.
func (s *udpSocket) pending() bool { return s.tx.nmsg > 0 }

// flush sends the queued batch and returns how many ESP packets were sent,
// the inner bytes they carried, and how many failed.
func (s *udpSocket) flush() (sent, bytes, failed int) {
	t := &s.tx
	defer func() { t.nmsg, t.niov = 0, 0 }()
	for i := 0; i < t.nmsg; i++ {
		s.prepare(i)
	}
	off := 0
	for off < t.nmsg {
		t.sending = t.msgs[off:t.nmsg]
		if err := s.rc.Write(t.fn); err != nil {
			for _, m := range t.meta[off:t.nmsg] {
				failed += m.count
			}
			return sent, bytes, failed
		}
		if t.errno == unix.EIO && t.meta[off].count > 1 && s.gso.Load() {
			// The device cannot checksum or segment UDP: send every
			// packet on its own from here on.
			s.gso.Store(false)
			s.log.Warn("UDP segmentation offload refused; sending one datagram per ESP packet from now on", "local", s.local, "err", t.errno)
			s.split(off, t.nmsg)
			continue
		}
		if (t.errno == unix.EINVAL || t.errno == unix.EMSGSIZE) && t.meta[off].count > 1 {
			s.split(off, off+1)
			continue
		}
		if t.errno != 0 {
			s.log.Debug("ESP-in-UDP send", "local", s.local, "to", t.meta[off].dest.addr, "err", t.errno)
			failed += t.meta[off].count
			off++
			continue
		}
		for _, m := range t.meta[off : off+t.done] {
			sent += m.count
			bytes += m.inner
		}
		off += t.done
	}
	return sent, bytes, failed
}

// prepare fills message i's header from its description.
func (s *udpSocket) prepare(i int) {
	t := &s.tx
	m := &t.meta[i]
	h := &t.msgs[i].hdr
	h.Name = &m.dest.sa[0]
	h.Namelen = m.dest.saLen
	h.Iov = &t.iovs[m.first]
	h.SetIovlen(m.count)
	h.Control = nil
	h.SetControllen(0)
	if m.count > 1 {
		oob := t.oob[i*cmsgSegSpace() : (i+1)*cmsgSegSpace()]
		c := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		c.Level = solUDP
		c.Type = udpSegment
		c.SetLen(unix.CmsgLen(2))
		*(*uint16)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = uint16(m.segSize)
		h.Control = &oob[0]
		h.SetControllen(cmsgSegSpace())
	}
}

// split turns the messages from index from up to upto into one message
// per ESP packet; the messages after upto follow them.
func (s *udpSocket) split(from, upto int) {
	t := &s.tx
	n := 0
	for i, m := range t.meta[from:t.nmsg] {
		if from+i >= upto {
			t.spare[n] = m
			n++
			continue
		}
		for k := 0; k < m.count; k++ {
			l := int(t.iovs[m.first+k].Len)
			inner := 0
			if k == 0 {
				inner = m.inner // the counters need only the sum
			}
			t.spare[n] = udpMsg{dest: m.dest, first: m.first + k, count: 1, segSize: l, total: l, inner: inner}
			n++
		}
	}
	t.nmsg = from + copy(t.meta[from:], t.spare[:n])
	for i := from; i < t.nmsg; i++ {
		s.prepare(i)
	}
}

// recv receives up to len(s.rx.msgs) messages into bufs[i][off:] and sets
// sizes[i] and segs[i], the GRO segment size (0: one datagram).
func (s *udpSocket) recv(bufs [][]byte, off int, sizes, segs []int) (int, error) {
	n := min(len(bufs), len(s.rx.msgs))
	for i := 0; i < n; i++ {
		s.rx.iovs[i].Base = &bufs[i][off]
		s.rx.iovs[i].SetLen(len(bufs[i]) - off)
		s.rx.msgs[i].n = 0
		h := &s.rx.msgs[i].hdr
		h.Flags = 0
		if s.gro {
			h.Control = &s.rxOOB[i*cmsgGROSpace()]
			h.SetControllen(cmsgGROSpace())
		}
	}
	s.rx.n = n
	if err := s.rx.receive(s.rc, s.local); err != nil {
		return 0, err
	}
	for i := 0; i < s.rx.done; i++ {
		h := &s.rx.msgs[i].hdr
		sizes[i] = int(s.rx.msgs[i].n)
		segs[i] = 0
		if h.Flags&unix.MSG_TRUNC != 0 {
			sizes[i] = -1
			continue
		}
		if s.gro && h.Controllen > 0 {
			segs[i] = groSize(s.rxOOB[i*cmsgGROSpace() : i*cmsgGROSpace()+int(h.Controllen)])
		}
	}
	return s.rx.done, nil
}

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

func (s *udpSocket) close() error { return s.file.Close() }
