package protect

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/nlraw"
)

// These tests read the kernel's state of throw-away namespaces: XFRM
// policies (no ESP needed), routes, TUN and veth links all work on a
// kernel without ESP.

// newVerifier opens a Verifier inside ns.
func newVerifier(t *testing.T, ns *nettest.NS) *Verifier {
	t.Helper()
	var v *Verifier
	if err := ns.Do(func() (err error) {
		v, err = New()
		return err
	}); err != nil {
		t.Fatalf("New in %s: %v", ns.Name, err)
	}
	t.Cleanup(func() {
		if err := v.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return v
}

// xfrmPolicy adds a policy with `ip xfrm policy add`, an encoder
// independent of this package's. tmpl is the rest of the command line
// after the template's addresses ("proto esp reqid 3 mode tunnel").
func xfrmPolicy(t *testing.T, ns *nettest.NS, sel, dir, tmpl string, extra ...string) {
	t.Helper()
	args := append([]string{"xfrm", "policy", "add"}, strings.Fields(sel)...)
	args = append(args, "dir", dir)
	args = append(args, extra...)
	if tmpl != "" {
		args = append(args, "tmpl")
		args = append(args, strings.Fields(tmpl)...)
	}
	ns.Run(t, "ip", args...)
}

// policyPair adds charon's outbound and inbound (and forward) policies
// between the selectors l and r (ip xfrm selector syntax without
// addresses in lports/rports: "proto udp sport 4501") with an ESP template
// of reqid in tunnel mode between the underlay addresses 192.0.2.1 and
// 192.0.2.11.
func policyPair(t *testing.T, ns *nettest.NS, l, r, proto string, lport, rport string, reqid int, extra ...string) {
	t.Helper()
	sel := func(src, dst, sport, dport string) string {
		s := "src " + src + " dst " + dst
		if proto != "" {
			s += " proto " + proto
		}
		if sport != "" {
			s += " sport " + sport
		}
		if dport != "" {
			s += " dport " + dport
		}
		return s
	}
	out := fmt.Sprintf("src 192.0.2.1 dst 192.0.2.11 proto esp reqid %d mode tunnel", reqid)
	in := fmt.Sprintf("src 192.0.2.11 dst 192.0.2.1 proto esp reqid %d mode tunnel", reqid)
	if strings.Contains(l, ":") {
		out = fmt.Sprintf("src 2001:db8::1 dst 2001:db8::11 proto esp reqid %d mode tunnel", reqid)
		in = fmt.Sprintf("src 2001:db8::11 dst 2001:db8::1 proto esp reqid %d mode tunnel", reqid)
	}
	xfrmPolicy(t, ns, sel(l, r, lport, rport), "out", out, extra...)
	xfrmPolicy(t, ns, sel(r, l, rport, lport), "in", in, extra...)
	xfrmPolicy(t, ns, sel(r, l, rport, lport), "fwd", in, extra...)
}

// ctlChild is a control child between 10.98.0.1 and 10.98.1.1 (reqid 3).
func ctlChild() Child {
	return Child{
		Name: "mpsa-ctl", ReqID: 3, Protocol: "ESP", Mode: "TUNNEL", EncrAlg: "AES_GCM_16",
		Local: netip.MustParseAddr("10.98.0.1"), Remote: netip.MustParseAddr("10.98.1.1"), Port: 4501,
		LocalTS: []string{"10.98.0.1/32"}, RemoteTS: []string{"10.98.1.1/32"},
	}
}

func ctlChild6() Child {
	c := ctlChild()
	c.Local, c.Remote = netip.MustParseAddr("fd98::1"), netip.MustParseAddr("fd00:2::1")
	c.LocalTS, c.RemoteTS = []string{"fd98::1/128"}, []string{"fd00:2::/64"}
	return c
}

// wantProof runs Verify and checks the proof's interface and source port.
func wantProof(t *testing.T, v *Verifier, c Child, libipsec bool, ifindex int, srcPort uint16) Proof {
	t.Helper()
	p, err := v.Verify(context.Background(), c, libipsec)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if p.IfIndex != ifindex || p.SrcPort != srcPort || p.How == "" {
		t.Fatalf("Verify: %+v, want interface %d, source port %d and a description", p, ifindex, srcPort)
	}
	t.Logf("proof: %s", p.How)
	return p
}

// wantRefusal runs Verify and checks that it refuses with an
// ErrUnprotected that says each of the words.
func wantRefusal(t *testing.T, v *Verifier, c Child, libipsec bool, words ...string) {
	t.Helper()
	p, err := v.Verify(context.Background(), c, libipsec)
	if err == nil {
		t.Fatalf("Verify accepted: %+v", p)
	}
	if !errors.Is(err, ErrUnprotected) {
		t.Fatalf("Verify: %v, not an ErrUnprotected", err)
	}
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
	t.Logf("refused: %v", err)
}

func TestKernelPolicies(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, ns *nettest.NS)
		child func(c *Child)
		// want: "" for a proof from source port srcPort, else words of the
		// refusal.
		want    []string
		srcPort uint16
	}{
		{name: "pair", setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3)
		}},
		{name: "no policies", setup: func(t *testing.T, ns *nettest.NS) {},
			want: []string{"no outbound XFRM policy src 10.98.0.1/32 dst 10.98.1.1/32 with ESP and reqid 3", "policies = no?", "SK_d in plaintext"}},
		{name: "missing in", setup: func(t *testing.T, ns *nettest.NS) {
			xfrmPolicy(t, ns, "src 10.98.0.1/32 dst 10.98.1.1/32", "out", "src 192.0.2.1 dst 192.0.2.11 proto esp reqid 3 mode tunnel")
		}, want: []string{"no inbound XFRM policy src 10.98.1.1/32 dst 10.98.0.1/32 with ESP and reqid 3", "deliver plaintext to the control port"}},
		{name: "missing out", setup: func(t *testing.T, ns *nettest.NS) {
			xfrmPolicy(t, ns, "src 10.98.1.1/32 dst 10.98.0.1/32", "in", "src 192.0.2.11 dst 192.0.2.1 proto esp reqid 3 mode tunnel")
		}, want: []string{"no outbound XFRM policy src 10.98.0.1/32 dst 10.98.1.1/32"}},
		{name: "optional inbound", setup: func(t *testing.T, ns *nettest.NS) {
			xfrmPolicy(t, ns, "src 10.98.0.1/32 dst 10.98.1.1/32", "out", "src 192.0.2.1 dst 192.0.2.11 proto esp reqid 3 mode tunnel")
			xfrmPolicy(t, ns, "src 10.98.1.1/32 dst 10.98.0.1/32", "in", "src 192.0.2.11 dst 192.0.2.1 proto esp reqid 3 mode tunnel level use")
		}, want: []string{"inbound XFRM policy src 10.98.1.1/32 dst 10.98.0.1/32", "optional (level use)"}},
		{name: "optional outbound transport", child: func(c *Child) { c.Mode = "TRANSPORT" }, setup: func(t *testing.T, ns *nettest.NS) {
			xfrmPolicy(t, ns, "src 10.98.0.1/32 dst 10.98.1.1/32", "out", "proto esp reqid 3 mode transport level use")
		}, want: []string{"outbound XFRM policy", "optional (level use)"}},
		{name: "wrong reqid", setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 4)
		}, want: []string{"reqid 4, not the child's 3", "another CHILD_SA"}},
		{name: "transport policy for a tunnel child", setup: func(t *testing.T, ns *nettest.NS) {
			xfrmPolicy(t, ns, "src 10.98.0.1/32 dst 10.98.1.1/32", "out", "proto esp reqid 3 mode transport")
		}, want: []string{"transport mode, but the child is in tunnel mode"}},
		{name: "transport", child: func(c *Child) { c.Mode = "TRANSPORT" }, setup: func(t *testing.T, ns *nettest.NS) {
			xfrmPolicy(t, ns, "src 10.98.0.1/32 dst 10.98.1.1/32", "out", "proto esp reqid 3 mode transport")
			xfrmPolicy(t, ns, "src 10.98.1.1/32 dst 10.98.0.1/32", "in", "proto esp reqid 3 mode transport")
		}},
		{name: "ipcomp", setup: func(t *testing.T, ns *nettest.NS) {
			// charon's order: IPComp in the child's mode, then ESP in
			// transport mode; IPComp optional inbound.
			xfrmPolicy(t, ns, "src 10.98.0.1/32 dst 10.98.1.1/32", "out",
				"src 192.0.2.1 dst 192.0.2.11 proto comp reqid 3 mode tunnel tmpl proto esp reqid 3 mode transport")
			xfrmPolicy(t, ns, "src 10.98.1.1/32 dst 10.98.0.1/32", "in",
				"src 192.0.2.11 dst 192.0.2.1 proto comp reqid 3 mode tunnel level use tmpl proto esp reqid 3 mode transport")
		}},
		{name: "AH template", setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3)
			ns.Run(t, "ip", "xfrm", "policy", "update", "src", "10.98.1.1/32", "dst", "10.98.0.1/32", "dir", "in",
				"tmpl", "src", "192.0.2.11", "dst", "192.0.2.1", "proto", "ah", "reqid", "3", "mode", "tunnel")
		}, want: []string{"inbound XFRM policy", "no ESP template (templates: AH reqid 3 tunnel)"}},
		{name: "block", setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3)
			ns.Run(t, "ip", "xfrm", "policy", "update", "src", "10.98.1.1/32", "dst", "10.98.0.1/32", "dir", "in", "action", "block")
		}, want: []string{"inbound XFRM policy", "blocks"}},
		{name: "marked policies", setup: func(t *testing.T, ns *nettest.NS) {
			// VICI would report the marks; even without them, the
			// lookup of the unmarked policy finds nothing.
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3, "mark", "42")
		}, want: []string{"no outbound XFRM policy"}},
		{name: "ports", child: func(c *Child) {
			c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[udp/4501]"}, []string{"10.98.1.1/32[udp/4501]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "udp", "4501", "4501", 3)
		}, srcPort: 4501},
		{name: "local port only", child: func(c *Child) {
			c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[udp/4501]"}, []string{"10.98.1.1/32[udp]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "udp", "4501", "", 3)
		}},
		{name: "ports but policies without", child: func(c *Child) {
			c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[udp/4501]"}, []string{"10.98.1.1/32[udp/4501]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3)
		}, want: []string{"no outbound XFRM policy src 10.98.0.1/32 dst 10.98.1.1/32 proto udp sport 4501 dport 4501"}},
		{name: "named port", child: func(c *Child) {
			c.Port = 53
			c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[udp/domain]"}, []string{"10.98.1.1/32[udp/domain]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "udp", "53", "53", 3)
		}, srcPort: 53},
		{name: "tcp/bgp only", child: func(c *Child) {
			c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[tcp/bgp]"}, []string{"10.98.1.1/32[tcp/bgp]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "tcp", "179", "179", 3)
		}, want: []string{"no pair of its traffic selectors", "covers UDP port 4501 between 10.98.0.1 and 10.98.1.1"}},
		{name: "tcp/bgp beside udp", child: func(c *Child) {
			c.LocalTS = []string{"10.98.0.1/32[tcp/bgp]", "10.98.0.1/32[udp/4501]"}
			c.RemoteTS = []string{"10.98.1.1/32[tcp/bgp]", "10.98.1.1/32[udp/4501]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "tcp", "179", "179", 3)
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "udp", "4501", "4501", 3)
		}, srcPort: 4501},
		// BGP: TCP from any port of the member (local here) to port
		// 179 of the controller, and the controller's side of it.
		{name: "bgp over full-host selectors", child: func(c *Child) {
			c.Flow = Flow{Proto: unix.IPPROTO_TCP, RemotePort: 179}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3)
		}},
		{name: "bgp over tcp selectors", child: func(c *Child) {
			c.Flow = Flow{Proto: unix.IPPROTO_TCP, RemotePort: 179}
			c.LocalTS = []string{"10.98.0.1/32[tcp]", "10.98.0.1/32[udp/4501]"}
			c.RemoteTS = []string{"10.98.1.1/32[tcp/bgp]", "10.98.1.1/32[udp/4501]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "tcp", "", "179", 3)
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "udp", "4501", "4501", 3)
		}, srcPort: 179},
		{name: "bgp on the controller's side", child: func(c *Child) {
			c.Flow = Flow{Proto: unix.IPPROTO_TCP, LocalPort: 179}
			c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[tcp/bgp]"}, []string{"10.98.1.1/32[tcp]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "tcp", "179", "", 3)
		}},
		{name: "bgp not covered by udp selectors", child: func(c *Child) {
			c.Flow = Flow{Proto: unix.IPPROTO_TCP, RemotePort: 179}
			c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[udp/4501]"}, []string{"10.98.1.1/32[udp/4501]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "udp", "4501", "4501", 3)
		}, want: []string{"covers TCP from any port of the local control address to port 179 of the remote one",
			"or add 10.98.0.1/32[tcp] to local_ts and 10.98.1.1/32[tcp/179] to remote_ts"}},
		{name: "bgp with the member's port pinned", child: func(c *Child) {
			// The member connects from an ephemeral port: a selector
			// naming one port does not cover it.
			c.Flow = Flow{Proto: unix.IPPROTO_TCP, RemotePort: 179}
			c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[tcp/bgp]"}, []string{"10.98.1.1/32[tcp/bgp]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "tcp", "179", "179", 3)
		}, want: []string{"no pair of its traffic selectors"}},
		{name: "bgp without its policy", child: func(c *Child) {
			c.Flow = Flow{Proto: unix.IPPROTO_TCP, RemotePort: 179}
			c.LocalTS = []string{"10.98.0.1/32[tcp]", "10.98.0.1/32[udp/4501]"}
			c.RemoteTS = []string{"10.98.1.1/32[tcp/bgp]", "10.98.1.1/32[udp/4501]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "udp", "4501", "4501", 3)
		}, want: []string{"no outbound XFRM policy src 10.98.0.1/32 dst 10.98.1.1/32 proto tcp dport 179"}},
		{name: "other port", child: func(c *Child) {
			c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[udp/4502]"}, []string{"10.98.1.1/32[udp/4502]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "udp", "4502", "4502", 3)
		}, want: []string{"covers UDP port 4501"}},
		{name: "port 0 wants every port", child: func(c *Child) {
			c.Port = 0
			c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[udp/4501]"}, []string{"10.98.1.1/32[udp/4501]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "udp", "4501", "4501", 3)
		}, want: []string{"covers every UDP port"}},
		{name: "selectors without the control addresses", child: func(c *Child) {
			c.LocalTS, c.RemoteTS = []string{"10.1.0.0/24"}, []string{"10.2.0.0/24"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.1.0.0/24", "10.2.0.0/24", "", "", "", 3)
		}, want: []string{"no pair of its traffic selectors (local 10.1.0.0/24, remote 10.2.0.0/24)", "local_ts = 10.98.0.1/32 and remote_ts = 10.98.1.1/32"}},
		{name: "subnets", child: func(c *Child) {
			c.LocalTS, c.RemoteTS = []string{"10.98.0.0/24"}, []string{"10.98.0.0/16"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.0/24", "10.98.0.0/16", "", "", "", 3)
		}},
		{name: "range", child: func(c *Child) {
			c.RemoteTS = []string{"10.98.1.0..10.98.1.5"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.0/29", "", "", "", 3)
		}},
		{name: "two pairs, one missing", child: func(c *Child) {
			c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32", "10.98.0.0/24"}, []string{"10.98.1.1/32"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3)
		}, want: []string{"no outbound XFRM policy src 10.98.0.0/24 dst 10.98.1.1/32"}},
		{name: "IPv6", child: func(c *Child) { *c = ctlChild6() }, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "fd98::1/128", "fd00:2::/64", "", "", "", 3)
		}},
		{name: "IPv6 missing in", child: func(c *Child) { *c = ctlChild6() }, setup: func(t *testing.T, ns *nettest.NS) {
			xfrmPolicy(t, ns, "src fd98::1/128 dst fd00:2::/64", "out", "src 2001:db8::1 dst 2001:db8::11 proto esp reqid 3 mode tunnel")
			// An IPv4 policy whose address bytes equal the IPv6 one's
			// leading bytes must not be taken for it.
			xfrmPolicy(t, ns, "src 253.0.0.2/32 dst 253.152.0.0/32", "in", "src 192.0.2.11 dst 192.0.2.1 proto esp reqid 3 mode tunnel")
		}, want: []string{"no inbound XFRM policy src fd00:2::/64 dst fd98::1/128"}},
		{name: "IPv6 ports", child: func(c *Child) {
			*c = ctlChild6()
			c.LocalTS, c.RemoteTS = []string{"fd98::1/128[udp/4501]"}, []string{"fd00:2::/64[udp/4501]"}
		}, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "fd98::1/128", "fd00:2::/64", "udp", "4501", "4501", 3)
		}, srcPort: 4501},
		{name: "AH child", child: func(c *Child) { c.Protocol, c.EncrAlg = "AH", "" }, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3)
		}, want: []string{"uses AH", "SK_d and the nonce", "in clear", "esp_proposals"}},
		{name: "NULL child", child: func(c *Child) { c.EncrAlg = "NULL" }, setup: func(t *testing.T, ns *nettest.NS) {
			policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3)
		}, want: []string{"ESP with encryption NULL", "in clear", "remove null"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := nettest.NewNS(t, "prot")
			tc.setup(t, ns)
			v := newVerifier(t, ns)
			c := ctlChild()
			if tc.child != nil {
				tc.child(&c)
			}
			if tc.want == nil {
				wantProof(t, v, c, false, 0, tc.srcPort)
			} else {
				wantRefusal(t, v, c, false, tc.want...)
			}
		})
	}
}

