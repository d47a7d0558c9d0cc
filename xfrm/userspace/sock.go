package userspace

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr of sendmmsg(2) and recvmmsg(2).
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [4]byte
}

// espSocket carries ESP from and to one local underlay address: a raw IP
// socket for protocol 50 or a UDP socket for ESP in UDP (RFC 3948). For
// raw ESP the kernel adds and, for IPv6, strips the outer header; a raw
// IPv4 socket delivers the IPv4 header with the packet. A UDP socket
// receives datagrams that the kernel coalesced (UDP_GRO) and reports their
// segment size; where UDP_GRO cannot be set, every message is one
// datagram.
type espSocket struct {
	local netip.Addr
	// udp is set for ESP in UDP, clear for raw ESP.
	udp  bool
	file *os.File
	rc   syscall.RawConn
	// gro is set when UDP_GRO is on: a received message can hold many
	// ESP packets.
	gro bool
	// tx is the send side, used only by the outbound sender goroutine.
	tx sendQueue
	// rx is the batch for recvmmsg, used only by this socket's inbound
	// goroutine; rxOOB holds, with gro, one control buffer per message
	// for the UDP_GRO segment size.
	rx    recvBatch
	rxOOB []byte
}

// openESPSocket opens a raw ESP socket on local or, with udp, an
// ESP-in-UDP socket on local and port (0: any), with batches of batch
// packets.
func openESPSocket(local netip.Addr, udp bool, port uint16, batch int, log *slog.Logger) (*espSocket, error) {
	typ, proto, what := unix.SOCK_RAW, unix.IPPROTO_ESP, "raw ESP socket"
	if udp {
		typ, proto, what = unix.SOCK_DGRAM, unix.IPPROTO_UDP, "ESP-in-UDP socket"
	} else {
		port = 0
	}
	f, rc, err := openSocket(local, port, typ, proto, what)
	if err != nil {
		return nil, err
	}
	s := &espSocket{local: local, udp: udp, file: f, rc: rc}
	gso := false
	if udp {
		err = rc.Control(func(fd uintptr) {
			// A kernel that knows UDP_SEGMENT answers getsockopt for it.
			_, gsoErr := unix.GetsockoptInt(int(fd), solUDP, udpSegment)
			gso = gsoErr == nil
			s.gro = unix.SetsockoptInt(int(fd), solUDP, udpGRO, 1) == nil
		})
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s %s: %w", what, netip.AddrPortFrom(local, port), err)
		}
	}
	s.tx.init(rc, local, log, batch, udp)
	s.tx.gso.Store(gso)
	s.rx.init(s.rxMessages(batch))
	if s.gro {
		s.rxOOB = make([]byte, len(s.rx.msgs)*cmsgGROSpace())
		for i := range s.rx.msgs {
			s.rx.msgs[i].hdr.Control = &s.rxOOB[i*cmsgGROSpace()]
		}
	}
	return s, nil
}

// rxMessages is how many messages one receive asks for: with GRO each can
// hold up to maxGSOSegments ESP packets, so a few fill a batch of the
// TUN's size.
func (s *espSocket) rxMessages(batch int) int {
	if s.gro {
		return max(1, batch/maxGSOSegments)
	}
	return batch
}

// openSocket opens a non-blocking socket of type typ and protocol proto
// bound to local and port, with fragmentation allowed (an ESP packet over
// the path MTU is fragmented rather than dropped) and 8 MiB buffers; what
// names it in errors.
func openSocket(local netip.Addr, port uint16, typ, proto int, what string) (*os.File, syscall.RawConn, error) {
	family := unix.AF_INET6
	if local.Is4() {
		family = unix.AF_INET
	}
	where := local.String()
	if port != 0 {
		where = netip.AddrPortFrom(local, port).String()
	}
	fd, err := unix.Socket(family, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", what, where, err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	var sa unix.Sockaddr
	if local.Is4() {
		sa = &unix.SockaddrInet4{Addr: local.As4(), Port: int(port)}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT); err != nil {
			return nil, nil, fmt.Errorf("%s %s: IP_MTU_DISCOVER: %w", what, where, err)
		}
	} else {
		sa = &unix.SockaddrInet6{Addr: local.As16(), Port: int(port)}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DONT); err != nil {
			return nil, nil, fmt.Errorf("%s %s: IPV6_MTU_DISCOVER: %w", what, where, err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, nil, fmt.Errorf("bind %s to %s: %w", what, where, err)
	}
	// Large buffers absorb bursts from TSO super-packets; FORCE works
	// with CAP_NET_ADMIN, the plain option is the fallback.
	for _, o := range [][2]int{{unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}, {unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}} {
		if unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[0], 8<<20) != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, o[1], 8<<20)
		}
	}
	f := os.NewFile(uintptr(fd), what+" "+where)
	ok = true // f owns fd now
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s %s: %w", what, where, err)
	}
	return f, rc, nil
}

