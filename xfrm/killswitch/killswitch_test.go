package killswitch_test

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/xfrm"
	"github.com/mpsa/mpsa/xfrm/groupid"
	"github.com/mpsa/mpsa/xfrm/killswitch"
	"github.com/mpsa/mpsa/xfrm/userspace"
)

// underlayNS is a namespace whose default routes (IPv4 and IPv6) leave
// through veth u0: without a kill switch, traffic to a peer prefix
// follows them in plaintext. lan0 has 10.1.0.1 and fd01::1.
func underlayNS(t *testing.T) *nettest.NS {
	ns := nettest.NewNS(t, "bh")
	ns.Run(t, "ip", "link", "add", "u0", "type", "veth", "peer", "name", "u0p")
	ns.Run(t, "ip", "link", "set", "u0", "up")
	ns.Run(t, "ip", "link", "set", "u0p", "up")
	ns.Run(t, "ip", "addr", "add", "192.0.2.1/24", "dev", "u0")
	ns.Run(t, "ip", "addr", "add", "2001:db8::1/64", "dev", "u0", "nodad")
	ns.Run(t, "ip", "neigh", "add", "192.0.2.254", "lladdr", "02:00:00:00:00:fe", "dev", "u0")
	ns.Run(t, "ip", "neigh", "add", "2001:db8::fe", "lladdr", "02:00:00:00:00:fe", "dev", "u0")
	ns.Run(t, "ip", "route", "add", "default", "via", "192.0.2.254")
	ns.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8::fe")
	nettest.LAN(t, ns, "lan0", "10.1.0.1/24")
	ns.Run(t, "ip", "addr", "add", "fd01::1/64", "dev", "lan0", "nodad")
	return ns
}

// sendErr sends a UDP datagram from src to dst inside ns: nil when it
// leaves, an error (EINVAL, ENETUNREACH) when a blackhole route takes it.
func sendErr(t *testing.T, ns *nettest.NS, src, dst string) error {
	t.Helper()
	var serr error
	if err := ns.Do(func() error {
		c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP(dst), Port: 9})
		if err != nil {
			serr = err
			return nil
		}
		defer c.Close()
		_, serr = c.Write([]byte("probe"))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return serr
}

var probes = [][2]string{{"10.1.0.1", "10.2.0.5"}, {"fd01::1", "fd02::5"}}

func expectBlocked(t *testing.T, ns *nettest.NS, when string, blocked bool) {
	t.Helper()
	for _, p := range probes {
		err := sendErr(t, ns, p[0], p[1])
		if blocked && err == nil {
			t.Errorf("%s: %s -> %s left (in plaintext); want it dropped", when, p[0], p[1])
		}
		if !blocked && err != nil {
			t.Errorf("%s: %s -> %s: %v; want it sent", when, p[0], p[1], err)
		}
	}
}

