package mpsa

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"log/slog"
	"slices"
)

// Transform attribute types of MPSA_PUT (RFC 7296 section 3.3.5 and draft
// section 3.2.2).
const (
	AttrKeyLength uint16 = 14
	AttrNonce     uint16 = 16384
	AttrSKd       uint16 = 16385
	AttrLifetime  uint16 = 16386
	AttrRollover1 uint16 = 16387
	AttrRollover2 uint16 = 16388
)

// Limits of the MPSA_PUT fields.
const (
	MinNonceLen = 16
	MaxNonceLen = 256
	// MinSPI is the smallest SPI that is not reserved (RFC 4303: 1-255
	// are reserved, 0 is never used).
	MinSPI = 256
)

const (
	proposalHeaderLen  = 8
	transformHeaderLen = 8
	lastSubstruc       = 0
	moreProposals      = 2
	moreTransforms     = 3
	attrTV             = 0x8000
)

// Put is the content of one N(MPSA_PUT): the shared SA as the controller
// distributes it. Nonce and SKd are secret: Put's String and LogValue leave
// them out, and Zero overwrites them.
type Put struct {
	SPI   uint32
	Suite Suite
	Nonce []byte
	SKd   []byte
	// Lifetime, Rollover1 and Rollover2 are in seconds, as on the wire.
	// Lifetime is the time left of the SA when the message is sent.
	Lifetime  uint32
	Rollover1 uint32
	Rollover2 uint32
}

// String describes the Put without its key material.
func (p *Put) String() string {
	return fmt.Sprintf("MPSA_PUT{spi=0x%08x suite=%s lifetime=%ds rollover1=%ds rollover2=%ds}",
		p.SPI, p.Suite, p.Lifetime, p.Rollover1, p.Rollover2)
}

// LogValue implements slog.LogValuer without the key material.
func (p *Put) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("spi", fmt.Sprintf("0x%08x", p.SPI)),
		slog.String("suite", p.Suite.String()),
		slog.Uint64("lifetime", uint64(p.Lifetime)),
		slog.Uint64("rollover1", uint64(p.Rollover1)),
		slog.Uint64("rollover2", uint64(p.Rollover2)),
	)
}

// Zero overwrites the Nonce and SK_d.
func (p *Put) Zero() {
	clear(p.Nonce)
	clear(p.SKd)
}

