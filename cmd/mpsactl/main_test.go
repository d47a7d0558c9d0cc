package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mpsa/mpsa/mpsa"
)

func mpsactl(t *testing.T, stdin []byte, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = run(args, bytes.NewReader(stdin), &o, &e)
	return code, o.String(), e.String()
}

var (
	testNonce = bytes.Repeat([]byte{0x11}, 16)
	testSKd   = bytes.Repeat([]byte{0x22}, 20)
)

func testPut() *mpsa.Put {
	return &mpsa.Put{
		SPI:   0x1234abcd,
		Suite: mpsa.Suite{Encr: mpsa.EncrAESCBC, KeyBits: 256, PRF: mpsa.PRFHMACSHA1, Integ: mpsa.IntegHMACSHA1_96},
		Nonce: testNonce, SKd: testSKd, Lifetime: 28800, Rollover1: 30, Rollover2: 60,
	}
}

func testNotifyBytes(t *testing.T) []byte {
	n, err := testPut().Notify()
	if err != nil {
		t.Fatal(err)
	}
	b, err := mpsa.AppendPayload(nil, n)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func testMessageBytes(t *testing.T, payloads ...mpsa.Payload) []byte {
	b, err := (&mpsa.Message{
		Header:   mpsa.Header{SPIi: 0x0102030405060708, SPIr: 0xa1a2a3a4a5a6a7a8, Exchange: 37, Flags: mpsa.FlagResponse, MessageID: 5},
		Payloads: payloads,
	}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeBareNotifyExactJSON(t *testing.T) {
	code, out, errs := mpsactl(t, testNotifyBytes(t), "decode")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	want := `{"spi":"0x1234abcd","encr":{"id":12,"key_length":256},"prf":2,"integ":2,"lifetime":28800,"rollover1":30,"rollover2":60}` + "\n"
	if out != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
}

func TestDecodeShowKeysAndHex(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "put.hex")
	// hex text as a capture tool prints it: spaced, wrapped, with 0x
	h := hex.EncodeToString(testNotifyBytes(t))
	text := "0x" + h[:40] + "\n" + strings.Join(strings.SplitAfter(h[40:], "ab"), " ") + "\n"
	os.WriteFile(f, []byte(text), 0o600)
	code, out, errs := mpsactl(t, nil, "decode", f, "--hex", "--show-keys")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	want := `{"spi":"0x1234abcd","encr":{"id":12,"key_length":256},"prf":2,"integ":2,"lifetime":28800,"rollover1":30,"rollover2":60,` +
		`"nonce":"` + hex.EncodeToString(testNonce) + `","sk_d":"` + hex.EncodeToString(testSKd) + `"}` + "\n"
	if out != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
}

func TestDecodeWholeMessage(t *testing.T) {
	n, _ := testPut().Notify()
	code, out, errs := mpsactl(t, testMessageBytes(t, n), "decode", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	want := `{"ike_spi_i":"0102030405060708","ike_spi_r":"a1a2a3a4a5a6a7a8","exchange":37,"flags":32,"message_id":5,"vendor_mpsa":false,` +
		`"spi":"0x1234abcd","encr":{"id":12,"key_length":256},"prf":2,"integ":2,"lifetime":28800,"rollover1":30,"rollover2":60}` + "\n"
	if out != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
	if strings.Contains(out, hex.EncodeToString(testSKd)) {
		t.Fatal("SK_d printed without --show-keys")
	}
}

func TestDecodeHello(t *testing.T) {
	code, out, _ := mpsactl(t, testMessageBytes(t, mpsa.MPSAVendorID()), "decode")
	var m map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &m) != nil {
		t.Fatalf("exit %d, output %q", code, out)
	}
	if m["vendor_mpsa"] != true || m["message_id"] != 5.0 || m["ike_spi_i"] != "0102030405060708" {
		t.Fatalf("output %s", out)
	}
	if _, has := m["spi"]; has {
		t.Fatal("hello decoded with an SA")
	}
}

func TestDecodeMalformed(t *testing.T) {
	good := testNotifyBytes(t)
	bad := append([]byte(nil), good...)
	bad[len(bad)-8+3] = 0x99 // ROLL2 attribute length
	for name, c := range map[string]struct {
		in   []byte
		args []string
		want string
	}{
		"bad attribute":       {bad, nil, "MPSA_PUT transform[7] (ROLL2) attribute length at offset 154"},
		"truncated":           {good[:30], nil, "stdin: payload length at offset 2: states 160 octets, input has 30\n"},
		"not MPSA_PUT":        {append([]byte{0, 0, 0, 30}, make([]byte, 26)...), nil, "stdin: Notify message type at offset 6: 0, want MPSA_PUT (40960)\n"},
		"short, not MPSA_PUT": {[]byte{0, 0, 0, 8, 3, 0, 0, 1}, nil, "stdin: Notify message type at offset 6: 1, want MPSA_PUT (40960)\n"},
		"neither":             {make([]byte, 30), nil, "stdin: neither an IKEv2 message (IKE header version at offset 17: major version 0, want 2) nor a Notify payload: payload length at offset 2"},
		"empty":               {nil, nil, "payload header at offset 0"},
		"not hex":             {[]byte("zz"), []string{"--hex"}, `invalid character 'z'`},
		"message damaged":     {func() []byte { n, _ := testPut().Notify(); b := testMessageBytes(t, n); b[28+4+1] = 8; return b }(), nil, "Notify SPI size at offset 33"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errs := mpsactl(t, c.in, append([]string{"decode"}, c.args...)...)
			if code != 1 || out != "" {
				t.Fatalf("exit %d, stdout %q", code, out)
			}
			if strings.Count(errs, "\n") != 1 || !strings.Contains(errs, c.want) || strings.Contains(errs, "goroutine") {
				t.Fatalf("stderr %q, want one line containing %q", errs, c.want)
			}
		})
	}
	if code, _, _ := mpsactl(t, nil, "decode", "/nonexistent/file"); code != 1 {
		t.Fatalf("missing file: exit %d", code)
	}
	if code, _, _ := mpsactl(t, nil, "decode", "a", "b"); code != 2 {
		t.Fatalf("two files: exit %d", code)
	}
}

// TestDecodeMalformedMessage: a whole message damaged in its header or
// cut short is reported as a message, naming the IKE header field, not
// read as a bare Notify whose fields are not there.
func TestDecodeMalformedMessage(t *testing.T) {
	n, _ := testPut().Notify()
	good := testMessageBytes(t, mpsa.MPSAVendorID(), n)
	if len(good) <= 150 {
		t.Fatalf("test message of %d octets, want more than 150", len(good))
	}
	for name, c := range map[string]struct {
		in   []byte
		want string
	}{
		"header length off by one": {func() []byte { b := bytes.Clone(good); b[27]++; return b }(),
			fmt.Sprintf("IKE header length at offset 24: states %d octets, message has %d", len(good)+1, len(good))},
		"truncated capture": {bytes.Clone(good[:150]),
			fmt.Sprintf("IKE header length at offset 24: states %d octets, message has 150", len(good))},
		"two trailing octets": {append(bytes.Clone(good), 0, 0),
			fmt.Sprintf("IKE header length at offset 24: states %d octets, message has %d", len(good), len(good)+2)},
		"version 1": {func() []byte { b := bytes.Clone(good); b[17] = 0x10; return b }(),
			"IKE header version at offset 17: major version 1, want 2"},
		// The IKE SPI's octets 2-3 state the input's length as a bare
		// payload would, and the bare reading fails early (at the
		// Notify type, offset 6); the message reading got further.
		"resembles both": {func() []byte {
			b := testMessageBytes(t, n)
			b[2], b[3] = byte(len(b)>>8), byte(len(b))
			b[len(b)-5] = 0x99 // ROLL2 attribute length
			return b
		}(), "MPSA_PUT transform[7] (ROLL2) attribute length at offset 182: 153 octets run past the transform end (4 left)"},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errs := mpsactl(t, c.in, "decode")
			if code != 1 || out != "" {
				t.Fatalf("exit %d, stdout %q", code, out)
			}
			if errs != "mpsactl decode: stdin: "+c.want+"\n" {
				t.Fatalf("stderr %q, want the line %q", errs, c.want)
			}
		})
	}
}

