package protect_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	govici "github.com/strongswan/govici/vici"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/test/charon"
	"github.com/mpsa/mpsa/vici"
	"github.com/mpsa/mpsa/xfrm/protect"
)

// These tests verify real control children: charon with kernel-libipsec
// in namespaces (test/charon's Lab), read over VICI as mpsad reads them.

// controlChild waits until charon has the INSTALLED child name and
// returns it as VICI reports it, with whether charon loaded kernel-libipsec
// (VICI's stats), read with the project's VICI client as mpsad reads them.
func controlChild(t *testing.T, in *charon.Instance, name string, port uint16) (protect.Child, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vc, err := vici.Dial(ctx, in.SocketPath())
	if err != nil {
		t.Fatalf("VICI: %v", err)
	}
	defer vc.Close()
	ch, err := vc.Charon(ctx)
	if err != nil {
		t.Fatalf("VICI stats: %v", err)
	}
	libipsec := ch.HasPlugin("kernel-libipsec")
	var (
		c     protect.Child
		found bool
	)
	testenv.WaitFor(t, 30*time.Second, "control child "+name+" INSTALLED", func() (bool, string) {
		var seen []string
		msgs, err := vc.ListSAsRaw(ctx)
		if err != nil {
			t.Fatalf("VICI list-sas: %v", err)
		}
		for _, m := range msgs {
			for _, conn := range m.Keys() {
				ike, _ := m.Get(conn).(*govici.Message)
				if ike == nil {
					continue
				}
				children, _ := ike.Get("child-sas").(*govici.Message)
				if children == nil {
					continue
				}
				for _, k := range children.Keys() {
					ch, _ := children.Get(k).(*govici.Message)
					if ch == nil {
						continue
					}
					seen = append(seen, ch.String())
					if str(ch, "name") == name && str(ch, "state") == "INSTALLED" {
						c, found = childFromVICI(t, ch, port), true
					}
				}
			}
		}
		return found, strings.Join(seen, "\n")
	})
	return c, libipsec
}

func str(m *govici.Message, k string) string {
	s, _ := m.Get(k).(string)
	return s
}

// childFromVICI is the mapping from a list-sas child section to a Child:
// reqid in decimal, if-id-* and mark-* in hexadecimal, the control
// addresses from single-host selectors.
func childFromVICI(t *testing.T, m *govici.Message, port uint16) protect.Child {
	t.Helper()
	num := func(k string, base int) uint32 {
		v := str(m, k)
		if v == "" {
			return 0
		}
		n, err := strconv.ParseUint(v, base, 32)
		if err != nil {
			t.Fatalf("VICI %s = %q: %v", k, v, err)
		}
		return uint32(n)
	}
	list := func(k string) []string {
		l, _ := m.Get(k).([]string)
		return l
	}
	host := func(ts []string) netip.Addr {
		if len(ts) == 0 {
			t.Fatalf("no traffic selector in %s", m)
		}
		addr, _, _ := strings.Cut(ts[0], "[")
		p, err := netip.ParsePrefix(addr)
		if err != nil || p.Bits() != p.Addr().BitLen() {
			t.Fatalf("traffic selector %q is not a host address", ts[0])
		}
		return p.Addr()
	}
	c := protect.Child{
		Name: str(m, "name"), ReqID: num("reqid", 10), Protocol: str(m, "protocol"), Mode: str(m, "mode"),
		EncrAlg: str(m, "encr-alg"), IfIDIn: num("if-id-in", 16), IfIDOut: num("if-id-out", 16),
		MarkIn: num("mark-in", 16), MarkOut: num("mark-out", 16),
		LocalTS: list("local-ts"), RemoteTS: list("remote-ts"), Port: port,
	}
	c.Local, c.Remote = host(c.LocalTS), host(c.RemoteTS)
	return c
}

// verifyIn runs Verify in ns.
func verifyIn(t *testing.T, ns *nettest.NS, c protect.Child, libipsec bool) (protect.Proof, error) {
	t.Helper()
	var v *protect.Verifier
	if err := ns.Do(func() (err error) { v, err = protect.New(); return err }); err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	return v.Verify(context.Background(), c, libipsec)
}

