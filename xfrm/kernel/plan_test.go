package kernel

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/xfrm"
)

func testBackend(underlay ...string) *Backend {
	cfg := Config{ReqID: DefaultReqID, Priority: DefaultPriority}
	for _, u := range underlay {
		cfg.Underlay = append(cfg.Underlay, netip.MustParseAddr(u))
	}
	return &Backend{cfg: cfg}
}

func peer(prefix, underlay string) xfrm.Peer {
	return xfrm.Peer{Prefix: netip.MustParsePrefix(prefix), Underlay: netip.MustParseAddr(underlay)}
}

func TestPlanPoliciesAndStates(t *testing.T) {
	b := testBackend("192.0.2.1", "2001:db8::1")
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("fd00:1::/64")}
	peers := []xfrm.Peer{
		peer("10.2.0.0/24", "192.0.2.2"),
		peer("fd00:2::/64", "192.0.2.2"),   // IPv6 inside IPv4
		peer("10.3.0.0/24", "2001:db8::3"), // IPv4 inside IPv6
	}
	p, err := b.planFor(local, peers, 0x1234)
	if err != nil {
		t.Fatal(err)
	}
	// Three prefix pairs of matching family, three policies each, and a
	// fallback block policy for each of the three peer prefixes.
	if got := len(p.policies); got != 12 {
		t.Fatalf("got %d policies, want 12: %v", got, sortedKeys(p.policies))
	}
	fb, ok := p.policies[policyKey{netlink.XFRM_DIR_OUT, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.3.0.0/24")}]
	if !ok || fb.Action != netlink.XFRM_POLICY_BLOCK || fb.Priority != DefaultPriority+1 || len(fb.Tmpls) != 0 {
		t.Fatalf("fallback block policy for 10.3.0.0/24: %v %+v", ok, fb)
	}
	if !b.ours(fb) {
		t.Error("the backend does not recognise its own fallback policy")
	}
	if got := len(p.out); got != 2 {
		t.Fatalf("got %d outbound states, want 2 (one per peer underlay): %v", got, p.out)
	}
	if src := p.out[outKey{0x1234, netip.MustParseAddr("2001:db8::3")}]; src != netip.MustParseAddr("2001:db8::1") {
		t.Errorf("outbound state to 2001:db8::3 has source %s, want 2001:db8::1", src)
	}
	k := policyKey{netlink.XFRM_DIR_OUT, netip.MustParsePrefix("fd00:1::/64"), netip.MustParsePrefix("fd00:2::/64")}
	out, ok := p.policies[k]
	if !ok {
		t.Fatalf("no out policy %s", k)
	}
	if len(out.Tmpls) != 1 {
		t.Fatalf("out policy has %d templates", len(out.Tmpls))
	}
	tm := out.Tmpls[0]
	if tm.Spi != 0x1234 || tm.Reqid != DefaultReqID || tm.Dst.String() != "192.0.2.2" || tm.Src.String() != "192.0.2.1" || tm.Mode != netlink.XFRM_MODE_TUNNEL {
		t.Errorf("out template %v", tm)
	}
	in, ok := p.policies[policyKey{netlink.XFRM_DIR_IN, netip.MustParsePrefix("10.3.0.0/24"), netip.MustParsePrefix("10.1.0.0/24")}]
	if !ok {
		t.Fatal("no in policy 10.3.0.0/24 -> 10.1.0.0/24")
	}
	if in.Tmpls[0].Spi != 0 || !in.Tmpls[0].Src.IsUnspecified() {
		t.Errorf("in template must accept any SPI from any source: %v", in.Tmpls[0])
	}
	for k, pol := range p.policies {
		if !b.ours(pol) {
			t.Errorf("policy %s not recognized as ours", k)
		}
	}
}

// TestPlanFallbackForEveryFamily: with IPv4 local prefixes only, a peer's
// IPv6 prefix gets no prefix-pair policies but still the fallback block
// policy, so that traffic the member originates to it (from its IPv6
// underlay address, say) is dropped instead of leaving in plaintext.
func TestPlanFallbackForEveryFamily(t *testing.T) {
	b := testBackend("192.0.2.1", "2001:db8::1")
	p, err := b.planFor([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, []xfrm.Peer{peer("10.2.0.0/24", "192.0.2.2"), peer("fd00:2::/64", "192.0.2.2")}, 0x1234)
	if err != nil {
		t.Fatal(err)
	}
	fb, ok := p.policies[policyKey{netlink.XFRM_DIR_OUT, netip.MustParsePrefix("::/0"), netip.MustParsePrefix("fd00:2::/64")}]
	if !ok || fb.Action != netlink.XFRM_POLICY_BLOCK || fb.Priority != DefaultPriority+1 || len(fb.Tmpls) != 0 {
		t.Fatalf("fallback block policy for fd00:2::/64: %v %+v; have %v", ok, fb, sortedKeys(p.policies))
	}
	// 10.2.0.0/24: out, in, fwd and its fallback; fd00:2::/64: the
	// fallback only.
	if len(p.policies) != 5 {
		t.Errorf("%d policies, want 5: %v", len(p.policies), sortedKeys(p.policies))
	}
}

func TestPlanBlocksWithoutOutboundSA(t *testing.T) {
	b := testBackend("192.0.2.1")
	p, err := b.planFor([]netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}, []xfrm.Peer{peer("10.2.0.0/24", "192.0.2.2")}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.out) != 0 {
		t.Errorf("outbound states without an outbound SA: %v", p.out)
	}
	out := p.policies[policyKey{netlink.XFRM_DIR_OUT, netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("10.2.0.0/24")}]
	if out.Action != netlink.XFRM_POLICY_BLOCK || len(out.Tmpls) != 0 {
		t.Errorf("out policy without outbound SA: action %v, %d templates; want block", out.Action, len(out.Tmpls))
	}
	if !b.ours(out) {
		t.Error("block policy not recognized as ours")
	}
}

// TestPeerTableBlocksWhatItCannotServe: a peer whose underlay has no
// local underlay address of its family, and a prefix two peers claim with
// different underlays, are named, not served, and blocked (block policies
// only, no outbound state); the other peers of the table are served as
// usual; an invalid prefix is left out.
func TestPeerTableBlocksWhatItCannotServe(t *testing.T) {
	b := testBackend("192.0.2.1")
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24")}
	peers := []xfrm.Peer{
		peer("10.2.0.0/24", "2001:db8::2"), // no IPv6 underlay
		peer("10.3.0.0/24", "192.0.2.3"),
		peer("10.3.0.0/24", "192.0.2.4"), // claimed twice
		peer("10.4.0.0/24", "192.0.2.4"),
		{Underlay: netip.MustParseAddr("192.0.2.5")}, // no prefix
	}
	table, skipped, err := b.peerTable(peers)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"10.2.0.0/24 via 2001:db8::2: no local underlay", "prefix 10.3.0.0/24 is claimed by two peers, via 192.0.2.3 and via 192.0.2.4", "invalid prefix"} {
		if skipped == nil || !strings.Contains(skipped.Error(), w) {
			t.Errorf("skipped: %v; want it to say %q", skipped, w)
		}
	}
	p := b.planTable(local, table, 0x1234)
	if len(p.out) != 1 || !p.out[outKey{0x1234, netip.MustParseAddr("192.0.2.4")}].IsValid() {
		t.Errorf("outbound states %v; want the one to 192.0.2.4 only", p.out)
	}
	for _, r := range []string{"10.2.0.0/24", "10.3.0.0/24"} {
		k := policyKey{netlink.XFRM_DIR_OUT, local[0], netip.MustParsePrefix(r)}
		if out, ok := p.policies[k]; !ok || out.Action != netlink.XFRM_POLICY_BLOCK || len(out.Tmpls) != 0 {
			t.Errorf("%s: out policy %v %+v; want a block policy", r, ok, out)
		}
		fb := policyKey{netlink.XFRM_DIR_OUT, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix(r)}
		if _, ok := p.policies[fb]; !ok {
			t.Errorf("%s: no fallback block policy", r)
		}
		for _, dir := range []netlink.Dir{netlink.XFRM_DIR_IN, netlink.XFRM_DIR_FWD} {
			in, ok := p.policies[policyKey{dir, netip.MustParsePrefix(r), local[0]}]
			if !ok || len(in.Tmpls) != 1 || in.Tmpls[0].Reqid != DefaultReqID {
				t.Errorf("%s: %s policy %v %+v; want one that demands ESP", r, dir, ok, in)
			}
		}
	}
	if out := p.policies[policyKey{netlink.XFRM_DIR_OUT, local[0], netip.MustParsePrefix("10.4.0.0/24")}]; len(out.Tmpls) != 1 || out.Tmpls[0].Spi != 0x1234 {
		t.Errorf("10.4.0.0/24: out policy %+v; want it served", out)
	}
	for k, pol := range p.policies {
		if !b.ours(pol) {
			t.Errorf("policy %s not recognized as ours", k)
		}
	}
}

