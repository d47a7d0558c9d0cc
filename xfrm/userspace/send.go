package userspace

import (
	"context"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sendQueue is the send side of an ESP socket, raw or UDP, used only by
// the outbound sender goroutine: a batch of messages for sendmmsg, each one or
// more iovecs (one per ESP packet) taken in order from iovs.
//
// A raw ESP socket sends one ESP packet per message. An ESP-in-UDP socket
// with gso coalesces a run of ESP packets of one size to one peer into a
// single UDP_SEGMENT message (GSO: the kernel splits it into datagrams once,
// at the device). Where the kernel or the device refuses GSO (EIO), the
// queue falls back to one datagram per message for good. A segmented
// message the kernel refuses with EINVAL or EMSGSIZE (a segment larger than
// the route's MTU, which only fragmentation can carry) is sent again one
// datagram per packet.
type sendQueue struct {
	rc    syscall.RawConn
	local netip.Addr
	log   *slog.Logger
	// gso lets queue coalesce packets into UDP_SEGMENT messages. It is
	// never set for raw ESP; for ESP in UDP it is cleared, for good, the
	// first time a segmented send fails with EIO. Only the outbound
	// sender goroutine writes it.
	gso atomic.Bool

	msgs []mmsghdr
	iovs []unix.Iovec
	// inner is the length of the inner packet carried by each iovec's ESP
	// packet, for the byte counters.
	inner []int
	// oob holds one UDP_SEGMENT control message per message (ESP in UDP
	// only); its header is written, and each message's Control pointed
	// at its own, once at open.
	oob  []byte
	meta []sendMsg
	// spare is room for split to rebuild meta in.
	spare []sendMsg
	nmsg  int
	niov  int
	// sending is the slice of msgs handed to the next sendmmsg.
	sending []mmsghdr
	done    int
	errno   syscall.Errno
	fn      func(fd uintptr) bool
}

// sendMsg describes one message of the send batch.
type sendMsg struct {
	dest    *dest
	first   int // index of its first iovec
	count   int // ESP packets in it
	segSize int // size of the first packet: every other is at most this
	total   int // payload bytes
	closed  bool
}

// init allocates a batch of batch packets sent with rc; segment makes room
// for UDP_SEGMENT control messages (ESP in UDP).
func (q *sendQueue) init(rc syscall.RawConn, local netip.Addr, log *slog.Logger, batch int, segment bool) {
	q.rc, q.local, q.log = rc, local, log
	q.msgs = make([]mmsghdr, batch)
	q.iovs = make([]unix.Iovec, batch)
	q.inner = make([]int, batch)
	q.meta = make([]sendMsg, batch)
	q.spare = make([]sendMsg, batch)
	if segment {
		q.oob = make([]byte, batch*cmsgSegSpace())
		for i := range q.msgs {
			oob := q.oob[i*cmsgSegSpace() : (i+1)*cmsgSegSpace()]
			c := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			c.Level = solUDP
			c.Type = udpSegment
			c.SetLen(unix.CmsgLen(2))
			// Controllen stays 0, which makes the kernel ignore the
			// pointer, until prepare segments the message.
			q.msgs[i].hdr.Control = &oob[0]
		}
	}
	q.fn = q.sendmmsg
}

// sendmmsg is the RawConn callback: it sends q.sending.
func (q *sendQueue) sendmmsg(fd uintptr) bool {
	r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&q.sending[0])), uintptr(len(q.sending)), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN {
		return false
	}
	q.done, q.errno = int(r), e
	return true
}

// maxPayload is the largest UDP payload one message to d may carry.
func maxPayload(d *dest) int {
	if d.family6 {
		return 65535 - 8
	}
	return 65535 - 20 - 8
}

