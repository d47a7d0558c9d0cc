package bgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mpsa/mpsa/bgp/policy"
	"github.com/mpsa/mpsa/internal/bgptest"
	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
)

// The convergence benchmark runs the real Reflector (a helper process in
// its own namespace, as in the tests) against many light clients
// (internal/bgptest.LightClient) in another namespace. The clients stand
// in for the members' speakers: a thousand GoBGP instances in one process
// would each keep the whole table, and the point is the reflector.

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
	clients := make([]*bgptest.LightClient, n+1)
	cpu0 := procCPU(b, refl.cmd.Process.Pid)
	dial := func(i int) {
		c := &bgptest.LightClient{ASN: testASN, Addr: clientAddr(i), NextHop: underlay(i%250 + 1), Prefixes: benchPrefixes(i),
			Dial: func(ctx context.Context) (conn net.Conn, err error) {
				err = farm.Do(func() error {
					d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(clientAddr(i), 0)), Timeout: 10 * time.Second}
					conn, err = d.DialContext(ctx, "tcp", rr.String())
					return err
				})
				return conn, err
			}}
		up := make(chan struct{})
		c.Start(context.Background(), up)
		b.Cleanup(c.Stop)
		// A session can be refused while GoBGP has not yet moved the
		// new neighbour out of Idle: the client tries again.
		select {
		case <-up:
		case <-time.After(30 * time.Second):
			b.Fatalf("client %d: no session: %s", i, c.LastError())
		}
		clients[i] = c
	}
	for i := range n {
		dial(i)
	}
	// The reflector defers until every member it has sent its
	// End-of-RIB: its work starts with the last client.
	b.ResetTimer()
	start := time.Now()
	want := int64(4 * (n - 1))
	waitAll := func(what string, want int64, cs []*bgptest.LightClient) time.Duration {
		deadline := time.Now().Add(10 * time.Minute)
		for {
			done := 0
			for _, c := range cs {
				if c.Got() >= want {
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
	b.Logf("%d members x 4 prefixes: every member had every other's %d prefixes %v after the last one advertised; the reflector used %v of CPU", n, want, conv.Round(time.Millisecond), cpu.Round(time.Millisecond))

	// One more member joins: its prefixes reach all n.
	add(n)
	start = time.Now()
	dial(n)
	join := waitAll("join", want+4, clients[:n])
	b.ReportMetric(join.Seconds(), "s-join")
	b.Logf("a joining member's prefixes reached all %d others %v after it connected", n, join.Round(time.Millisecond))
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
