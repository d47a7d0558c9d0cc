package bgp

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bgppkt "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/mpsa/mpsa/bgp/policy"
	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
)

// The convergence benchmark runs the real Reflector (a helper process in
// its own namespace, as in the tests) against many light clients in
// another namespace. The clients stand in for the members' speakers: a
// thousand GoBGP instances in one process would each keep the whole
// table, and the point is the reflector. Each client is a TCP connection
// that sends an OPEN, its prefixes and an End-of-RIB encoded with GoBGP's
// packet package, and counts the prefixes it receives.

// lightClient is one simulated member.
type lightClient struct {
	conn     net.Conn
	addr     netip.Addr
	prefixes []netip.Prefix
	got      atomic.Int64 // IPv4 prefixes announced to it
	eor      atomic.Bool
	mu       sync.Mutex
}

func (c *lightClient) write(m *bgppkt.BGPMessage) error {
	b, err := m.Serialize()
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, err = c.conn.Write(b)
	return err
}

// readMsg reads one BGP message: its type and body.
func readMsg(r io.Reader) (uint8, []byte, error) {
	var h [19]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := int(binary.BigEndian.Uint16(h[16:18]))
	if n < 19 {
		return 0, nil, fmt.Errorf("bad length %d", n)
	}
	body := make([]byte, n-19)
	_, err := io.ReadFull(r, body)
	return h[18], body, err
}

// countNLRI returns the number of IPv4 NLRI in an UPDATE body, and
// whether it is the IPv4 End-of-RIB.
func countNLRI(body []byte) (int, bool) {
	if len(body) < 4 {
		return 0, false
	}
	wl := int(binary.BigEndian.Uint16(body))
	if 2+wl+2 > len(body) {
		return 0, false
	}
	al := int(binary.BigEndian.Uint16(body[2+wl:]))
	nlri := body[2+wl+2+al:]
	if wl == 0 && al == 0 && len(nlri) == 0 {
		return 0, true
	}
	n := 0
	for len(nlri) > 0 {
		l := (int(nlri[0]) + 7) / 8
		nlri = nlri[1+min(l, len(nlri)-1):]
		n++
	}
	return n, false
}

// open establishes the client's session with the reflector at rr.
func (c *lightClient) open(rr netip.AddrPort) error {
	caps := []bgppkt.ParameterCapabilityInterface{
		bgppkt.NewCapMultiProtocol(bgppkt.RF_IPv4_UC),
		bgppkt.NewCapFourOctetASNumber(testASN),
		bgppkt.NewCapGracefulRestart(false, false, 120, []*bgppkt.CapGracefulRestartTuple{bgppkt.NewCapGracefulRestartTuple(bgppkt.RF_IPv4_UC, true)}),
	}
	open, err := bgppkt.NewBGPOpenMessage(testASN, 90, c.addr, []bgppkt.OptionParameterInterface{bgppkt.NewOptionParameterCapability(caps)})
	if err != nil {
		return err
	}
	if err := c.write(open); err != nil {
		return err
	}
	for {
		typ, _, err := readMsg(c.conn)
		if err != nil {
			return fmt.Errorf("%s: %w", c.addr, err)
		}
		switch typ {
		case bgppkt.BGP_MSG_OPEN:
			if err := c.write(bgppkt.NewBGPKeepAliveMessage()); err != nil {
				return err
			}
		case bgppkt.BGP_MSG_KEEPALIVE:
			return nil
		case bgppkt.BGP_MSG_NOTIFICATION:
			return fmt.Errorf("%s: notification", c.addr)
		}
	}
}

// advertise sends the client's prefixes with underlay as next hop, then
// End-of-RIB.
func (c *lightClient) advertise(underlay netip.Addr) error {
	nh, _ := bgppkt.NewPathAttributeNextHop(underlay)
	attrs := []bgppkt.PathAttributeInterface{
		bgppkt.NewPathAttributeOrigin(0),
		bgppkt.NewPathAttributeAsPath(nil),
		nh,
		bgppkt.NewPathAttributeLocalPref(100),
	}
	var nlri []bgppkt.PathNLRI
	for _, p := range c.prefixes {
		n, _ := bgppkt.NewIPAddrPrefix(p)
		nlri = append(nlri, bgppkt.PathNLRI{NLRI: n})
	}
	if err := c.write(bgppkt.NewBGPUpdateMessage(nil, attrs, nlri)); err != nil {
		return err
	}
	return c.write(bgppkt.NewBGPUpdateMessage(nil, nil, nil))
}

// receive counts what the reflector sends until the connection closes.
func (c *lightClient) receive() {
	for {
		typ, body, err := readMsg(c.conn)
		if err != nil {
			return
		}
		if typ == bgppkt.BGP_MSG_UPDATE {
			n, eor := countNLRI(body)
			c.got.Add(int64(n))
			if eor {
				c.eor.Store(true)
			}
		}
	}
}

// clientAddr is client i's control address; benchPrefixes its 4 prefixes
// (four /26 of 10.x.y.0/24), and benchRule the policy rule that admits
// them for its identity only.
func clientAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{172, 16 + byte(i/62500), byte(i / 250 % 250), byte(i%250 + 1)})
}

func benchPrefixes(i int) []netip.Prefix {
	base := [4]byte{10, byte(i / 256), byte(i % 256), 0}
	var out []netip.Prefix
	for k := range 4 {
		base[3] = byte(k * 64)
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(base), 26))
	}
	return out
}

