package userspace

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/esp"
)

// member is one CPE in a test: a namespace with an underlay veth "u0"
// (IPv4 and IPv6) on a shared bridge, a LAN on a veth "lan0" (IPv4 and
// IPv6), and the backend running in-process inside the namespace.
type member struct {
	i     int
	ns    *nettest.NS
	be    *Backend
	u4    netip.Addr
	u6    netip.Addr
	lan4  netip.Prefix // 10.0.i.0/24, host .1
	lan6  netip.Prefix // fd0i::/64, host ::1
	cap   *capture
	local []netip.Prefix
}

func (m *member) host4() netip.Addr { return m.lan4.Addr().Next() }
func (m *member) host6() netip.Addr { return m.lan6.Addr().Next() }

// group is a set of members on one bridge.
type group struct {
	t *testing.T
	// udpPort is the ESP-in-UDP port of every member, 0 for raw ESP.
	udpPort uint16
	members []*member
	keysMu  sync.Mutex
	keys    map[uint32]xfrm.SA // for decrypting captures and forging packets
}

// key returns the test's copy of an SA's keys.
func (g *group) key(spi uint32) (xfrm.SA, bool) {
	g.keysMu.Lock()
	defer g.keysMu.Unlock()
	k, ok := g.keys[spi]
	return k, ok
}

func quietLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// testESPInUDPPort is the ESP-in-UDP port of the tests: mpsad's default
// (encap_port), not its control port.
const testESPInUDPPort = 4502

// encapsulations are the two ways the backend carries ESP: as IP
// protocol 50 and in UDP.
var encapsulations = []struct {
	name string
	port uint16
}{{"esp", 0}, {"udp", testESPInUDPPort}}

// newGroup builds n members and starts a backend in each; udpPort not 0
// carries ESP in UDP on that port.
func newGroup(t *testing.T, n int, udpPort uint16) *group {
	t.Helper()
	return newGroupConfig(t, n, Config{ESPInUDPPort: udpPort})
}

// newGroupConfig is newGroup with a backend configuration: each member's
// is cfg with the TUN name, local addresses and logger set.
func newGroupConfig(t *testing.T, n int, cfg Config) *group {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedFile(t, "/dev/net/tun")
	udpPort := cfg.ESPInUDPPort
	g := &group{t: t, keys: map[uint32]xfrm.SA{}, udpPort: udpPort}
	hub := nettest.NewNS(t, "hub")
	nettest.Bridge(t, hub, "br0")
	for i := 1; i <= n; i++ {
		ns := nettest.NewNS(t, fmt.Sprintf("m%d", i))
		m := &member{
			i:    i,
			ns:   ns,
			u4:   netip.MustParseAddr(fmt.Sprintf("192.168.50.%d", i)),
			u6:   netip.MustParseAddr(fmt.Sprintf("fd50::%d", i)),
			lan4: netip.MustParsePrefix(fmt.Sprintf("10.0.%d.0/24", i)),
			lan6: netip.MustParsePrefix(fmt.Sprintf("fd0%d::/64", i)),
		}
		m.local = []netip.Prefix{m.lan4, m.lan6}
		nettest.Veth(t, ns, "u0", hub, fmt.Sprintf("p%d", i))
		hub.Run(t, "ip", "link", "set", fmt.Sprintf("p%d", i), "master", "br0")
		nettest.AddrAdd(t, ns, "u0", m.u4.String()+"/24")
		nettest.AddrAdd(t, ns, "u0", m.u6.String()+"/64")
		// This kernel may lack the dummy driver; a veth pair inside
		// the namespace serves as the LAN interface.
		ns.Run(t, "ip", "link", "add", "lan0", "type", "veth", "peer", "name", "lan0p")
		ns.Run(t, "ip", "link", "set", "lan0p", "up")
		ns.Run(t, "ip", "link", "set", "lan0", "up")
		nettest.AddrAdd(t, ns, "lan0", m.host4().String()+"/24")
		nettest.AddrAdd(t, ns, "lan0", m.host6().String()+"/64")
		err := ns.Do(func() error {
			c := cfg
			c.TUNName = "mpsa0"
			c.Local = []netip.Addr{m.u4, m.u6}
			c.Logger = quietLogger(t).With("member", i)
			be, err := New(context.Background(), c)
			m.be = be
			return err
		})
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		t.Cleanup(func() {
			if err := m.be.Close(); err != nil {
				t.Errorf("member %d: close: %v", i, err)
			}
			if out, err := ns.Command("ip", "link", "show", "mpsa0").CombinedOutput(); err == nil {
				t.Errorf("member %d: TUN still there after Close: %s", i, out)
			}
		})
		g.members = append(g.members, m)
	}
	return g
}

