package esp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/mpsa/mpsa/internal/testenv"
	"github.com/mpsa/mpsa/mpsa"
)

// suites lists every suite the userspace ESP supports.
func suites() []mpsa.Suite {
	var out []mpsa.Suite
	for _, bits := range []int{128, 192, 256} {
		for _, in := range []mpsa.IntegID{mpsa.IntegHMACSHA1_96, mpsa.IntegHMACSHA2_256, mpsa.IntegHMACSHA2_384, mpsa.IntegHMACSHA2_512} {
			i, _ := mpsa.LookupInteg(in)
			out = append(out, mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: bits, Integ: in, PRF: i.PRF})
		}
	}
	return out
}

// counterReader yields 0, 1, 2, ... so that IVs are predictable in tests.
type counterReader struct{ n byte }

func (r *counterReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.n
		r.n++
	}
	return len(p), nil
}

func keys(s mpsa.Suite, seed byte) (encr, integ []byte) {
	encr = make([]byte, s.EncrKeyBytes())
	integ = make([]byte, s.IntegKeyBytes())
	for i := range encr {
		encr[i] = seed + byte(i)
	}
	for i := range integ {
		integ[i] = seed ^ byte(0x80+i)
	}
	return encr, integ
}

func newSA(t testing.TB, spi uint32, s mpsa.Suite) *SA {
	t.Helper()
	e, i := keys(s, 7)
	sa, err := NewSA(spi, s, e, i)
	if err != nil {
		t.Fatal(err)
	}
	return sa
}

// ipv4Packet builds a plausible inner IPv4 packet of n bytes (n >= 20).
func ipv4Packet(n int, fill byte) []byte {
	p := make([]byte, n)
	p[0] = 0x45
	binary.BigEndian.PutUint16(p[2:4], uint16(n))
	p[8] = 64
	p[9] = 17
	copy(p[12:16], []byte{10, 1, 0, 1})
	copy(p[16:20], []byte{10, 2, 0, 1})
	for i := 20; i < n; i++ {
		p[i] = fill + byte(i)
	}
	return p
}

func ipv6Packet(n int, fill byte) []byte {
	p := make([]byte, n)
	p[0] = 0x60
	binary.BigEndian.PutUint16(p[4:6], uint16(n-40))
	p[6] = 17
	p[7] = 64
	p[8], p[23] = 0xfd, 1
	p[24], p[39] = 0xfd, 2
	for i := 40; i < n; i++ {
		p[i] = fill + byte(i)
	}
	return p
}

// nextSeq is sa.NextSeq for tests that never exhaust it; it panics when
// tb is nil.
func nextSeq(tb testing.TB, sa *SA) uint32 {
	seq, ok := sa.NextSeq()
	if !ok {
		if tb == nil {
			panic("sequence numbers exhausted")
		}
		tb.Fatal("sequence numbers exhausted")
	}
	return seq
}

// TestNextSeqNeverWraps: the sequence counter stops at 2^32-1 instead of
// wrapping to 0 and 1 (RFC 4303 section 3.3.3), concurrently too, and
// SetLastSeq continues above the number given.
func TestNextSeqNeverWraps(t *testing.T) {
	s := suites()[0]
	sa := newSA(t, 1, s)
	if seq, ok := sa.NextSeq(); !ok || seq != 1 {
		t.Fatalf("first NextSeq = %d, %v; want 1", seq, ok)
	}
	sa.SetLastSeq(1000)
	if seq, ok := sa.NextSeq(); !ok || seq != 1001 {
		t.Fatalf("NextSeq after SetLastSeq(1000) = %d, %v; want 1001", seq, ok)
	}
	sa.SetLastSeq(MaxSeq - 100)
	var wg sync.WaitGroup
	var issued, refused atomic.Uint64
	var highest atomic.Uint32
	for range 4 {
		wg.Go(func() {
			for range 100 {
				seq, ok := sa.NextSeq()
				if !ok {
					refused.Add(1)
					continue
				}
				issued.Add(1)
				for {
					h := highest.Load()
					if seq <= h || highest.CompareAndSwap(h, seq) {
						break
					}
				}
				if seq <= MaxSeq-100 {
					t.Errorf("NextSeq gave %d, at or below the last one set", seq)
				}
			}
		})
	}
	wg.Wait()
	if issued.Load() != 100 || refused.Load() != 300 || highest.Load() != MaxSeq {
		t.Fatalf("issued %d (want 100) up to %d (want %d), refused %d (want 300)", issued.Load(), highest.Load(), uint32(MaxSeq), refused.Load())
	}
	for range 3 {
		if seq, ok := sa.NextSeq(); ok {
			t.Fatalf("NextSeq after exhaustion gave %d", seq)
		}
	}
}

