// Package esp is an RFC 4303 ESP codec for tunnel mode with AES-CBC and
// HMAC-SHA1/SHA2 (RFC 3602, RFC 2404, RFC 4868): pure code, no I/O.
//
// An SA holds the keyed algorithms of one shared SA and is safe for
// concurrent use. Seal, SealBatch and Open run on a Crypter, the
// per-goroutine state (HMAC, IV buffer) made by SA.NewCrypter; they work in
// place on caller buffers and do not allocate. AES-CBC is
// internal/aescbc's: with AES-NI it encrypts the packets of a batch side by
// side, which is what makes SealBatch several times faster than Seal per
// packet.
//
// The shared SA of MPSA runs without ESN. Open returns the sequence
// number but does not check it: anti-replay is the caller's, per sender
// (one window per SPI and outer source address, after Open has verified
// the ICV), since every member numbers its own packets. NextSeq never
// wraps: after 2^32-1 packets an SA cannot send any more.
//
// Wire layout of a tunnel-mode packet:
//
//	SPI (4) | Sequence Number (4) | IV (16) |
//	  encrypted: inner IP packet | Padding (0-15) | Pad Length (1) | Next Header (1) |
//	ICV (12, 16, 24 or 32)
//
// The ICV covers everything from the SPI to the end of the ciphertext.
package esp

import (
	"crypto/aes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync/atomic"

	"github.com/mpsa/mpsa/mpsa"
	"github.com/mpsa/mpsa/xfrm/esp/internal/aescbc"
)

// Sizes of the fixed parts of an ESP packet.
const (
	// HeaderLen is the ESP header: SPI and sequence number.
	HeaderLen = 8
	// IVLen is the IV of AES-CBC, carried in every packet.
	IVLen = aes.BlockSize
	// MaxICVLen is the longest ICV of the supported algorithms
	// (HMAC-SHA2-512-256).
	MaxICVLen = 32
	// MaxTrailerLen is the longest trailer after the inner packet: up to
	// 15 padding bytes, Pad Length, Next Header and the longest ICV.
	MaxTrailerLen = aes.BlockSize - 1 + 2 + MaxICVLen
)

// Next Header values of tunnel mode (IANA protocol numbers).
const (
	NextHeaderIPv4 = 4
	NextHeaderIPv6 = 41
	// NextHeaderNone marks a dummy packet (RFC 4303 section 2.6), which a
	// receiver discards.
	NextHeaderNone = 59
)

// Errors of Seal and Open. They are fixed values, so returning them does
// not allocate; the backend counts them as drops.
var (
	ErrShort        = errors.New("esp: packet too short")
	ErrLength       = errors.New("esp: ciphertext is not a whole number of blocks")
	ErrSPI          = errors.New("esp: SPI does not match the SA")
	ErrAuth         = errors.New("esp: integrity check failed")
	ErrPadding      = errors.New("esp: bad padding")
	ErrNextHeader   = errors.New("esp: next header is not IPv4 or IPv6")
	ErrDummy        = errors.New("esp: dummy packet")
	ErrInnerVersion = errors.New("esp: inner packet is not IPv4 or IPv6")
	ErrBufferSpace  = errors.New("esp: buffer has no room for header or trailer")
	ErrZeroed       = errors.New("esp: SA was removed and its keys zeroed")
)

// SA is one keyed ESP SA (AES-CBC with an HMAC), shared by all goroutines
// that send or receive with it. The outbound sequence number lives here.
type SA struct {
	spi      uint32
	cbc      *aescbc.Cipher
	newHash  func() hash.Hash
	integKey []byte
	icvLen   int
	// seq is the last sequence number handed out. It counts on past
	// 2^32-1 (a uint64 does not wrap in any SA's lifetime), and NextSeq
	// refuses every number above that.
	seq    atomic.Uint64
	zeroed atomic.Bool
}

