package esp

import (
	"bytes"
	"testing"

	"github.com/mpsa/mpsa/mpsa"
)

var fuzzSuite = mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 128, Integ: mpsa.IntegHMACSHA2_256, PRF: mpsa.PRFHMACSHA2_256}

// FuzzOpen feeds arbitrary bytes to Open. Most inputs fail the ICV; the
// seeds are valid packets, so the fuzzer also mutates authenticated ones.
// Open must never panic, and whatever it accepts must be a whole inner IP
// packet inside the input.
func FuzzOpen(f *testing.F) {
	sa := newSA(f, 0x0a0b0c0d, fuzzSuite)
	c := sa.NewCrypter(&counterReader{})
	for _, inner := range [][]byte{ipv4Packet(20, 1), ipv4Packet(61, 2), ipv6Packet(40, 3), ipv6Packet(200, 4)} {
		pkt, err := c.AppendSeal(nil, inner, 1)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(pkt)
	}
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		orig := bytes.Clone(pkt)
		inner, _, err := c.Open(pkt)
		if err != nil {
			if inner != nil {
				t.Fatalf("error %v with a non-nil inner packet", err)
			}
			return
		}
		if len(inner) == 0 || (inner[0]>>4 != 4 && inner[0]>>4 != 6) {
			t.Fatalf("accepted inner packet is not IP: % x", inner)
		}
		if len(inner) > len(orig)-HeaderLen-IVLen-2-sa.ICVLen() {
			t.Fatalf("inner packet of %d bytes from a %d byte packet", len(inner), len(orig))
		}
	})
}

// FuzzSealOpen seals arbitrary inner packets and checks that Open returns
// them unchanged.
func FuzzSealOpen(f *testing.F) {
	sa := newSA(f, 0x0a0b0c0e, fuzzSuite)
	tx, rx := sa.NewCrypter(nil), sa.NewCrypter(nil)
	f.Add([]byte{0x45}, uint32(1))
	f.Add(ipv6Packet(77, 0), uint32(0xffffffff))
	f.Fuzz(func(t *testing.T, inner []byte, seq uint32) {
		// Up to a jumbo frame: larger inputs only slow down the
		// fuzzer's minimisation, and the code path is the same.
		if len(inner) == 0 || len(inner) > 9216 {
			return
		}
		buf := make([]byte, 32+len(inner)+MaxTrailerLen)
		copy(buf[32:], inner)
		pkt, err := tx.Seal(buf, 32, len(inner), seq)
		if v := inner[0] >> 4; v != 4 && v != 6 {
			if err == nil {
				t.Fatal("sealed a packet that is not IPv4 or IPv6")
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		got, gotSeq, err := rx.Open(pkt)
		if err != nil {
			t.Fatal(err)
		}
		if gotSeq != seq || !bytes.Equal(got, inner) {
			t.Fatalf("round trip changed the packet or seq (%d vs %d)", gotSeq, seq)
		}
	})
}