// TestDecodeBareNotifyCutFromMessage: a Notify cut out of a message keeps
// the Next Payload of its place there, which a bare payload ignores.
func TestDecodeBareNotifyCutFromMessage(t *testing.T) {
	n, _ := testPut().Notify()
	msg := testMessageBytes(t, n, mpsa.MPSAVendorID())
	notify := msg[mpsa.HeaderLen : len(msg)-4-len(mpsa.VendorMPSA)]
	if notify[0] != mpsa.PayloadVendorID {
		t.Fatalf("cut %x, want a Notify whose Next Payload is V", notify[:4])
	}
	code, out, errs := mpsactl(t, notify, "decode")
	want := `{"spi":"0x1234abcd","encr":{"id":12,"key_length":256},"prf":2,"integ":2,"lifetime":28800,"rollover1":30,"rollover2":60}` + "\n"
	if code != 0 || out != want {
		t.Fatalf("exit %d, stdout %q, stderr %q; want %s", code, out, errs, want)
	}
}

// TestDecodeFixedLengthCipher: ChaCha20-Poly1305 has no Key Length
// attribute on the wire, so its encr has no key_length, and --help says so.
func TestDecodeFixedLengthCipher(t *testing.T) {
	p := testPut()
	p.Suite = mpsa.Suite{Encr: mpsa.EncrChaCha20Poly1305, PRF: mpsa.PRFHMACSHA1}
	n, err := p.Notify()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := mpsa.AppendPayload(nil, n)
	code, out, errs := mpsactl(t, b, "decode")
	want := `{"spi":"0x1234abcd","encr":{"id":28},"prf":2,"integ":0,"lifetime":28800,"rollover1":30,"rollover2":60}` + "\n"
	if code != 0 || out != want {
		t.Fatalf("exit %d, stdout %q, stderr %q; want %s", code, out, errs, want)
	}
	_, help, _ := mpsactl(t, nil, "decode", "--help")
	if !strings.Contains(help, "chacha20poly1305 (id 28, a 256-bit key) it is absent") {
		t.Fatalf("decode --help does not explain the missing key_length:\n%s", help)
	}
}

