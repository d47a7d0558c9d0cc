package mpsa

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// goldenNonce and goldenSKd are the key material of the golden message.
var (
	goldenNonce = mustHex("000102030405060708090a0b0c0d0e0f")
	goldenSKd   = mustHex("a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3")
)

// mustHex decodes hex written for people: on each line, the hex tokens up
// to the first word that is not hex, which starts the line's comment.
func mustHex(s string) []byte {
	var all []byte
	for _, line := range strings.Split(s, "\n") {
		for _, tok := range strings.Fields(line) {
			b, err := hex.DecodeString(tok)
			if err != nil {
				break
			}
			all = append(all, b...)
		}
	}
	return all
}

// goldenNotify is the draft's example N(MPSA_PUT) (section 3.2.2: ESP,
// AES-CBC 256, PRF HMAC-SHA1, HMAC-SHA1-96), written out by hand from the
// figure and the text, with SPI 0x1234abcd, lifetime 28800 s, rollover
// times 30 s and 60 s. roll1 and roll2 are the attribute types of ROLL1 and
// ROLL2 as two-octet hex strings: the text's "40 03"/"40 04", or the
// figure's "40 02" in both. last is the Last Substruc of ROLL2, the last
// transform: "00" as RFC 7296 section 3.3.2 and the drafts' field
// description ("0 (last) or 3") say, or "03" as both drafts' figures draw
// it. mpsa sends the text's types and 0; it accepts the figure's variants
// (docs/protocol.md).
func goldenNotify(roll1, roll2, last string) []byte {
	return mustHex(`
		00 00 00 a0          Notify: next payload 0, C=0, length 160
		03 04 a0 00          protocol ESP, SPI size 4, MPSA_PUT (40960)
		12 34 ab cd          SPI
		00 00 00 94          proposal-like: last, length 148
		01 03 04 08          proposal 1, ESP, SPI size 4, 8 transforms
		12 34 ab cd          SPI
		03 00 00 0c 01 00 00 0c 80 0e 01 00          ENCR AES-CBC, TV key length 256
		03 00 00 08 02 00 00 02                      PRF HMAC-SHA1
		03 00 00 08 03 00 00 02                      INTEG HMAC-SHA1-96
		03 00 00 1c f1 00 00 01 40 00 00 10          NONCE, TLV 16384, 16 octets
		000102030405060708090a0b0c0d0e0f
		03 00 00 20 f2 00 00 01 40 01 00 14          SKD, TLV 16385, 20 octets
		a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3
		03 00 00 10 f3 00 00 01 40 02 00 04 00 00 70 80   LIFE 28800
		03 00 00 10 f4 00 00 01 ` + roll1 + ` 00 04 00 00 00 1e   ROLL1 30
		` + last + ` 00 00 10 f5 00 00 01 ` + roll2 + ` 00 04 00 00 00 3c   ROLL2 60
	`)
}

func goldenPut() *Put {
	return &Put{
		SPI:       0x1234abcd,
		Suite:     Suite{Encr: EncrAESCBC, KeyBits: 256, PRF: PRFHMACSHA1, Integ: IntegHMACSHA1_96},
		Nonce:     append([]byte(nil), goldenNonce...),
		SKd:       append([]byte(nil), goldenSKd...),
		Lifetime:  28800,
		Rollover1: 30,
		Rollover2: 60,
	}
}

func TestGoldenEncode(t *testing.T) {
	n, err := goldenPut().Notify()
	if err != nil {
		t.Fatal(err)
	}
	got, err := AppendPayload(nil, n)
	if err != nil {
		t.Fatal(err)
	}
	want := goldenNotify("40 03", "40 04", "00")
	if !bytes.Equal(got, want) {
		t.Fatalf("encoded MPSA_PUT differs from the draft's example\n got %x\nwant %x", got, want)
	}
}

func TestGoldenDecode(t *testing.T) {
	for _, tc := range []struct{ name, roll1, roll2, last string }{
		{"text attribute types", "40 03", "40 04", "00"},
		{"figure's 16386 in ROLL1 and ROLL2", "40 02", "40 02", "00"},
		{"figure's 3 on the last transform", "40 03", "40 04", "03"},
		{"figure as drawn", "40 02", "40 02", "03"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := ParseNotifyPayload(goldenNotify(tc.roll1, tc.roll2, tc.last))
			if err != nil {
				t.Fatal(err)
			}
			p, err := ParsePut(n)
			if err != nil {
				t.Fatal(err)
			}
			want := goldenPut()
			if p.String() != want.String() || !bytes.Equal(p.Nonce, want.Nonce) || !bytes.Equal(p.SKd, want.SKd) {
				t.Fatalf("decoded %v nonce %x skd %x, want %v", p, p.Nonce, p.SKd, want)
			}
		})
	}
}

