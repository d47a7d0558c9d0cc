package charon

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/server"
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

// UDPListener receives UDP datagrams in a namespace through mpsad's own
// control transport (server.Transport), which reports the arrival
// interface of each datagram.
type UDPListener struct {
	ns   *nettest.NS
	addr netip.Addr
	in   chan server.Datagram
}

// ListenUDP listens on ap's port inside ns and keeps the datagrams sent to
// ap's address (any address if it is not valid); it stops when the test
// ends.
func ListenUDP(t testing.TB, ns *nettest.NS, ap netip.AddrPort) *UDPListener {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var tr *server.Transport
	if err := ns.Do(func() (err error) {
		tr, err = server.Listen(ctx, ap.Port())
		return err
	}); err != nil {
		cancel()
		t.Fatalf("listen %v in %s: %v", ap, ns.Name, err)
	}
	l := &UDPListener{ns: ns, addr: ap.Addr(), in: make(chan server.Datagram, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		tr.Run(ctx, func(d server.Datagram) {
			if !l.addr.IsValid() || d.Dst == l.addr {
				select {
				case l.in <- d:
				default: // the test is not reading; drop
				}
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return l
}

// Receive waits up to timeout for one datagram.
func (l *UDPListener) Receive(timeout time.Duration) (Datagram, error) {
	select {
	case d := <-l.in:
		var name string
		// Looked up now: charon recreates ipsec0 with a new index when
		// it restarts.
		err := l.ns.Do(func() error {
			ifi, err := net.InterfaceByIndex(d.IfIndex)
			if err == nil {
				name = ifi.Name
			}
			return err
		})
		return Datagram{Src: d.Src, IfIndex: d.IfIndex, IfName: name, Payload: d.Data}, err
	case <-time.After(timeout):
		return Datagram{}, fmt.Errorf("no datagram within %v", timeout)
	}
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
