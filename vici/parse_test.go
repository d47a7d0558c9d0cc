package vici

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	govici "github.com/strongswan/govici/vici"
)

// The testdata/*.json files are VICI messages captured from real charon
// 5.9.8 by the tests in charon_test.go (MPSA_VICI_CAPTURE=DIR writes them
// to DIR), in the order-preserving JSON form of MessageJSON. The child-rekey
// and ike-rekey captures come from one run, list-sa-member and the
// *-updown-up ones from another.

func load(t *testing.T, name string) *govici.Message {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	m, err := MessageFromJSON(data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func TestParseSAController(t *testing.T) {
	sa, err := ParseSA(load(t, "list-sa-controller.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := IKESA{
		Conn: "mpsa", UniqueID: 2, Version: 2, State: IKEEstablished,
		LocalHost: netip.MustParseAddr("192.0.2.1"), LocalPort: 4500, LocalID: "controller.mpsa.test",
		RemoteHost: netip.MustParseAddr("192.0.2.12"), RemotePort: 4500, RemoteID: "member2.mpsa.test",
		Initiator: false, InitiatorSPI: 0x954e33273ec62e62, ResponderSPI: 0x871eba15041a48fd,
		NATRemote: true,
		Children: []ChildSA{{
			Name: "mpsa-ctl", UniqueID: 2, ReqID: 2, State: ChildInstalled, Mode: "TUNNEL", Protocol: "ESP",
			Encap: true, SPIIn: 0xfab30bc7, SPIOut: 0x170aaaef,
			LocalTS: pfx("10.98.0.1/32"), RemoteTS: pfx("10.98.2.1/32"),
			LocalTSText: []string{"10.98.0.1/32"}, RemoteTSText: []string{"10.98.2.1/32"}, EncrAlg: "AES_GCM_16",
		}},
	}
	if !reflect.DeepEqual(sa, want) {
		t.Errorf("got  %+v\nwant %+v", sa, want)
	}
	s := Snapshot{Connected: true, IKESAs: []IKESA{sa}}
	c, ok := s.FindControl("mpsa", "mpsa-ctl", netip.MustParseAddr("10.98.2.1"))
	if !ok || c.Local != netip.MustParseAddr("10.98.0.1") || c.Child.SPIIn != 0xfab30bc7 {
		t.Errorf("FindControl: %+v %v", c, ok)
	}
	// The IPv4-mapped form of the address is the same address.
	if _, ok := s.FindControl("mpsa", "mpsa-ctl", netip.MustParseAddr("::ffff:10.98.2.1")); !ok {
		t.Error("FindControl does not unmap IPv4-mapped addresses")
	}
	for _, miss := range []struct{ conn, child, addr string }{
		{"other", "mpsa-ctl", "10.98.2.1"},
		{"mpsa", "other", "10.98.2.1"},
		{"mpsa", "mpsa-ctl", "10.98.1.1"},
		{"mpsa", "mpsa-ctl", "10.98.0.1"}, // the local end is not a remote
	} {
		if c, ok := s.FindControl(miss.conn, miss.child, netip.MustParseAddr(miss.addr)); ok {
			t.Errorf("FindControl(%v) = %+v, want none", miss, c)
		}
	}
	if !sa.MatchSPIs(0x954e33273ec62e62, 0x871eba15041a48fd) || sa.MatchSPIs(0x871eba15041a48fd, 0x954e33273ec62e62) {
		t.Error("MatchSPIs")
	}
}

func TestParseSAMemberMatchesController(t *testing.T) {
	// list-sa-member.json and ike-updown-up.json / child-updown-up.json
	// are the two ends of the same IKE SA.
	mem, err := ParseSA(load(t, "list-sa-member.json"))
	if err != nil {
		t.Fatal(err)
	}
	up, err := ParseEvent(EventChildUpdown, load(t, "child-updown-up.json"))
	if err != nil {
		t.Fatal(err)
	}
	ctl := up.IKE
	if !mem.Initiator || ctl.Initiator {
		t.Errorf("initiator flags: member %v controller %v", mem.Initiator, ctl.Initiator)
	}
	if mem.InitiatorSPI != 0x0033f3259efffa4c || !ctl.MatchSPIs(mem.InitiatorSPI, mem.ResponderSPI) {
		t.Errorf("IKE SPIs member %016x/%016x controller %016x/%016x", mem.InitiatorSPI, mem.ResponderSPI, ctl.InitiatorSPI, ctl.ResponderSPI)
	}
	mc, cc := mem.Children[0], ctl.Children[0]
	if mc.SPIIn != cc.SPIOut || mc.SPIOut != cc.SPIIn || mc.SPIIn != 0x57e13a4c {
		t.Errorf("child SPIs member %08x/%08x controller %08x/%08x", mc.SPIIn, mc.SPIOut, cc.SPIIn, cc.SPIOut)
	}
	if a, _ := mc.LocalHost(); a != netip.MustParseAddr("10.98.1.1") {
		t.Errorf("member local control address %v", a)
	}
	if a, _ := mc.RemoteHost(); a != netip.MustParseAddr("10.98.0.1") {
		t.Errorf("member remote control address %v", a)
	}
}

func TestParseSAIPv6(t *testing.T) {
	sa, err := ParseSA(load(t, "list-sa-controller-v6.json"))
	if err != nil {
		t.Fatal(err)
	}
	if sa.LocalHost != netip.MustParseAddr("2001:db8::1") || sa.RemoteHost != netip.MustParseAddr("2001:db8::12") {
		t.Errorf("hosts %v %v", sa.LocalHost, sa.RemoteHost)
	}
	if sa.InitiatorSPI != 0x1779506d90008d68 || sa.ResponderSPI != 0x1a30e8da5da094dc {
		t.Errorf("SPIs %016x %016x", sa.InitiatorSPI, sa.ResponderSPI)
	}
	c := sa.Children[0]
	if !slices.Equal(c.LocalTS, pfx("fd98::1/128")) || !slices.Equal(c.RemoteTS, pfx("fd98:2::1/128")) {
		t.Errorf("TS %v === %v", c.LocalTS, c.RemoteTS)
	}
	if _, ok := (Snapshot{IKESAs: []IKESA{sa}}).FindControl("mpsa", "mpsa-ctl", netip.MustParseAddr("fd98:2::1")); !ok {
		t.Error("FindControl over IPv6")
	}
}

func TestParseEvents(t *testing.T) {
	for _, tc := range []struct {
		file, name string
		kind       EventKind
		ike        uint32
		state      IKEState
		children   int
	}{
		{"ike-updown-up.json", EventIKEUpdown, IKEUp, 1, IKEEstablished, 0},
		{"child-updown-up.json", EventChildUpdown, ChildUp, 1, IKEEstablished, 1},
		{"ike-updown-down.json", EventIKEUpdown, IKEDown, 1, IKEDeleting, 0},
		{"child-updown-down.json", EventChildUpdown, ChildDown, 1, IKEDeleting, 1},
		{"ike-rekey-controller.json", EventIKERekey, IKERekey, 3, IKEEstablished, 0},
		{"child-rekey-controller.json", EventChildRekey, ChildRekey, 2, IKEEstablished, 1},
		{"ike-updown-up-v6.json", EventIKEUpdown, IKEUp, 1, IKEEstablished, 0},
		{"child-updown-down-v6.json", EventChildUpdown, ChildDown, 2, IKEDeleting, 1},
	} {
		t.Run(tc.file, func(t *testing.T) {
			ev, err := ParseEvent(tc.name, load(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if ev.Kind != tc.kind || ev.IKE.UniqueID != tc.ike || ev.IKE.State != tc.state || len(ev.IKE.Children) != tc.children {
				t.Errorf("got %v IKE %d %s with %d children, want %v IKE %d %s with %d",
					ev.Kind, ev.IKE.UniqueID, ev.IKE.State, len(ev.IKE.Children), tc.kind, tc.ike, tc.state, tc.children)
			}
			if ev.IKE.Conn != "mpsa" {
				t.Errorf("conn %q", ev.IKE.Conn)
			}
		})
	}
	ev, err := ParseEvent(EventIKERekey, load(t, "ike-rekey-controller.json"))
	if err != nil {
		t.Fatal(err)
	}
	if ev.OldIKE.UniqueID != 2 || ev.OldIKE.InitiatorSPI != 0x5bb7a263e676f7d5 || ev.IKE.InitiatorSPI != 0xa6a04ae3f161985a {
		t.Errorf("ike-rekey old %d %016x new %016x", ev.OldIKE.UniqueID, ev.OldIKE.InitiatorSPI, ev.IKE.InitiatorSPI)
	}
	ev, err = ParseEvent(EventChildRekey, load(t, "child-rekey-controller.json"))
	if err != nil {
		t.Fatal(err)
	}
	if ev.OldChild.UniqueID != 2 || ev.OldChild.State != ChildRekeyed || ev.IKE.Children[0].UniqueID != 3 ||
		ev.IKE.Children[0].State != ChildInstalled || ev.IKE.Children[0].SPIIn != 0xd267405f {
		t.Errorf("child-rekey old %+v new %+v", ev.OldChild, ev.IKE.Children[0])
	}
	// An ike-updown message read as the wrong event type is rejected.
	if _, err := ParseEvent(EventChildUpdown, load(t, "ike-updown-up.json")); err == nil {
		t.Error("ike-updown message accepted as child-updown")
	}
	if _, err := ParseEvent("log", load(t, "ike-updown-up.json")); err == nil {
		t.Error("unknown event type accepted")
	}
}

// TestApplyEvents replays the captured events over a captured listing the
// way the watcher does.
func TestApplyEvents(t *testing.T) {
	st := state{}
	up := func(name, file string) Event {
		ev, err := ParseEvent(name, load(t, file))
		if err != nil {
			t.Fatal(err)
		}
		return ev
	}
	st.apply(up(EventIKEUpdown, "ike-updown-up.json"))
	if len(st) != 1 || len(st[1].Children) != 0 {
		t.Fatalf("after ike up: %+v", st)
	}
	st.apply(up(EventChildUpdown, "child-updown-up.json"))
	if c := st.snapshot().Controls("mpsa", "mpsa-ctl"); len(c) != 1 || c[0].Remote != netip.MustParseAddr("10.98.1.1") {
		t.Fatalf("after child up: %+v", c)
	}
	// A later ike-up (for example a duplicate) keeps the children.
	st.apply(up(EventIKEUpdown, "ike-updown-up.json"))
	if len(st[1].Children) != 1 {
		t.Fatalf("ike up dropped the children: %+v", st[1])
	}
	st.apply(up(EventChildUpdown, "child-updown-down.json"))
	if len(st[1].Children) != 0 || st[1].State != IKEDeleting {
		t.Fatalf("after child down: %+v", st[1])
	}
	st.apply(up(EventIKEUpdown, "ike-updown-down.json"))
	if len(st) != 0 {
		t.Fatalf("after ike down: %+v", st)
	}

	// Rekeys: IKE SA 2 of the listing rekeys its child, then itself.
	sa, err := ParseSA(load(t, "list-sa-controller.json"))
	if err != nil {
		t.Fatal(err)
	}
	st = state{sa.UniqueID: sa}
	// Snapshots share the state's Children slices, so apply must never
	// change a stored one in place.
	before, kidsBefore := st.snapshot(), slices.Clone(sa.Children)
	crk := up(EventChildRekey, "child-rekey-controller.json")
	crk.OldChild.UniqueID = sa.Children[0].UniqueID // captured in another run: same ids
	if !st.apply(crk) {
		t.Fatal("child rekey not applied")
	}
	if !reflect.DeepEqual(before.IKESAs[0].Children, kidsBefore) {
		t.Fatalf("child rekey changed an earlier snapshot: %+v, was %+v", before.IKESAs[0].Children, kidsBefore)
	}
	if kids := st[2].Children; len(kids) != 1 || kids[0].UniqueID != 3 || kids[0].State != ChildInstalled {
		t.Fatalf("after child rekey: %+v", kids)
	}
	if !st.apply(up(EventIKERekey, "ike-rekey-controller.json")) {
		t.Fatal("IKE rekey not applied")
	}
	if _, ok := st[2]; ok || len(st[3].Children) != 1 || st[3].InitiatorSPI != 0xa6a04ae3f161985a {
		t.Fatalf("after IKE rekey: %+v", st)
	}
	// A rekey of an unknown IKE SA asks for a resync.
	if (state{}).apply(up(EventIKERekey, "ike-rekey-controller.json")) {
		t.Error("IKE rekey of an unknown SA applied")
	}
}

func TestParseTS(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []netip.Prefix
	}{
		{"10.98.1.1/32", pfx("10.98.1.1/32")},
		{"10.98.1.1/32[udp/4501]", pfx("10.98.1.1/32")},
		{"10.1.0.0/24[tcp]", pfx("10.1.0.0/24")},
		{"fd98::1/128", pfx("fd98::1/128")},
		{"::ffff:10.0.0.1/128", pfx("10.0.0.1/32")},
		{"0.0.0.0/0", pfx("0.0.0.0/0")},
		{"10.0.0.1..10.0.0.6", pfx("10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32")},
		{"10.0.0.0..10.0.0.255", pfx("10.0.0.0/24")},
		{"0.0.0.0..255.255.255.255", pfx("0.0.0.0/0")},
		{"fd00::..fd00::3", pfx("fd00::/126")},
		{"dynamic", nil},
	} {
		got, err := ParseTS(tc.in)
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("ParseTS(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "10.0.0.1", "10.0.0.9..10.0.0.1", "10.0.0.1..fd00::1", "x/24"} {
		if got, err := ParseTS(bad); err == nil {
			t.Errorf("ParseTS(%q) = %v, want an error", bad, got)
		}
	}
}

func TestParseSAErrors(t *testing.T) {
	base := load(t, "list-sa-controller.json")
	sec := base.Get("mpsa").(*govici.Message)
	for _, tc := range []struct {
		key, val, want string
	}{
		{"initiator-spi", "xyz", "initiator-spi"},
		{"uniqueid", "", "uniqueid"},
		{"local-host", "not-an-address", "local-host"},
		{"state", "", "no state"},
	} {
		m := govici.NewMessage()
		cp, _ := MessageFromJSON(mustJSON(t, sec))
		if tc.val == "" {
			cp.Unset(tc.key)
		} else if err := cp.Set(tc.key, tc.val); err != nil {
			t.Fatal(err)
		}
		if err := m.Set("mpsa", cp); err != nil {
			t.Fatal(err)
		}
		_, err := ParseSA(m)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s=%q: error %v, want one mentioning %q", tc.key, tc.val, err, tc.want)
		}
	}
	if _, err := ParseSA(govici.NewMessage()); err == nil {
		t.Error("empty message accepted")
	}
}

func mustJSON(t *testing.T, m *govici.Message) []byte {
	t.Helper()
	b, err := MessageJSON(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMessageJSONRoundTrip(t *testing.T) {
	for _, f := range []string{"list-sa-controller.json", "child-rekey-controller.json", "ike-updown-down.json"} {
		data, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		m, err := MessageFromJSON(data)
		if err != nil {
			t.Fatal(err)
		}
		again, err := MessageJSON(m)
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(string(again)) != strings.TrimSpace(string(data)) {
			t.Errorf("%s does not round-trip", f)
		}
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100, Max: 1000}.withDefaults()
	var got []int64
	d := b.next(0)
	for range 6 {
		got = append(got, int64(d))
		d = b.next(d)
	}
	if want := []int64{100, 200, 400, 800, 1000, 1000}; !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
}
