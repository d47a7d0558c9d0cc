package kernel

import (
	"bytes"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/mpsa/mpsa/internal/nettest"
	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/xfrm"
)

// testSocket opens the backend's XFRM socket in a new namespace.
func testSocket(t *testing.T, label string) *xfrmSocket {
	t.Helper()
	ns := nettest.NewNS(t, label)
	h, err := netns.GetFromPath("/run/netns/" + ns.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	xs, err := openXfrmSocket(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(xs.close)
	return xs
}

// TestAddStateZeroesRequest: the NEWSA request carries the keys; after
// the send it is all zeros, whether the kernel took the state or not (on a
// host without ESP it refuses it).
func TestAddStateZeroesRequest(t *testing.T) {
	xs := testSocket(t, "raw")
	encr := bytes.Repeat([]byte{0xa5}, 32)
	integ := bytes.Repeat([]byte{0x5a}, 32)
	var sent []byte
	xs.sent = func(req []byte) {
		if !bytes.Contains(req, encr) || !bytes.Contains(req, integ) {
			t.Error("the request does not carry the keys (the test would prove nothing)")
		}
		sent = req
	}
	st := &netlink.XfrmState{
		Src: net.ParseIP("192.0.2.1"), Dst: net.ParseIP("192.0.2.2"),
		Proto: netlink.XFRM_PROTO_ESP, Mode: netlink.XFRM_MODE_TUNNEL, Spi: 0x1234, Reqid: 7,
		Crypt: &netlink.XfrmStateAlgo{Name: "cbc(aes)", Key: encr},
		Auth:  &netlink.XfrmStateAlgo{Name: "hmac(sha256)", Key: integ, TruncateLen: 128},
	}
	err := xs.addState(newState{st: st, oseq: 41, softPackets: 100})
	t.Logf("add state: %v", err)
	if sent == nil {
		t.Fatal("no request sent")
	}
	if !bytes.Equal(sent, make([]byte, len(sent))) {
		t.Error("the request still holds data after the send")
	}
}

// TestExchangeReusesBuffer: reading the states (a dump, which the
// periodic sequence check and every Counters call make) allocates far
// less than the 64 KiB receive buffer per call: the socket keeps one.
func TestExchangeReusesBuffer(t *testing.T) {
	xs := testSocket(t, "rawbuf")
	if _, err := xs.listStates(); err != nil {
		t.Fatal(err)
	}
	const n = 50
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		if _, err := xs.listStates(); err != nil {
			t.Fatal(err)
		}
		if _, err := xs.listPolicies(); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / (2 * n); per > 8<<10 {
		t.Errorf("%d bytes allocated per request; want well under the 64 KiB buffer", per)
	}
}

// TestProbeCarriesNoKey: the state that finds out which algorithm the
// kernel lacks carries a zero key of the SA's length, never the SA's
// key.
func TestProbeCarriesNoKey(t *testing.T) {
	xs := testSocket(t, "probe")
	sa := xfrm.SA{SPI: 0x1000, Suite: mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 256, PRF: mpsa.PRFHMACSHA2_256, Integ: mpsa.IntegHMACSHA2_256},
		EncrKey: bytes.Repeat([]byte{0xa5}, 32), IntegKey: bytes.Repeat([]byte{0x5a}, 32)}
	own, err := newInstalled(sa)
	if err != nil {
		t.Fatal(err)
	}
	var probes [][]byte
	xs.sent = func(req []byte) { probes = append(probes, bytes.Clone(req)) }
	b := &Backend{cfg: Config{ReqID: DefaultReqID}, xs: xs}
	err = b.explain(own, netip.MustParseAddr("192.0.2.1"), unix.ENOENT)
	t.Logf("explain: %v", err)
	if len(probes) != 1 {
		t.Fatalf("%d probe requests, want 1", len(probes))
	}
	if bytes.Contains(probes[0], sa.EncrKey[:16]) || bytes.Contains(probes[0], sa.IntegKey[:16]) {
		t.Error("the probe carries the SA's key")
	}
	if !bytes.Contains(probes[0], append([]byte("cbc(aes)"), make([]byte, 56)...)) {
		t.Error("the probe does not name the SA's encryption algorithm (the test would prove nothing)")
	}
}