// TestLastTransformSubstruc: the last transform may have 0 or 3 (the
// figure's), nothing else.
func TestLastTransformSubstruc(t *testing.T) {
	const roll2 = 144
	for _, v := range []uint8{1, 2, 4, 255} {
		b := goldenNotify("40 03", "40 04", "00")
		if b[roll2+4] != TransformROLL2 {
			t.Fatalf("offset %d is not ROLL2's last substruc", roll2)
		}
		b[roll2] = v
		n, err := ParseNotifyPayload(b)
		if err != nil {
			t.Fatal(err)
		}
		_, err = ParsePut(n)
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Fatalf("last substruc %d: want a *DecodeError, got %v", v, err)
		}
		if de.Field != "MPSA_PUT transform[7] last substruc" || de.Offset != roll2 || !strings.Contains(de.Reason, "want 0 (or 3") {
			t.Fatalf("last substruc %d: error %q, want MPSA_PUT transform[7] last substruc at offset %d asking for 0 or 3", v, err, roll2)
		}
	}
}

// TestBareNotifyNextPayloadIgnored: a Notify cut out of a longer message
// keeps the Next Payload of its place there; decoded on its own, that
// field is ignored.
func TestBareNotifyNextPayloadIgnored(t *testing.T) {
	for _, next := range []uint8{PayloadVendorID, PayloadNotify, 99} {
		b := goldenNotify("40 03", "40 04", "00")
		b[0] = next
		n, err := ParseNotifyPayload(b)
		if err != nil {
			t.Fatalf("next payload %d: %v", next, err)
		}
		p, err := ParsePut(n)
		if err != nil {
			t.Fatalf("next payload %d: %v", next, err)
		}
		if p.String() != goldenPut().String() {
			t.Fatalf("next payload %d: decoded %v", next, p)
		}
	}
}

func TestRoundTripAllSuites(t *testing.T) {
	for _, prop := range []string{
		"aes128-sha1", "aes192-sha256", "aes256-sha384", "aes256-sha512-prfsha256",
		"aes128-aesxcbc", "aes256gcm16", "aes128gcm8-prfsha512", "aes192gcm12",
		"aes256ctr-sha256", "chacha20poly1305-prfsha384",
	} {
		t.Run(prop, func(t *testing.T) {
			s, err := ParseProposal(prop)
			if err != nil {
				t.Fatal(err)
			}
			prf, _ := LookupPRF(s.PRF)
			for _, nonceLen := range []int{MinNonceLen, 32, MaxNonceLen} {
				p := &Put{
					SPI: 0x0badf00d, Suite: s,
					Nonce:    bytes.Repeat([]byte{0x5a}, nonceLen),
					SKd:      bytes.Repeat([]byte{0xa5}, prf.KeyBytes),
					Lifetime: 1<<32 - 1, Rollover1: 1, Rollover2: 0,
				}
				msg := &Message{
					Header:   Header{SPIi: 0x0102030405060708, SPIr: 0x1112131415161718, Exchange: ExchangeInformational, Flags: FlagInitiator, MessageID: 7},
					Payloads: []Payload{MPSAVendorID(), mustNotify(t, p)},
				}
				b := mustMarshal(t, msg)
				m := mustParse(t, b)
				if !m.HasMPSAVendorID() {
					t.Error("V(MPSA) lost")
				}
				if m.Header.SPIi != msg.Header.SPIi || m.Header.SPIr != msg.Header.SPIr || m.Header.MessageID != 7 ||
					m.Header.Exchange != ExchangeInformational || m.Header.Flags != FlagInitiator || m.Header.Version != Version {
					t.Errorf("header %+v", m.Header)
				}
				got, err := ParsePut(m.PutNotify())
				if err != nil {
					t.Fatal(err)
				}
				if got.String() != p.String() || !got.SameSA(p) {
					t.Fatalf("round trip: got %v, want %v", got, p)
				}
				b2 := mustMarshal(t, &Message{Header: m.Header, Payloads: m.Payloads})
				if !bytes.Equal(b, b2) {
					t.Fatal("re-encoding a decoded message changed its bytes")
				}
			}
		})
	}
}

