package charon

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/nettest"
)

// Datagram is a UDP datagram received by a UDPListener.
type Datagram struct {
	// Src is the sender's address and port.
	Src netip.AddrPort
	// IfIndex and IfName identify the interface it arrived on (ipsec0
	// when kernel-libipsec decrypted it).
	IfIndex int
	IfName  string
	// Payload is the datagram's data.
	Payload []byte
}

// UDPListener is a UDP socket in a namespace that reports the arrival
// interface of each datagram (IP_PKTINFO / IPV6_RECVPKTINFO).
type UDPListener struct {
	ns      *nettest.NS
	conn    *net.UDPConn
	ifnames map[int]string
}

// ListenUDP opens a UDPListener on ap inside ns, closed when the test ends.
func ListenUDP(t testing.TB, ns *nettest.NS, ap netip.AddrPort) *UDPListener {
	t.Helper()
	l := &UDPListener{ns: ns, ifnames: map[int]string{}}
	err := ns.Do(func() error {
		conn, err := listenPktinfo(ap)
		if err != nil {
			return err
		}
		l.conn = conn
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, i := range ifs {
			l.ifnames[i.Index] = i.Name
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listen %v in %s: %v", ap, ns.Name, err)
	}
	t.Cleanup(func() { l.conn.Close() })
	return l
}

// Receive waits up to timeout for one datagram.
func (l *UDPListener) Receive(timeout time.Duration) (Datagram, error) {
	buf := make([]byte, 65536)
	oob := make([]byte, 512)
	if err := l.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return Datagram{}, err
	}
	n, oobn, _, src, err := l.conn.ReadMsgUDPAddrPort(buf, oob)
	if err != nil {
		return Datagram{}, err
	}
	idx, err := pktinfoIfindex(oob[:oobn])
	if err != nil {
		return Datagram{}, err
	}
	name, ok := l.ifnames[idx]
	if !ok { // an interface made after ListenUDP (charon restarted)
		_ = l.ns.Do(func() error {
			ifi, err := net.InterfaceByIndex(idx)
			if err == nil {
				name = ifi.Name
				l.ifnames[idx] = name
			}
			return err
		})
	}
	return Datagram{
		Src:     netip.AddrPortFrom(src.Addr().Unmap(), src.Port()),
		IfIndex: idx,
		IfName:  name,
		Payload: append([]byte(nil), buf[:n]...),
	}, nil
}

// UDPSender is a connected UDP socket in a namespace.
type UDPSender struct{ conn *net.UDPConn }

// DialUDP opens a UDP socket in ns towards to, bound to from if valid (the
// kernel picks the source otherwise); closed when the test ends.
func DialUDP(t testing.TB, ns *nettest.NS, from netip.Addr, to netip.AddrPort) *UDPSender {
	t.Helper()
	s := &UDPSender{}
	err := ns.Do(func() error {
		var laddr *net.UDPAddr
		if from.IsValid() {
			laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
		}
		var err error
		s.conn, err = net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(to))
		return err
	})
	if err != nil {
		t.Fatalf("dial %v from %v in %s: %v", to, from, ns.Name, err)
	}
	t.Cleanup(func() { s.conn.Close() })
	return s
}

// Send writes one datagram.
func (s *UDPSender) Send(p []byte) error {
	_, err := s.conn.Write(p)
	return err
}

// Exchange sends payload with s every 200 ms until l receives a datagram
// with that payload or patience runs out.
func Exchange(s *UDPSender, l *UDPListener, payload []byte, patience time.Duration) (Datagram, error) {
	deadline := time.Now().Add(patience)
	var last error
	for time.Now().Before(deadline) {
		if err := s.Send(payload); err != nil {
			last = err
		}
		d, err := l.Receive(200 * time.Millisecond)
		if err != nil {
			last = err
			continue
		}
		if string(d.Payload) == string(payload) {
			return d, nil
		}
	}
	return Datagram{}, fmt.Errorf("no datagram arrived within %v (last error: %v)", patience, last)
}

// listenPktinfo opens a UDP socket on ap that reports the arrival
// interface of each datagram.
func listenPktinfo(ap netip.AddrPort) (*net.UDPConn, error) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return nil, err
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		if ap.Addr().Is4() {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IPV6, unix.IPV6_RECVPKTINFO, 1)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

func pktinfoIfindex(oob []byte) (int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, err
	}
	for _, m := range msgs {
		switch {
		case m.Header.Level == unix.IPPROTO_IP && m.Header.Type == unix.IP_PKTINFO && len(m.Data) >= unix.SizeofInet4Pktinfo:
			// struct in_pktinfo { int ipi_ifindex; ... }, host order
			return int(int32(binary.NativeEndian.Uint32(m.Data[0:4]))), nil
		case m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_PKTINFO && len(m.Data) >= unix.SizeofInet6Pktinfo:
			// struct in6_pktinfo { struct in6_addr; unsigned ifindex; }
			return int(binary.NativeEndian.Uint32(m.Data[16:20])), nil
		}
	}
	return 0, fmt.Errorf("no pktinfo in %d control messages", len(msgs))
}
