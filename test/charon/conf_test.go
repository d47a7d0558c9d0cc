package charon

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/mpsa/mpsa/swanctl"
)

// TestMemberChildAndMPSA reads the rendered files back with mpsad's own
// reader: Group.MemberChild lines land in that member's control child
// only, and the mpsa section sets no control_interface.
func TestMemberChildAndMPSA(t *testing.T) {
	peer := func(i byte) Peer {
		return Peer{ID: "p", Underlay: netip.AddrFrom4([4]byte{192, 0, 2, i}), Control: netip.AddrFrom4([4]byte{10, 98, i, 1})}
	}
	g := Group{PSK: "k", Controller: peer(1), Members: []Peer{peer(11), peer(12)},
		MemberChild: [][]string{nil, {"if_id_in = 42", "policies = no"}}}
	dir := t.TempDir()
	read := func(name, content string) *swanctl.Section {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		root, err := swanctl.ReadFile(p)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, content)
		}
		return root
	}
	child := func(root *swanctl.Section) *swanctl.Section {
		t.Helper()
		c := root.Lookup("connections", g.ConnName(), "children", g.ChildName())
		if c == nil {
			t.Fatal("no control child")
		}
		return c
	}
	if c := child(read("m0.conf", g.MemberConf(0))); c.Key("if_id_in") != nil || c.Key("policies") != nil {
		t.Errorf("member 0 got member 1's child lines: %+v", c.Keys)
	}
	c := child(read("m1.conf", g.MemberConf(1)))
	if k := c.Key("if_id_in"); k == nil || k.Value != "42" {
		t.Errorf("member 1's child: if_id_in %+v", k)
	}
	if k := c.Key("policies"); k == nil || k.Value != "no" {
		t.Errorf("member 1's child: policies %+v", k)
	}
	if c.Key("start_action") == nil {
		t.Errorf("member 1's child lost start_action: %+v", c.Keys)
	}
	m := MPSA{Role: "controller", Dir: dir, StatusSocket: filepath.Join(dir, "s.sock")}
	p := filepath.Join(dir, "ctl.conf")
	if err := os.WriteFile(p, []byte(g.ControllerConf()+g.MPSASection(m)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := swanctl.LoadMPSA(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ControlInterface != "" {
		t.Errorf("control_interface %q, want none: the tests run mpsad's default", cfg.ControlInterface)
	}
}