func mustNotify(t *testing.T, p *Put) *Notify {
	t.Helper()
	n, err := p.Notify()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDecodeErrors damages the golden notify one field at a time and checks
// that the error names the field and its offset.
func TestDecodeErrors(t *testing.T) {
	golden := goldenNotify("40 03", "40 04", "00")
	// Offsets in the golden notify: payload header 0, notify body 4,
	// SPI 8, proposal 12, transforms from 24: ENCR 24, PRF 36, INTEG 44,
	// NONCE 52, SKD 80, LIFE 112, ROLL1 128, ROLL2 144.
	// reasons holds, by case name, a part of the reason where it matters.
	reasons := map[string]string{
		"proposal last 2":         "2 announces another proposal, MPSA_PUT carries exactly one; write 0",
		"INTEG none with AES-CBC": "needs an integrity algorithm",
		"INTEG with AES-GCM":      "AEAD",
		"NONCE as TV":             "16384 as TV",
		"key length as TLV":       "14 as TLV",
	}
	for _, tc := range []struct {
		name   string
		mutate func(b []byte) []byte
		field  string
		offset int
	}{
		{"payload length too long", func(b []byte) []byte { b[3]++; return b }, "payload length", 2},
		{"truncated", func(b []byte) []byte { b = b[:100]; b[2], b[3] = 0, 100; return b }, "MPSA_PUT proposal length", 14},
		{"protocol AH", func(b []byte) []byte { b[4] = 2; return b }, "Notify protocol ID", 4},
		{"SPI size 8", func(b []byte) []byte { b[5] = 8; return b }, "Notify SPI size", 5},
		{"notify SPI differs", func(b []byte) []byte { b[11] ^= 1; return b }, "MPSA_PUT proposal SPI", 20},
		{"proposal last 2", func(b []byte) []byte { b[12] = 2; return b }, "MPSA_PUT proposal last substruc", 12},
		{"proposal last 1", func(b []byte) []byte { b[12] = 1; return b }, "MPSA_PUT proposal last substruc", 12},
		{"proposal number 2", func(b []byte) []byte { b[16] = 2; return b }, "MPSA_PUT proposal number", 16},
		{"proposal protocol", func(b []byte) []byte { b[17] = 1; return b }, "MPSA_PUT proposal protocol ID", 17},
		{"proposal SPI size", func(b []byte) []byte { b[18] = 8; return b }, "MPSA_PUT proposal SPI size", 18},
		{"too many transforms", func(b []byte) []byte { b[19] = 9; return b }, "MPSA_PUT transform[7] last substruc", 144},
		{"too few transforms", func(b []byte) []byte { b[19] = 7; return b }, "MPSA_PUT proposal number of transforms", 19},
		{"transforms after the last", func(b []byte) []byte { b[19] = 7; b[128] = 0; return b }, "MPSA_PUT proposal number of transforms", 19},
		{"transform length past end", func(b []byte) []byte { b[147] = 0x20; return b }, "MPSA_PUT transform[7] length", 146},
		{"transform length short", func(b []byte) []byte { b[39] = 4; return b }, "MPSA_PUT transform[1] length", 38},
		{"last flag on first", func(b []byte) []byte { b[24] = 0; return b }, "MPSA_PUT transform[0] last substruc", 24},
		{"duplicate PRF", func(b []byte) []byte { b[48] = 2; return b }, "MPSA_PUT transform[2] type", 48},
		{"unknown transform", func(b []byte) []byte { b[48] = 200; return b }, "MPSA_PUT transform[2] (type 200) type", 48},
		{"missing INTEG", func(b []byte) []byte { return removeTransform(b, 44, 8) }, "MPSA_PUT proposal transforms", 19},
		{"missing NONCE", func(b []byte) []byte { return removeTransform(b, 52, 28) }, "MPSA_PUT proposal transforms", 19},
		{"unknown ENCR", func(b []byte) []byte { b[31] = 3; return b }, "MPSA_PUT transform[0] (ENCR) ID", 30},
		{"bad key length", func(b []byte) []byte { b[34], b[35] = 0, 100; return b }, "MPSA_PUT transform[0] (ENCR) key length", 34},
		{"key length as TLV", func(b []byte) []byte { b[32] = 0; return b }, "MPSA_PUT transform[0] (ENCR) attribute type", 32},
		{"INTEG none with AES-CBC", func(b []byte) []byte { b[51] = 0; return b }, "MPSA_PUT transform[2] (INTEG) ID", 50},
		{"INTEG with AES-GCM", func(b []byte) []byte { b[31] = 20; return b }, "MPSA_PUT transform[2] (INTEG) ID", 50},
		{"unknown PRF", func(b []byte) []byte { b[43] = 99; return b }, "MPSA_PUT transform[1] (PRF) ID", 42},
		{"NONCE ID 2", func(b []byte) []byte { b[59] = 2; return b }, "MPSA_PUT transform[3] (NONCE) ID", 58},
		{"NONCE as TV", func(b []byte) []byte { b[60] |= 0x80; return b }, "MPSA_PUT transform[3] (NONCE) attribute type", 60},
		{"NONCE wrong type", func(b []byte) []byte { b[61] = 5; return b }, "MPSA_PUT transform[3] (NONCE) attribute type", 60},
		{"nonce too short", shortenNonce, "MPSA_PUT transform[3] (NONCE) attribute length", 62},
		{"attribute length past end", func(b []byte) []byte { b[63] = 0x11; return b }, "MPSA_PUT transform[3] (NONCE) attribute length", 62},
		{"SK_d too short", shortenSKd, "MPSA_PUT transform[4] (SKD) attribute length", 90},
		{"LIFE length 3", func(b []byte) []byte { b[123] = 3; b[115] = 0x0f; return b }, "MPSA_PUT transform[5] (LIFE) attribute length", 122},
		{"ROLL1 with SK_d type", func(b []byte) []byte { b[137] = 0x01; return b }, "MPSA_PUT transform[6] (ROLL1) attribute type", 136},
		{"ROLL2 two attributes", func(b []byte) []byte { return addAttr(b) }, "MPSA_PUT transform[7] (ROLL2) attributes", 152},
		{"SPI reserved", func(b []byte) []byte {
			b[8], b[9], b[10], b[11] = 0, 0, 0, 9
			b[20], b[21], b[22], b[23] = 0, 0, 0, 9
			return b
		}, "MPSA_PUT proposal SPI", 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.mutate(append([]byte(nil), golden...))
			n, err := ParseNotifyPayload(b)
			if err == nil {
				_, err = ParsePut(n)
			}
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("want a *DecodeError, got %v", err)
			}
			if de.Field != tc.field || de.Offset != tc.offset {
				t.Fatalf("error %q: field %q offset %d, want field %q offset %d", err, de.Field, de.Offset, tc.field, tc.offset)
			}
			if r := reasons[tc.name]; !strings.Contains(de.Reason, r) {
				t.Fatalf("error %q: want the reason to say %q", err, r)
			}
		})
	}
}