func TestPlanAnyLocalWhenNoLocalPrefix(t *testing.T) {
	b := testBackend("192.0.2.1")
	p, err := b.planFor(nil, []xfrm.Peer{peer("10.2.0.0/24", "192.0.2.2")}, 0x1234)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.policies[policyKey{netlink.XFRM_DIR_OUT, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("10.2.0.0/24")}]; !ok {
		t.Errorf("want out policy 0.0.0.0/0 -> 10.2.0.0/24, have %v", sortedKeys(p.policies))
	}
}

func TestOursRejectsForeignPolicies(t *testing.T) {
	b := testBackend("192.0.2.1")
	for name, p := range map[string]netlink.XfrmPolicy{
		"charon reqid":   {Priority: DefaultPriority, Tmpls: []netlink.XfrmPolicyTmpl{{Reqid: 1}}},
		"other priority": {Priority: 180000, Tmpls: []netlink.XfrmPolicyTmpl{{Reqid: DefaultReqID}}},
		"allow, no tmpl": {Priority: DefaultPriority, Action: netlink.XFRM_POLICY_ALLOW},
		"other if_id":    {Priority: DefaultPriority, Ifid: 7, Tmpls: []netlink.XfrmPolicyTmpl{{Reqid: DefaultReqID}}},
	} {
		if b.ours(p) {
			t.Errorf("%s: recognized as ours", name)
		}
	}
}