// keymatKAT is the output of testdata/gen_keymat.py, verbatim: prf+ and
// KEYMAT computed with Python's hmac and hashlib, independent of mpsa's
// code. Regenerate and compare with
//
//	cd cmd/mpsactl/testdata && python3 gen_keymat.py
//
// Each case is four lines: the mpsactl keymat arguments, SK_d in hex as
// --sk-d-file reads it, then the two lines it must print.
const keymatKAT = `--proposal aes256-sha256 --sk-d-file - --nonce 00112233445566778899aabbccddeeff
abababababababababababababababababababababababababababababababab
encr_key=f32b7c80364849621f002f1e1eb24e8c417be2b6003b75ee355da9a0d950d45e
integ_key=97e1bd16bbc69b94b9e9d37c199212b52ffc31b8f2c7b6cf856c4cafde39b7f6
--proposal aes256gcm16 --prf prfsha256 --sk-d-file - --nonce 00112233445566778899aabbccddeeff
abababababababababababababababababababababababababababababababab
encr_key=f32b7c80364849621f002f1e1eb24e8c417be2b6003b75ee355da9a0d950d45e97e1bd16
integ_key=
--proposal aes128-sha1 --sk-d-file - --nonce 00112233445566778899aabbccddeeff
cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd
encr_key=0691ee9ef62d0841b7048289b2f66ede
integ_key=20d14dea7e322047af70618a902cbb7ec90feb6a
--proposal aes256-sha512 --prf prfsha1 --sk-d-file - --nonce 00112233445566778899aabbccddeeff
efefefefefefefefefefefefefefefefefefefef
encr_key=e8712c4d1173053ff2e992cdfa5c746f28163abcc5c7161d35b9b7efb0553bcb
integ_key=2ded84a9eaf8eff9255074e87952cb63491774f30b80297f6647efc1d52b9dc21702e1621b296aa9e7241dd4332cd767796a7c9b2fe4fd695585ed74de45dd96
`