// shortenNonce cuts the nonce to 15 octets, fixing up every length.
func shortenNonce(b []byte) []byte {
	b = append(b[:67:67], b[68:]...)
	b[63] = 15
	b[55] = 0x1b
	b[15] = 0x93
	b[3] = 0x9f
	return b
}

func shortenSKd(b []byte) []byte {
	b = append(b[:111:111], b[112:]...)
	b[91] = 19
	b[83] = 0x1f
	b[15] = 0x93
	b[3] = 0x9f
	return b
}

// removeTransform cuts the n-octet transform at off, fixing up the counts.
func removeTransform(b []byte, off, n int) []byte {
	b = append(b[:off:off], b[off+n:]...)
	b[19]--
	b[15] -= byte(n)
	b[3] -= byte(n)
	return b
}

// addAttr appends a second attribute to the last transform.
func addAttr(b []byte) []byte {
	b = append(b, 0x40, 0x04, 0x00, 0x00)
	b[147] += 4
	b[15] += 4
	b[3] += 4
	return b
}

func TestParseMessageErrors(t *testing.T) {
	msg := &Message{Header: Header{SPIi: 1, SPIr: 2, Exchange: ExchangeInformational}, Payloads: []Payload{MPSAVendorID()}}
	good := mustMarshal(t, msg)
	for _, tc := range []struct {
		name   string
		b      []byte
		field  string
		offset int
	}{
		{"short", good[:20], "IKE header", 0},
		{"version 1", func() []byte { b := bytes.Clone(good); b[17] = 0x10; return b }(), "IKE header version", 17},
		{"length mismatch", func() []byte { b := bytes.Clone(good); b[27]++; return b }(), "IKE header length", 24},
		{"payload past end", func() []byte { b := bytes.Clone(good); b[31] = 0x40; return b }(), "payload[0] length", 30},
		{"payload shorter than header", func() []byte { b := bytes.Clone(good); b[31] = 2; return b }(), "payload[0] length", 30},
		{"chain claims more", func() []byte { b := bytes.Clone(good); b[28] = PayloadVendorID; return b }(), "payload[1] header", len(good)},
		{"trailing octets", func() []byte {
			b := append(bytes.Clone(good), 0, 0)
			b[27] += 2
			return b
		}(), "payload chain", len(good)},
		{"critical unknown", func() []byte {
			b := mustMarshal(t, &Message{Payloads: []Payload{&UnknownPayload{PayloadType: 99, Critical: true}}})
			return b
		}(), "payload[0] critical flag", 29},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseMessage(tc.b)
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("want a *DecodeError, got %v", err)
			}
			if de.Field != tc.field || de.Offset != tc.offset {
				t.Fatalf("error %q: field %q offset %d, want %q at %d", err, de.Field, de.Offset, tc.field, tc.offset)
			}
		})
	}
}