func TestAlgorithmsFromRegistry(t *testing.T) {
	cbc := xfrm.SA{SPI: 0x1000, Suite: mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 256, PRF: mpsa.PRFHMACSHA2_256, Integ: mpsa.IntegHMACSHA2_256},
		EncrKey: bytes.Repeat([]byte{1}, 32), IntegKey: bytes.Repeat([]byte{2}, 32)}
	crypt, auth, aead, err := algorithms(cbc)
	if err != nil {
		t.Fatal(err)
	}
	if aead != nil || crypt.Name != "cbc(aes)" || auth.Name != "hmac(sha256)" || auth.TruncateLen != 128 {
		t.Errorf("aes256-sha256: crypt %q auth %q trunc %d", crypt.Name, auth.Name, auth.TruncateLen)
	}
	sha1 := cbc
	sha1.Suite.Integ, sha1.IntegKey = mpsa.IntegHMACSHA1_96, make([]byte, 20)
	if _, auth, _, err := algorithms(sha1); err != nil || auth.TruncateLen != 96 {
		t.Errorf("sha1: %v, truncation %d, want 96", err, auth.TruncateLen)
	}
	gcm := xfrm.SA{SPI: 0x1000, Suite: mpsa.Suite{Encr: mpsa.EncrAESGCM16, KeyBits: 128, PRF: mpsa.PRFHMACSHA2_256}, EncrKey: make([]byte, 20)}
	if _, _, aead, err := algorithms(gcm); err != nil || aead == nil || aead.Name != "rfc4106(gcm(aes))" || aead.ICVLen != 128 {
		t.Errorf("aes128gcm16: %v %+v", err, aead)
	}
	short := cbc
	short.EncrKey = short.EncrKey[:16]
	if _, _, _, err := algorithms(short); err == nil {
		t.Error("a 16-byte key for aes256 was accepted")
	}
}

