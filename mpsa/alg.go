package mpsa

import (
	"fmt"
	"slices"
	"strings"
)

// IKEv2 transform types (RFC 7296 section 3.3.2) and the MPSA transform-like
// types of the draft, section 3.2.2.
const (
	TransformENCR  uint8 = 1
	TransformPRF   uint8 = 2
	TransformINTEG uint8 = 3
	TransformNONCE uint8 = 241
	TransformSKD   uint8 = 242
	TransformLIFE  uint8 = 243
	TransformROLL1 uint8 = 244
	TransformROLL2 uint8 = 245
)

// EncrID is an IKEv2 encryption transform ID (IANA "Transform Type 1").
type EncrID uint16

// IKEv2 encryption transform IDs known to mpsa.
const (
	EncrAESCBC           EncrID = 12
	EncrAESCTR           EncrID = 13
	EncrAESGCM8          EncrID = 18
	EncrAESGCM12         EncrID = 19
	EncrAESGCM16         EncrID = 20
	EncrChaCha20Poly1305 EncrID = 28
)

// PRFID is an IKEv2 pseudorandom function transform ID (Transform Type 2).
type PRFID uint16

// IKEv2 PRF transform IDs known to mpsa.
const (
	PRFHMACSHA1     PRFID = 2
	PRFAES128XCBC   PRFID = 4
	PRFHMACSHA2_256 PRFID = 5
	PRFHMACSHA2_384 PRFID = 6
	PRFHMACSHA2_512 PRFID = 7
)

// IntegID is an IKEv2 integrity transform ID (Transform Type 3). IntegNone
// goes with AEAD ciphers.
type IntegID uint16

// IKEv2 integrity transform IDs known to mpsa.
const (
	IntegNone         IntegID = 0
	IntegHMACSHA1_96  IntegID = 2
	IntegAESXCBC96    IntegID = 5
	IntegHMACSHA2_256 IntegID = 12
	IntegHMACSHA2_384 IntegID = 13
	IntegHMACSHA2_512 IntegID = 14
)

// EncrInfo describes an ESP encryption algorithm.
type EncrInfo struct {
	ID EncrID
	// Name is the strongSwan keyword stem ("aes", "aes...gcm16").
	Name string
	// KeyLengths lists the key lengths in bits that the Key Length
	// attribute may carry; empty for fixed-length ciphers.
	KeyLengths []int
	// FixedKeyBits is the key length in bits of a fixed-length cipher.
	FixedKeyBits int
	// SaltBytes is the number of KEYMAT bytes taken after the key as the
	// salt or nonce (4 for GCM, CTR and ChaCha20-Poly1305).
	SaltBytes int
	// AEAD is true for combined-mode ciphers, which take no INTEG.
	AEAD bool
	// ICVBits is the ICV length of an AEAD cipher.
	ICVBits int
	// CounterMode is true for ciphers whose security depends on never
	// repeating a counter under one key: a key shared by many senders
	// risks exactly that (RFC 6054), so mpsa refuses them by default.
	CounterMode bool
	// XFRM is the Linux kernel's algorithm name.
	XFRM string
}

// IntegInfo describes an ESP integrity algorithm.
type IntegInfo struct {
	ID   IntegID
	Name string // strongSwan keyword
	// KeyBytes is the integrity key length taken from KEYMAT.
	KeyBytes int
	// ICVBytes is the truncated ICV length carried in ESP.
	ICVBytes int
	// XFRM is the kernel's algorithm name; the truncation is ICVBytes*8.
	XFRM string
	// PRF is the PRF that follows from this integrity algorithm when a
	// proposal names none.
	PRF PRFID
}

// PRFInfo describes an IKEv2 pseudorandom function.
type PRFInfo struct {
	ID   PRFID
	Name string // strongSwan keyword, "prfsha256"
	// KeyBytes is the preferred key length, which is also the length of
	// SK_d in MPSA_PUT.
	KeyBytes int
}