func TestRoundTripAllSuites(t *testing.T) {
	for _, s := range suites() {
		t.Run(s.String(), func(t *testing.T) {
			sa := newSA(t, 0x1234_5678, s)
			tx := sa.NewCrypter(nil)
			rx := sa.NewCrypter(nil)
			for _, n := range []int{20, 21, 40, 41, 46, 47, 62, 63, 64, 100, 1400, 9000} {
				for _, inner := range [][]byte{ipv4Packet(max(n, 20), byte(n)), ipv6Packet(max(n, 40), byte(n))} {
					buf := make([]byte, 64+len(inner)+MaxTrailerLen)
					copy(buf[64:], inner)
					seq := nextSeq(t, sa)
					pkt, err := tx.Seal(buf, 64, len(inner), seq)
					if err != nil {
						t.Fatalf("seal %d: %v", n, err)
					}
					if len(pkt) != len(inner)+sa.Overhead(len(inner)) {
						t.Fatalf("packet length %d, want inner %d + overhead %d", len(pkt), len(inner), sa.Overhead(len(inner)))
					}
					if len(inner) >= 56 && bytes.Contains(pkt, inner[40:56]) {
						t.Fatalf("plaintext visible in ESP packet")
					}
					got, gotSeq, err := rx.Open(pkt)
					if err != nil {
						t.Fatalf("open %d: %v", n, err)
					}
					if gotSeq != seq {
						t.Fatalf("seq %d, want %d", gotSeq, seq)
					}
					if !bytes.Equal(got, inner) {
						t.Fatalf("inner differs after round trip (len %d vs %d)", len(got), len(inner))
					}
				}
			}
		})
	}
}

func TestIVsDiffer(t *testing.T) {
	sa := newSA(t, 0x1000, suites()[5])
	c := sa.NewCrypter(nil)
	seen := map[string]bool{}
	inner := ipv4Packet(60, 1)
	for i := 0; i < 200; i++ {
		pkt, err := c.AppendSeal(nil, inner, uint32(i))
		if err != nil {
			t.Fatal(err)
		}
		iv := string(pkt[HeaderLen : HeaderLen+IVLen])
		if seen[iv] {
			t.Fatalf("IV repeated after %d packets", i)
		}
		seen[iv] = true
	}
}

func TestNewSARejects(t *testing.T) {
	good := mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 256, Integ: mpsa.IntegHMACSHA2_256, PRF: mpsa.PRFHMACSHA2_256}
	e, i := keys(good, 1)
	cases := map[string]func() (*SA, error){
		"gcm": func() (*SA, error) {
			return NewSA(1, mpsa.Suite{Encr: mpsa.EncrAESGCM16, KeyBits: 128, PRF: mpsa.PRFHMACSHA2_256}, make([]byte, 20), nil)
		},
		"xcbc": func() (*SA, error) {
			return NewSA(1, mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 128, Integ: mpsa.IntegAESXCBC96, PRF: mpsa.PRFAES128XCBC}, e[:16], make([]byte, 16))
		},
		"short encr":  func() (*SA, error) { return NewSA(1, good, e[:16], i) },
		"short integ": func() (*SA, error) { return NewSA(1, good, e, i[:20]) },
	}
	for name, f := range cases {
		if _, err := f(); err == nil {
			t.Errorf("%s: NewSA accepted it", name)
		}
	}
}

func TestTamperedRejected(t *testing.T) {
	for _, s := range suites() {
		sa := newSA(t, 0xabcdef01, s)
		c := sa.NewCrypter(nil)
		orig, err := c.AppendSeal(nil, ipv6Packet(80, 3), 9)
		if err != nil {
			t.Fatal(err)
		}
		for i := range orig {
			pkt := bytes.Clone(orig)
			pkt[i] ^= 0x01
			_, _, err := c.Open(pkt)
			want := ErrAuth
			if i < 4 {
				want = ErrSPI
			}
			if !errors.Is(err, want) {
				t.Fatalf("%s: byte %d flipped: got %v, want %v", s, i, err, want)
			}
			if i >= HeaderLen+IVLen && i < len(pkt)-sa.ICVLen() && pkt[i] != orig[i]^1 {
				t.Fatalf("%s: ciphertext was modified before the ICV check", s)
			}
		}
		for n := 0; n < len(orig); n++ {
			if _, _, err := c.Open(bytes.Clone(orig[:n])); err == nil {
				t.Fatalf("%s: truncated to %d bytes accepted", s, n)
			}
		}
		if _, _, err := c.Open(append(bytes.Clone(orig), 0)); err == nil {
			t.Fatalf("%s: extended packet accepted", s)
		}
	}
}