// TestPortRangePolicy: charon installs a port range as a value and mask,
// which `ip xfrm` cannot write; the policy is added here with this
// package's encoder.
func TestPortRangePolicy(t *testing.T) {
	ns := nettest.NewNS(t, "prot")
	v := newVerifier(t, ns)
	c := ctlChild()
	c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[udp/4500-4503]"}, []string{"10.98.1.1/32[udp/4500-4503]"}
	out := selector{src: netip.MustParsePrefix("10.98.0.1/32"), dst: netip.MustParsePrefix("10.98.1.1/32"), proto: unix.IPPROTO_UDP,
		sport: 4500, sportMask: 0xfffc, dport: 4500, dportMask: 0xfffc}
	wantRefusal(t, v, c, false, "no outbound XFRM policy src 10.98.0.1/32 dst 10.98.1.1/32 proto udp sport 4500/0xfffc dport 4500/0xfffc")
	addPolicy(t, ns, out, dirOut, 3)
	addPolicy(t, ns, out.mirror(), dirIn, 3)
	wantProof(t, v, c, false, 0, 4501)
	// The policy as `ip xfrm` shows it.
	if got := ns.Run(t, "ip", "xfrm", "policy", "list", "dir", "out"); !strings.Contains(got, "sport 4500 dport 4500") {
		t.Errorf("ip xfrm policy shows:\n%s", got)
	}
}