func benchRule(i int) policy.Rule {
	p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i / 256), byte(i % 256), 0}), 24)
	return policy.Rule{Name: fmt.Sprintf("m%d", i), Identity: fmt.Sprintf("m%d.example.net", i), Prefixes: []policy.Range{{Prefix: p, Min: 24, Max: 26}}}
}

// BenchmarkReflectorConvergence measures, for N members advertising 4
// prefixes each to a reflector that has just started (a controller
// restart, or the first start), the time from the moment they all
// advertise until every member has every other member's prefixes; and
// then the time for one more member's prefixes to reach all N.
// Run with -benchtime=1x.
func BenchmarkReflectorConvergence(b *testing.B) {
	for _, n := range []int{100, 300, 1000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			for range b.N {
				benchConverge(b, n)
			}
		})
	}
}

func benchConverge(b *testing.B, n int) {
	testenv.NeedRoot(b)
	rrNS := nettest.NewNS(b, "bgprr")
	farm := nettest.NewNS(b, "bgpfarm")
	nettest.Veth(b, rrNS, "farm", farm, "rr")
	nettest.AddrAdd(b, rrNS, "farm", "172.31.255.254/12")
	var batch strings.Builder
	for i := range n + 1 {
		fmt.Fprintf(&batch, "addr add %s/12 dev rr\n", clientAddr(i))
	}
	cmd := farm.Command("ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(batch.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("ip -batch: %v: %s", err, out)
	}
	rules := make([]policy.Rule, n+1)
	for i := range rules {
		rules[i] = benchRule(i)
	}
	// The clients connect one after the other and advertise together
	// once all are up, so the deferral must outlast the connecting:
	// otherwise the first members get a partial table when theirs
	// expires, and the whole one again at the end.
	refl := startSpeaker(b, rrNS, "reflector", helperConfig{Role: "reflector", ASN: testASN, Policy: rules, RouterID: addr("172.31.255.254"), Quiet: true, DeferralTime: 10 * time.Minute})
	add := func(i int) {
		t0 := time.Now()
		defer func() {
			if d := time.Since(t0); d > time.Second {
				b.Logf("AddMember %d took %v", i, d)
			}
		}()
		refl.call(command{Op: "add", Member: MemberInfo{Addr: clientAddr(i), Local: addr("172.31.255.254"), Identity: fmt.Sprintf("m%d.example.net", i)}})
	}
	// A member added but not connected would hold the reflector's
	// selection deferral for deferral_time: add the last one when it
	// joins.
	for i := range n {
		add(i)
	}
	rr := netip.AddrPortFrom(addr("172.31.255.254"), DefaultPort)
	clients := make([]*lightClient, n+1)
	dial := func(i int) {
		c := &lightClient{addr: clientAddr(i), prefixes: benchPrefixes(i)}
		var err error
		// A session can be refused while GoBGP has not yet moved the
		// new neighbour out of Idle: retry, as a member's speaker does.
		for try := 0; try < 5; try++ {
			if try > 0 {
				c.conn.Close()
				time.Sleep(time.Second)
			}
			err = farm.Do(func() error {
				d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(c.addr, 0)), Timeout: 10 * time.Second}
				var err error
				c.conn, err = d.Dial("tcp", rr.String())
				return err
			})
			if err == nil {
				if err = c.open(rr); err == nil {
					break
				}
			}
		}
		if err != nil {
			b.Fatalf("client %d: %v", i, err)
		}
		b.Cleanup(func() { c.conn.Close() })
		clients[i] = c
	}
	for i := range n {
		dial(i)
	}
	for _, c := range clients[:n] {
		go c.receive()
	}
	b.ResetTimer()
	cpu0 := procCPU(b, refl.cmd.Process.Pid)
	start := time.Now()
	for i, c := range clients[:n] {
		if err := c.advertise(underlay(i%250 + 1)); err != nil {
			b.Fatal(err)
		}
	}
	want := int64(4 * (n - 1))
	waitAll := func(what string, want int64, cs []*lightClient) time.Duration {
		deadline := time.Now().Add(10 * time.Minute)
		for {
			done := 0
			for _, c := range cs {
				if c.got.Load() >= want {
					done++
				}
			}
			if done == len(cs) {
				return time.Since(start)
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: after %v only %d of %d members have all %d prefixes", what, time.Since(start), done, len(cs), want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	conv := waitAll("convergence", want, clients[:n])
	b.StopTimer()
	cpu := procCPU(b, refl.cmd.Process.Pid) - cpu0
	b.ReportMetric(conv.Seconds(), "s-converge")
	b.ReportMetric(cpu.Seconds(), "reflector-cpu-s")
	b.Logf("%d members x 4 prefixes: every member had every other's %d prefixes %v after they advertised; the reflector used %v of CPU", n, want, conv.Round(time.Millisecond), cpu.Round(time.Millisecond))

	// One more member joins: its prefixes reach all n.
	add(n)
	dial(n)
	go clients[n].receive()
	start = time.Now()
	if err := clients[n].advertise(underlay(n%250 + 1)); err != nil {
		b.Fatal(err)
	}
	join := waitAll("join", want+4, clients[:n])
	b.ReportMetric(join.Seconds(), "s-join")
	b.Logf("a joining member's prefixes reached all %d others %v after it advertised", n, join.Round(time.Millisecond))
	if st := refl.reflectorStatus(); st.RejectedTotal != 0 || st.AcceptedTotal != uint64(4*(n+1)) {
		b.Errorf("reflector accepted %d, rejected %d; want %d and 0", st.AcceptedTotal, st.RejectedTotal, 4*(n+1))
	}
}

// procCPU returns the user and system CPU time process pid has used.
func procCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / 100 // USER_HZ
}
