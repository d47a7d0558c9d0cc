package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
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
		"bad attribute":   {bad, nil, "MPSA_PUT transform[7] (ROLL2) attribute length at offset 154"},
		"truncated":       {good[:30], nil, "payload length at offset 2"},
		"empty":           {nil, nil, "payload header at offset 0"},
		"not hex":         {[]byte("zz"), []string{"--hex"}, `invalid character 'z'`},
		"message damaged": {func() []byte { n, _ := testPut().Notify(); b := testMessageBytes(t, n); b[28+4+1] = 8; return b }(), nil, "Notify SPI size at offset 33"},
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

// TestKeymat: expected keys from Python's hmac module:
//
//	python3 -c "import hmac,hashlib; k=bytes.fromhex('ab'*32); s=bytes.fromhex('00112233445566778899aabbccddeeff'); ..."
//
// (prf+ as in RFC 7296 2.13, first 64 octets split 32/32).
func TestKeymat(t *testing.T) {
	nonce := "00112233445566778899aabbccddeeff"
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--proposal", "aes256-sha256", "--sk-d", strings.Repeat("ab", 32), "--nonce", nonce},
			"encr_key=f32b7c80364849621f002f1e1eb24e8c417be2b6003b75ee355da9a0d950d45e\ninteg_key=97e1bd16bbc69b94b9e9d37c199212b52ffc31b8f2c7b6cf856c4cafde39b7f6\n"},
		{[]string{"--proposal", "aes256gcm16", "--prf", "prfsha256", "--sk-d", strings.Repeat("ab", 32), "--nonce", nonce},
			"encr_key=f32b7c80364849621f002f1e1eb24e8c417be2b6003b75ee355da9a0d950d45e97e1bd16\ninteg_key=\n"},
		{[]string{"--proposal", "aes128-sha1", "--sk-d", strings.Repeat("cd", 20), "--nonce", nonce},
			"encr_key=0691ee9ef62d0841b7048289b2f66ede\ninteg_key=20d14dea7e322047af70618a902cbb7ec90feb6a\n"},
	} {
		code, out, errs := mpsactl(t, nil, append([]string{"keymat"}, c.args...)...)
		if code != 0 || out != c.want {
			t.Errorf("%v: exit %d\n%s%s\nwant\n%s", c.args, code, out, errs, c.want)
		}
	}
}

func TestKeymatErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--sk-d", "00", "--nonce", "00"}, 2, "--proposal is required"},
		{nil, 2, "mpsactl keymat: --proposal is required\n"},
		{[]string{"--proposal", "aes256-sha256", "--nonce", "00"}, 2, "--sk-d is required"},
		{[]string{"--proposal", "blowfish-sha256", "--sk-d", "00", "--nonce", "00"}, 1, `unknown or unsupported keyword "blowfish"`},
		{[]string{"--proposal", "aes256-sha256", "--sk-d", "xyz", "--nonce", "00"}, 1, "--sk-d: not hex"},
		{[]string{"--proposal", "aes256-sha256-prfsha1", "--prf", "prfsha256", "--sk-d", "00", "--nonce", "00"}, 1, "more than one PRF"},
	} {
		code, _, errs := mpsactl(t, nil, append([]string{"keymat"}, c.args...)...)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, errs, c.code, c.want)
		}
	}
	// A short SK_d works (for debugging) but says it is unusual.
	code, _, errs := mpsactl(t, nil, "keymat", "--proposal", "aes128-sha1", "--sk-d", "0011", "--nonce", strings.Repeat("00", 16))
	if code != 0 || !strings.Contains(errs, "warning: SK_d has 2 octets") {
		t.Errorf("short SK_d: exit %d, stderr %q", code, errs)
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