// addPolicy adds a tunnel-mode ESP policy of reqid with selector sel.
func addPolicy(t *testing.T, ns *nettest.NS, sel selector, dir uint8, reqid uint32) {
	t.Helper()
	body := make([]byte, sizeofPolicyInfo)
	copy(body, sel.encode())
	lft := body[sizeofSelector:]
	for i := range 4 { // soft and hard byte and packet limits: infinite
		binary.NativeEndian.PutUint64(lft[i*8:], ^uint64(0))
	}
	body[160] = dir
	tmpl := make([]byte, sizeofTmpl)
	copy(tmpl[0:4], []byte{192, 0, 2, 11})
	tmpl[20] = unix.IPPROTO_ESP
	binary.NativeEndian.PutUint16(tmpl[24:26], unix.AF_INET)
	copy(tmpl[28:32], []byte{192, 0, 2, 1})
	binary.NativeEndian.PutUint32(tmpl[44:48], reqid)
	tmpl[48] = modeTunnel
	for i := 52; i < 64; i++ {
		tmpl[i] = 0xff
	}
	body = nlraw.AppendAttr(body, nl.XFRMA_TMPL, tmpl)
	err := ns.Do(func() error {
		s, err := openNetlink(unix.NETLINK_XFRM)
		if err != nil {
			return err
		}
		defer s.close()
		return s.do(context.Background(), nl.XFRM_MSG_NEWPOLICY, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK, body,
			func(uint16, []byte) error { return nil })
	})
	if err != nil {
		t.Fatalf("add policy %s: %v", sel, err)
	}
}

