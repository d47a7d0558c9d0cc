package mpsa

import (
	"encoding/binary"
	"fmt"
)

// IKEv2 constants used by MPSA (RFC 7296 section 3).
const (
	// HeaderLen is the length of the IKEv2 header.
	HeaderLen = 28
	// Version is IKEv2's major/minor version octet, 2.0.
	Version = 0x20

	// ExchangeInformational is the INFORMATIONAL exchange type.
	ExchangeInformational uint8 = 37

	// FlagInitiator, FlagVersion and FlagResponse are the header flags.
	FlagInitiator uint8 = 0x08
	FlagVersion   uint8 = 0x10
	FlagResponse  uint8 = 0x20

	// PayloadNone ends a payload chain.
	PayloadNone uint8 = 0
	// PayloadNotify is the Notify payload type.
	PayloadNotify uint8 = 41
	// PayloadVendorID is the Vendor ID payload type.
	PayloadVendorID uint8 = 43

	// ProtocolESP is the Protocol ID of ESP.
	ProtocolESP uint8 = 3
	// NotifyMPSAPut is the MPSA_PUT Notify Message Type.
	NotifyMPSAPut uint16 = 40960

	genericHeaderLen = 4
	payloadCritical  = 0x80
)

// VendorMPSA is the content of the MPSA Vendor ID payload (draft 3.2.1).
const VendorMPSA = "multi-point SA"

// Header is the IKEv2 header (RFC 7296 section 3.1).
type Header struct {
	SPIi        uint64
	SPIr        uint64
	NextPayload uint8
	Version     uint8
	Exchange    uint8
	Flags       uint8
	MessageID   uint32
	// Length is the length of the whole message as the header states it;
	// Marshal fills it in.
	Length uint32
}

// IsResponse reports whether the R flag is set.
func (h Header) IsResponse() bool { return h.Flags&FlagResponse != 0 }

// Payload is one payload of an IKEv2 message: *VendorID, *Notify or
// *UnknownPayload.
type Payload interface {
	// Type is the payload type number.
	Type() uint8
	appendBody(b []byte) ([]byte, error)
}

// VendorID is a Vendor ID payload.
type VendorID struct {
	Data []byte
}

// Type returns PayloadVendorID.
func (*VendorID) Type() uint8 { return PayloadVendorID }

func (v *VendorID) appendBody(b []byte) ([]byte, error) { return append(b, v.Data...), nil }

// IsMPSA reports whether the payload is the MPSA Vendor ID.
func (v *VendorID) IsMPSA() bool { return string(v.Data) == VendorMPSA }

// MPSAVendorID returns the MPSA Vendor ID payload.
func MPSAVendorID() *VendorID { return &VendorID{Data: []byte(VendorMPSA)} }

// Notify is a Notify payload (RFC 7296 section 3.10).
type Notify struct {
	Protocol uint8
	// NotifyType is the Notify Message Type.
	NotifyType uint16
	SPI        []byte
	Data       []byte
	// Offset is where the payload's generic header starts in the decoded
	// buffer; errors in Data are reported relative to it.
	Offset int
}

// Type returns PayloadNotify.
func (*Notify) Type() uint8 { return PayloadNotify }

func (n *Notify) appendBody(b []byte) ([]byte, error) {
	if len(n.SPI) > 255 {
		return nil, fmt.Errorf("notify SPI of %d octets is too long", len(n.SPI))
	}
	b = append(b, n.Protocol, uint8(len(n.SPI)))
	b = binary.BigEndian.AppendUint16(b, n.NotifyType)
	b = append(b, n.SPI...)
	return append(b, n.Data...), nil
}

// UnknownPayload is a payload that MPSA does not interpret, kept as it is.
type UnknownPayload struct {
	PayloadType uint8
	Critical    bool
	Body        []byte
}

// Type returns the payload's type number.
func (u *UnknownPayload) Type() uint8 { return u.PayloadType }