// sealRaw builds an authenticated packet with arbitrary plaintext (padding
// and next header included), to test checks after the ICV.
func sealRaw(t *testing.T, c *Crypter, plain []byte) []byte {
	t.Helper()
	buf := make([]byte, HeaderLen+IVLen+len(plain)+MaxICVLen)
	binary.BigEndian.PutUint32(buf, c.sa.spi)
	if err := c.nextIV(buf[HeaderLen : HeaderLen+IVLen]); err != nil {
		t.Fatal(err)
	}
	ct := buf[HeaderLen+IVLen : HeaderLen+IVLen+len(plain)]
	copy(ct, plain)
	c.sa.cbc.Encrypt(buf[HeaderLen:HeaderLen+IVLen], ct)
	n := HeaderLen + IVLen + len(plain)
	copy(buf[n:], c.icv(buf[:n]))
	return buf[:n+c.sa.icvLen]
}

func TestTrailerChecks(t *testing.T) {
	s := suites()[1]
	sa := newSA(t, 0x5000, s)
	c := sa.NewCrypter(nil)
	inner := ipv4Packet(28, 0)
	mk := func(padLen int, pad []byte, nh byte, body []byte) []byte {
		p := append(bytes.Clone(body), pad...)
		return append(p, byte(padLen), nh)
	}
	good := mk(2, []byte{1, 2}, NextHeaderIPv4, inner)
	if _, _, err := c.Open(sealRaw(t, c, good)); err != nil {
		t.Fatalf("well-formed packet rejected: %v", err)
	}
	cases := []struct {
		name  string
		plain []byte
		want  error
	}{
		{"pad bytes not 1,2", mk(2, []byte{1, 3}, NextHeaderIPv4, inner), ErrPadding},
		{"pad length beyond payload", append(make([]byte, 14), 200, NextHeaderIPv4), ErrPadding},
		{"pad length eats all", append([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}, 14, NextHeaderIPv4), ErrPadding},
		{"next header tcp", mk(2, []byte{1, 2}, 6, inner), ErrNextHeader},
		{"dummy", mk(2, []byte{1, 2}, NextHeaderNone, inner), ErrDummy},
		{"v6 header on v4 packet", mk(2, []byte{1, 2}, NextHeaderIPv6, inner), ErrInnerVersion},
	}
	for _, tc := range cases {
		if len(tc.plain)%16 != 0 {
			t.Fatalf("%s: test plaintext %d bytes, not whole blocks", tc.name, len(tc.plain))
		}
		if _, _, err := c.Open(sealRaw(t, c, tc.plain)); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	// A ciphertext that is not a whole number of blocks, with a valid ICV.
	odd := sealRaw(t, c, good)
	icv := sa.ICVLen()
	body := append(bytes.Clone(odd[:len(odd)-icv]), 0xee)
	body = append(body, c.icv(body)...)
	if _, _, err := c.Open(body); !errors.Is(err, ErrLength) {
		t.Errorf("odd ciphertext: got %v, want %v", err, ErrLength)
	}
}

func TestZeroStopsSA(t *testing.T) {
	sa := newSA(t, 0x6000, suites()[0])
	c := sa.NewCrypter(nil)
	pkt, err := c.AppendSeal(nil, ipv4Packet(40, 1), 1)
	if err != nil {
		t.Fatal(err)
	}
	sa.Zero()
	if !bytes.Equal(sa.integKey, make([]byte, len(sa.integKey))) {
		t.Fatal("integrity key not zeroed")
	}
	if _, _, err := c.Open(pkt); !errors.Is(err, ErrZeroed) {
		t.Fatalf("open after Zero: %v", err)
	}
	if _, err := c.AppendSeal(nil, ipv4Packet(40, 1), 2); !errors.Is(err, ErrZeroed) {
		t.Fatalf("seal after Zero: %v", err)
	}
}

// TestKnownAnswerOpenSSL builds the expected packet with openssl (AES-CBC
// without padding of its own, and HMAC), padding per RFC 4303 written out
// here, and compares byte for byte.
func TestKnownAnswerOpenSSL(t *testing.T) {
	testenv.NeedCommand(t, "openssl")
	digest := map[mpsa.IntegID]string{
		mpsa.IntegHMACSHA1_96: "sha1", mpsa.IntegHMACSHA2_256: "sha256",
		mpsa.IntegHMACSHA2_384: "sha384", mpsa.IntegHMACSHA2_512: "sha512",
	}
	for _, s := range suites() {
		t.Run(s.String(), func(t *testing.T) {
			ek, ik := keys(s, byte(s.KeyBits))
			sa, err := NewSA(0xc1a2b3c4, s, ek, ik)
			if err != nil {
				t.Fatal(err)
			}
			c := sa.NewCrypter(&counterReader{})
			inner := ipv6Packet(77, 9)
			pkt, err := c.AppendSeal(nil, inner, 0x01020304)
			if err != nil {
				t.Fatal(err)
			}
			iv := make([]byte, 16)
			for i := range iv {
				iv[i] = byte(i)
			}
			// RFC 4303 2.4: 77 + 2 = 79 -> 80 bytes, one padding byte 0x01.
			plain := append(bytes.Clone(inner), 0x01, 0x01, 41)
			ct := runOpenSSL(t, plain, "enc", fmt.Sprintf("-aes-%d-cbc", s.KeyBits), "-nopad", "-K", hex.EncodeToString(ek), "-iv", hex.EncodeToString(iv))
			want := []byte{0xc1, 0xa2, 0xb3, 0xc4, 1, 2, 3, 4}
			want = append(want, iv...)
			want = append(want, ct...)
			mac := runOpenSSL(t, want, "dgst", "-"+digest[s.Integ], "-mac", "HMAC", "-macopt", "hexkey:"+hex.EncodeToString(ik), "-binary")
			info, _ := mpsa.LookupInteg(s.Integ)
			want = append(want, mac[:info.ICVBytes]...)
			if !bytes.Equal(pkt, want) {
				t.Fatalf("packet differs from openssl's\n got %x\nwant %x", pkt, want)
			}
			got, _, err := sa.NewCrypter(nil).Open(want)
			if err != nil || !bytes.Equal(got, inner) {
				t.Fatalf("openssl-built packet: open err %v, inner equal %v", err, bytes.Equal(got, inner))
			}
		})
	}
}

func runOpenSSL(t *testing.T, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out
}

// TestSealBatchMatchesSeal: SealBatch gives, packet for packet, what Seal
// gives with the same IVs (both Crypters draw them from the same counter),
// for every suite, batches of 0 to 19 packets (the encryption's groups of
// eight and four and single packets), equal and mixed sizes and both IP
// versions; a bad packet in the middle fails alone; every packet opens.
func TestSealBatchMatchesSeal(t *testing.T) {
	for _, s := range suites() {
		sa := newSA(t, 0x9000, s)
		one, batch, rx := sa.NewCrypter(&counterReader{}), sa.NewCrypter(&counterReader{}), sa.NewCrypter(nil)
		for n := 0; n <= 19; n++ {
			ps := make([]Sealing, n)
			want := make([][]byte, n)
			for i := range ps {
				size := 1400
				if n%2 == 1 {
					size = 20 + 97*i
				}
				inner := ipv4Packet(size, byte(i))
				if i%3 == 1 {
					inner = ipv6Packet(size, byte(i))
				}
				bad := n > 4 && i == n/2
				if bad {
					inner[0] = 0x50 // IP version 5
				}
				buf := make([]byte, 64+size+MaxTrailerLen)
				copy(buf[64:], inner)
				seq := uint32(1000*n + i)
				ps[i] = Sealing{Buf: bytes.Clone(buf), Off: 64, N: size, Seq: seq}
				pkt, err := one.Seal(buf, 64, size, seq)
				if bad != (err != nil) {
					t.Fatalf("%s: Seal of packet %d: %v", s, i, err)
				}
				want[i] = pkt
			}
			batch.SealBatch(ps)
			for i, p := range ps {
				if want[i] == nil {
					if p.Err != ErrInnerVersion {
						t.Fatalf("%s, batch of %d: bad packet %d gave %v, want ErrInnerVersion", s, n, i, p.Err)
					}
					continue
				}
				if p.Err != nil || !bytes.Equal(p.Packet, want[i]) {
					t.Fatalf("%s, batch of %d: packet %d differs from Seal's (err %v)", s, n, i, p.Err)
				}
				if _, seq, err := rx.Open(p.Packet); err != nil || seq != p.Seq {
					t.Fatalf("%s, batch of %d: packet %d does not open: seq %d, %v", s, n, i, seq, err)
				}
			}
		}
	}
}

func TestSealOpenNoAllocs(t *testing.T) {
	sa := newSA(t, 0x7000, suites()[5])
	tx, rx := sa.NewCrypter(nil), sa.NewCrypter(nil)
	inner := ipv4Packet(1400, 2)
	buf := make([]byte, 64+len(inner)+MaxTrailerLen)
	allocs := testing.AllocsPerRun(200, func() {
		copy(buf[64:], inner)
		pkt, err := tx.Seal(buf, 64, len(inner), nextSeq(t, sa))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := rx.Open(pkt); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Seal+Open allocate %.1f times per packet, want 0", allocs)
	}
	// AllocsPerRun's warm-up run sizes the Crypter's lists.
	ps, fill := newSealBatch(sa, inner, 64)
	allocs = testing.AllocsPerRun(50, func() {
		fill()
		tx.SealBatch(ps)
	})
	if allocs != 0 {
		t.Fatalf("SealBatch of 64 packets allocates %.1f times, want 0", allocs)
	}
}

// newSealBatch returns a batch of n packets for SealBatch, each in its
// own buffer at offset 64, and fill, which copies inner into every buffer
// and numbers the packets from sa, as is needed before each SealBatch
// since it seals in place.
func newSealBatch(sa *SA, inner []byte, n int) (ps []Sealing, fill func()) {
	ps = make([]Sealing, n)
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, 64+len(inner)+MaxTrailerLen)
	}
	return ps, func() {
		for i := range ps {
			copy(bufs[i][64:], inner)
			ps[i] = Sealing{Buf: bufs[i], Off: 64, N: len(inner), Seq: nextSeq(nil, sa)}
		}
	}
}

