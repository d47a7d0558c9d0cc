//go:build mpsavm

package vm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/net/bpf"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/nettest"
)

// guestNS is a named network namespace in the guest (/run/netns/NAME)
// with a netlink handle inside it.
type guestNS struct {
	name string
	ns   netns.NsHandle
	h    *netlink.Handle
}

func (n *guestNS) path() string { return "/run/netns/" + n.name }

// newNS creates a named namespace with loopback up; it is deleted when the
// test ends.
func newNS(t *testing.T, name string) *guestNS {
	t.Helper()
	errc := make(chan error, 1)
	var ns netns.NsHandle
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		ns, err = netns.NewNamed(name)
		if err != nil {
			errc <- err
			return
		}
		if err := netns.Set(orig); err != nil {
			errc <- err // the thread stays locked and is discarded
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE, unix.NETLINK_XFRM)
	if err != nil {
		t.Fatalf("netlink in %s: %v", name, err)
	}
	n := &guestNS{name: name, ns: ns, h: h}
	t.Cleanup(func() {
		h.Close()
		ns.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete netns %s: %v", name, err)
		}
	})
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatalf("%s: lo: %v", name, err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		t.Fatalf("%s: lo up: %v", name, err)
	}
	return n
}

// do runs fn on a thread inside the namespace; sockets fn opens stay there.
// It is nettest's (*NS).Do, which needs no `ip` binary, only
// /proc/thread-self/ns/net and the namespace's file /run/netns/NAME, both
// of which the guest has (setupGuest mounts /proc and /run, and newNS
// creates the file).
func (n *guestNS) do(fn func() error) error {
	return (&nettest.NS{Name: n.name}).Do(fn)
}

func (n *guestNS) link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := n.h.LinkByName(name)
	if err != nil {
		t.Fatalf("%s: link %s: %v", n.name, name, err)
	}
	return l
}

func (n *guestNS) addAddr(t *testing.T, link, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	a.Flags = unix.IFA_F_NODAD
	if err := n.h.AddrAdd(n.link(t, link), a); err != nil {
		t.Fatalf("%s: addr add %s dev %s: %v", n.name, cidr, link, err)
	}
}

// addRoute adds an on-link route to dst through link.
func (n *guestNS) addRoute(t *testing.T, dst, link string) {
	t.Helper()
	_, ipn, err := net.ParseCIDR(dst)
	if err != nil {
		t.Fatal(err)
	}
	r := &netlink.Route{LinkIndex: n.link(t, link).Attrs().Index, Dst: ipn, Scope: netlink.SCOPE_LINK}
	if err := n.h.RouteAdd(r); err != nil {
		t.Fatalf("%s: route add %s dev %s: %v", n.name, dst, link, err)
	}
}

func (n *guestNS) up(t *testing.T, name string) {
	t.Helper()
	if err := n.h.LinkSetUp(n.link(t, name)); err != nil {
		t.Fatalf("%s: set %s up: %v", n.name, name, err)
	}
}

// vethTo joins n (end aName) with other (end bName).
func (n *guestNS) vethTo(t *testing.T, aName string, other *guestNS, bName string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsFd(other.ns)}
	if err := n.h.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s -- %s/%s: %v", n.name, aName, other.name, bName, err)
	}
	n.up(t, aName)
	other.up(t, bName)
}

// xfrmCounts is the number of XFRM states and policies in a namespace.
func (n *guestNS) xfrmCounts(t *testing.T) (states, policies int) {
	t.Helper()
	s, err := n.h.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("%s: list states: %v", n.name, err)
	}
	p, err := n.h.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		t.Fatalf("%s: list policies: %v", n.name, err)
	}
	return len(s), len(p)
}

