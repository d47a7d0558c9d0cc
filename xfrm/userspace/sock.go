package userspace

import (
	"errors"
	"fmt"
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

// espSocket is a raw IP socket for protocol 50 bound to one local underlay
// address. The kernel adds and, for IPv6, strips the outer header; a raw
// IPv4 socket delivers the IPv4 header with the packet.
type espSocket struct {
	local netip.Addr
	file  *os.File
	rc    syscall.RawConn
	// tx is the batch being built for sendmmsg, used only by the
	// outbound goroutine.
	tx batchIO
	// rx is the batch for recvmmsg, used only by this socket's inbound
	// goroutine.
	rx batchIO
}

// batchIO holds preallocated mmsghdr and iovec arrays and the closures
// handed to RawConn, made once so that a syscall does not allocate.
type batchIO struct {
	msgs  []mmsghdr
	iovs  []unix.Iovec
	lens  []int // inner packet length of each queued message
	n     int   // messages to send or received
	done  int   // result of the last syscall
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

func openESPSocket(local netip.Addr, batch int) (*espSocket, error) {
	f, rc, err := openSocket(local, 0, unix.SOCK_RAW, unix.IPPROTO_ESP, "raw ESP socket")
	if err != nil {
		return nil, err
	}
	s := &espSocket{local: local, file: f, rc: rc}
	s.tx = newBatchIO(batch)
	s.rx = newBatchIO(batch)
	s.tx.fn = func(fd uintptr) bool {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.tx.msgs[0])), uintptr(s.tx.n), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN {
			return false
		}
		s.tx.done, s.tx.errno = int(r), e
		return true
	}
	s.rx.fn = s.rx.recvmmsg
	return s, nil
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

func newBatchIO(n int) batchIO {
	b := batchIO{msgs: make([]mmsghdr, n), iovs: make([]unix.Iovec, n), lens: make([]int, n)}
	for i := range b.msgs {
		b.msgs[i].hdr.Iov = &b.iovs[i]
		b.msgs[i].hdr.SetIovlen(1)
	}
	return b
}

// recvmmsg is the RawConn callback of a receive batch.
func (b *batchIO) recvmmsg(fd uintptr) bool {
	r, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(b.n), unix.MSG_DONTWAIT, 0, 0)
	if e == unix.EAGAIN {
		return false
	}
	b.done, b.errno = int(r), e
	return true
}

// receive waits for and receives the batch's first b.n messages; the
// socket is named by local in errors.
func (b *batchIO) receive(rc syscall.RawConn, local netip.Addr) error {
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

// queue adds one packet for the destination d to the send batch; inner
// is the length of the inner packet it carries, for the byte counters.
func (s *espSocket) queue(pkt []byte, d *dest, inner int) {
	i := s.tx.n
	s.tx.lens[i] = inner
	s.tx.iovs[i].Base = &pkt[0]
	s.tx.iovs[i].SetLen(len(pkt))
	s.tx.msgs[i].hdr.Name = &d.sa[0]
	s.tx.msgs[i].hdr.Namelen = d.saLen
	s.tx.n++
}

func (s *espSocket) full() bool { return s.tx.n == len(s.tx.msgs) }

// pending reports whether packets are queued.
func (s *espSocket) pending() bool { return s.tx.n > 0 }

// sender is the send side of a raw ESP or an ESP-in-UDP socket, used only
// by the outbound goroutine.
type sender interface {
	// queue adds pkt, an ESP packet for d carrying an inner packet of
	// inner bytes, to the batch.
	queue(pkt []byte, d *dest, inner int)
	full() bool
	pending() bool
	// flush sends the batch and returns the ESP packets sent, the inner
	// bytes they carried and the packets that failed.
	flush() (sent, bytes, failed int)
}

// flush sends the queued batch and returns how many packets were sent,
// the inner bytes they carried, and how many failed. A packet the kernel
// refuses (no route, too big) is skipped and counted as failed.
func (s *espSocket) flush() (sent, bytes, failed int) {
	msgs := s.tx.msgs
	total := s.tx.n
	off := 0
	for off < total {
		s.tx.msgs = msgs[off:]
		s.tx.n = total - off
		if err := s.rc.Write(s.tx.fn); err != nil {
			failed += total - off
			break
		}
		if s.tx.errno != 0 {
			failed++
			off++
			continue
		}
		for _, l := range s.tx.lens[off : off+s.tx.done] {
			bytes += l
		}
		sent += s.tx.done
		off += s.tx.done
	}
	s.tx.msgs, s.tx.n = msgs, 0
	return sent, bytes, failed
}

// recv fills bufs[i][off:] with up to len(bufs) packets and sets sizes.
func (s *espSocket) recv(bufs [][]byte, off int, sizes []int) (int, error) {
	n := min(len(bufs), len(s.rx.msgs))
	for i := 0; i < n; i++ {
		s.rx.iovs[i].Base = &bufs[i][off]
		s.rx.iovs[i].SetLen(len(bufs[i]) - off)
		s.rx.msgs[i].n = 0
		s.rx.msgs[i].hdr.Flags = 0
	}
	s.rx.n = n
	if err := s.rx.receive(s.rc, s.local); err != nil {
		return 0, err
	}
	for i := 0; i < s.rx.done; i++ {
		sizes[i] = int(s.rx.msgs[i].n)
		if s.rx.msgs[i].hdr.Flags&unix.MSG_TRUNC != 0 {
			sizes[i] = -1
		}
	}
	return s.rx.done, nil
}

func (s *espSocket) close() error { return s.file.Close() }