var testSuite = mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 256, Integ: mpsa.IntegHMACSHA2_256, PRF: mpsa.PRFHMACSHA2_256}

// newSA makes a fresh random SA and remembers its keys.
func (g *group) newSA(spi uint32, s mpsa.Suite) xfrm.SA {
	sa := xfrm.SA{SPI: spi, Suite: s, EncrKey: make([]byte, s.EncrKeyBytes()), IntegKey: make([]byte, s.IntegKeyBytes())}
	rand.Read(sa.EncrKey)
	rand.Read(sa.IntegKey)
	g.keysMu.Lock()
	defer g.keysMu.Unlock()
	g.keys[spi] = xfrm.SA{SPI: spi, Suite: s, EncrKey: bytes.Clone(sa.EncrKey), IntegKey: bytes.Clone(sa.IntegKey)}
	return sa
}

// install installs sa on every member; each gets its own copy of the keys,
// since the backend may zero them.
func (g *group) install(sa xfrm.SA) {
	g.t.Helper()
	for _, m := range g.members {
		c := xfrm.SA{SPI: sa.SPI, Suite: sa.Suite, EncrKey: bytes.Clone(sa.EncrKey), IntegKey: bytes.Clone(sa.IntegKey)}
		if err := m.be.InstallInbound(context.Background(), c); err != nil {
			g.t.Fatalf("member %d: %v", m.i, err)
		}
	}
}

func (g *group) setOutbound(spi uint32) {
	g.t.Helper()
	for _, m := range g.members {
		if err := m.be.SetOutbound(context.Background(), spi); err != nil {
			g.t.Fatalf("member %d: %v", m.i, err)
		}
	}
}

func (g *group) remove(spi uint32) {
	g.t.Helper()
	for _, m := range g.members {
		if err := m.be.Remove(context.Background(), spi); err != nil {
			g.t.Fatalf("member %d: %v", m.i, err)
		}
	}
}

// setPeers points every member's peer table at the others: inner IPv4
// prefixes over outer family out4, inner IPv6 over out6 (4 or 6).
func (g *group) setPeers(out4, out6 int) {
	g.t.Helper()
	for _, m := range g.members {
		var peers []xfrm.Peer
		for _, o := range g.members {
			if o == m {
				continue
			}
			u := func(f int) netip.Addr {
				if f == 4 {
					return o.u4
				}
				return o.u6
			}
			peers = append(peers, xfrm.Peer{Prefix: o.lan4, Underlay: u(out4)}, xfrm.Peer{Prefix: o.lan6, Underlay: u(out6)})
		}
		if err := m.be.SetPeers(context.Background(), m.local, peers); err != nil {
			g.t.Fatalf("member %d: %v", m.i, err)
		}
	}
}

func (g *group) counters(m *member, spi uint32) xfrm.Counters {
	g.t.Helper()
	cs, err := m.be.Counters(context.Background())
	if err != nil {
		g.t.Fatal(err)
	}
	for _, c := range cs {
		if c.SPI == spi {
			return c
		}
	}
	g.t.Fatalf("member %d: no counters for SPI %08x", m.i, spi)
	return xfrm.Counters{}
}

// waitFor polls cond until it holds; it fails the test after a generous
// bound, which only a broken data path reaches.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !eventually(cond) {
		t.Fatalf("timed out waiting for %s", what)
	}
}

