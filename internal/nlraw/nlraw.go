// Package nlraw is the request loop of mpsa's own netlink sockets, those
// that write and read messages in the kernel's layout themselves rather
// than through the netlink package: xfrm/kernel's XFRM socket, whose
// messages carry keys, and xfrm/protect's, which reads policies, routes
// and links with the families the kernel reports.
package nlraw

import (
	"encoding/binary"
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrStop, returned by the callback of Do, ends the exchange; Do then
// returns nil.
var ErrStop = errors.New("nlraw: stop")

// Do sends req, a complete netlink request whose header carries its
// sequence number, on the netlink socket fd, and reads the answers into
// buf until the kernel's acknowledgement or error answer, the end of a
// dump, or each returning ErrStop or another error. Every other answer with
// the request's sequence number is handed to each; answers with another
// (late ones to an earlier request) are skipped. What a read filled in
// buf is zeroed once it is handled, since answers may carry keys. A
// receive error, EAGAIN at the socket's receive timeout say, is returned
// as it is; EINTR is retried.
func Do(fd int, buf, req []byte, each func(typ uint16, data []byte) error) error {
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	seq := binary.NativeEndian.Uint32(req[8:12])
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return err
		}
		done, err := handle(buf[:n], seq, each)
		clear(buf[:n])
		if errors.Is(err, ErrStop) {
			return nil
		}
		if done || err != nil {
			return err
		}
	}
}

// handle processes one read's messages; done reports the end of the
// exchange.
func handle(b []byte, seq uint32, each func(typ uint16, data []byte) error) (done bool, err error) {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return true, err
	}
	for _, m := range msgs {
		if m.Header.Seq != seq {
			continue
		}
		switch m.Header.Type {
		case unix.NLMSG_DONE:
			return true, nil
		case unix.NLMSG_ERROR:
			if len(m.Data) < 4 {
				return true, errors.New("short netlink error message")
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				return true, syscall.Errno(-code)
			}
			return true, nil
		default:
			if err := each(m.Header.Type, m.Data); err != nil {
				return true, err
			}
		}
	}
	return false, nil
}

// AppendAttr appends to b a netlink attribute of type typ whose payload
// is parts, one after the other, padded to 4 octets.
func AppendAttr(b []byte, typ uint16, parts ...[]byte) []byte {
	n := 4
	for _, p := range parts {
		n += len(p)
	}
	b = binary.NativeEndian.AppendUint16(b, uint16(n))
	b = binary.NativeEndian.AppendUint16(b, typ)
	for _, p := range parts {
		b = append(b, p...)
	}
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