// LookupEncr returns the description of an encryption transform ID.
func LookupEncr(id EncrID) (EncrInfo, bool) {
	switch id {
	case EncrAESCBC:
		return EncrInfo{ID: EncrAESCBC, Name: "aes", KeyLengths: []int{128, 192, 256}, XFRM: "cbc(aes)"}, true
	case EncrAESCTR:
		return EncrInfo{ID: EncrAESCTR, Name: "aesctr", KeyLengths: []int{128, 192, 256}, SaltBytes: 4, CounterMode: true, XFRM: "rfc3686(ctr(aes))"}, true
	case EncrAESGCM8:
		return EncrInfo{ID: EncrAESGCM8, Name: "aesgcm8", KeyLengths: []int{128, 192, 256}, SaltBytes: 4, AEAD: true, ICVBits: 64, CounterMode: true, XFRM: "rfc4106(gcm(aes))"}, true
	case EncrAESGCM12:
		return EncrInfo{ID: EncrAESGCM12, Name: "aesgcm12", KeyLengths: []int{128, 192, 256}, SaltBytes: 4, AEAD: true, ICVBits: 96, CounterMode: true, XFRM: "rfc4106(gcm(aes))"}, true
	case EncrAESGCM16:
		return EncrInfo{ID: EncrAESGCM16, Name: "aesgcm16", KeyLengths: []int{128, 192, 256}, SaltBytes: 4, AEAD: true, ICVBits: 128, CounterMode: true, XFRM: "rfc4106(gcm(aes))"}, true
	case EncrChaCha20Poly1305:
		return EncrInfo{ID: EncrChaCha20Poly1305, Name: "chacha20poly1305", FixedKeyBits: 256, SaltBytes: 4, AEAD: true, ICVBits: 128, CounterMode: true, XFRM: "rfc7539esp(chacha20,poly1305)"}, true
	}
	return EncrInfo{}, false
}

// LookupInteg returns the description of an integrity transform ID.
func LookupInteg(id IntegID) (IntegInfo, bool) {
	switch id {
	case IntegHMACSHA1_96:
		return IntegInfo{ID: IntegHMACSHA1_96, Name: "sha1", KeyBytes: 20, ICVBytes: 12, XFRM: "hmac(sha1)", PRF: PRFHMACSHA1}, true
	case IntegAESXCBC96:
		return IntegInfo{ID: IntegAESXCBC96, Name: "aesxcbc", KeyBytes: 16, ICVBytes: 12, XFRM: "xcbc(aes)", PRF: PRFAES128XCBC}, true
	case IntegHMACSHA2_256:
		return IntegInfo{ID: IntegHMACSHA2_256, Name: "sha256", KeyBytes: 32, ICVBytes: 16, XFRM: "hmac(sha256)", PRF: PRFHMACSHA2_256}, true
	case IntegHMACSHA2_384:
		return IntegInfo{ID: IntegHMACSHA2_384, Name: "sha384", KeyBytes: 48, ICVBytes: 24, XFRM: "hmac(sha384)", PRF: PRFHMACSHA2_384}, true
	case IntegHMACSHA2_512:
		return IntegInfo{ID: IntegHMACSHA2_512, Name: "sha512", KeyBytes: 64, ICVBytes: 32, XFRM: "hmac(sha512)", PRF: PRFHMACSHA2_512}, true
	}
	return IntegInfo{}, false
}

// LookupPRF returns the description of a PRF transform ID.
func LookupPRF(id PRFID) (PRFInfo, bool) {
	switch id {
	case PRFHMACSHA1:
		return PRFInfo{ID: PRFHMACSHA1, Name: "prfsha1", KeyBytes: 20}, true
	case PRFAES128XCBC:
		return PRFInfo{ID: PRFAES128XCBC, Name: "prfaesxcbc", KeyBytes: 16}, true
	case PRFHMACSHA2_256:
		return PRFInfo{ID: PRFHMACSHA2_256, Name: "prfsha256", KeyBytes: 32}, true
	case PRFHMACSHA2_384:
		return PRFInfo{ID: PRFHMACSHA2_384, Name: "prfsha384", KeyBytes: 48}, true
	case PRFHMACSHA2_512:
		return PRFInfo{ID: PRFHMACSHA2_512, Name: "prfsha512", KeyBytes: 64}, true
	}
	return PRFInfo{}, false
}

// Suite is the set of algorithms of one shared SA: what MPSA_PUT carries in
// its ENCR, PRF and INTEG transforms.
type Suite struct {
	Encr EncrID
	// KeyBits is the ENCR Key Length attribute (0 for fixed-length ciphers).
	KeyBits int
	PRF     PRFID
	// Integ is IntegNone for AEAD ciphers.
	Integ IntegID
}

// EncrKeyBytes is the number of KEYMAT bytes that make the encryption key,
// salt included (the kernel wants key||salt for GCM, CTR and ChaCha).
func (s Suite) EncrKeyBytes() int {
	e, _ := LookupEncr(s.Encr)
	bits := s.KeyBits
	if bits == 0 {
		bits = e.FixedKeyBits
	}
	return bits/8 + e.SaltBytes
}