// TestKeymat derives the known answers with SK_d from stdin and from a
// file (mode 0600, so without a warning).
func TestKeymat(t *testing.T) {
	lines := strings.Split(strings.TrimSuffix(keymatKAT, "\n"), "\n")
	if len(lines) == 0 || len(lines)%4 != 0 {
		t.Fatalf("keymatKAT has %d lines, want cases of 4", len(lines))
	}
	for i := 0; i < len(lines); i += 4 {
		args := strings.Fields(lines[i])
		skd := lines[i+1]
		want := lines[i+2] + "\n" + lines[i+3] + "\n"
		code, out, errs := mpsactl(t, []byte(skd+"\n"), append([]string{"keymat"}, args...)...)
		if code != 0 || out != want || errs != "" {
			t.Errorf("%v, SK_d on stdin: exit %d\n%s%s\nwant\n%s", args, code, out, errs, want)
		}
		file := filepath.Join(t.TempDir(), "skd")
		if err := os.WriteFile(file, []byte("  "+skd+"\n\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fileArgs := slices.Clone(args)
		fileArgs[slices.Index(fileArgs, "-")] = file
		code, out, errs = mpsactl(t, nil, append([]string{"keymat"}, fileArgs...)...)
		if code != 0 || out != want || errs != "" {
			t.Errorf("%v, SK_d in a file: exit %d\n%s%s\nwant\n%s", fileArgs, code, out, errs, want)
		}
	}
}

// TestKeymatRefusesSKdOnCommandLine: SK_d on the command line, where
// every user sees it, is refused with the reason and what to use instead,
// and its value is not repeated.
func TestKeymatRefusesSKdOnCommandLine(t *testing.T) {
	const secret = "abababababababababababababababababababababababababababababababab"
	for _, args := range [][]string{
		{"--proposal", "aes256-sha256", "--sk-d", secret, "--nonce", "00112233445566778899aabbccddeeff"},
		{"--proposal", "aes256-sha256", "--sk-d=" + secret, "--sk-d-file", "-", "--nonce", "00"},
	} {
		code, out, errs := mpsactl(t, []byte(secret), append([]string{"keymat"}, args...)...)
		if code != 2 || out != "" || !strings.Contains(errs, "--sk-d is refused") || !strings.Contains(errs, "visible to every user") ||
			!strings.Contains(errs, "--sk-d-file FILE") || !strings.Contains(errs, "--sk-d-file -") || strings.Contains(errs, secret) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
	_, help, _ := mpsactl(t, nil, "keymat", "--help")
	if !strings.Contains(help, "--sk-d-file FILE|-") || !strings.Contains(help, "refused") {
		t.Errorf("keymat --help does not show --sk-d-file and the refusal:\n%s", help)
	}
	_, usage, _ := mpsactl(t, nil, "--help")
	if strings.Contains(usage, "--sk-d HEX") || !strings.Contains(usage, "--sk-d-file FILE|-") {
		t.Errorf("mpsactl --help:\n%s", usage)
	}
}

func TestKeymatErrors(t *testing.T) {
	for _, c := range []struct {
		args  []string
		stdin string
		code  int
		want  string
	}{
		{[]string{"--sk-d-file", "-", "--nonce", "00"}, "00", 2, "--proposal is required"},
		{nil, "", 2, "mpsactl keymat: --proposal is required\n"},
		{[]string{"--proposal", "aes256-sha256", "--nonce", "00"}, "00", 2, "--sk-d-file is required"},
		{[]string{"--proposal", "blowfish-sha256", "--sk-d-file", "-", "--nonce", "00"}, "00", 1, `unknown or unsupported keyword "blowfish"`},
		{[]string{"--proposal", "aes256-sha256", "--sk-d-file", "-", "--nonce", "00"}, "xyz", 1, "--sk-d-file: not hex"},
		{[]string{"--proposal", "aes256-sha256", "--sk-d-file", "-", "--nonce", "00"}, "", 1, "--sk-d-file: not hex"},
		{[]string{"--proposal", "aes256-sha256", "--sk-d-file", "-", "--nonce", "00"}, "abc", 1, "--sk-d-file: not hex"},
		{[]string{"--proposal", "aes256-sha256", "--sk-d-file", "-", "--nonce", "00"}, strings.Repeat("ab", 3000), 1, "more than 4096 octets"},
		{[]string{"--proposal", "aes256-sha256", "--sk-d-file", "/nonexistent/skd", "--nonce", "00"}, "", 1, "no such file"},
		{[]string{"--proposal", "aes256-sha256-prfsha1", "--prf", "prfsha256", "--sk-d-file", "-", "--nonce", "00"}, "00", 1, "more than one PRF"},
		// --prf takes PRF keywords only: appended to the proposal, sha256
		// would have made aes256 a valid proposal, and sha1 a second
		// integrity algorithm.
		{[]string{"--proposal", "aes256", "--prf", "sha256", "--sk-d-file", "-", "--nonce", "00"}, "00", 1,
			`mpsactl keymat: --prf: "sha256" is not a PRF keyword (prfsha1, prfsha256, prfsha384, prfsha512, prfaesxcbc)` + "\n"},
		{[]string{"--proposal", "aes256-sha256", "--prf", "sha1", "--sk-d-file", "-", "--nonce", "00"}, "00", 1, `--prf: "sha1" is not a PRF keyword`},
		{[]string{"--proposal", "aes256-sha256", "--prf", "aes128", "--sk-d-file", "-", "--nonce", "00"}, "00", 1, `--prf: "aes128" is not a PRF keyword`},
	} {
		code, _, errs := mpsactl(t, []byte(c.stdin), append([]string{"keymat"}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v with %q on stdin: exit %d, stderr %q; want %d and %q", c.args, c.stdin, code, errs, c.code, c.want)
		}
	}
	// A short SK_d works (for debugging) but says it is unusual.
	code, _, errs := mpsactl(t, []byte("0011"), "keymat", "--proposal", "aes128-sha1", "--sk-d-file", "-", "--nonce", strings.Repeat("00", 16))
	if code != 0 || !strings.Contains(errs, "warning: SK_d has 2 octets") {
		t.Errorf("short SK_d: exit %d, stderr %q", code, errs)
	}
	// A file others can read works, with a warning.
	file := filepath.Join(t.TempDir(), "skd")
	if err := os.WriteFile(file, []byte(strings.Repeat("cd", 20)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs = mpsactl(t, nil, "keymat", "--proposal", "aes128-sha1", "--sk-d-file", file, "--nonce", strings.Repeat("00", 16))
	if code != 0 || !strings.Contains(errs, "others may read it (mode 0644)") {
		t.Errorf("readable SK_d file: exit %d, stderr %q", code, errs)
	}
}

func TestUsageAndVersion(t *testing.T) {
	if code, _, errs := mpsactl(t, nil); code != 2 || !strings.Contains(errs, "usage: mpsactl") {
		t.Fatalf("no args: %d %q", code, errs)
	}
	if code, _, _ := mpsactl(t, nil, "frobnicate"); code != 2 {
		t.Fatal("unknown command accepted")
	}
	if code, out, _ := mpsactl(t, nil, "--version"); code != 0 || !strings.HasPrefix(out, "mpsactl ") {
		t.Fatalf("--version: %d %q", code, out)
	}
}

// TestCommandHelp: a command's --help goes to stdout once; a bad flag
// prints the usage to stderr.
func TestCommandHelp(t *testing.T) {
	for _, cmd := range []string{"status", "members", "peers", "rekey", "decode", "keymat"} {
		code, out, errs := mpsactl(t, nil, cmd, "--help")
		if code != 0 || strings.Count(out, "usage: mpsactl "+cmd) != 1 || !strings.Contains(out, "-") || errs != "" {
			t.Errorf("%s --help: exit %d, stdout %q, stderr %q", cmd, code, out, errs)
		}
		code, out, errs = mpsactl(t, nil, cmd, "--bogus")
		if code != 2 || out != "" || !strings.HasPrefix(errs, "flag provided but not defined: -bogus\nusage: mpsactl "+cmd) {
			t.Errorf("%s --bogus: exit %d, stdout %q, stderr %q", cmd, code, out, errs)
		}
	}
}
