package mpsa

import (
	"strings"
	"testing"
)

func TestParseProposal(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Suite
		str  string
	}{
		{"aes256-sha256", Suite{EncrAESCBC, 256, PRFHMACSHA2_256, IntegHMACSHA2_256}, "aes256-sha256-prfsha256"},
		{"aes128-sha1", Suite{EncrAESCBC, 128, PRFHMACSHA1, IntegHMACSHA1_96}, "aes128-sha1-prfsha1"},
		{"AES192-SHA384", Suite{EncrAESCBC, 192, PRFHMACSHA2_384, IntegHMACSHA2_384}, "aes192-sha384-prfsha384"},
		{"aes-sha512-prfsha256", Suite{EncrAESCBC, 128, PRFHMACSHA2_256, IntegHMACSHA2_512}, "aes128-sha512-prfsha256"},
		{"aes128-aesxcbc", Suite{EncrAESCBC, 128, PRFAES128XCBC, IntegAESXCBC96}, "aes128-aesxcbc-prfaesxcbc"},
		{"aes128gcm16", Suite{EncrAESGCM16, 128, PRFHMACSHA2_256, IntegNone}, "aes128gcm16-prfsha256"},
		{"aes256gcm128-prfsha384", Suite{EncrAESGCM16, 256, PRFHMACSHA2_384, IntegNone}, "aes256gcm16-prfsha384"},
		{"aes192gcm8", Suite{EncrAESGCM8, 192, PRFHMACSHA2_256, IntegNone}, "aes192gcm8-prfsha256"},
		{"aes256ctr-sha256", Suite{EncrAESCTR, 256, PRFHMACSHA2_256, IntegHMACSHA2_256}, "aes256ctr-sha256-prfsha256"},
		{"chacha20poly1305", Suite{EncrChaCha20Poly1305, 0, PRFHMACSHA2_256, IntegNone}, "chacha20poly1305-prfsha256"},
		{"aes256-sha256-noesn", Suite{EncrAESCBC, 256, PRFHMACSHA2_256, IntegHMACSHA2_256}, "aes256-sha256-prfsha256"},
	} {
		got, err := ParseProposal(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if got != c.want || got.String() != c.str {
			t.Errorf("%s: got %+v (%s), want %+v (%s)", c.in, got, got, c.want, c.str)
		}
		if again, err := ParseProposal(got.String()); err != nil || again != got {
			t.Errorf("%s: String() %q does not parse back: %v", c.in, got.String(), err)
		}
	}
}

func TestParseProposalErrors(t *testing.T) {
	for _, c := range []struct{ in, msg string }{
		{"", "empty ESP proposal"},
		{"sha256", "no encryption algorithm"},
		{"aes256", "no integrity algorithm"},
		{"aes256gcm16-sha256", "takes no integrity algorithm"},
		{"aes256-sha256-modp2048", "Diffie-Hellman group"},
		{"aes256-sha256-esn", "esn is not possible"},
		{"3des-sha1", `unknown or unsupported keyword "3des"`},
		{"aes256-md5", `unknown or unsupported keyword "md5"`},
		{"aes256-aes128-sha1", "more than one encryption algorithm"},
		{"aes256-sha1-sha256", "more than one integrity algorithm"},
		{"aes256-sha1-prfsha1-prfsha256", "more than one PRF"},
		{"aes256--sha1", "empty keyword"},
		{"aes512-sha1", `unknown or unsupported keyword "aes512"`},
	} {
		_, err := ParseProposal(c.in)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: error %v, want it to say %q", c.in, err, c.msg)
		}
	}
}

func TestCounterModeFlag(t *testing.T) {
	for prop, want := range map[string]bool{
		"aes256-sha256": false, "aes128-sha1": false, "aes128gcm16": true,
		"aes256ctr-sha256": true, "chacha20poly1305": true,
	} {
		s, err := ParseProposal(prop)
		if err != nil {
			t.Fatal(err)
		}
		if s.CounterMode() != want {
			t.Errorf("%s: CounterMode %v, want %v", prop, s.CounterMode(), want)
		}
	}
}

func TestRegistryXFRMNames(t *testing.T) {
	want := map[IntegID]struct {
		name  string
		trunc int
	}{
		IntegHMACSHA1_96:  {"hmac(sha1)", 96},
		IntegHMACSHA2_256: {"hmac(sha256)", 128},
		IntegHMACSHA2_384: {"hmac(sha384)", 192},
		IntegHMACSHA2_512: {"hmac(sha512)", 256},
	}
	for id, w := range want {
		i, ok := LookupInteg(id)
		if !ok || i.XFRM != w.name || i.ICVBytes*8 != w.trunc {
			t.Errorf("integ %d: %+v, want %s truncated to %d", id, i, w.name, w.trunc)
		}
	}
	if e, _ := LookupEncr(EncrAESGCM16); e.XFRM != "rfc4106(gcm(aes))" || e.ICVBits != 128 {
		t.Errorf("GCM16: %+v", e)
	}
	if e, _ := LookupEncr(EncrAESCBC); e.XFRM != "cbc(aes)" {
		t.Errorf("CBC: %+v", e)
	}
}

func TestLookupPRFKeyword(t *testing.T) {
	kws := PRFKeywords()
	if strings.Join(kws, ",") != "prfsha1,prfsha256,prfsha384,prfsha512,prfaesxcbc" {
		t.Fatalf("PRFKeywords %v", kws)
	}
	for _, kw := range kws {
		id, ok := LookupPRFKeyword(strings.ToUpper(kw))
		if p, _ := LookupPRF(id); !ok || p.Name != kw {
			t.Errorf("%s: %d %v", kw, id, ok)
		}
	}
	for _, kw := range []string{"sha256", "sha1", "aes256", "prfmd5", "", "prfsha256-sha1"} {
		if id, ok := LookupPRFKeyword(kw); ok {
			t.Errorf("%q taken for PRF %d", kw, id)
		}
	}
}
