//go:build mpsavm

package vm

import (
	"encoding/json"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/mpsa/mpsa/api"
	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/xfrm/groupid"
)

// TestCharonKernelBGP: real charon with the kernel's ESP, real mpsad, and
// the kernel data plane, with no static route anywhere: each member's
// speaker reaches the controller's route reflector through its control
// child (kernel ESP, which mpsad proves protects the BGP session before
// it starts it), advertises its LAN with its underlay as next hop, and
// learns the other's. What it learned becomes the kernel's XFRM policies
// (out: its LAN to the other LAN, ESP to the other's underlay with the
// shared SA's reqid), and traffic between the LANs leaves each underlay
// as ESP with the shared SPI, never in plaintext. The e2e tests cover
// BGP with the userspace data plane; this is the kernel's.
func TestCharonKernelBGP(t *testing.T) {
	l := newDaemonLab(t, "kb", 2)
	l.bgp = true
	start := time.Now()
	l.start(nil)
	m1, m2 := l.mems[0], l.mems[1]
	spi := l.waitSPINot(t, "", m1, m2)
	t.Logf("both members on the controller's SA %s %.1fs after the start", spi, time.Since(start).Seconds())

	for _, c := range [][2]*daemonNode{{m1, m2}, {m2, m1}} {
		self, other := c[0], c[1]
		testenv.WaitFor(t, 60*time.Second, self.name+" to learn "+other.name+"'s LAN by BGP", func() (bool, string) {
			rs, err := l.routes(self)
			if err != nil {
				return false, err.Error()
			}
			for _, r := range rs.Routes {
				if r.Prefix == other.lan.String() && r.Peer == other.peer.Underlay.String() && r.Origin == "bgp" && !r.Stale && r.Ignored == "" {
					return true, ""
				}
			}
			return false, fmt.Sprintf("routes %+v, session %+v", rs.Routes, rs.Session)
		})
		// The learned route is the kernel's policies, field by field
		// where it matters: the selector, ESP in tunnel mode to the
		// peer's underlay, the group's reqid and priority.
		id := groupid.Of(labGroupName)
		testenv.WaitFor(t, 30*time.Second, self.name+"'s out policy to "+other.lan.String(), func() (bool, string) {
			ps, err := self.ns.h.XfrmPolicyList(netlink.FAMILY_V4)
			if err != nil {
				return false, err.Error()
			}
			var seen []string
			for _, p := range ps {
				if p.Dir != netlink.XFRM_DIR_OUT || uint32(p.Priority) != id.Priority() {
					continue
				}
				seen = append(seen, fmt.Sprintf("%s -> %s %d tmpls %d", p.Src, p.Dst, p.Action, len(p.Tmpls)))
				if p.Src.String() != self.lan.String() || p.Dst.String() != other.lan.String() || p.Action != netlink.XFRM_POLICY_ALLOW || len(p.Tmpls) != 1 {
					continue
				}
				tm := p.Tmpls[0]
				if tm.Proto == netlink.XFRM_PROTO_ESP && tm.Mode == netlink.XFRM_MODE_TUNNEL && uint32(tm.Reqid) == id.ReqID() &&
					tm.Dst.Equal(net.IP(other.peer.Underlay.AsSlice())) && tm.Src.Equal(net.IP(self.peer.Underlay.AsSlice())) {
					return true, ""
				}
			}
			return false, fmt.Sprintf("out policies of the group: %v", seen)
		})
	}
	t.Logf("each member learned the other's LAN and has its policy %.1fs after the start", time.Since(start).Seconds())

	// The controller's view: each member's LAN accepted, nothing
	// rejected.
	rs, err := l.routes(l.ctl)
	if err != nil {
		t.Fatal(err)
	}
	if rs.Reflector == nil || len(rs.Reflector.Members) != 2 {
		t.Fatalf("controller's mpsactl routes: %+v", rs)
	}
	for _, rm := range rs.Reflector.Members {
		if len(rm.Accepted) != 1 || len(rm.Rejected) != 0 || rm.Session != "established" {
			t.Errorf("controller: member %s: session %s, accepted %+v, rejected %+v; want its LAN accepted", rm.Identity, rm.Session, rm.Accepted, rm.Rejected)
		}
	}

	sniffers := []*sniffer{m1.ns.sniff(t, "eth0", lanWatchLab), m2.ns.sniff(t, "eth0", lanWatchLab)}
	for _, c := range [][2]*daemonNode{{m1, m2}, {m2, m1}} {
		if n, err := c[0].ns.ping(c[0].lanAddr(), c[1].lanAddr(), 3); err != nil || n != 3 {
			t.Fatalf("ping %s -> %s: %d of 3 answered (%v)", c[0].lanAddr(), c[1].lanAddr(), n, err)
		}
	}
	shared := parseSPI(t, spi)
	for j, m := range []*daemonNode{m1, m2} {
		sn := sniffers[j]
		sn.check(t, m.name, true)
		if sn.espWith(shared) == 0 {
			t.Errorf("%s: no ESP frame with the shared SPI %s left eth0 (by SPI: %s)", m.name, spi, sn.spis())
		}
		t.Logf("%s: ESP frames out of eth0 by SPI: %s", m.name, sn.spis())
	}
}

// routes is `mpsactl routes lab --json` on n.
func (l *daemonLab) routes(n *daemonNode) (api.Routes, error) {
	out, err := l.mpsactl(n, "routes", labGroupName, "--json")
	if err != nil {
		return api.Routes{}, err
	}
	var rs api.Routes
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		return api.Routes{}, fmt.Errorf("mpsactl routes on %s: %w\n%s", n.name, err, out)
	}
	return rs, nil
}
