package main

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/mpsa/mpsa/mpsa"
)

// decoded is the JSON that `mpsactl decode` prints. Header fields are
// present for a whole message; SA fields when an MPSA_PUT was found.
type decoded struct {
	IKESPIi    string  `json:"ike_spi_i,omitempty"`
	IKESPIr    string  `json:"ike_spi_r,omitempty"`
	Exchange   *uint8  `json:"exchange,omitempty"`
	Flags      *uint8  `json:"flags,omitempty"`
	MessageID  *uint32 `json:"message_id,omitempty"`
	VendorMPSA *bool   `json:"vendor_mpsa,omitempty"`

	SPI       string       `json:"spi,omitempty"`
	Encr      *decodedEncr `json:"encr,omitempty"`
	PRF       *uint16      `json:"prf,omitempty"`
	Integ     *uint16      `json:"integ,omitempty"`
	Lifetime  *uint32      `json:"lifetime,omitempty"`
	Rollover1 *uint32      `json:"rollover1,omitempty"`
	Rollover2 *uint32      `json:"rollover2,omitempty"`
	Nonce     string       `json:"nonce,omitempty"`
	SKd       string       `json:"sk_d,omitempty"`
}

type decodedEncr struct {
	ID        uint16 `json:"id"`
	KeyLength int    `json:"key_length,omitempty"`
}

// decodeHelp describes the output of decode in its --help, after the
// synopsis; docs/protocol.md says the same.
const decodeHelp = `Decodes a whole IKEv2 message or a bare MPSA_PUT Notify payload (its Next
Payload field is ignored) and prints one JSON object. Only what is on the
wire is printed:
  ike_spi_i, ike_spi_r  the IKE SPIs, 16 hex digits      (whole message only)
  exchange, flags, message_id  the IKE header fields     (whole message only)
  vendor_mpsa           whether V(MPSA) is present       (whole message only)
  spi                   the shared SA's SPI, "0x1234abcd"
  encr                  {"id": ENCR transform ID, "key_length": bits}, where
                        key_length is the Key Length attribute. A fixed-length
                        cipher carries none and has no key_length: for
                        chacha20poly1305 (id 28, a 256-bit key) it is absent.
  prf, integ            the PRF and INTEG transform IDs (integ is 0 with AEAD)
  lifetime, rollover1, rollover2  seconds, as on the wire
  nonce, sk_d           hex, only with --show-keys (secret)
Malformed input: exit status 1 and one line on stderr naming the field.`

func runDecode(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("decode", "decode [--hex] [--show-keys] [FILE|-]\n\n"+decodeHelp, stderr)
	asHex := fs.Bool("hex", false, "the input is hex text (whitespace, colons and a 0x prefix are ignored)")
	showKeys := fs.Bool("show-keys", false, "include the Nonce and SK_d (secret) in the output")
	pos, code, ok := parseArgs(fs, args, stdout)
	if !ok {
		return code
	}
	if len(pos) > 1 {
		fmt.Fprintln(stderr, "mpsactl decode: at most one input file")
		return 2
	}
	in, name, err := readInput(pos, stdin)
	if err != nil {
		fmt.Fprintf(stderr, "mpsactl decode: %v\n", err)
		return 1
	}
	if *asHex {
		if in, err = decodeHexText(in); err != nil {
			fmt.Fprintf(stderr, "mpsactl decode: %s: %v\n", name, err)
			return 1
		}
	}
	out, err := decode(in, *showKeys)
	if err != nil {
		fmt.Fprintf(stderr, "mpsactl decode: %s: %v\n", name, err)
		return 1
	}
	b, _ := json.Marshal(out)
	fmt.Fprintf(stdout, "%s\n", b)
	clear(in)
	return 0
}

func readInput(pos []string, stdin io.Reader) ([]byte, string, error) {
	if len(pos) == 0 || pos[0] == "-" {
		b, err := io.ReadAll(stdin)
		return b, "stdin", err
	}
	b, err := os.ReadFile(pos[0])
	return b, pos[0], err
}

func decodeHexText(b []byte) ([]byte, error) {
	s := strings.TrimSpace(string(b))
	s = strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	s = strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\n', '\r', ':':
			return -1
		}
		return r
	}, s)
	out, err := hex.DecodeString(s)
	if err != nil {
		var ie hex.InvalidByteError
		if errors.As(err, &ie) {
			return nil, fmt.Errorf("not hex text: invalid character %q", rune(ie))
		}
		return nil, fmt.Errorf("not hex text: %v", err)
	}
	return out, nil
}