// eventually polls cond for up to 10 s and reports whether it came true.
func eventually(cond func() bool) bool {
	for i := 0; i < 1000; i++ {
		if cond() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// capture counts the frames leaving a member's underlay veth: ESP by outer
// and inner family (decrypted with the test's copy of the keys), any frame
// that carries the plaintext marker, and GSO frames. It also checks that
// the sequence numbers of each SA and outer family leave strictly
// increasing: the backend numbers packets in the order it reads them and
// must send them in that order (each outer family has its own socket, so
// only within one family is the order defined). With udpPort it counts
// ESP in UDP to that port instead of IP protocol 50, and splits UDP GSO
// frames (which the socket sees unsegmented, with the segment size in the
// virtio-net header it asks for) into their ESP packets.
type capture struct {
	fd      int
	udpPort uint16
	stop    chan struct{}
	done    chan struct{}
	// gsoFrames counts GSO frames: frames whose virtio-net header has a
	// gso_size, in either encapsulation, since a frame the kernel will
	// segment is one whatever it carries.
	gsoFrames int
	// fragments counts IP fragments, which are not decoded.
	fragments int

	mu         sync.Mutex
	esp        map[[2]int]int // {outer, inner} -> frames
	espBad     int            // ESP frames the test could not open
	marker     int            // frames containing the marker
	keyOf      func(uint32) (xfrm.SA, bool)
	crypters   map[uint32]*esp.Crypter
	markerText []byte
	syncSeen   map[string]bool
	// lastSeq is the last sequence number seen per {SPI, outer family};
	// seqChecked counts the ESP packets compared with it, reorders
	// describes those that did not follow it (the first few).
	lastSeq    map[[2]uint32]uint32
	seqChecked int
	reorders   []string
	reordered  int
}

// sync sends a datagram with a unique text out of u0 (to the underlay
// address to) and waits until the capture has seen it: every frame that
// left before is then counted.
func (c *capture) sync(t *testing.T, m *member, to netip.Addr) {
	t.Helper()
	c.syncVia(t, m, netip.Addr{}, to)
}

// syncThrough sends the unique datagram through the tunnel instead, from
// m's LAN host to to's, and waits until the capture has seen it leave as
// ESP. The outbound pipeline sends packets in the order it read them from
// the TUN, so every packet m's backend read before (and routed with the
// peer table of its time) has left by then: a barrier for tests that
// change the peer table.
func (c *capture) syncThrough(t *testing.T, m, to *member) {
	t.Helper()
	c.syncVia(t, m, m.host4(), to.host4())
}

func (c *capture) syncVia(t *testing.T, m *member, from, to netip.Addr) {
	t.Helper()
	text := fmt.Sprintf("MPSA-CAPTURE-SYNC-%d-%d", m.i, time.Now().UnixNano())
	if err := m.ns.Do(func() error {
		var laddr *net.UDPAddr
		if from.IsValid() {
			laddr = net.UDPAddrFromAddrPort(netip.AddrPortFrom(from, 0))
		}
		conn, err := net.DialUDP("udp", laddr, net.UDPAddrFromAddrPort(netip.AddrPortFrom(to, 9)))
		if err != nil {
			return err
		}
		defer conn.Close()
		_, err = conn.Write([]byte(text))
		return err
	}); err != nil {
		t.Fatalf("member %d: capture sync: %v", m.i, err)
	}
	waitFor(t, "the capture to see its sync datagram", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.syncSeen[text]
	})
}

var marker = []byte("MPSA-PLAINTEXT-MARKER")

func startCapture(t *testing.T, m *member, udpPort uint16, keyOf func(uint32) (xfrm.SA, bool)) *capture {
	t.Helper()
	c := &capture{udpPort: udpPort, stop: make(chan struct{}), done: make(chan struct{}), esp: map[[2]int]int{}, keyOf: keyOf, syncSeen: map[string]bool{}, crypters: map[uint32]*esp.Crypter{}, markerText: marker, lastSeq: map[[2]uint32]uint32{}}
	err := m.ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		idx, err := ifIndex("u0")
		if err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: idx}); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.Timeval{Usec: 50000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
			unix.Close(fd)
			return fmt.Errorf("PACKET_VNET_HDR: %w", err)
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("member %d: capture: %v", m.i, err)
	}
	go c.run()
	t.Cleanup(c.close)
	return c
}

func ifIndex(name string) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, fmt.Errorf("index of %s: %w", name, err)
	}
	return int(ifr.Uint32()), nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (c *capture) close() {
	select {
	case <-c.stop:
		return
	default:
	}
	close(c.stop)
	<-c.done
	unix.Close(c.fd)
}

