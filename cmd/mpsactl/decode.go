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

func runDecode(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("decode", "decode [--hex] [--show-keys] [FILE|-]", stderr)
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

// isMessage tells a whole IKEv2 message from a bare payload: a message has
// version 2.x at octet 17 and states its own length at octet 24.
func isMessage(b []byte) bool {
	return len(b) >= mpsa.HeaderLen && b[17]>>4 == 2 && int(binary.BigEndian.Uint32(b[24:])) == len(b)
}

func decode(b []byte, showKeys bool) (*decoded, error) {
	var (
		out decoded
		n   *mpsa.Notify
	)
	if isMessage(b) {
		m, err := mpsa.ParseMessage(b)
		if err != nil {
			return nil, err
		}
		h := m.Header
		v := m.HasMPSAVendorID()
		out.IKESPIi = fmt.Sprintf("%016x", h.SPIi)
		out.IKESPIr = fmt.Sprintf("%016x", h.SPIr)
		out.Exchange, out.Flags, out.MessageID, out.VendorMPSA = &h.Exchange, &h.Flags, &h.MessageID, &v
		if n = m.PutNotify(); n == nil {
			return &out, nil
		}
	} else {
		var err error
		if n, err = mpsa.ParseNotifyPayload(b); err != nil {
			return nil, fmt.Errorf("neither an IKEv2 message nor a Notify payload: %w", err)
		}
	}
	p, err := mpsa.ParsePut(n)
	if err != nil {
		return nil, err
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