// Digest is a SHA-256 over every field that defines the SA (not the
// lifetime left or the rollover times), for telling a repeated MPSA_PUT
// from a different SA under the same SPI without keeping a second copy of
// the keys.
func (p *Put) Digest() [32]byte {
	h := sha256.New()
	var b [18]byte
	binary.BigEndian.PutUint32(b[0:], p.SPI)
	binary.BigEndian.PutUint16(b[4:], uint16(p.Suite.Encr))
	binary.BigEndian.PutUint32(b[6:], uint32(p.Suite.KeyBits))
	binary.BigEndian.PutUint16(b[10:], uint16(p.Suite.PRF))
	binary.BigEndian.PutUint16(b[12:], uint16(p.Suite.Integ))
	binary.BigEndian.PutUint16(b[14:], uint16(len(p.Nonce)))
	binary.BigEndian.PutUint16(b[16:], uint16(len(p.SKd)))
	h.Write(b[:])
	h.Write(p.Nonce)
	h.Write(p.SKd)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// SameSA reports, in constant time over the key material, whether two Puts
// describe the same SA.
func (p *Put) SameSA(q *Put) bool {
	a, b := p.Digest(), q.Digest()
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

// Validate checks the Put as a sender must: a known, consistent suite, an
// unreserved SPI, a Nonce of 16 to 256 octets and an SK_d of the PRF's
// preferred key length.
func (p *Put) Validate() error {
	if p.SPI < MinSPI {
		return fmt.Errorf("SPI 0x%08x is reserved (0-255)", p.SPI)
	}
	if err := p.Suite.Validate(); err != nil {
		return err
	}
	if n := len(p.Nonce); n < MinNonceLen || n > MaxNonceLen {
		return fmt.Errorf("nonce of %d octets, want %d to %d", n, MinNonceLen, MaxNonceLen)
	}
	prf, _ := LookupPRF(p.Suite.PRF)
	if len(p.SKd) != prf.KeyBytes {
		return fmt.Errorf("SK_d of %d octets, PRF %s wants %d", len(p.SKd), prf.Name, prf.KeyBytes)
	}
	return nil
}

// Notify builds the N(MPSA_PUT) payload for p.
func (p *Put) Notify() (*Notify, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("encode MPSA_PUT: %w", err)
	}
	spi := binary.BigEndian.AppendUint32(nil, p.SPI)
	enc, _ := LookupEncr(p.Suite.Encr)

	d := make([]byte, 0, 128+len(p.Nonce)+len(p.SKd))
	// last substruc, reserved, length (set below), proposal number 1,
	// ESP, SPI size 4, number of transforms (set below), SPI
	d = append(d, lastSubstruc, 0, 0, 0, 1, ProtocolESP, 4, 0)
	d = append(d, spi...)

	type tr struct {
		typ   uint8
		id    uint16
		attrs []byte
	}
	var ts []tr
	var keyAttr []byte
	if len(enc.KeyLengths) > 0 {
		keyAttr = tvAttr(AttrKeyLength, uint16(p.Suite.KeyBits))
	}
	ts = append(ts, tr{TransformENCR, uint16(p.Suite.Encr), keyAttr})
	ts = append(ts, tr{TransformPRF, uint16(p.Suite.PRF), nil})
	if p.Suite.Integ != IntegNone {
		ts = append(ts, tr{TransformINTEG, uint16(p.Suite.Integ), nil})
	}
	ts = append(ts,
		tr{TransformNONCE, 1, tlvAttr(AttrNonce, p.Nonce)},
		tr{TransformSKD, 1, tlvAttr(AttrSKd, p.SKd)},
		tr{TransformLIFE, 1, tlvAttr(AttrLifetime, be32(p.Lifetime))},
		tr{TransformROLL1, 1, tlvAttr(AttrRollover1, be32(p.Rollover1))},
		tr{TransformROLL2, 1, tlvAttr(AttrRollover2, be32(p.Rollover2))},
	)
	d[7] = uint8(len(ts))
	for i, t := range ts {
		last := uint8(moreTransforms)
		if i == len(ts)-1 {
			last = lastSubstruc
		}
		l := transformHeaderLen + len(t.attrs)
		d = append(d, last, 0, uint8(l>>8), uint8(l), t.typ, 0, uint8(t.id>>8), uint8(t.id))
		d = append(d, t.attrs...)
	}
	binary.BigEndian.PutUint16(d[2:], uint16(len(d)))
	return &Notify{Protocol: ProtocolESP, NotifyType: NotifyMPSAPut, SPI: spi, Data: d}, nil
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

func tvAttr(typ, val uint16) []byte {
	return []byte{uint8((typ | attrTV) >> 8), uint8(typ), uint8(val >> 8), uint8(val)}
}

func tlvAttr(typ uint16, val []byte) []byte {
	b := []byte{uint8(typ >> 8), uint8(typ), uint8(len(val) >> 8), uint8(len(val))}
	return append(b, val...)
}

// ParsePut decodes the MPSA_PUT carried by n. It is strict: every length is
// checked against its container, each transform type must appear exactly
// once (INTEG is absent for AEAD ciphers), the notify SPI must equal the
// proposal SPI, and the Nonce and SK_d must have valid lengths. The
// returned Put's Nonce and SKd are copies. Errors are *DecodeError with
// offsets relative to the buffer n was decoded from.
func ParsePut(n *Notify) (*Put, error) {
	base := n.Offset + genericHeaderLen
	if n.NotifyType != NotifyMPSAPut {
		return nil, errAt("Notify message type", base+2, "%d, want MPSA_PUT (%d)", n.NotifyType, NotifyMPSAPut)
	}
	if n.Protocol != ProtocolESP {
		return nil, errAt("Notify protocol ID", base, "%d, want 3 (ESP)", n.Protocol)
	}
	if len(n.SPI) != 4 {
		return nil, errAt("Notify SPI size", base+1, "%d, want 4", len(n.SPI))
	}
	notifySPI := binary.BigEndian.Uint32(n.SPI)
	return parseProposal(n.Data, base+4+len(n.SPI), notifySPI)
}

type putParser struct {
	p    Put
	seen map[uint8]seenTransform
	// where the SK_d attribute value starts, checked once the PRF is known
	skdOff int
}

// seenTransform is where a transform was found, and its name in errors
// ("MPSA_PUT transform[2] (INTEG)").
type seenTransform struct {
	off   int
	field string
}

func parseProposal(d []byte, off int, notifySPI uint32) (_ *Put, err error) {
	const pf = "MPSA_PUT proposal"
	if len(d) < proposalHeaderLen+4 {
		return nil, errAt(pf, off, "need at least %d octets, have %d", proposalHeaderLen+4, len(d))
	}
	switch d[0] {
	case lastSubstruc:
	case moreProposals:
		// RFC 7296 3.3.1 and the drafts' field description allow 2
		// ("more proposals follow"), but MPSA_PUT has one proposal and
		// none can follow it (docs/protocol.md).
		return nil, errAt(pf+" last substruc", off, "2 announces another proposal, MPSA_PUT carries exactly one; write 0")
	default:
		return nil, errAt(pf+" last substruc", off, "%d, want 0 (the last and only proposal)", d[0])
	}
	plen := int(binary.BigEndian.Uint16(d[2:]))
	if plen != len(d) {
		return nil, errAt(pf+" length", off+2, "states %d octets, the notification data has %d", plen, len(d))
	}
	if d[4] != 1 {
		return nil, errAt(pf+" number", off+4, "%d, want 1", d[4])
	}
	if d[5] != ProtocolESP {
		return nil, errAt(pf+" protocol ID", off+5, "%d, want 3 (ESP)", d[5])
	}
	if d[6] != 4 {
		return nil, errAt(pf+" SPI size", off+6, "%d, want 4", d[6])
	}
	numT := int(d[7])
	spi := binary.BigEndian.Uint32(d[8:])
	if spi != notifySPI {
		return nil, errAt(pf+" SPI", off+8, "0x%08x differs from the Notify SPI 0x%08x", spi, notifySPI)
	}
	if spi < MinSPI {
		return nil, errAt(pf+" SPI", off+8, "0x%08x is reserved (0-255)", spi)
	}
	pp := &putParser{seen: make(map[uint8]seenTransform)}
	pp.p.SPI = spi
	// Once copied, the Nonce and SK_d must not outlive a rejected Put.
	defer func() {
		if err != nil {
			pp.p.Zero()
		}
	}()
	pos := proposalHeaderLen + 4
	for i := 0; i < numT; i++ {
		tf := fmt.Sprintf("MPSA_PUT transform[%d]", i)
		if len(d)-pos < transformHeaderLen {
			return nil, errAt(tf, off+pos, "need %d octets, %d left in the proposal (number of transforms is %d)", transformHeaderLen, len(d)-pos, numT)
		}
		// 3 on every transform but the last, 0 on the last (RFC 7296
		// section 3.3.2). The drafts' figures draw 3 on the last one
		// too; the proposal's transform count already says where the
		// list ends, so that 3 is accepted, as the figure's 16386 is.
		if last := i == numT-1; !(d[pos] == moreTransforms || last && d[pos] == lastSubstruc) {
			return nil, errAt(tf+" last substruc", off+pos, "%s", lastSubstrucReason(d[pos], last, i, numT))
		}
		tlen := int(binary.BigEndian.Uint16(d[pos+2:]))
		if tlen < transformHeaderLen || tlen > len(d)-pos {
			return nil, errAt(tf+" length", off+pos+2, "%d does not fit (minimum %d, %d left in the proposal)", tlen, transformHeaderLen, len(d)-pos)
		}
		if err := pp.transform(d[pos:pos+tlen], off+pos, tf); err != nil {
			return nil, err
		}
		pos += tlen
	}
	if pos != len(d) {
		return nil, errAt(pf+" number of transforms", off+7, "%d transforms end at octet %d, the proposal has %d", numT, pos, len(d))
	}
	return pp.finish(off)
}

func (pp *putParser) transform(t []byte, off int, tf string) error {
	typ := t[4]
	id := binary.BigEndian.Uint16(t[6:])
	if prev, dup := pp.seen[typ]; dup {
		return errAt(tf+" type", off+4, "duplicate %s transform (first at offset %d)", transformName(typ), prev.off)
	}
	tf = fmt.Sprintf("%s (%s)", tf, transformName(typ))
	pp.seen[typ] = seenTransform{off: off, field: tf}
	attrs, err := parseAttrs(t[transformHeaderLen:], off+transformHeaderLen, tf)
	if err != nil {
		return err
	}
	switch typ {
	case TransformENCR:
		e, ok := LookupEncr(EncrID(id))
		if !ok {
			return errAt(tf+" ID", off+6, "unsupported encryption algorithm %d", id)
		}
		pp.p.Suite.Encr = e.ID
		if len(e.KeyLengths) == 0 {
			return noAttrs(attrs, tf)
		}
		if len(attrs) != 1 || attrs[0].typ != AttrKeyLength || !attrs[0].tv {
			return errAt(tf+" attributes", off+transformHeaderLen, "want exactly one TV Key Length attribute (type 14)")
		}
		bits := int(attrs[0].tvValue)
		if !slices.Contains(e.KeyLengths, bits) {
			return errAt(tf+" key length", attrs[0].off+2, "%d bits, want one of %v", bits, e.KeyLengths)
		}
		pp.p.Suite.KeyBits = bits
		return nil
	case TransformPRF:
		if _, ok := LookupPRF(PRFID(id)); !ok {
			return errAt(tf+" ID", off+6, "unsupported PRF %d", id)
		}
		pp.p.Suite.PRF = PRFID(id)
		return noAttrs(attrs, tf)
	case TransformINTEG:
		if id != uint16(IntegNone) {
			if _, ok := LookupInteg(IntegID(id)); !ok {
				return errAt(tf+" ID", off+6, "unsupported integrity algorithm %d", id)
			}
		}
		pp.p.Suite.Integ = IntegID(id)
		return noAttrs(attrs, tf)
	}
	// The MPSA transform-like substructures: ID 1, one TLV attribute.
	var attrTypes []uint16
	switch typ {
	case TransformNONCE:
		attrTypes = []uint16{AttrNonce}
	case TransformSKD:
		attrTypes = []uint16{AttrSKd}
	case TransformLIFE:
		attrTypes = []uint16{AttrLifetime}
	case TransformROLL1:
		// The draft's example figure shows 16386 here by mistake
		// (docs/protocol.md).
		attrTypes = []uint16{AttrRollover1, AttrLifetime}
	case TransformROLL2:
		attrTypes = []uint16{AttrRollover2, AttrLifetime}
	default:
		return errAt(tf+" type", off+4, "unknown transform type %d", typ)
	}
	if id != 1 {
		return errAt(tf+" ID", off+6, "%d, want 1", id)
	}
	if len(attrs) != 1 {
		return errAt(tf+" attributes", off+transformHeaderLen, "%d attributes, want exactly one", len(attrs))
	}
	a := attrs[0]
	if a.tv || !slices.Contains(attrTypes, a.typ) {
		return errAt(tf+" attribute type", a.off, "%d (%s), want TLV %d", a.typ, attrFormat(a.tv), attrTypes[0])
	}
	switch typ {
	case TransformNONCE:
		if n := len(a.value); n < MinNonceLen || n > MaxNonceLen {
			return errAt(tf+" attribute length", a.off+2, "nonce of %d octets, want %d to %d", n, MinNonceLen, MaxNonceLen)
		}
		pp.p.Nonce = append([]byte(nil), a.value...)
	case TransformSKD:
		pp.p.SKd = append([]byte(nil), a.value...)
		pp.skdOff = a.off + 2
	default:
		if len(a.value) != 4 {
			return errAt(tf+" attribute length", a.off+2, "%d, want 4", len(a.value))
		}
		v := binary.BigEndian.Uint32(a.value)
		switch typ {
		case TransformLIFE:
			pp.p.Lifetime = v
		case TransformROLL1:
			pp.p.Rollover1 = v
		case TransformROLL2:
			pp.p.Rollover2 = v
		}
	}
	return nil
}

func (pp *putParser) finish(off int) (*Put, error) {
	enc, _ := LookupEncr(pp.p.Suite.Encr)
	for _, typ := range []uint8{TransformENCR, TransformPRF, TransformINTEG, TransformNONCE, TransformSKD, TransformLIFE, TransformROLL1, TransformROLL2} {
		if _, ok := pp.seen[typ]; ok {
			continue
		}
		if typ == TransformINTEG && enc.AEAD {
			continue
		}
		return nil, errAt("MPSA_PUT proposal transforms", off+7, "missing %s transform", transformName(typ))
	}
	integ := pp.seen[TransformINTEG]
	switch {
	case enc.AEAD && pp.p.Suite.Integ != IntegNone:
		return nil, errAt(integ.field+" ID", integ.off+6, "%d with the AEAD cipher %d, want 0 (none)", pp.p.Suite.Integ, enc.ID)
	case !enc.AEAD && pp.p.Suite.Integ == IntegNone:
		return nil, errAt(integ.field+" ID", integ.off+6, "0 (none), but the encryption algorithm %d is not AEAD and needs an integrity algorithm", enc.ID)
	}
	// Every check of Suite.Validate was made above, each at its field;
	// this one only guards against the two drifting apart.
	if err := pp.p.Suite.Validate(); err != nil {
		encr := pp.seen[TransformENCR]
		return nil, errAt(encr.field, encr.off, "%v", err)
	}
	prf, _ := LookupPRF(pp.p.Suite.PRF)
	if len(pp.p.SKd) != prf.KeyBytes {
		return nil, errAt(pp.seen[TransformSKD].field+" attribute length", pp.skdOff, "SK_d of %d octets, PRF %s wants %d", len(pp.p.SKd), prf.Name, prf.KeyBytes)
	}
	p := pp.p
	return &p, nil
}

type attr struct {
	typ     uint16
	tv      bool
	tvValue uint16
	value   []byte
	off     int
}

func parseAttrs(b []byte, off int, tf string) ([]attr, error) {
	var as []attr
	for pos := 0; pos < len(b); {
		if len(b)-pos < 4 {
			return nil, errAt(tf+" attribute", off+pos, "need 4 octets, have %d", len(b)-pos)
		}
		raw := binary.BigEndian.Uint16(b[pos:])
		a := attr{typ: raw &^ attrTV, tv: raw&attrTV != 0, off: off + pos}
		// An attribute of a known type with the wrong format bit is
		// reported at its type, before its length is read the wrong way.
		if tv, known := attrFormatTV(a.typ); known && tv != a.tv {
			return nil, errAt(tf+" attribute type", a.off, "%d as %s, but attribute %d is %s", a.typ, attrFormat(a.tv), a.typ, attrFormat(tv))
		}
		if a.tv {
			a.tvValue = binary.BigEndian.Uint16(b[pos+2:])
			pos += 4
		} else {
			l := int(binary.BigEndian.Uint16(b[pos+2:]))
			if l > len(b)-pos-4 {
				return nil, errAt(tf+" attribute length", off+pos+2, "%d octets run past the transform end (%d left)", l, len(b)-pos-4)
			}
			a.value = b[pos+4 : pos+4+l]
			pos += 4 + l
		}
		as = append(as, a)
	}
	return as, nil
}

// attrFormatTV reports whether an attribute type known to MPSA_PUT is TV
// (Key Length, RFC 7296 3.3.5) or TLV (the draft's 16384-16388).
func attrFormatTV(typ uint16) (tv, known bool) {
	switch typ {
	case AttrKeyLength:
		return true, true
	case AttrNonce, AttrSKd, AttrLifetime, AttrRollover1, AttrRollover2:
		return false, true
	}
	return false, false
}

func attrFormat(tv bool) string {
	if tv {
		return "TV"
	}
	return "TLV"
}

// lastSubstrucReason explains a wrong Last Substruc of transform i (from
// 0) of numT.
func lastSubstrucReason(got uint8, last bool, i, numT int) string {
	switch {
	case last:
		return fmt.Sprintf("%d, want 0 (or 3, as the draft's figure draws it) on the last of the %d transforms", got, numT)
	case got == lastSubstruc:
		return fmt.Sprintf("0 marks the last transform, but this is transform %d of the %d the proposal states", i+1, numT)
	}
	return fmt.Sprintf("%d, want 3 (transform %d of %d, more follow)", got, i+1, numT)
}

func noAttrs(as []attr, tf string) error {
	if len(as) > 0 {
		return errAt(tf+" attributes", as[0].off, "unexpected attribute type %d", as[0].typ)
	}
	return nil
}

func transformName(typ uint8) string {
	switch typ {
	case TransformENCR:
		return "ENCR"
	case TransformPRF:
		return "PRF"
	case TransformINTEG:
		return "INTEG"
	case TransformNONCE:
		return "NONCE"
	case TransformSKD:
		return "SKD"
	case TransformLIFE:
		return "LIFE"
	case TransformROLL1:
		return "ROLL1"
	case TransformROLL2:
		return "ROLL2"
	}
	return fmt.Sprintf("type %d", typ)
}