// ping sends count ICMP echo requests from src to dst inside n, one after
// the other, each waiting up to 3 s for its answer, and returns how many
// were answered. The error reports a socket that could not be opened or a
// request that could not be sent, which ends the pings.
func (n *guestNS) ping(src, dst netip.Addr, count int) (int, error) {
	network, proto := "ip4:icmp", 1
	var typ, reply icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if dst.Is6() {
		network, proto = "ip6:ipv6-icmp", 58
		typ, reply = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	var c *icmp.PacketConn
	if err := n.do(func() (err error) {
		c, err = icmp.ListenPacket(network, src.String())
		return err
	}); err != nil {
		return 0, fmt.Errorf("icmp listen on %s in %s: %w", src, n.name, err)
	}
	defer c.Close()
	answered := 0
	id := int(time.Now().UnixNano() & 0xffff)
	for seq := 0; seq < count; seq++ {
		msg := icmp.Message{Type: typ, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("mpsa-ping")}}
		b, err := msg.Marshal(nil)
		if err != nil {
			return answered, err
		}
		if _, err := c.WriteTo(b, &net.IPAddr{IP: dst.AsSlice()}); err != nil {
			return answered, fmt.Errorf("ping %s -> %s: send: %w", src, dst, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		buf := make([]byte, 1500)
		for {
			nr, _, err := c.ReadFrom(buf)
			if err != nil {
				break // this one is lost
			}
			m, err := icmp.ParseMessage(proto, buf[:nr])
			if err != nil || m.Type != reply {
				continue
			}
			if e, ok := m.Body.(*icmp.Echo); ok && e.Seq == seq && bytes.Equal(e.Data, []byte("mpsa-ping")) {
				answered++
				break
			}
		}
	}
	return answered, nil
}

// echoServer accepts TCP connections on addr inside n and echoes them.
func (n *guestNS) echoServer(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	var l net.Listener
	if err := n.do(func() (err error) {
		l, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatalf("%s: listen %s: %v", n.name, addr, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
}

// tcpEcho connects from src to dst inside n, sends size random bytes and
// checks that the same bytes come back.
func (n *guestNS) tcpEcho(ctx context.Context, src netip.Addr, dst netip.AddrPort, size int) error {
	var c net.Conn
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}, Timeout: 10 * time.Second}
	if err := n.do(func() (err error) {
		c, err = d.DialContext(ctx, "tcp", dst.String())
		return err
	}); err != nil {
		return fmt.Errorf("tcp %s -> %s: %w", src, dst, err)
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	data := make([]byte, size)
	_, _ = rand.Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(data)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	back, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("tcp %s -> %s: read back after %d bytes: %w", src, dst, len(back), err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("tcp %s -> %s: write: %w", src, dst, err)
	}
	if sha256.Sum256(back) != sha256.Sum256(data) {
		return fmt.Errorf("tcp %s -> %s: sent %d bytes, got %d different bytes back", src, dst, len(data), len(back))
	}
	return nil
}

// sniffer counts the frames leaving one interface: ESP frames, and IP
// frames in plaintext whose addresses are inside the watched prefixes.
type sniffer struct {
	ifname string
	fd     int
	esp    atomic.Int64
	plain  atomic.Int64
	drops  atomic.Int64 // frames the socket dropped: the counts are incomplete
	stop   chan struct{}
	done   chan struct{}
	first  atomic.Value // description of the first plaintext frame

	mu    sync.Mutex
	bySPI map[uint32]int64 // ESP frames by SPI
}

// espWith returns the number of ESP frames with spi that left so far.
func (s *sniffer) espWith(spi uint32) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bySPI[spi]
}

// spis describes the ESP frames counted so far by SPI.
func (s *sniffer) spis() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var parts []string
	for spi, n := range s.bySPI {
		parts = append(parts, fmt.Sprintf("%08x: %d", spi, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func (n *guestNS) sniff(t *testing.T, ifname string, watch []netip.Prefix) *sniffer {
	t.Helper()
	s := &sniffer{ifname: ifname, stop: make(chan struct{}), done: make(chan struct{}), bySPI: map[uint32]int64{}}
	idx := n.link(t, ifname).Attrs().Index
	if err := n.do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		s.fd = fd
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx})
	}); err != nil {
		t.Fatalf("%s: packet socket on %s: %v", n.name, ifname, err)
	}
	_ = unix.SetsockoptTimeval(s.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	// A busy emulated CPU can starve the reader: a large buffer (past
	// rmem_max, as root may) and a filter that keeps only outgoing frames,
	// so that the kernel queues half as much.
	if err := unix.SetsockoptInt(s.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20); err != nil {
		t.Fatalf("%s: capture buffer: %v", n.name, err)
	}
	if err := attachOutgoingFilter(s.fd); err != nil {
		t.Fatalf("%s: capture filter: %v", n.name, err)
	}
	go func() {
		defer close(s.done)
		buf := make([]byte, 65536)
		for {
			nr, from, err := unix.Recvfrom(s.fd, buf, 0)
			if err != nil {
				// A receive timeout: the queue is drained. Stop
				// only then, so that no queued frame goes uncounted.
				select {
				case <-s.stop:
					if st, err := unix.GetsockoptTpacketStats(s.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS); err == nil {
						s.drops.Add(int64(st.Drops))
					} else {
						s.drops.Add(1 << 30)
					}
					return
				default:
				}
				continue
			}
			ll, ok := from.(*unix.SockaddrLinklayer)
			if !ok || ll.Pkttype != unix.PACKET_OUTGOING || nr < 14 {
				continue
			}
			s.classify(buf[14:nr], binary.BigEndian.Uint16(buf[12:14]), watch)
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *sniffer) classify(p []byte, ethertype uint16, watch []netip.Prefix) {
	var proto byte
	var src, dst netip.Addr
	var payload []byte // after the IP header (IPv6: no extension headers)
	switch ethertype {
	case unix.ETH_P_IP:
		if len(p) < 20 {
			return
		}
		proto = p[9]
		src, _ = netip.AddrFromSlice(p[12:16])
		dst, _ = netip.AddrFromSlice(p[16:20])
		if ihl := int(p[0]&0x0f) * 4; ihl <= len(p) {
			payload = p[ihl:]
		}
	case unix.ETH_P_IPV6:
		if len(p) < 40 {
			return
		}
		proto = p[6]
		src, _ = netip.AddrFromSlice(p[8:24])
		dst, _ = netip.AddrFromSlice(p[24:40])
		payload = p[40:]
	default:
		return
	}
	if proto == unix.IPPROTO_ESP {
		s.esp.Add(1)
		if len(payload) >= 4 {
			s.mu.Lock()
			s.bySPI[binary.BigEndian.Uint32(payload)]++
			s.mu.Unlock()
		}
		return
	}
	for _, w := range watch {
		if w.Contains(src) || w.Contains(dst) {
			if s.plain.Add(1) == 1 {
				s.first.Store(fmt.Sprintf("proto %d %s -> %s", proto, src, dst))
			}
			return
		}
	}
}

func (s *sniffer) close() {
	select {
	case <-s.stop:
		return
	default:
	}
	close(s.stop)
	<-s.done
	unix.Close(s.fd)
}

// checkComplete closes the capture and fails the test if the socket
// dropped frames, which would make every count incomplete. who names the
// member in the messages.
func (s *sniffer) checkComplete(t *testing.T, who string) {
	t.Helper()
	s.close()
	if d := s.drops.Load(); d != 0 {
		t.Errorf("%s: the capture on %s dropped %d frames; the plaintext check is incomplete", who, s.ifname, d)
	}
}

// check closes the capture and fails the test if it dropped frames or
// counted a plaintext frame to or from a watched prefix, and, with
// wantESP, if no ESP frame left the interface.
func (s *sniffer) check(t *testing.T, who string, wantESP bool) {
	t.Helper()
	s.checkComplete(t, who)
	if n := s.plain.Load(); n != 0 {
		t.Errorf("%s: %d plaintext LAN frames left %s, first: %v", who, n, s.ifname, s.first.Load())
	}
	if wantESP && s.esp.Load() == 0 {
		t.Errorf("%s: no ESP frame left %s", who, s.ifname)
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// attachOutgoingFilter makes a packet socket keep only outgoing frames.
func attachOutgoingFilter(fd int) error {
	prog, err := bpf.Assemble([]bpf.Instruction{
		bpf.LoadExtension{Num: bpf.ExtType},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.PACKET_OUTGOING, SkipFalse: 1},
		bpf.RetConstant{Val: 0x40000},
		bpf.RetConstant{Val: 0},
	})
	if err != nil {
		return err
	}
	raw := make([]unix.SockFilter, len(prog))
	for i, ins := range prog {
		raw[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: uint16(len(raw)), Filter: &raw[0]})
}

// udpStream sends numbered datagrams from src to dst inside n every
// interval until stopped; the receiver counts the distinct numbers.
type udpStream struct {
	sendErrs atomic.Int64
	firstErr atomic.Value

	mu  sync.Mutex
	got map[uint64]bool
	// sentAt holds the time each datagram was sent, indexed by number;
	// its length is the number sent.
	sentAt []time.Time
	stop   chan struct{}
	// sendDone is closed when the sender has stopped.
	sendDone chan struct{}
	wg       sync.WaitGroup
	rc       net.PacketConn
	sc       net.Conn
}

func startUDPStream(t *testing.T, from *guestNS, src netip.Addr, to *guestNS, dst netip.AddrPort, interval time.Duration) *udpStream {
	t.Helper()
	u := &udpStream{got: map[uint64]bool{}, stop: make(chan struct{}), sendDone: make(chan struct{})}
	if err := to.do(func() (err error) {
		u.rc, err = net.ListenPacket("udp", dst.String())
		return err
	}); err != nil {
		t.Fatalf("%s: udp listen %s: %v", to.name, dst, err)
	}
	_ = u.rc.(*net.UDPConn).SetReadBuffer(4 << 20)
	d := net.Dialer{LocalAddr: &net.UDPAddr{IP: src.AsSlice()}}
	if err := from.do(func() (err error) {
		u.sc, err = d.Dial("udp", dst.String())
		return err
	}); err != nil {
		t.Fatalf("%s: udp dial %s: %v", from.name, dst, err)
	}
	u.wg.Add(2)
	go func() {
		defer u.wg.Done()
		buf := make([]byte, 2048)
		for {
			nr, _, err := u.rc.ReadFrom(buf)
			if err != nil {
				return
			}
			if nr >= 8 {
				u.mu.Lock()
				u.got[binary.BigEndian.Uint64(buf[:8])] = true
				u.mu.Unlock()
			}
		}
	}()
	go func() {
		defer u.wg.Done()
		defer close(u.sendDone)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		msg := make([]byte, 200)
		for seq := uint64(0); ; seq++ {
			select {
			case <-u.stop:
				return
			case <-tick.C:
			}
			binary.BigEndian.PutUint64(msg, seq)
			u.mu.Lock()
			u.sentAt = append(u.sentAt, time.Now())
			u.mu.Unlock()
			if _, err := u.sc.Write(msg); err != nil {
				if u.sendErrs.Add(1) == 1 {
					u.firstErr.Store(err.Error())
				}
			}
		}
	}()
	t.Cleanup(func() { u.finish(0) })
	return u
}

// finish stops the sender, waits until every datagram sent has arrived or
// maxWait has passed (a software-emulated guest on a busy host can hold a
// datagram for a while; one that never comes is still missing), and
// returns the numbers sent and received.
func (u *udpStream) finish(maxWait time.Duration) (sent, received int) {
	select {
	case <-u.stop:
	default:
		close(u.stop)
		<-u.sendDone
		deadline := time.Now().Add(maxWait)
		// After sendDone, sentAt no longer grows.
		for u.received() < len(u.sentAt) && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		u.sc.Close()
		u.rc.Close()
		u.wg.Wait()
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.sentAt), len(u.got)
}

// sent returns how many datagrams have been sent so far.
func (u *udpStream) sent() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.sentAt)
}

// waitSent waits until n more datagrams have been sent than when it was
// called, at most maxWait; it reports whether they were. Phases of a test
// are measured in datagrams sent, not in time, which a software-emulated
// guest on a busy host stretches.
func (u *udpStream) waitSent(n int, maxWait time.Duration) bool {
	want := u.sent() + n
	deadline := time.Now().Add(maxWait)
	for u.sent() < want {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
	return true
}

// received returns how many distinct datagrams have arrived so far.
func (u *udpStream) received() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.got)
}

// missing describes the datagrams sent but not received: each number
// with the time it was sent.
func (u *udpStream) missing() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []string
	for seq, at := range u.sentAt {
		if !u.got[uint64(seq)] {
			out = append(out, fmt.Sprintf("#%d sent %s", seq, at.Format("15:04:05.000000")))
		}
	}
	return out
}

// missingSentIn returns how many of the datagrams sent but not received
// were sent within one of the spans.
func (u *udpStream) missingSentIn(spans [][2]time.Time) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for seq, at := range u.sentAt {
		if u.got[uint64(seq)] {
			continue
		}
		for _, sp := range spans {
			if !at.Before(sp[0]) && !at.After(sp[1]) {
				n++
				break
			}
		}
	}
	return n
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, cond func() bool) error {
	for !cond() {
		select {
		case <-ctx.Done():
			return errors.New("condition not reached before the deadline")
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// netStats returns the non-zero counters of the namespace's IP, UDP and
// XFRM statistics (/proc/net/snmp, snmp6 and xfrm_stat seen from inside
// it), for diagnosing a lost packet.
func (n *guestNS) netStats() string {
	var b strings.Builder
	err := n.do(func() error {
		for _, f := range []string{"snmp6", "xfrm_stat"} {
			data, err := os.ReadFile("/proc/thread-self/net/" + f)
			if err != nil {
				fmt.Fprintf(&b, "%s: %v\n", f, err)
				continue
			}
			for _, l := range strings.Split(string(data), "\n") {
				if fs := strings.Fields(l); len(fs) == 2 && fs[1] != "0" {
					fmt.Fprintf(&b, "%s %s\n", fs[0], fs[1])
				}
			}
		}
		data, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err == nil {
			lines := strings.Split(string(data), "\n")
			for i := 0; i+1 < len(lines); i += 2 {
				h, v := strings.Fields(lines[i]), strings.Fields(lines[i+1])
				for j := 1; j < len(h) && j < len(v); j++ {
					if v[j] != "0" {
						fmt.Fprintf(&b, "%s%s %s\n", h[0], h[j], v[j])
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		fmt.Fprintf(&b, "reading counters in %s: %v\n", n.name, err)
	}
	return b.String()
}

// growStateHash makes the kernel grow the namespace's XFRM state hash
// table to 16 buckets or more before a scenario starts, and fails the test
// if it does not.
//
// Linux starts every namespace with 8 buckets and grows the table, in a
// work item, when an insert finds more states than buckets and a
// collision. A bundle lookup that runs while the table is rehashed gets
// EAGAIN from xfrm_state_find and, with the default
// net.core.xfrm_larval_drop=1, its packet is dropped and counted as
// XfrmOutNoStates (docs/kernel-dataplane.md, "The state hash grows under
// traffic"). A rollover between three members peaks at 8 states, which is
// the first growth; it would race the outbound switch and cost about one
// run in twenty-five a datagram that has nothing to do with the order in
// which the backend switches. Growing the table first, with 9 throw-away
// states, keeps that kernel race out of the scenarios, which check the
// backend's own ordering.
func (n *guestNS) growStateHash(t *testing.T) {
	t.Helper()
	const reqid = 0x7e57
	dst := net.ParseIP("192.0.2.254")
	before, err := n.stateHashBuckets()
	if err != nil {
		t.Fatalf("%s: %v", n.name, err)
	}
	var added []*netlink.XfrmState
	defer func() {
		for _, st := range added {
			if err := n.h.XfrmStateDel(st); err != nil {
				t.Errorf("%s: delete throw-away state %08x: %v", n.name, st.Spi, err)
			}
		}
	}()
	for i := range 9 {
		st := &netlink.XfrmState{
			Src: net.IPv4zero, Dst: dst, Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL,
			Spi: 0x7e570000 + i, Reqid: reqid,
			Crypt: &netlink.XfrmStateAlgo{Name: "cbc(aes)", Key: make([]byte, 16)},
			Auth:  &netlink.XfrmStateAlgo{Name: "hmac(sha256)", Key: make([]byte, 32), TruncateLen: 128},
		}
		if err := n.h.XfrmStateAdd(st); err != nil {
			t.Fatalf("%s: add throw-away state %08x: %v", n.name, st.Spi, err)
		}
		added = append(added, st)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		buckets, err := n.stateHashBuckets()
		if err != nil {
			t.Fatalf("%s: %v", n.name, err)
		}
		if buckets >= 16 {
			t.Logf("%s: XFRM state hash grown from %d to %d buckets", n.name, before, buckets)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the XFRM state hash still has %d buckets after 9 colliding states", n.name, buckets)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stateHashBuckets returns the size of the namespace's XFRM state hash
// table (XFRM_MSG_GETSADINFO, what `ip -s xfrm state count` prints).
func (n *guestNS) stateHashBuckets() (int, error) {
	var buckets int
	err := n.do(func() error {
		req := nl.NewNetlinkRequest(nl.XFRM_MSG_GETSADINFO, 0)
		req.AddRawData(make([]byte, 4)) // u32 flags
		msgs, err := req.Execute(unix.NETLINK_XFRM, nl.XFRM_MSG_NEWSADINFO)
		if err != nil {
			return fmt.Errorf("XFRM_MSG_GETSADINFO: %w", err)
		}
		for _, m := range msgs {
			if len(m) < 4 {
				continue
			}
			attrs, err := nl.ParseRouteAttr(m[4:])
			if err != nil {
				return fmt.Errorf("XFRM_MSG_NEWSADINFO: %w", err)
			}
			for _, a := range attrs {
				// XFRMA_SAD_HINFO: struct xfrmu_sadhinfo { u32 sadhcnt; u32 sadhmcnt; }
				if a.Attr.Type == 2 && len(a.Value) >= 4 {
					buckets = int(nl.NativeEndian().Uint32(a.Value))
				}
			}
		}
		return nil
	})
	return buckets, err
}