// queue adds one ESP packet for d to the send batch; inner is the length
// of the inner packet it carries, for the byte counters. With gso, a
// packet joins the last message if that goes to d, the packet is no longer
// than the message's segments and the message has room; a shorter packet
// ends the message, as UDP_SEGMENT requires.
func (q *sendQueue) queue(pkt []byte, d *dest, inner int) {
	q.iovs[q.niov].Base = &pkt[0]
	q.iovs[q.niov].SetLen(len(pkt))
	q.inner[q.niov] = inner
	if q.nmsg > 0 && q.gso.Load() {
		m := &q.meta[q.nmsg-1]
		if m.dest == d && !m.closed && len(pkt) <= m.segSize && m.count < maxGSOSegments && m.total+len(pkt) <= maxPayload(d) {
			q.niov++
			m.count++
			m.total += len(pkt)
			m.closed = len(pkt) < m.segSize
			return
		}
	}
	q.meta[q.nmsg] = sendMsg{dest: d, first: q.niov, count: 1, segSize: len(pkt), total: len(pkt)}
	q.niov++
	q.nmsg++
}

// full reports that the batch can take no further packet.
func (q *sendQueue) full() bool { return q.niov == len(q.iovs) }

// pending reports whether packets are queued.
func (q *sendQueue) pending() bool { return q.nmsg > 0 }

// flush sends the queued batch and returns how many ESP packets were sent,
// the inner bytes they carried, and how many failed. A packet the kernel
// refuses (no route, too big) is skipped and counted as failed.
func (q *sendQueue) flush() (sent, bytes, failed int) {
	for i := 0; i < q.nmsg; i++ {
		q.prepare(i)
	}
	off := 0
	for off < q.nmsg {
		q.sending = q.msgs[off:q.nmsg]
		if err := q.rc.Write(q.fn); err != nil {
			for _, m := range q.meta[off:q.nmsg] {
				failed += m.count
			}
			break
		}
		m := &q.meta[off]
		switch {
		case q.errno == unix.EIO && m.count > 1 && q.gso.Load():
			// The device cannot checksum or segment UDP: send every
			// packet on its own from here on.
			q.gso.Store(false)
			q.log.Warn("UDP segmentation offload refused; sending one datagram per ESP packet from now on", "local", q.local, "err", q.errno)
			q.split(off, q.nmsg)
		case (q.errno == unix.EINVAL || q.errno == unix.EMSGSIZE) && m.count > 1:
			q.split(off, off+1)
		case q.errno != 0:
			if q.log.Enabled(context.Background(), slog.LevelDebug) {
				q.log.Debug("ESP send", "local", q.local, "to", m.dest.addr, "err", q.errno)
			}
			failed += m.count
			off++
		default:
			for _, m := range q.meta[off : off+q.done] {
				sent += m.count
				for _, l := range q.inner[m.first : m.first+m.count] {
					bytes += l
				}
			}
			off += q.done
		}
	}
	q.nmsg, q.niov = 0, 0
	return sent, bytes, failed
}

// prepare fills message i's header from its description. Only the
// segment size changes in its control message.
func (q *sendQueue) prepare(i int) {
	m := &q.meta[i]
	h := &q.msgs[i].hdr
	h.Name = &m.dest.sa[0]
	h.Namelen = m.dest.saLen
	h.Iov = &q.iovs[m.first]
	h.SetIovlen(m.count)
	if m.count > 1 {
		*(*uint16)(unsafe.Pointer(&q.oob[i*cmsgSegSpace()+unix.CmsgLen(0)])) = uint16(m.segSize)
		h.SetControllen(cmsgSegSpace())
	} else {
		h.SetControllen(0)
	}
}

// split turns the messages from index from up to upto into one message
// per ESP packet; the messages after upto follow them.
func (q *sendQueue) split(from, upto int) {
	n := 0
	for i, m := range q.meta[from:q.nmsg] {
		if from+i >= upto {
			q.spare[n] = m
			n++
			continue
		}
		for k := 0; k < m.count; k++ {
			l := int(q.iovs[m.first+k].Len)
			q.spare[n] = sendMsg{dest: m.dest, first: m.first + k, count: 1, segSize: l, total: l}
			n++
		}
	}
	q.nmsg = from + copy(q.meta[from:], q.spare[:n])
	for i := from; i < q.nmsg; i++ {
		q.prepare(i)
	}
}