func (u *UnknownPayload) appendBody(b []byte) ([]byte, error) { return append(b, u.Body...), nil }

// Message is an IKEv2 message carrying MPSA payloads.
type Message struct {
	Header   Header
	Payloads []Payload
}

// HasMPSAVendorID reports whether the message carries V(MPSA).
func (m *Message) HasMPSAVendorID() bool {
	for _, p := range m.Payloads {
		if v, ok := p.(*VendorID); ok && v.IsMPSA() {
			return true
		}
	}
	return false
}

// PutNotify returns the message's MPSA_PUT Notify payload, if any.
func (m *Message) PutNotify() *Notify {
	for _, p := range m.Payloads {
		if n, ok := p.(*Notify); ok && n.NotifyType == NotifyMPSAPut {
			return n
		}
	}
	return nil
}

// Marshal encodes the message, filling in the header's Version (if zero),
// NextPayload and Length.
func (m *Message) Marshal() ([]byte, error) {
	h := m.Header
	if h.Version == 0 {
		h.Version = Version
	}
	b := make([]byte, HeaderLen, 256)
	b, err := appendPayloads(b, m.Payloads)
	if err != nil {
		return nil, err
	}
	h.NextPayload = PayloadNone
	if len(m.Payloads) > 0 {
		h.NextPayload = m.Payloads[0].Type()
	}
	if uint64(len(b)) > 0xffffffff {
		return nil, fmt.Errorf("message too long")
	}
	h.Length = uint32(len(b))
	putHeader(b, h)
	return b, nil
}

func putHeader(b []byte, h Header) {
	binary.BigEndian.PutUint64(b[0:], h.SPIi)
	binary.BigEndian.PutUint64(b[8:], h.SPIr)
	b[16] = h.NextPayload
	b[17] = h.Version
	b[18] = h.Exchange
	b[19] = h.Flags
	binary.BigEndian.PutUint32(b[20:], h.MessageID)
	binary.BigEndian.PutUint32(b[24:], h.Length)
}

// AppendPayload appends one payload with its generic header, as the last
// of a chain (Next Payload 0), and returns the extended buffer.
func AppendPayload(b []byte, p Payload) ([]byte, error) {
	return appendPayloads(b, []Payload{p})
}

func appendPayloads(b []byte, ps []Payload) ([]byte, error) {
	for i, p := range ps {
		next := PayloadNone
		if i+1 < len(ps) {
			next = ps[i+1].Type()
		}
		start := len(b)
		flags := uint8(0)
		if u, ok := p.(*UnknownPayload); ok && u.Critical {
			flags = payloadCritical
		}
		b = append(b, next, flags, 0, 0)
		var err error
		if b, err = p.appendBody(b); err != nil {
			return nil, fmt.Errorf("payload %d (type %d): %w", i, p.Type(), err)
		}
		n := len(b) - start
		if n > 0xffff {
			return nil, fmt.Errorf("payload %d (type %d): %d octets exceed the 16-bit payload length", i, p.Type(), n)
		}
		binary.BigEndian.PutUint16(b[start+2:], uint16(n))
	}
	return b, nil
}

// ParseHeader decodes the IKEv2 header at the start of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, errAt("IKE header", 0, "need %d octets, have %d", HeaderLen, len(b))
	}
	h := Header{
		SPIi:        binary.BigEndian.Uint64(b[0:]),
		SPIr:        binary.BigEndian.Uint64(b[8:]),
		NextPayload: b[16],
		Version:     b[17],
		Exchange:    b[18],
		Flags:       b[19],
		MessageID:   binary.BigEndian.Uint32(b[20:]),
		Length:      binary.BigEndian.Uint32(b[24:]),
	}
	if h.Version>>4 != 2 {
		return Header{}, errAt("IKE header version", 17, "major version %d, want 2", h.Version>>4)
	}
	return h, nil
}