func TestPlanSkipsSelf(t *testing.T) {
	b := testBackend("192.0.2.1")
	p, err := b.planFor(nil, []xfrm.Peer{peer("10.1.0.0/24", "192.0.2.1"), peer("10.2.0.0/24", "192.0.2.2")}, 0x1234)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.out) != 1 || len(p.policies) != 3 {
		t.Errorf("with self in the peer table: %d outbound states, %d policies; want 1 and 3", len(p.out), len(p.policies))
	}
}

func TestSortedKeysOrder(t *testing.T) {
	b := testBackend("192.0.2.1", "2001:db8::1")
	local := []netip.Prefix{netip.MustParsePrefix("10.1.0.0/24"), netip.MustParsePrefix("fd00:1::/64")}
	peers := []xfrm.Peer{peer("10.10.0.0/24", "192.0.2.2"), peer("10.2.0.0/24", "192.0.2.3"), peer("fd00:2::/64", "2001:db8::2")}
	p, err := b.planFor(local, peers, 0x1234)
	if err != nil {
		t.Fatal(err)
	}
	keys := sortedKeys(p.policies)
	if len(keys) != len(p.policies) {
		t.Fatalf("%d keys for %d policies", len(keys), len(p.policies))
	}
	rank := map[netlink.Dir]int{netlink.XFRM_DIR_FWD: 0, netlink.XFRM_DIR_IN: 1, netlink.XFRM_DIR_OUT: 2}
	for i := 1; i < len(keys); i++ {
		a, c := keys[i-1], keys[i]
		if a.String() >= c.String() || rank[a.dir] > rank[c.dir] {
			t.Errorf("keys out of order: %s before %s", a, c)
		}
	}
	if first, last := keys[0], keys[len(keys)-1]; first.dir != netlink.XFRM_DIR_FWD || last.dir != netlink.XFRM_DIR_OUT {
		t.Errorf("first key %s, last %s; want fwd first and out last", first, last)
	}
}

// TestPeerTableRefusesNestedPrefixesOfTwoPeers: the kernel cannot match
// the longest of nested prefixes that lead to different peers, so such a
// table is refused, naming both; nested prefixes of one peer, and
// disjoint ones, are fine.
func TestPeerTableRefusesNestedPrefixesOfTwoPeers(t *testing.T) {
	b := testBackend("192.0.2.1", "2001:db8::1")
	for _, c := range []struct {
		peers []xfrm.Peer
		err   string
	}{
		{[]xfrm.Peer{peer("10.2.0.0/16", "192.0.2.2"), peer("10.2.5.0/24", "192.0.2.3")},
			"peer prefix 10.2.5.0/24 (via 192.0.2.3) lies inside 10.2.0.0/16 (via 192.0.2.2)"},
		{[]xfrm.Peer{peer("0.0.0.0/0", "192.0.2.2"), peer("10.3.0.0/24", "192.0.2.3")}, "lies inside 0.0.0.0/0"},
		{[]xfrm.Peer{peer("fd00::/16", "2001:db8::2"), peer("fd00:5::/64", "2001:db8::3")}, "peer prefix fd00:5::/64 (via 2001:db8::3) lies inside fd00::/16"},
		{[]xfrm.Peer{peer("10.2.0.0/16", "192.0.2.2"), peer("10.2.5.0/24", "192.0.2.2"), peer("10.3.0.0/24", "192.0.2.3")}, ""},
		// An IPv4 prefix never lies inside an IPv6 one.
		{[]xfrm.Peer{peer("::/0", "2001:db8::2"), peer("10.3.0.0/24", "192.0.2.3")}, ""},
	} {
		_, _, err := b.peerTable(c.peers)
		switch {
		case c.err == "" && err != nil:
			t.Errorf("%v: %v", c.peers, err)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "userspace data plane")):
			t.Errorf("%v: error %v, want one saying %q", c.peers, err, c.err)
		}
	}
}
