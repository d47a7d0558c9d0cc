package server

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/mpsa/mpsa/internal/nettest"
)

func recvOne(t *testing.T, ch <-chan Datagram) Datagram {
	t.Helper()
	select {
	case d := <-ch:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no datagram arrived")
	}
	return Datagram{}
}

// TestTransportLoopback: datagrams over IPv4 and IPv6 loopback arrive with
// their source, destination and arrival interface.
func TestTransportLoopback(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, err := Listen(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Listen(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan Datagram, 4)
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, func(d Datagram) { ch <- d }) }()
	go a.Run(ctx, func(Datagram) {})
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"127.0.0.1", "::1"} {
		addr := netip.MustParseAddr(dst)
		if err := a.Send([]byte("hello "+dst), addr, netip.AddrPortFrom(addr, b.LocalPort())); err != nil {
			t.Fatal(err)
		}
		d := recvOne(t, ch)
		if string(d.Data) != "hello "+dst || d.Src != netip.AddrPortFrom(addr, a.LocalPort()) || d.Dst != addr || d.IfIndex != lo.Index {
			t.Fatalf("got %q from %s to %s on if %d; want from %s:%d on lo (%d)", d.Data, d.Src, d.Dst, d.IfIndex, addr, a.LocalPort(), lo.Index)
		}
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Run returned %v", err)
	}
}

// TestTransportSourceAddress: in a namespace with two addresses, a datagram
// leaves from the chosen one.
func TestTransportSourceAddress(t *testing.T) {
	ns := nettest.NewNS(t, "tr")
	nettest.AddrAdd(t, ns, "lo", "10.98.1.1/32")
	nettest.AddrAdd(t, ns, "lo", "10.98.2.1/32")
	nettest.AddrAdd(t, ns, "lo", "fd98::1/128")
	nettest.AddrAdd(t, ns, "lo", "fd98::2/128")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var a, b *Transport
	err := ns.Do(func() error {
		var err error
		if a, err = Listen(ctx, 0); err != nil {
			return err
		}
		b, err = Listen(ctx, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan Datagram, 4)
	go b.Run(ctx, func(d Datagram) { ch <- d })
	go a.Run(ctx, func(Datagram) {})
	for _, c := range [][2]string{{"10.98.2.1", "10.98.1.1"}, {"10.98.1.1", "10.98.2.1"}, {"fd98::2", "fd98::1"}} {
		src, dst := netip.MustParseAddr(c[0]), netip.MustParseAddr(c[1])
		if err := a.Send([]byte("x"), src, netip.AddrPortFrom(dst, b.LocalPort())); err != nil {
			t.Fatal(err)
		}
		if d := recvOne(t, ch); d.Src.Addr() != src || d.Dst != dst {
			t.Fatalf("sent from %s to %s, received from %s to %s", src, dst, d.Src, d.Dst)
		}
	}
}

// TestReadLoopCopiesDatagrams: readLoop reuses its buffer, so each
// delivered datagram must be a copy that the next read does not overwrite.
func TestReadLoopCopiesDatagrams(t *testing.T) {
	msgs := []string{"first datagram", "second"}
	src := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4501}
	read := func(b []byte) (int, net.Addr, net.IP, int, error) {
		if len(msgs) == 0 {
			return 0, nil, nil, 0, net.ErrClosed
		}
		n := copy(b, msgs[0])
		msgs = msgs[1:]
		return n, src, net.IPv4(192, 0, 2, 2).To4(), 3, nil
	}
	var got []Datagram
	if err := readLoop("IPv4", read, func(d Datagram) { got = append(got, d) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[0].Data) != "first datagram" || string(got[1].Data) != "second" {
		t.Fatalf("delivered %+v", got)
	}
	if d := got[0]; d.Src != netip.MustParseAddrPort("192.0.2.1:4501") || d.Dst != netip.MustParseAddr("192.0.2.2") || d.IfIndex != 3 {
		t.Fatalf("datagram %+v", d)
	}
	got[0].Wipe()
	if !bytes.Equal(got[0].Data, make([]byte, len("first datagram"))) {
		t.Fatalf("Wipe left %q", got[0].Data)
	}
}

// TestReadLoopClearsBuffer: a control datagram (a PUT carries SK_d and
// the nonce in the clear) does not stay in readLoop's buffer after it is
// delivered: by the next read, and after the last, the octets are zero.
func TestReadLoopClearsBuffer(t *testing.T) {
	secret := bytes.Repeat([]byte{0xa5}, 300)
	src := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 4501}
	var buf []byte
	reads := 0
	read := func(b []byte) (int, net.Addr, net.IP, int, error) {
		if reads > 0 && !bytes.Equal(b[:len(secret)], make([]byte, len(secret))) {
			t.Errorf("read %d: the buffer still holds the last datagram", reads)
		}
		buf = b
		if reads++; reads > 2 {
			return 0, nil, nil, 0, net.ErrClosed
		}
		return copy(b, secret), src, nil, 0, nil
	}
	delivered := 0
	if err := readLoop("IPv4", read, func(d Datagram) {
		delivered++
		if !bytes.Equal(d.Data, secret) {
			t.Errorf("delivered %x", d.Data)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if delivered != 2 || bytes.Contains(buf, secret[:16]) {
		t.Fatalf("delivered %d; buffer holds the datagram after the loop: %v", delivered, bytes.Contains(buf, secret[:16]))
	}
}

// TestDeliverWipesDropped: a datagram the loop has no room for is wiped
// when it is dropped, since it may be a PUT with SK_d in the clear.
func TestDeliverWipesDropped(t *testing.T) {
	s := testServer(t, Options{Config: loadConfig(t, ctlConf)})
	for range cap(s.datagrams) {
		s.deliver(Datagram{Data: []byte{1}})
	}
	d := Datagram{Data: []byte("SK_d and nonce")}
	s.deliver(d)
	if !bytes.Equal(d.Data, make([]byte, len(d.Data))) || s.overload.Load() != 1 {
		t.Fatalf("dropped datagram %q, overload %d: want it wiped and counted", d.Data, s.overload.Load())
	}
}