// TestRequestsPerVerify: a verification costs a fixed number of netlink
// requests, whatever else is in the kernel.
func TestRequestsPerVerify(t *testing.T) {
	ns := nettest.NewNS(t, "prot")
	policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3)
	var batch strings.Builder
	for i := range 500 {
		fmt.Fprintf(&batch, "xfrm policy add src 10.98.0.1/32 dst 10.99.%d.%d/32 dir out tmpl src 192.0.2.1 dst 192.0.2.%d proto esp reqid %d mode tunnel\n",
			i/250, i%250, 20+i%200, 100+i)
	}
	ipBatch(t, ns, batch.String())
	v := newVerifier(t, ns)
	before := v.requests()
	wantProof(t, v, ctlChild(), false, 0, 0)
	if n := v.requests() - before; n != 2 {
		t.Errorf("Verify sent %d netlink requests, want 2 (the outbound and the inbound policy)", n)
	}
}

// ipBatch runs `ip -batch -` in ns with the commands.
func ipBatch(t testing.TB, ns *nettest.NS, cmds string) {
	t.Helper()
	cmd := ns.Command("ip", "-batch", "-")
	cmd.Stdin = strings.NewReader(cmds)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ip -batch in %s: %v: %s", ns.Name, err, out)
	}
}

// libipsecNS is a namespace set up as charon's kernel-libipsec does it:
// control address on lo, the TUN ipsec0, the remote control address routed
// into it in table 220 and the rule for table 220; eth0 is a veth with a
// default route, the way plaintext would leave.
func libipsecNS(t *testing.T, c Child, intoTUN bool) (*nettest.NS, int) {
	t.Helper()
	ns := nettest.NewNS(t, "plib")
	bits := c.Local.BitLen()
	nettest.AddrAdd(t, ns, "lo", netip.PrefixFrom(c.Local, bits).String())
	ns.Run(t, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
	ns.Run(t, "ip", "link", "set", "eth0", "up")
	ns.Run(t, "ip", "link", "set", "eth0p", "up")
	fam := "-4"
	if c.Local.Is4() {
		nettest.AddrAdd(t, ns, "eth0", "192.0.2.1/24")
		ns.Run(t, "ip", "route", "add", "default", "via", "192.0.2.254", "dev", "eth0")
	} else {
		fam = "-6"
		nettest.AddrAdd(t, ns, "eth0", "2001:db8::1/64")
		ns.Run(t, "ip", "-6", "route", "add", "default", "via", "2001:db8::fe", "dev", "eth0")
	}
	ns.Run(t, "ip", "tuntap", "add", "ipsec0", "mode", "tun")
	ns.Run(t, "ip", "link", "set", "ipsec0", "up")
	if intoTUN {
		ns.Run(t, "ip", fam, "rule", "add", "table", "220", "priority", "220")
		ns.Run(t, "ip", fam, "route", "add", netip.PrefixFrom(c.Remote, bits).String(), "dev", "ipsec0", "src", c.Local.String(), "table", "220")
	}
	return ns, linkIndex(t, ns, "ipsec0")
}

func TestLibipsec(t *testing.T) {
	for _, six := range []bool{false, true} {
		c := ctlChild()
		if six {
			c = ctlChild6()
		}
		t.Run(fmt.Sprintf("IPv6=%v", six), func(t *testing.T) {
			t.Run("route into the TUN", func(t *testing.T) {
				ns, tun := libipsecNS(t, c, true)
				v := newVerifier(t, ns)
				before := v.requests()
				p := wantProof(t, v, c, true, tun, 0)
				if !strings.Contains(p.How, "TUN ipsec0") {
					t.Errorf("proof %q does not name ipsec0", p.How)
				}
				if n := v.requests() - before; n != 2 {
					t.Errorf("Verify sent %d netlink requests, want 2 (route and link)", n)
				}
				// Without kernel-libipsec the same namespace proves
				// nothing: there are no XFRM policies.
				wantRefusal(t, v, c, false, "no outbound XFRM policy")
				// AH or NULL are refused before any route.
				nc := c
				nc.EncrAlg = "NULL"
				wantRefusal(t, v, nc, true, "ESP with encryption NULL")
			})
			t.Run("route via eth0", func(t *testing.T) {
				ns, _ := libipsecNS(t, c, false)
				v := newVerifier(t, ns)
				wantRefusal(t, v, c, true, "goes out eth0 (a veth device), not into charon's TUN device", "table 220")
			})
			t.Run("no route", func(t *testing.T) {
				ns, _ := libipsecNS(t, c, false)
				if c.Local.Is4() {
					ns.Run(t, "ip", "route", "del", "default")
				} else {
					ns.Run(t, "ip", "-6", "route", "del", "default")
				}
				v := newVerifier(t, ns)
				wantRefusal(t, v, c, true, "no route from "+c.Local.String()+" to "+c.Remote.String())
			})
		})
	}
	t.Run("port-specific rule", func(t *testing.T) {
		// A routing rule for the control port alone sends control
		// datagrams elsewhere: the lookup carries the protocol and
		// ports.
		c := ctlChild()
		ns, _ := libipsecNS(t, c, true)
		ns.Run(t, "ip", "rule", "add", "ipproto", "udp", "dport", "4501", "table", "main", "priority", "100")
		v := newVerifier(t, ns)
		wantRefusal(t, v, c, true, "goes out eth0")
		c.Port = 4502
		c.LocalTS, c.RemoteTS = []string{"10.98.0.1/32[udp/4502]"}, []string{"10.98.1.1/32[udp/4502]"}
		wantProof(t, v, c, true, linkIndex(t, ns, "ipsec0"), 4502)
	})
	t.Run("bgp", func(t *testing.T) {
		// BGP's TCP flow is looked up with its protocol and port: a
		// routing rule for TCP to port 179 alone sends it elsewhere
		// while the control exchange still goes into the TUN.
		c := ctlChild()
		ns, tun := libipsecNS(t, c, true)
		v := newVerifier(t, ns)
		bgp := c
		bgp.Flow = Flow{Proto: unix.IPPROTO_TCP, RemotePort: 179}
		p := wantProof(t, v, bgp, true, tun, 0)
		if p.IfName != "ipsec0" || !strings.Contains(p.How, "its packets are accepted only from it") {
			t.Errorf("proof %+v", p)
		}
		ns.Run(t, "ip", "rule", "add", "ipproto", "tcp", "dport", "179", "table", "main", "priority", "100")
		wantRefusal(t, v, bgp, true, "goes out eth0", "its packets would leave in plaintext")
		wantProof(t, v, c, true, tun, 0)
	})
	t.Run("selectors without the control addresses", func(t *testing.T) {
		c := ctlChild()
		ns, _ := libipsecNS(t, c, true)
		v := newVerifier(t, ns)
		c.RemoteTS = []string{"10.98.2.1/32"}
		wantRefusal(t, v, c, true, "no pair of its traffic selectors")
	})
}

// linkIndex is the index of the link name in ns.
func linkIndex(t *testing.T, ns *nettest.NS, name string) int {
	t.Helper()
	var index int
	if err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(name)
		if err == nil {
			index = ifi.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return index
}

// TestRouteBasedWithoutXfrmInterface covers what a kernel without XFRM
// interfaces can show of a route-based child: the policies with the if_id
// are found, and the missing interface is refused. The proof with the
// interface needs a kernel with xfrm_interface (test/vm's guest).
func TestRouteBasedWithoutXfrmInterface(t *testing.T) {
	routeBased := func(in, out uint32) Child {
		c := ctlChild()
		c.IfIDIn, c.IfIDOut = in, out
		return c
	}
	t.Run("policies without the if_id", func(t *testing.T) {
		ns := nettest.NewNS(t, "prb")
		policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3)
		v := newVerifier(t, ns)
		wantRefusal(t, v, routeBased(42, 42), false, "no outbound XFRM policy src 10.98.0.1/32 dst 10.98.1.1/32 if_id 42")
	})
	t.Run("route out of a veth", func(t *testing.T) {
		c := routeBased(42, 42)
		ns, _ := libipsecNS(t, c, false)
		policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3, "if_id", "42")
		v := newVerifier(t, ns)
		wantRefusal(t, v, c, false, "route-based (if_id_out 42)", "goes out eth0 (a veth device)", "SK_d would leave in plaintext")
		// The TUN is no XFRM interface either.
		ns.Run(t, "ip", "rule", "add", "table", "220", "priority", "220")
		ns.Run(t, "ip", "route", "add", "10.98.1.1/32", "dev", "ipsec0", "table", "220")
		wantRefusal(t, v, c, false, "goes out ipsec0 (a tun device)")
	})
	t.Run("no interface for the inbound if_id", func(t *testing.T) {
		ns := nettest.NewNS(t, "prb")
		policyPair(t, ns, "10.98.0.1/32", "10.98.1.1/32", "", "", "", 3, "if_id", "42")
		// Only the inbound side route-based: the outbound policy has no
		// if_id.
		xfrmPolicy(t, ns, "src 10.98.0.1/32 dst 10.98.1.1/32", "out", "src 192.0.2.1 dst 192.0.2.11 proto esp reqid 3 mode tunnel")
		v := newVerifier(t, ns)
		wantRefusal(t, v, routeBased(42, 0), false, "no XFRM interface with if_id 42", "ip link add")
	})
}