func TestUnknownNonCriticalPayloadKept(t *testing.T) {
	msg := &Message{Payloads: []Payload{&UnknownPayload{PayloadType: 99, Body: []byte{1, 2, 3}}, MPSAVendorID()}}
	m := mustParse(t, mustMarshal(t, msg))
	if u, ok := m.Payloads[0].(*UnknownPayload); !ok || u.PayloadType != 99 || !bytes.Equal(u.Body, []byte{1, 2, 3}) || !m.HasMPSAVendorID() {
		t.Fatalf("payloads %+v", m.Payloads)
	}
}

func TestPutValidateAndRedaction(t *testing.T) {
	p := goldenPut()
	for _, bad := range []func(*Put){
		func(p *Put) { p.SPI = 255 },
		func(p *Put) { p.Nonce = p.Nonce[:15] },
		func(p *Put) { p.Nonce = make([]byte, 257) },
		func(p *Put) { p.SKd = p.SKd[:19] },
		func(p *Put) { p.Suite.KeyBits = 100 },
		func(p *Put) { p.Suite.Integ = IntegNone },
	} {
		q := goldenPut()
		bad(q)
		if _, err := q.Notify(); err == nil {
			t.Errorf("Notify accepted an invalid Put %v", q)
		}
	}
	s := p.String()
	if strings.Contains(s, hex.EncodeToString(goldenNonce)) || strings.Contains(s, hex.EncodeToString(goldenSKd)) {
		t.Fatalf("String leaks key material: %s", s)
	}
	p.Zero()
	if !bytes.Equal(p.SKd, make([]byte, 20)) || !bytes.Equal(p.Nonce, make([]byte, 16)) {
		t.Fatal("Zero left key material")
	}
}

// TestPutLogValueJSON logs a Put through slog's JSON handler: LogValue is
// used (the SPI and suite appear) and neither the Nonce nor SK_d appears in
// any encoding, nor under any key naming them.
func TestPutLogValueJSON(t *testing.T) {
	p := goldenPut()
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("sending", "put", p)
	out := buf.String()
	var rec struct {
		Put map[string]any `json:"put"`
	}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("log line %q: %v", out, err)
	}
	if rec.Put["spi"] != "0x1234abcd" || rec.Put["suite"] != p.Suite.String() || rec.Put["lifetime"] != float64(28800) {
		t.Fatalf("LogValue not used: %s", out)
	}
	lower := strings.ToLower(out)
	for _, secret := range [][]byte{goldenNonce, goldenSKd} {
		for _, enc := range []string{hex.EncodeToString(secret), base64.StdEncoding.EncodeToString(secret), base64.RawStdEncoding.EncodeToString(secret)} {
			if strings.Contains(lower, strings.ToLower(enc)) {
				t.Fatalf("log line leaks key material %s: %s", enc, out)
			}
		}
	}
	for _, key := range []string{"nonce", "skd", "sk_d"} {
		if strings.Contains(lower, key) {
			t.Fatalf("log line names %s: %s", key, out)
		}
	}
}