// recvBatch holds preallocated mmsghdr, iovec and source address arrays
// for recvmmsg and the closure handed to RawConn, made once so that a
// syscall does not allocate.
type recvBatch struct {
	msgs []mmsghdr
	iovs []unix.Iovec
	// names receive each message's source address (a RawSockaddrInet4
	// or RawSockaddrInet6, which fits).
	names []unix.RawSockaddrInet6
	n     int // messages to receive
	done  int // result of the last syscall
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func (b *recvBatch) init(n int) {
	b.msgs, b.iovs, b.names = make([]mmsghdr, n), make([]unix.Iovec, n), make([]unix.RawSockaddrInet6, n)
	for i := range b.msgs {
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.SetIovlen(1)
		b.msgs[i].hdr.Name = (*byte)(unsafe.Pointer(&b.names[i]))
	}
	b.fn = b.recvmmsg
}

// recvmmsg is the RawConn callback of a receive batch.
func (b *recvBatch) recvmmsg(fd uintptr) bool {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(b.n), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN {
		return false
	}
	b.done, b.errno = int(r), e
	return true
}

// receive waits for and receives the batch's first b.n messages; the
// socket is named by local in errors.
func (b *recvBatch) receive(rc syscall.RawConn, local netip.Addr) error {
	for {
		if err := rc.Read(b.fn); err != nil {
			return errClosed
		}
		if b.errno == 0 {
			return nil
		}
		if b.errno == unix.EINTR || b.errno == unix.ENOBUFS {
			continue
		}
		return fmt.Errorf("recvmmsg on %s: %w", local, b.errno)
	}
}

// errClosed reports that the socket was closed under a blocked call.
var errClosed = errors.New("socket closed")

// recv receives up to len(s.rx.msgs) messages into bufs[i][off:] and sets
// sizes[i] (-1 for a truncated message), segs[i], the UDP_GRO segment
// size (0: one ESP packet, always so for raw ESP), and srcs[i], the
// sender's address (the outer source; the zero Addr if the kernel gave
// none).
func (s *espSocket) recv(bufs [][]byte, off int, sizes, segs []int, srcs []netip.Addr) (int, error) {
	r := &s.rx
	n := min(len(bufs), len(r.msgs))
	for i := 0; i < n; i++ {
		r.iovs[i].Base = &bufs[i][off]
		r.iovs[i].SetLen(len(bufs[i]) - off)
		r.msgs[i].n = 0
		h := &r.msgs[i].hdr
		h.Flags = 0
		h.Namelen = unix.SizeofSockaddrInet6
		if s.gro {
			// The Control pointer was set at open.
			h.SetControllen(cmsgGROSpace())
		}
	}
	r.n = n
	if err := r.receive(s.rc, s.local); err != nil {
		return 0, err
	}
	for i := 0; i < r.done; i++ {
		h := &r.msgs[i].hdr
		sizes[i] = int(r.msgs[i].n)
		segs[i] = 0
		srcs[i] = sockaddrAddr(&r.names[i], h.Namelen)
		if h.Flags&unix.MSG_TRUNC != 0 {
			sizes[i] = -1
			continue
		}
		if s.gro && h.Controllen > 0 {
			segs[i] = groSize(s.rxOOB[i*cmsgGROSpace() : i*cmsgGROSpace()+int(h.Controllen)])
		}
	}
	return r.done, nil
}

// sockaddrAddr returns the address of a received sockaddr_in or
// sockaddr_in6 of length n (IPv4-mapped addresses unmapped), the zero
// Addr for anything else.
func sockaddrAddr(sa *unix.RawSockaddrInet6, n uint32) netip.Addr {
	switch {
	case sa.Family == unix.AF_INET && n >= unix.SizeofSockaddrInet4:
		return netip.AddrFrom4((*unix.RawSockaddrInet4)(unsafe.Pointer(sa)).Addr)
	case sa.Family == unix.AF_INET6 && n >= unix.SizeofSockaddrInet6:
		return netip.AddrFrom16(sa.Addr).Unmap()
	}
	return netip.Addr{}
}

func (s *espSocket) close() error { return s.file.Close() }