// IntegKeyBytes is the number of KEYMAT bytes that make the integrity key.
func (s Suite) IntegKeyBytes() int {
	if s.Integ == IntegNone {
		return 0
	}
	i, _ := LookupInteg(s.Integ)
	return i.KeyBytes
}

// Validate checks that every algorithm is known and that they fit together.
func (s Suite) Validate() error {
	e, ok := LookupEncr(s.Encr)
	if !ok {
		return fmt.Errorf("unsupported encryption transform ID %d", s.Encr)
	}
	if len(e.KeyLengths) > 0 {
		if !slices.Contains(e.KeyLengths, s.KeyBits) {
			return fmt.Errorf("key length %d bits is not valid for encryption transform %d (want one of %v)", s.KeyBits, s.Encr, e.KeyLengths)
		}
	} else if s.KeyBits != 0 && s.KeyBits != e.FixedKeyBits {
		return fmt.Errorf("key length %d bits is not valid for encryption transform %d (fixed %d)", s.KeyBits, s.Encr, e.FixedKeyBits)
	}
	if _, ok := LookupPRF(s.PRF); !ok {
		return fmt.Errorf("unsupported PRF transform ID %d", s.PRF)
	}
	switch {
	case e.AEAD && s.Integ != IntegNone:
		return fmt.Errorf("AEAD encryption transform %d takes no integrity algorithm, got %d", s.Encr, s.Integ)
	case !e.AEAD && s.Integ == IntegNone:
		return fmt.Errorf("encryption transform %d needs an integrity algorithm", s.Encr)
	case !e.AEAD:
		if _, ok := LookupInteg(s.Integ); !ok {
			return fmt.Errorf("unsupported integrity transform ID %d", s.Integ)
		}
	}
	return nil
}

// CounterMode reports whether the suite's cipher is a counter mode, unsafe
// with one key shared by many senders unless the data plane guarantees
// unique IVs.
func (s Suite) CounterMode() bool {
	e, _ := LookupEncr(s.Encr)
	return e.CounterMode
}

// String renders the suite as a strongSwan proposal ("aes256-sha256-prfsha256").
func (s Suite) String() string {
	e, ok := LookupEncr(s.Encr)
	if !ok {
		return fmt.Sprintf("encr%d", s.Encr)
	}
	var parts []string
	switch {
	case e.FixedKeyBits != 0:
		parts = append(parts, e.Name)
	case strings.HasPrefix(e.Name, "aes") && e.Name != "aes":
		parts = append(parts, fmt.Sprintf("aes%d%s", s.KeyBits, strings.TrimPrefix(e.Name, "aes")))
	default:
		parts = append(parts, fmt.Sprintf("%s%d", e.Name, s.KeyBits))
	}
	if i, ok := LookupInteg(s.Integ); ok {
		parts = append(parts, i.Name)
	}
	if p, ok := LookupPRF(s.PRF); ok {
		parts = append(parts, p.Name)
	}
	return strings.Join(parts, "-")
}