func benchSuites() []mpsa.Suite {
	return []mpsa.Suite{
		{Encr: mpsa.EncrAESCBC, KeyBits: 128, Integ: mpsa.IntegHMACSHA1_96, PRF: mpsa.PRFHMACSHA1},
		{Encr: mpsa.EncrAESCBC, KeyBits: 256, Integ: mpsa.IntegHMACSHA2_256, PRF: mpsa.PRFHMACSHA2_256},
		{Encr: mpsa.EncrAESCBC, KeyBits: 256, Integ: mpsa.IntegHMACSHA2_512, PRF: mpsa.PRFHMACSHA2_512},
	}
}

func BenchmarkSeal(b *testing.B) {
	for _, s := range benchSuites() {
		for _, n := range []int{64, 1400} {
			b.Run(fmt.Sprintf("%s/%d", s, n), func(b *testing.B) {
				sa := newSA(b, 1, s)
				c := sa.NewCrypter(nil)
				inner := ipv4Packet(n, 0)
				buf := make([]byte, 64+n+MaxTrailerLen)
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					copy(buf[64:], inner)
					if _, err := c.Seal(buf, 64, n, nextSeq(b, sa)); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkSealBatch seals batches of 64 equal packets, as the data
// plane does with a TCP stream's segments; ns/op is per batch.
func BenchmarkSealBatch(b *testing.B) {
	for _, s := range benchSuites() {
		for _, n := range []int{64, 1400} {
			b.Run(fmt.Sprintf("%s/%d", s, n), func(b *testing.B) {
				sa := newSA(b, 1, s)
				c := sa.NewCrypter(nil)
				inner := ipv4Packet(n, 0)
				ps, fill := newSealBatch(sa, inner, 64)
				b.SetBytes(int64(n * len(ps)))
				b.ReportAllocs()
				for b.Loop() {
					fill()
					c.SealBatch(ps)
					if ps[0].Err != nil {
						b.Fatal(ps[0].Err)
					}
				}
			})
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	for _, s := range benchSuites() {
		for _, n := range []int{64, 1400} {
			b.Run(fmt.Sprintf("%s/%d", s, n), func(b *testing.B) {
				sa := newSA(b, 1, s)
				c := sa.NewCrypter(nil)
				pkt, err := c.AppendSeal(nil, ipv4Packet(n, 0), 1)
				if err != nil {
					b.Fatal(err)
				}
				work := make([]byte, len(pkt))
				b.SetBytes(int64(n))
				b.ReportAllocs()
				for b.Loop() {
					copy(work, pkt)
					if _, _, err := c.Open(work); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