// NewSA keys an SA. The suite must be AES-CBC with one of the HMAC
// integrity algorithms; the keys are copied, and the caller may zero its
// own copies afterwards.
func NewSA(spi uint32, suite mpsa.Suite, encrKey, integKey []byte) (*SA, error) {
	if err := suite.Validate(); err != nil {
		return nil, fmt.Errorf("SA %08x: %w", spi, err)
	}
	if suite.Encr != mpsa.EncrAESCBC {
		return nil, fmt.Errorf("SA %08x: suite %s: userspace ESP supports AES-CBC only", spi, suite)
	}
	if len(encrKey) != suite.EncrKeyBytes() {
		return nil, fmt.Errorf("SA %08x: encryption key is %d bytes, suite %s needs %d", spi, len(encrKey), suite, suite.EncrKeyBytes())
	}
	if len(integKey) != suite.IntegKeyBytes() {
		return nil, fmt.Errorf("SA %08x: integrity key is %d bytes, suite %s needs %d", spi, len(integKey), suite, suite.IntegKeyBytes())
	}
	info, _ := mpsa.LookupInteg(suite.Integ)
	var nh func() hash.Hash
	switch suite.Integ {
	case mpsa.IntegHMACSHA1_96:
		nh = sha1.New
	case mpsa.IntegHMACSHA2_256:
		nh = sha256.New
	case mpsa.IntegHMACSHA2_384:
		nh = sha512.New384
	case mpsa.IntegHMACSHA2_512:
		nh = sha512.New
	default:
		return nil, fmt.Errorf("SA %08x: suite %s: integrity algorithm %d is not supported by userspace ESP", spi, suite, suite.Integ)
	}
	cbc, err := aescbc.New(encrKey)
	if err != nil {
		return nil, fmt.Errorf("SA %08x: %w", spi, err)
	}
	return &SA{
		spi:      spi,
		cbc:      cbc,
		newHash:  nh,
		integKey: append([]byte(nil), integKey...),
		icvLen:   info.ICVBytes,
	}, nil
}

// HardwareAES reports whether AES-CBC runs on the CPU's AES instructions
// (AES-NI). When false, it runs on crypto/aes's portable table-based code:
// several times slower and open to cache-timing side channels; mpsad warns
// at start.
func HardwareAES() bool { return aescbc.Hardware() }

// SPI returns the SA's SPI.
func (sa *SA) SPI() uint32 { return sa.spi }

// ICVLen is the length of the truncated ICV that ends every packet.
func (sa *SA) ICVLen() int { return sa.icvLen }

// MaxSeq is the last sequence number an SA without ESN may send (RFC 4303
// section 3.3.3: the counter must not cycle).
const MaxSeq = 1<<32 - 1

// NextSeq returns the next outbound sequence number, 1 for the first
// packet, or false once MaxSeq has been handed out: the counter never
// wraps, and the SA must not send again (only a new SA can). It is safe
// for concurrent use and does not allocate.
func (sa *SA) NextSeq() (uint32, bool) {
	n := sa.seq.Add(1)
	if n > MaxSeq {
		return 0, false
	}
	return uint32(n), true
}

// SetLastSeq makes last the highest sequence number already used, so that
// NextSeq continues with last+1: an SA installed again with the same keys
// (after a restart) must not number packets its receivers have seen. It
// must be called before the SA sends.
func (sa *SA) SetLastSeq(last uint32) { sa.seq.Store(uint64(last)) }

// Overhead is the number of bytes ESP adds to an inner packet of innerLen
// bytes (header, IV, padding, trailer, ICV), not counting the outer IP
// header.
func (sa *SA) Overhead(innerLen int) int {
	return HeaderLen + IVLen + paddedLen(innerLen) - innerLen + sa.icvLen
}

// Zero makes every later Seal and Open fail and overwrites the integrity
// key copy and the AES key schedule held by the SA. The HMAC pads inside
// the Crypters (and, on a CPU without AES-NI, crypto/aes's key schedule)
// cannot be wiped from Go; they become garbage once the SA and its
// Crypters are dropped. A Seal or Open that is running on another
// goroutine when Zero is called may produce garbage, never a panic; the
// data plane calls Zero only once no goroutine uses the SA.
func (sa *SA) Zero() {
	sa.zeroed.Store(true)
	clear(sa.integKey)
	sa.cbc.Zero()
}

func paddedLen(innerLen int) int {
	return (innerLen + 2 + aes.BlockSize - 1) &^ (aes.BlockSize - 1)
}