// TestUserspaceKillSwitch runs the userspace data plane in a namespace:
// while it runs, its TUN routes carry the peer prefixes; after Close (the
// TUN and its routes gone) and after a crash, the blackhole routes drop
// IPv4 and IPv6 traffic to them instead of letting it follow the default
// route; a new backend adopts them; Flush removes them; another group's
// blackhole routes are never touched.
func TestUserspaceKillSwitch(t *testing.T) {
	ns := underlayNS(t)
	ctx := context.Background()
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("fd01::/64")}
	peers := []xfrm.Peer{
		{Prefix: netip.MustParsePrefix("10.2.0.0/24"), Underlay: netip.MustParseAddr("192.0.2.2")},
		{Prefix: netip.MustParsePrefix("fd02::/64"), Underlay: netip.MustParseAddr("192.0.2.2")},
	}
	start := func() *userspace.Backend {
		var b *userspace.Backend
		if err := ns.Do(func() (err error) {
			b, err = userspace.New(ctx, userspace.Config{Group: "east", TUNName: "mpsa-east", Local: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Logger: slog.New(slog.DiscardHandler)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return b
	}
	expectBlocked(t, ns, "no data plane yet (the control)", false)
	// Another group's blackhole route, which east must leave alone.
	ns.Run(t, "ip", "route", "add", "blackhole", "10.99.0.0/24", "proto", "109", "metric", "1836154620")

	b := start()
	if err := b.SetPeers(ctx, local, peers); err != nil {
		t.Fatal(err)
	}
	// Running: the TUN routes win over the blackhole routes (metric);
	// with no outbound SA the data plane drops what it reads, but the
	// send succeeds: the packet went into the TUN.
	expectBlocked(t, ns, "running", false)
	if n := blackholes(t, ns, groupid.Of("east")); n != 2 {
		t.Fatalf("running: %d blackhole routes, want 2", n)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	expectBlocked(t, ns, "after Close", true)

	b = start()
	expectBlocked(t, ns, "restarted, before SetPeers", true)
	if err := b.SetPeers(ctx, local, peers); err != nil {
		t.Fatal(err)
	}
	expectBlocked(t, ns, "restarted", false)
	// Flush removes east's routes only.
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := blackholes(t, ns, groupid.Of("east")); n != 0 {
		t.Errorf("after Flush: %d blackhole routes of east", n)
	}
	expectBlocked(t, ns, "flushed", false)
	if err := sendErr(t, ns, "10.1.0.1", "10.99.0.5"); err == nil {
		t.Error("the other group's blackhole route was removed")
	}
}

// TestUserspaceFlushBeatsSetPeers: a SetPeers that runs while Flush
// removes the kill switch either comes before it (its routes are removed)
// or is refused (the backend is closed); none adds a blackhole route after
// the flush, which would stay until mpsactl flush. Two goroutines keep
// changing the peer table, so that each SetPeers adds routes, while Flush
// runs; repeated, since the gap it closed was short.
func TestUserspaceFlushBeatsSetPeers(t *testing.T) {
	ns := underlayNS(t)
	ctx := context.Background()
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	tables := [][]xfrm.Peer{
		{{Prefix: netip.MustParsePrefix("10.2.0.0/24"), Underlay: netip.MustParseAddr("192.0.2.2")}},
		{{Prefix: netip.MustParsePrefix("10.3.0.0/24"), Underlay: netip.MustParseAddr("192.0.2.3")}},
	}
	for round := range 20 {
		var b *userspace.Backend
		if err := ns.Do(func() (err error) {
			b, err = userspace.New(ctx, userspace.Config{Group: "race", TUNName: "mpsa-race", Local: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Logger: slog.New(slog.DiscardHandler)})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := b.SetPeers(ctx, local, tables[0]); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for g := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := g; b.SetPeers(ctx, local, tables[i%2]) == nil; i++ {
				}
			}()
		}
		runtime.Gosched()
		if err := b.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if n := blackholes(t, ns, groupid.Of("race")); n != 0 {
			t.Fatalf("round %d: %d blackhole routes left after Flush", round, n)
		}
	}
}

// TestUserspaceProtect: a peer prefix that contains a control address
// gets neither a route through the TUN nor a blackhole route once the
// control addresses are protected (either would take the control
// datagrams from the route to the controller); the error names it and the
// other peers keep theirs.
func TestUserspaceProtect(t *testing.T) {
	ns := underlayNS(t)
	ctx := context.Background()
	var b *userspace.Backend
	if err := ns.Do(func() (err error) {
		b, err = userspace.New(ctx, userspace.Config{Group: "ctl", TUNName: "mpsa-ctl", Local: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Logger: slog.New(slog.DiscardHandler)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer b.Flush(ctx)
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	peers := []xfrm.Peer{
		{Prefix: netip.MustParsePrefix("10.2.0.0/24"), Underlay: netip.MustParseAddr("192.0.2.2")},
		{Prefix: netip.MustParsePrefix("10.98.0.0/16"), Underlay: netip.MustParseAddr("192.0.2.3")},
	}
	if err := b.SetPeers(ctx, local, peers); err != nil {
		t.Fatal(err)
	}
	if n := blackholes(t, ns, groupid.Of("ctl")); n != 2 {
		t.Fatalf("before Protect: %d blackhole routes, want 2", n)
	}
	err := b.Protect(ctx, []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.98.0.1")})
	if err == nil || !strings.Contains(err.Error(), "10.98.0.0/16 (via 192.0.2.3) contains 10.98.0.1") {
		t.Errorf("Protect: %v; want the covering prefix named", err)
	}
	if n := blackholes(t, ns, groupid.Of("ctl")); n != 1 {
		t.Errorf("after Protect: %d blackhole routes, want 1", n)
	}
	if err := sendErr(t, ns, "10.1.0.1", "10.98.0.1"); err != nil {
		t.Errorf("control datagram after Protect: %v; want it to follow the default route", err)
	}
}

// TestUserspaceFlushAfterClose: Flush on a backend already closed (by
// Close, or by the end of its context) still removes the group's
// blackhole routes.
func TestUserspaceFlushAfterClose(t *testing.T) {
	ns := underlayNS(t)
	ctx, cancel := context.WithCancel(context.Background())
	var b *userspace.Backend
	if err := ns.Do(func() (err error) {
		b, err = userspace.New(ctx, userspace.Config{Group: "late", TUNName: "mpsa-late", Local: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, Logger: slog.New(slog.DiscardHandler)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetPeers(ctx, []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, []xfrm.Peer{{Prefix: netip.MustParsePrefix("10.2.0.0/24"), Underlay: netip.MustParseAddr("192.0.2.2")}}); err != nil {
		t.Fatal(err)
	}
	cancel() // closes the backend
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n := blackholes(t, ns, groupid.Of("late")); n != 1 {
		t.Fatalf("after Close: %d blackhole routes, want 1", n)
	}
	if err := ns.Do(func() error { return b.Flush(context.Background()) }); err != nil {
		t.Errorf("Flush after Close: %v", err)
	}
	if n := blackholes(t, ns, groupid.Of("late")); n != 0 {
		t.Errorf("after Flush: %d blackhole routes", n)
	}
}

// TestFlushGroupRoutes: FlushGroup finds a group's blackhole routes by
// its name alone, as mpsactl flush does while no mpsad runs.
func TestFlushGroupRoutes(t *testing.T) {
	ns := underlayNS(t)
	var r *killswitch.Routes
	if err := ns.Do(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		if r, err = killswitch.Adopt(h, groupid.Of("mgmt")); err != nil {
			return err
		}
		return r.Sync([]netip.Prefix{netip.MustParsePrefix("10.2.0.0/24"), netip.MustParsePrefix("fd02::/64")})
	}); err != nil {
		t.Fatal(err)
	}
	expectBlocked(t, ns, "installed", true)
	var n int
	if err := ns.Do(func() (err error) {
		n, err = killswitch.FlushGroup(context.Background(), "mgmt")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("FlushGroup removed %d objects, want 2", n)
	}
	expectBlocked(t, ns, "flushed", false)
}

func blackholes(t *testing.T, ns *nettest.NS, id groupid.ID) int {
	t.Helper()
	n := 0
	if err := ns.Do(func() error {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return err
		}
		defer h.Close()
		r, err := killswitch.Adopt(h, id)
		if err != nil {
			return err
		}
		n = r.Len()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}