// ParseProposal parses one strongSwan ESP proposal ("aes256-sha256",
// "aes128gcm16-prfsha256") into a Suite. Without a PRF keyword the PRF
// follows the integrity algorithm (sha256 gives prfsha256); an AEAD proposal
// without one gets prfsha256. Diffie-Hellman groups and ESN are rejected:
// MPSA keys come from the controller, and the shared SA runs without ESN.
func ParseProposal(p string) (Suite, error) {
	if strings.TrimSpace(p) == "" {
		return Suite{}, fmt.Errorf("empty ESP proposal")
	}
	var (
		s         Suite
		haveEncr  bool
		haveInteg bool
		havePRF   bool
	)
	for _, kw := range strings.Split(strings.ToLower(strings.TrimSpace(p)), "-") {
		switch {
		case kw == "":
			return Suite{}, fmt.Errorf("ESP proposal %q: empty keyword", p)
		case kw == "noesn":
			continue
		case kw == "esn":
			return Suite{}, fmt.Errorf("ESP proposal %q: esn is not possible with a shared SA (no anti-replay); remove it or write noesn", p)
		}
		if id, bits, ok := encrKeyword(kw); ok {
			if haveEncr {
				return Suite{}, fmt.Errorf("ESP proposal %q: more than one encryption algorithm (%q); MPSA_PUT carries exactly one", p, kw)
			}
			s.Encr, s.KeyBits, haveEncr = id, bits, true
			continue
		}
		if id, ok := integKeyword(kw); ok {
			if haveInteg {
				return Suite{}, fmt.Errorf("ESP proposal %q: more than one integrity algorithm (%q)", p, kw)
			}
			s.Integ, haveInteg = id, true
			continue
		}
		if id, ok := prfKeyword(kw); ok {
			if havePRF {
				return Suite{}, fmt.Errorf("ESP proposal %q: more than one PRF (%q)", p, kw)
			}
			s.PRF, havePRF = id, true
			continue
		}
		if isDHKeyword(kw) {
			return Suite{}, fmt.Errorf("ESP proposal %q: %q is a Diffie-Hellman group, which MPSA does not use (the controller distributes the keys); remove it", p, kw)
		}
		return Suite{}, fmt.Errorf("ESP proposal %q: unknown or unsupported keyword %q (known: aes128, aes192, aes256, aes128gcm16, aes256gcm16, aes128ctr, chacha20poly1305, sha1, sha256, sha384, sha512, aesxcbc, prfsha1, prfsha256, prfsha384, prfsha512, prfaesxcbc)", p, kw)
	}
	if !haveEncr {
		return Suite{}, fmt.Errorf("ESP proposal %q: no encryption algorithm (for example aes256)", p)
	}
	e, _ := LookupEncr(s.Encr)
	if e.AEAD && haveInteg {
		return Suite{}, fmt.Errorf("ESP proposal %q: %s is an AEAD cipher and takes no integrity algorithm", p, e.Name)
	}
	if !e.AEAD && !haveInteg {
		return Suite{}, fmt.Errorf("ESP proposal %q: no integrity algorithm (for example sha256)", p)
	}
	if !havePRF {
		if haveInteg {
			i, _ := LookupInteg(s.Integ)
			s.PRF = i.PRF
		} else {
			s.PRF = PRFHMACSHA2_256
		}
	}
	if err := s.Validate(); err != nil {
		return Suite{}, fmt.Errorf("ESP proposal %q: %w", p, err)
	}
	return s, nil
}

func encrKeyword(kw string) (EncrID, int, bool) {
	switch kw {
	case "aes":
		return EncrAESCBC, 128, true
	case "chacha20poly1305":
		return EncrChaCha20Poly1305, 0, true
	}
	for _, bits := range []int{128, 192, 256} {
		stem := fmt.Sprintf("aes%d", bits)
		if !strings.HasPrefix(kw, stem) {
			continue
		}
		switch strings.TrimPrefix(kw, stem) {
		case "":
			return EncrAESCBC, bits, true
		case "ctr":
			return EncrAESCTR, bits, true
		case "gcm8", "gcm64":
			return EncrAESGCM8, bits, true
		case "gcm12", "gcm96":
			return EncrAESGCM12, bits, true
		case "gcm16", "gcm128", "gcm":
			return EncrAESGCM16, bits, true
		}
	}
	return 0, 0, false
}

func integKeyword(kw string) (IntegID, bool) {
	switch kw {
	case "sha1", "sha":
		return IntegHMACSHA1_96, true
	case "sha256", "sha2_256":
		return IntegHMACSHA2_256, true
	case "sha384", "sha2_384":
		return IntegHMACSHA2_384, true
	case "sha512", "sha2_512":
		return IntegHMACSHA2_512, true
	case "aesxcbc":
		return IntegAESXCBC96, true
	}
	return 0, false
}

// prfIDs are the PRFs known to mpsa, in the order PRFKeywords lists them.
var prfIDs = []PRFID{PRFHMACSHA1, PRFHMACSHA2_256, PRFHMACSHA2_384, PRFHMACSHA2_512, PRFAES128XCBC}

func prfKeyword(kw string) (PRFID, bool) {
	for _, id := range prfIDs {
		if p, _ := LookupPRF(id); p.Name == kw {
			return id, true
		}
	}
	return 0, false
}

// LookupPRFKeyword returns the PRF that a strongSwan PRF keyword
// ("prfsha256") names; case is ignored, as in ParseProposal. Other
// keywords, integrity algorithms ("sha256") among them, are not PRFs.
func LookupPRFKeyword(kw string) (PRFID, bool) {
	return prfKeyword(strings.ToLower(strings.TrimSpace(kw)))
}

// PRFKeywords lists the strongSwan PRF keywords that LookupPRFKeyword and
// ParseProposal know.
func PRFKeywords() []string {
	var kws []string
	for _, id := range prfIDs {
		p, _ := LookupPRF(id)
		kws = append(kws, p.Name)
	}
	return kws
}

func isDHKeyword(kw string) bool {
	for _, p := range []string{"modp", "ecp", "x25519", "x448", "curve25519", "curve448", "brainpool", "mlkem", "ke1_", "ke2_"} {
		if strings.HasPrefix(kw, p) {
			return true
		}
	}
	return false
}