// TestRealCharonLibipsec: the control child of real charon with
// kernel-libipsec is proven by charon's TUN on both ends, IPv4 and IPv6
// control addresses; told that charon uses kernel IPsec instead, Verify
// finds no policy and refuses.
func TestRealCharonLibipsec(t *testing.T) {
	for _, six := range []bool{false, true} {
		t.Run(fmt.Sprintf("IPv6=%v", six), func(t *testing.T) {
			lab := charon.NewLab(t, charon.LabOptions{Members: 1, Control6: six})
			ctl, mems := lab.StartCharons(t)
			for _, end := range []struct {
				who string
				in  *charon.Instance
				ns  *nettest.NS
			}{{"controller", ctl, lab.Controller.NS}, {"member", mems[0], lab.Members[0].NS}} {
				c, libipsec := controlChild(t, end.in, lab.Group.ChildName(), 4501)
				if !libipsec {
					t.Fatalf("%s: charon's stats list no kernel-libipsec", end.who)
				}
				t.Logf("%s: %+v", end.who, c)
				p, err := verifyIn(t, end.ns, c, true)
				if err != nil {
					t.Fatalf("%s: Verify: %v", end.who, err)
				}
				if tun := protect.LinkIndex(t, end.ns, "ipsec0"); p.IfIndex != tun || p.SrcPort != 0 {
					t.Fatalf("%s: proof %+v, want charon's TUN ipsec0 (index %d) and any source port", end.who, p, tun)
				}
				t.Logf("%s: %s", end.who, p.How)
				if _, err := verifyIn(t, end.ns, c, false); !errors.Is(err, protect.ErrUnprotected) {
					t.Errorf("%s: as kernel IPsec: %v, want a refusal (charon installed no XFRM policy)", end.who, err)
				} else {
					t.Logf("%s: as kernel IPsec: %v", end.who, err)
				}
			}
		})
	}
}

// TestRealCharonSelectors: what real charon prints for selectors with a
// port ("[udp/4501]") and for a NULL encryption proposal.
func TestRealCharonSelectors(t *testing.T) {
	t.Run("udp/4501", func(t *testing.T) {
		lab := charon.NewLab(t, charon.LabOptions{Members: 1})
		g := lab.Group
		withPort := func(conf string) string {
			for _, a := range []netip.Addr{g.Controller.Control, g.Members[0].Control} {
				conf = strings.ReplaceAll(conf, a.String()+"/32\n", a.String()+"/32[udp/4501]\n")
			}
			return conf
		}
		ctl := charon.Start(t, lab.Controller.NS, charon.Config{SwanctlConf: withPort(g.ControllerConf())})
		mem := charon.Start(t, lab.Members[0].NS, charon.Config{SwanctlConf: withPort(g.MemberConf(0))})
		for _, end := range []struct {
			in *charon.Instance
			ns *nettest.NS
		}{{ctl, lab.Controller.NS}, {mem, lab.Members[0].NS}} {
			c, libipsec := controlChild(t, end.in, g.ChildName(), 4501)
			if !strings.HasSuffix(c.LocalTS[0], "[udp/4501]") || !strings.HasSuffix(c.RemoteTS[0], "[udp/4501]") {
				t.Fatalf("charon reports selectors %v %v", c.LocalTS, c.RemoteTS)
			}
			p, err := verifyIn(t, end.ns, c, libipsec)
			if err != nil {
				t.Fatal(err)
			}
			if p.IfIndex != protect.LinkIndex(t, end.ns, "ipsec0") || p.SrcPort != 4501 {
				t.Fatalf("proof %+v, want ipsec0 and source port 4501", p)
			}
			t.Logf("%s", p.How)
			// Another control port is not covered.
			c.Port = 4502
			if _, err := verifyIn(t, end.ns, c, libipsec); !errors.Is(err, protect.ErrUnprotected) {
				t.Errorf("port 4502: %v, want a refusal", err)
			}
		}
	})
	t.Run("null encryption", func(t *testing.T) {
		lab := charon.NewLab(t, charon.LabOptions{Members: 1})
		g := lab.Group
		withNull := func(conf string) string {
			return strings.Replace(conf, "        local_ts", "        esp_proposals = null-sha256\n        local_ts", 1)
		}
		ctl := charon.Start(t, lab.Controller.NS, charon.Config{SwanctlConf: withNull(g.ControllerConf())})
		charon.Start(t, lab.Members[0].NS, charon.Config{SwanctlConf: withNull(g.MemberConf(0))})
		c, libipsec := controlChild(t, ctl, g.ChildName(), 4501)
		if c.EncrAlg != "NULL" {
			t.Fatalf("charon reports encr-alg %q, want NULL", c.EncrAlg)
		}
		_, err := verifyIn(t, lab.Controller.NS, c, libipsec)
		if !errors.Is(err, protect.ErrUnprotected) || !strings.Contains(err.Error(), "in clear") {
			t.Fatalf("NULL encryption: %v, want a refusal", err)
		}
		t.Logf("refused: %v", err)
	})
}
