package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// maxDatagram bounds a control datagram; MPSA messages are a few hundred
// octets.
const maxDatagram = 4096

// Datagram is one control datagram as received.
type Datagram struct {
	// Src is the sender's address and port.
	Src netip.AddrPort
	// Dst is the local address it was sent to.
	Dst netip.Addr
	// IfIndex is the interface it arrived on.
	IfIndex int
	// Data is the datagram. A PUT carries SK_d and the nonce in the
	// clear: the receiver calls Wipe once it is done with it.
	Data []byte
}

// Wipe overwrites the datagram's octets, which may hold key material.
func (d *Datagram) Wipe() { clear(d.Data) }

// Transport sends and receives control datagrams on the control port, over
// IPv4 and IPv6, with the arrival interface and destination of each (so
// that the daemon can insist on datagrams that came through the control
// CHILD_SA) and a chosen source address for each sent one (the local
// control address).
type Transport struct {
	c4 *ipv4.PacketConn
	c6 *ipv6.PacketConn
	l4 net.PacketConn
	l6 net.PacketConn
}

// Listen opens the control port on every local IPv4 and IPv6 address. Port
// 0 picks a free port (for tests); LocalPort tells which.
func Listen(ctx context.Context, port uint16) (*Transport, error) {
	var lc net.ListenConfig
	p := strconv.Itoa(int(port))
	l4, err := lc.ListenPacket(ctx, "udp4", "0.0.0.0:"+p)
	if err != nil {
		return nil, fmt.Errorf("listen on UDP port %d (IPv4): %w", port, err)
	}
	if port == 0 {
		p = strconv.Itoa(l4.LocalAddr().(*net.UDPAddr).Port)
	}
	l6, err := lc.ListenPacket(ctx, "udp6", "[::]:"+p)
	if err != nil {
		l4.Close()
		return nil, fmt.Errorf("listen on UDP port %s (IPv6): %w", p, err)
	}
	t := &Transport{l4: l4, l6: l6, c4: ipv4.NewPacketConn(l4), c6: ipv6.NewPacketConn(l6)}
	if err := t.c4.SetControlMessage(ipv4.FlagInterface|ipv4.FlagDst, true); err != nil {
		t.Close()
		return nil, fmt.Errorf("enable IP_PKTINFO: %w", err)
	}
	if err := t.c6.SetControlMessage(ipv6.FlagInterface|ipv6.FlagDst, true); err != nil {
		t.Close()
		return nil, fmt.Errorf("enable IPV6_RECVPKTINFO: %w", err)
	}
	return t, nil
}

// LocalPort is the UDP port the transport listens on.
func (t *Transport) LocalPort() uint16 { return uint16(t.l4.LocalAddr().(*net.UDPAddr).Port) }

// Run receives datagrams on both families and hands each to deliver, from
// two goroutines, until ctx is done or the transport is closed. deliver
// owns the Datagram's Data.
func (t *Transport) Run(ctx context.Context, deliver func(Datagram)) error {
	errc := make(chan error, 2)
	go func() { errc <- readLoop("IPv4", t.read4, deliver) }()
	go func() { errc <- readLoop("IPv6", t.read6, deliver) }()
	select {
	case <-ctx.Done():
		t.Close()
		<-errc
		<-errc
		return ctx.Err()
	case err := <-errc:
		t.Close()
		<-errc
		return err
	}
}

// readFunc reads one datagram: its length, source, destination and
// arrival interface.
type readFunc func(b []byte) (n int, src net.Addr, dst net.IP, ifindex int, err error)

func (t *Transport) read4(b []byte) (int, net.Addr, net.IP, int, error) {
	n, cm, src, err := t.c4.ReadFrom(b)
	if cm == nil {
		return n, src, nil, 0, err
	}
	return n, src, cm.Dst.To4(), cm.IfIndex, err
}

func (t *Transport) read6(b []byte) (int, net.Addr, net.IP, int, error) {
	n, cm, src, err := t.c6.ReadFrom(b)
	if cm == nil {
		return n, src, nil, 0, err
	}
	return n, src, cm.Dst, cm.IfIndex, err
}

// readLoop delivers datagrams read with read until the socket is closed.
// It reads into one buffer of its own and hands deliver a copy of each
// datagram's octets; the buffer is cleared as soon as the copy is made,
// since a PUT carries SK_d and the nonce (the copy is the receiver's to
// wipe: Datagram.Wipe).
func readLoop(family string, read readFunc, deliver func(Datagram)) error {
	b := make([]byte, maxDatagram)
	for {
		n, src, dst, ifindex, err := read(b)
		data := bytes.Clone(b[:n])
		clear(b[:n])
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("receive on the %s control port: %w", family, err)
		}
		sa := src.(*net.UDPAddr).AddrPort()
		d := Datagram{Src: netip.AddrPortFrom(sa.Addr().Unmap(), sa.Port()), IfIndex: ifindex, Data: data}
		d.Dst, _ = netip.AddrFromSlice(dst)
		deliver(d)
	}
}

// Send sends b from the local address src (the local control address; the
// zero Addr lets the kernel choose) to dst.
func (t *Transport) Send(b []byte, src netip.Addr, dst netip.AddrPort) error {
	if a := dst.Addr().Unmap(); a.Is4() {
		ua := net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, dst.Port()))
		var cm *ipv4.ControlMessage
		if src.IsValid() {
			cm = &ipv4.ControlMessage{Src: src.Unmap().AsSlice()}
		}
		if _, err := t.c4.WriteTo(b, cm, ua); err != nil {
			return fmt.Errorf("send to %s: %w", dst, err)
		}
		return nil
	}
	var cm *ipv6.ControlMessage
	if src.IsValid() {
		cm = &ipv6.ControlMessage{Src: src.AsSlice()}
	}
	if _, err := t.c6.WriteTo(b, cm, net.UDPAddrFromAddrPort(dst)); err != nil {
		return fmt.Errorf("send to %s: %w", dst, err)
	}
	return nil
}

// Close closes both sockets.
func (t *Transport) Close() error {
	return errors.Join(t.l4.Close(), t.l6.Close())
}