func (c *capture) run() {
	defer close(c.done)
	buf := make([]byte, 70000)
	for {
		select {
		case <-c.stop:
			return
		default:
		}
		n, from, err := unix.Recvfrom(c.fd, buf, 0)
		if err != nil {
			continue
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		// struct virtio_net_hdr (10 bytes) precedes the frame;
		// gso_size is at offset 4, little endian.
		const vnet = 10
		if !ok || ll.Pkttype != unix.PACKET_OUTGOING || n < vnet+14 {
			continue
		}
		gso := int(binary.LittleEndian.Uint16(buf[4:6]))
		c.frame(bytes.Clone(buf[vnet+14:n]), binary.BigEndian.Uint16(buf[vnet+12:vnet+14]), gso)
	}
}

// espPayloads returns the ESP packets in a frame's IP packet and the outer
// family, or nil: IP protocol 50, or UDP to the ESP-in-UDP port, split at
// gso bytes when the frame is a GSO super-frame.
func (c *capture) espPayloads(pkt []byte, ethertype uint16, gso int) (outer int, esps [][]byte) {
	var proto byte
	var l4 []byte
	switch {
	case ethertype == 0x0800 && len(pkt) >= 20:
		outer, proto, l4 = 4, pkt[9], pkt[int(pkt[0]&0xf)*4:]
		if binary.BigEndian.Uint16(pkt[6:8])&0x3fff != 0 { // MF or an offset
			c.fragments++
			return 0, nil
		}
	case ethertype == 0x86dd && len(pkt) >= 40:
		outer, proto, l4 = 6, pkt[6], pkt[40:]
		if proto == 44 { // fragment header
			c.fragments++
			return 0, nil
		}
	default:
		return 0, nil
	}
	if c.udpPort == 0 {
		if proto != 50 {
			return 0, nil
		}
		return outer, [][]byte{l4}
	}
	if proto != 17 || len(l4) < 8 || binary.BigEndian.Uint16(l4[2:4]) != c.udpPort {
		return 0, nil
	}
	payload := l4[8:]
	if gso <= 0 || gso >= len(payload) {
		return outer, [][]byte{payload}
	}
	for len(payload) > 0 {
		k := min(gso, len(payload))
		esps = append(esps, payload[:k])
		payload = payload[k:]
	}
	return outer, esps
}

func (c *capture) frame(pkt []byte, ethertype uint16, gso int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if bytes.Contains(pkt, c.markerText) {
		c.marker++
	}
	if i := bytes.Index(pkt, []byte("MPSA-CAPTURE-SYNC-")); i >= 0 {
		c.syncSeen[string(pkt[i:])] = true
		return
	}
	if gso > 0 {
		c.gsoFrames++
	}
	outer, esps := c.espPayloads(pkt, ethertype, gso)
	for _, payload := range esps {
		c.espPacket(outer, payload)
	}
}

// espPacket opens one ESP packet seen on the wire and counts it by outer
// and inner family. The caller holds c.mu.
func (c *capture) espPacket(outer int, payload []byte) {
	spi, _ := esp.PeekSPI(payload)
	cr := c.crypters[spi]
	if cr == nil {
		k, ok := c.keyOf(spi)
		if !ok {
			c.espBad++
			return
		}
		sa, err := esp.NewSA(spi, k.Suite, k.EncrKey, k.IntegKey)
		if err != nil {
			c.espBad++
			return
		}
		cr = sa.NewCrypter(nil)
		c.crypters[spi] = cr
	}
	inner, seq, err := cr.Open(payload)
	if err != nil {
		c.espBad++
		return
	}
	if i := bytes.Index(inner, []byte("MPSA-CAPTURE-SYNC-")); i >= 0 {
		// syncThrough's datagram: a barrier, not traffic to count.
		c.syncSeen[string(inner[i:])] = true
		return
	}
	c.esp[[2]int{outer, int(inner[0] >> 4)}]++
	k := [2]uint32{spi, uint32(outer)}
	if last, ok := c.lastSeq[k]; ok {
		c.seqChecked++
		if seq <= last {
			c.reordered++
			if len(c.reorders) < 10 {
				c.reorders = append(c.reorders, fmt.Sprintf("SPI %08x over IPv%d: sequence number %d after %d", spi, outer, seq, last))
			}
		}
	}
	c.lastSeq[k] = seq
}

// order returns how many ESP packets had their sequence number compared
// with the one before them (same SA, same outer family), how many of them
// did not follow it, and a description of the first few; since the
// capture started.
func (c *capture) order() (checked, reordered int, examples []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seqChecked, c.reordered, slices.Clone(c.reorders)
}

// snapshot returns the counts so far and resets them.
func (c *capture) snapshot() (espCounts map[[2]int]int, bad, marker, gsoFrames int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	espCounts, bad, marker, gsoFrames = c.esp, c.espBad, c.marker, c.gsoFrames
	c.esp, c.espBad, c.marker, c.gsoFrames, c.fragments = map[[2]int]int{}, 0, 0, 0, 0
	return espCounts, bad, marker, gsoFrames
}

// fragmentCount returns the IP fragments seen since the last snapshot.
func (c *capture) fragmentCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fragments
}