// Crypter is the per-goroutine state for Seal and Open on one SA. It is not
// safe for concurrent use; make one per goroutine.
type Crypter struct {
	sa    *SA
	mac   hash.Hash
	sum   [64]byte
	rand  io.Reader
	ivBuf [1024]byte
	ivPos int
	// ivs and payloads are SealBatch's lists for aescbc.EncryptMany,
	// kept to be reused.
	ivs, payloads [][]byte
}

// NewCrypter makes a Crypter for sa. IVs are drawn from random, or from
// crypto/rand when random is nil, in chunks of 1 KiB.
func (sa *SA) NewCrypter(random io.Reader) *Crypter {
	if random == nil {
		random = rand.Reader
	}
	c := &Crypter{
		sa:    sa,
		mac:   hmac.New(sa.newHash, sa.integKey),
		rand:  random,
		ivPos: len(Crypter{}.ivBuf),
	}
	return c
}

func (c *Crypter) nextIV(iv []byte) error {
	if c.ivPos+IVLen > len(c.ivBuf) {
		if _, err := io.ReadFull(c.rand, c.ivBuf[:]); err != nil {
			return err
		}
		c.ivPos = 0
	}
	copy(iv, c.ivBuf[c.ivPos:c.ivPos+IVLen])
	c.ivPos += IVLen
	return nil
}

func (c *Crypter) icv(authenticated []byte) []byte {
	c.mac.Reset()
	c.mac.Write(authenticated)
	return c.mac.Sum(c.sum[:0])[:c.sa.icvLen]
}

// Seal turns the inner IP packet buf[off:off+n] into an ESP packet in place
// and returns it: the packet starts at buf[off-HeaderLen-IVLen], so off must
// be at least 24, and buf must have room for MaxTrailerLen bytes after the
// inner packet. seq is the sequence number to send (SA.NextSeq). The next
// header follows from the inner packet's IP version.
func (c *Crypter) Seal(buf []byte, off, n int, seq uint32) ([]byte, error) {
	pkt, iv, payload, err := c.frame(buf, off, n, seq)
	if err != nil {
		return nil, err
	}
	c.sa.cbc.Encrypt(iv, payload)
	c.sign(pkt)
	return pkt, nil
}

// Sealing is one packet of SealBatch: the inner packet Buf[Off:Off+N],
// laid out as for Seal, and its sequence number. SealBatch sets Packet to
// the ESP packet, or Err.
type Sealing struct {
	Buf    []byte
	Off, N int
	Seq    uint32
	Packet []byte
	Err    error
}

// SealBatch seals every packet of ps in place, as Seal does each, and
// gives the same packets; it encrypts them side by side, which is several
// times faster with AES-NI. A packet that fails (Err set) does not stop
// the others.
func (c *Crypter) SealBatch(ps []Sealing) {
	c.ivs, c.payloads = c.ivs[:0], c.payloads[:0]
	for i := range ps {
		p := &ps[i]
		pkt, iv, payload, err := c.frame(p.Buf, p.Off, p.N, p.Seq)
		p.Packet, p.Err = pkt, err
		if err == nil {
			c.ivs = append(c.ivs, iv)
			c.payloads = append(c.payloads, payload)
		}
	}
	c.sa.cbc.EncryptMany(c.ivs, c.payloads)
	clear(c.ivs)
	clear(c.payloads)
	for i := range ps {
		if ps[i].Err == nil {
			c.sign(ps[i].Packet)
		}
	}
}