// parseInput reads b as a whole IKEv2 message or as a bare Notify payload
// and returns the message (nil for a bare payload) and its MPSA_PUT (nil
// when a message carries none). The caller zeroes the Put.
//
// A reading succeeds when the MPSA_PUT decodes too; whichever does is
// taken, the message first. When both fail, the error reported is that of
// the reading the input resembles, so that it names a field that is
// there: a message is at least 28 octets and has version 2.x at octet 17
// or states its own length at octet 24; a bare payload states its own
// length at octet 2 or starts its body with ESP, SPI size 4 and MPSA_PUT.
// An input that resembles both is reported with the reading that got
// further into it, one that resembles neither with both errors.
func parseInput(b []byte) (*mpsa.Message, *mpsa.Put, error) {
	if len(b) < mpsa.HeaderLen {
		n, err := mpsa.ParseNotifyPayload(b)
		if err != nil {
			return nil, nil, fmt.Errorf("neither an IKEv2 message (%d octets at least) nor a Notify payload: %w", mpsa.HeaderLen, err)
		}
		p, err := mpsa.ParsePut(n)
		return nil, p, err
	}
	m, mp, merr := readMessage(b)
	if merr == nil {
		return m, mp, nil
	}
	np, nerr := readNotify(b)
	if nerr == nil {
		return nil, np, nil
	}
	msgLike := b[17]>>4 == 2 || int64(binary.BigEndian.Uint32(b[24:])) == int64(len(b))
	notifyLike := int(binary.BigEndian.Uint16(b[2:])) == len(b) ||
		b[4] == mpsa.ProtocolESP && b[5] == 4 && binary.BigEndian.Uint16(b[6:]) == mpsa.NotifyMPSAPut
	switch {
	case msgLike && !notifyLike:
		return nil, nil, merr
	case notifyLike && !msgLike:
		return nil, nil, nerr
	case msgLike && notifyLike:
		if errOffset(nerr) > errOffset(merr) {
			return nil, nil, nerr
		}
		return nil, nil, merr
	}
	return nil, nil, fmt.Errorf("neither an IKEv2 message (%v) nor a Notify payload: %w", merr, nerr)
}

func readMessage(b []byte) (*mpsa.Message, *mpsa.Put, error) {
	m, err := mpsa.ParseMessage(b)
	if err != nil {
		return nil, nil, err
	}
	n := m.PutNotify()
	if n == nil {
		return m, nil, nil
	}
	p, err := mpsa.ParsePut(n)
	if err != nil {
		return nil, nil, err
	}
	return m, p, nil
}

func readNotify(b []byte) (*mpsa.Put, error) {
	n, err := mpsa.ParseNotifyPayload(b)
	if err != nil {
		return nil, err
	}
	return mpsa.ParsePut(n)
}

// errOffset is where a decode error lies, -1 if it does not say.
func errOffset(err error) int {
	var de *mpsa.DecodeError
	if errors.As(err, &de) {
		return de.Offset
	}
	return -1
}

func decode(b []byte, showKeys bool) (*decoded, error) {
	var out decoded
	m, p, err := parseInput(b)
	if err != nil {
		return nil, err
	}
	if m != nil {
		h := m.Header
		v := m.HasMPSAVendorID()
		out.IKESPIi = fmt.Sprintf("%016x", h.SPIi)
		out.IKESPIr = fmt.Sprintf("%016x", h.SPIr)
		out.Exchange, out.Flags, out.MessageID, out.VendorMPSA = &h.Exchange, &h.Flags, &h.MessageID, &v
	}
	if p == nil {
		return &out, nil
	}
	defer p.Zero()
	prf, integ := uint16(p.Suite.PRF), uint16(p.Suite.Integ)
	out.SPI = fmt.Sprintf("0x%08x", p.SPI)
	out.Encr = &decodedEncr{ID: uint16(p.Suite.Encr), KeyLength: p.Suite.KeyBits}
	out.PRF, out.Integ = &prf, &integ
	out.Lifetime, out.Rollover1, out.Rollover2 = &p.Lifetime, &p.Rollover1, &p.Rollover2
	if showKeys {
		out.Nonce = hex.EncodeToString(p.Nonce)
		out.SKd = hex.EncodeToString(p.SKd)
	}
	return &out, nil
}