// ParseMessage decodes an IKEv2 message and its payload chain. Vendor ID
// and Notify payloads are decoded; other payloads are kept as
// UnknownPayload, except that an unknown critical payload is an error
// (RFC 7296 section 2.5). The MPSA_PUT notification data is not decoded
// here: call ParsePut on the Notify.
func ParseMessage(b []byte) (*Message, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	if int64(h.Length) != int64(len(b)) {
		return nil, errAt("IKE header length", 24, "states %d octets, message has %d", h.Length, len(b))
	}
	ps, err := parsePayloads(b, HeaderLen, h.NextPayload)
	if err != nil {
		return nil, err
	}
	return &Message{Header: h, Payloads: ps}, nil
}

// ParseNotifyPayload decodes a bare Notify payload (generic header
// included) that fills b exactly, as captured on its own. Its Next Payload
// field is ignored: a payload cut out of a longer message still names the
// one that followed it there, and no other payload follows here.
func ParseNotifyPayload(b []byte) (*Notify, error) {
	if len(b) < genericHeaderLen {
		return nil, errAt("payload header", 0, "need %d octets, have %d", genericHeaderLen, len(b))
	}
	if l := int(binary.BigEndian.Uint16(b[2:])); l != len(b) {
		return nil, errAt("payload length", 2, "states %d octets, input has %d", l, len(b))
	}
	p, _, _, err := parsePayload(b, 0, 0, PayloadNotify)
	if err != nil {
		return nil, err
	}
	return p.(*Notify), nil
}

func parsePayloads(b []byte, off int, next uint8) ([]Payload, error) {
	var ps []Payload
	for i := 0; next != PayloadNone; i++ {
		p, n, plen, err := parsePayload(b, off, i, next)
		if err != nil {
			return nil, err
		}
		ps = append(ps, p)
		next = n
		off += plen
	}
	if off != len(b) {
		return nil, errAt("payload chain", off, "%d octets after the last payload", len(b)-off)
	}
	return ps, nil
}

// parsePayload decodes the i-th payload of a chain, of type typ, at off.
// It returns the payload, its Next Payload field and its length.
func parsePayload(b []byte, off, i int, typ uint8) (Payload, uint8, int, error) {
	field := fmt.Sprintf("payload[%d]", i)
	if len(b)-off < genericHeaderLen {
		return nil, 0, 0, errAt(field+" header", off, "need %d octets, have %d", genericHeaderLen, len(b)-off)
	}
	next := b[off]
	critical := b[off+1]&payloadCritical != 0
	plen := int(binary.BigEndian.Uint16(b[off+2:]))
	if plen < genericHeaderLen {
		return nil, 0, 0, errAt(field+" length", off+2, "%d is shorter than the %d-octet generic header", plen, genericHeaderLen)
	}
	if plen > len(b)-off {
		return nil, 0, 0, errAt(field+" length", off+2, "%d octets run past the end of the input (%d left)", plen, len(b)-off)
	}
	body := b[off+genericHeaderLen : off+plen]
	switch typ {
	case PayloadVendorID:
		return &VendorID{Data: body}, next, plen, nil
	case PayloadNotify:
		if len(body) < 4 {
			return nil, 0, 0, errAt(field+" (Notify) length", off+2, "%d octets, a Notify needs at least 8", plen)
		}
		spiSize := int(body[1])
		if 4+spiSize > len(body) {
			return nil, 0, 0, errAt(field+" (Notify) SPI size", off+5, "%d octets run past the payload end", spiSize)
		}
		return &Notify{
			Protocol:   body[0],
			NotifyType: binary.BigEndian.Uint16(body[2:]),
			SPI:        body[4 : 4+spiSize],
			Data:       body[4+spiSize:],
			Offset:     off,
		}, next, plen, nil
	}
	if critical {
		return nil, 0, 0, errAt(field+" critical flag", off+1, "unsupported critical payload type %d", typ)
	}
	return &UnknownPayload{PayloadType: typ, Critical: critical, Body: body}, next, plen, nil
}