// frame writes the ESP header, a fresh IV, the padding and the trailer
// around the inner packet buf[off:off+n] and returns the whole packet and
// its IV and payload (what is to be encrypted) within it.
func (c *Crypter) frame(buf []byte, off, n int, seq uint32) (pkt, iv, payload []byte, err error) {
	if c.sa.zeroed.Load() {
		return nil, nil, nil, ErrZeroed
	}
	if n < 1 || off < HeaderLen+IVLen || off+n > len(buf) {
		return nil, nil, nil, ErrBufferSpace
	}
	var nh byte
	switch buf[off] >> 4 {
	case 4:
		nh = NextHeaderIPv4
	case 6:
		nh = NextHeaderIPv6
	default:
		return nil, nil, nil, ErrInnerVersion
	}
	plen := paddedLen(n)
	end := off + plen + c.sa.icvLen
	if end > len(buf) {
		return nil, nil, nil, ErrBufferSpace
	}
	start := off - HeaderLen - IVLen
	pkt = buf[start:end]
	binary.BigEndian.PutUint32(pkt[0:4], c.sa.spi)
	binary.BigEndian.PutUint32(pkt[4:8], seq)
	iv = pkt[HeaderLen : HeaderLen+IVLen]
	if err := c.nextIV(iv); err != nil {
		return nil, nil, nil, fmt.Errorf("esp: IV: %w", err)
	}
	payload = pkt[HeaderLen+IVLen : HeaderLen+IVLen+plen]
	padLen := plen - n - 2
	for i := 0; i < padLen; i++ {
		payload[n+i] = byte(i + 1)
	}
	payload[plen-2] = byte(padLen)
	payload[plen-1] = nh
	return pkt, iv, payload, nil
}

// sign writes the ICV over the encrypted packet into its last bytes.
func (c *Crypter) sign(pkt []byte) {
	authLen := len(pkt) - c.sa.icvLen
	copy(pkt[authLen:], c.icv(pkt[:authLen]))
}

// AppendSeal appends the ESP packet of inner to dst, with sequence number
// seq, and returns the extended slice. It copies and may allocate; the data
// path uses Seal. It is meant for tests and interop tools.
func (c *Crypter) AppendSeal(dst, inner []byte, seq uint32) ([]byte, error) {
	buf := make([]byte, HeaderLen+IVLen+len(inner)+MaxTrailerLen)
	copy(buf[HeaderLen+IVLen:], inner)
	pkt, err := c.Seal(buf, HeaderLen+IVLen, len(inner), seq)
	if err != nil {
		return dst, err
	}
	return append(dst, pkt...), nil
}

// Open checks and decrypts the ESP packet pkt in place (pkt starts with the
// SPI; no outer IP header) and returns the inner IP packet, a subslice of
// pkt, and the sequence number. The ICV is checked in constant time before
// anything is decrypted. Malformed packets give one of the package's error
// values; Open never panics on any input.
func (c *Crypter) Open(pkt []byte) (inner []byte, seq uint32, err error) {
	if c.sa.zeroed.Load() {
		return nil, 0, ErrZeroed
	}
	icvLen := c.sa.icvLen
	if len(pkt) < HeaderLen+IVLen+aes.BlockSize+icvLen {
		return nil, 0, ErrShort
	}
	if binary.BigEndian.Uint32(pkt[0:4]) != c.sa.spi {
		return nil, 0, ErrSPI
	}
	authLen := len(pkt) - icvLen
	ct := pkt[HeaderLen+IVLen : authLen]
	if len(ct)%aes.BlockSize != 0 {
		return nil, 0, ErrLength
	}
	if !hmac.Equal(c.icv(pkt[:authLen]), pkt[authLen:]) {
		return nil, 0, ErrAuth
	}
	c.sa.cbc.Decrypt(pkt[HeaderLen:HeaderLen+IVLen], ct)
	nh := ct[len(ct)-1]
	padLen := int(ct[len(ct)-2])
	innerLen := len(ct) - 2 - padLen
	if innerLen < 1 {
		return nil, 0, ErrPadding
	}
	for i := 0; i < padLen; i++ {
		if ct[innerLen+i] != byte(i+1) {
			return nil, 0, ErrPadding
		}
	}
	inner = ct[:innerLen]
	switch nh {
	case NextHeaderIPv4:
		if inner[0]>>4 != 4 {
			return nil, 0, ErrInnerVersion
		}
	case NextHeaderIPv6:
		if inner[0]>>4 != 6 {
			return nil, 0, ErrInnerVersion
		}
	case NextHeaderNone:
		return nil, 0, ErrDummy
	default:
		return nil, 0, ErrNextHeader
	}
	return inner, binary.BigEndian.Uint32(pkt[4:8]), nil
}

// PeekSPI returns the SPI of an ESP packet, for choosing the SA.
func PeekSPI(pkt []byte) (uint32, bool) {
	if len(pkt) < HeaderLen {
		return 0, false
	}
	return binary.BigEndian.Uint32(pkt[0:4]), true
}
