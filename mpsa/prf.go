package mpsa

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"fmt"
	"hash"
)

// NewPRF returns the keyed PRF id as a hash.Hash: write the input, Sum the
// output. HMAC PRFs take any key length; PRF_AES128_XCBC follows RFC 4434
// (shorter keys are zero-padded, longer ones are first reduced with a zero
// key).
func NewPRF(id PRFID, key []byte) (hash.Hash, error) {
	switch id {
	case PRFHMACSHA1:
		return hmac.New(sha1.New, key), nil
	case PRFHMACSHA2_256:
		return hmac.New(sha256.New, key), nil
	case PRFHMACSHA2_384:
		return hmac.New(sha512.New384, key), nil
	case PRFHMACSHA2_512:
		return hmac.New(sha512.New, key), nil
	case PRFAES128XCBC:
		return newXCBCPRF(key)
	}
	return nil, fmt.Errorf("unsupported PRF transform ID %d", id)
}

// PRFPlus computes n octets of prf+ (RFC 7296 section 2.13):
// T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n), output T1 | T2 | ...
func PRFPlus(id PRFID, key, seed []byte, n int) ([]byte, error) {
	prf, err := NewPRF(id, key)
	if err != nil {
		return nil, err
	}
	size := prf.Size()
	if n < 0 || n > 255*size {
		return nil, fmt.Errorf("prf+ cannot produce %d octets with a %d-octet PRF (at most %d)", n, size, 255*size)
	}
	out := make([]byte, 0, n+size)
	var t []byte
	for i := 1; len(out) < n; i++ {
		prf.Reset()
		prf.Write(t)
		prf.Write(seed)
		prf.Write([]byte{byte(i)})
		t = prf.Sum(t[:0])
		out = append(out, t...)
	}
	clear(t)
	clear(out[n:])
	return out[:n], nil
}

// Keys are the ESP keys of a shared SA, the same for both directions.
type Keys struct {
	// Encr is the encryption key with the salt at its tail for GCM, CTR
	// and ChaCha20-Poly1305, as the kernel wants it.
	Encr []byte
	// Integ is the integrity key; empty for AEAD ciphers.
	Integ []byte
}

// Zero overwrites the keys.
func (k *Keys) Zero() {
	clear(k.Encr)
	clear(k.Integ)
}

// DeriveKeys computes KEYMAT = prf+(SK_d, Nonce) for the Put's suite (draft
// section 3.3.2) and splits it as RFC 7296 section 2.17 does: the
// encryption key first, then the integrity key. Zero the result when done.
func DeriveKeys(p *Put) (Keys, error) {
	if err := p.Suite.Validate(); err != nil {
		return Keys{}, err
	}
	ne, ni := p.Suite.EncrKeyBytes(), p.Suite.IntegKeyBytes()
	km, err := PRFPlus(p.Suite.PRF, p.SKd, p.Nonce, ne+ni)
	if err != nil {
		return Keys{}, fmt.Errorf("derive KEYMAT for SPI 0x%08x: %w", p.SPI, err)
	}
	return Keys{Encr: km[:ne:ne], Integ: km[ne:]}, nil
}

// xcbcPRF is AES-XCBC-PRF-128 (RFC 4434) over AES-XCBC-MAC-96's core
// (RFC 3566) without the truncation.
type xcbcPRF struct {
	c      cipher.Block
	k2, k3 [16]byte
	buf    []byte
}

func newXCBCPRF(key []byte) (*xcbcPRF, error) {
	var k [16]byte
	switch {
	case len(key) <= 16:
		copy(k[:], key)
	default:
		z, err := newXCBCMAC(make([]byte, 16))
		if err != nil {
			return nil, err
		}
		z.Write(key)
		z.Sum(k[:0])
	}
	return newXCBCMAC(k[:])
}

func newXCBCMAC(key []byte) (*xcbcPRF, error) {
	kc, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	var k1 [16]byte
	x := &xcbcPRF{}
	for i, dst := range [][]byte{k1[:], x.k2[:], x.k3[:]} {
		var in [16]byte
		for j := range in {
			in[j] = byte(i + 1)
		}
		kc.Encrypt(dst, in[:])
	}
	if x.c, err = aes.NewCipher(k1[:]); err != nil {
		return nil, err
	}
	clear(k1[:])
	return x, nil
}

func (x *xcbcPRF) Write(p []byte) (int, error) {
	x.buf = append(x.buf, p...)
	return len(p), nil
}

func (x *xcbcPRF) Sum(b []byte) []byte {
	var e [16]byte
	m := x.buf
	for len(m) > 16 {
		for i := range e {
			e[i] ^= m[i]
		}
		x.c.Encrypt(e[:], e[:])
		m = m[16:]
	}
	var last [16]byte
	if len(m) == 16 {
		for i := range last {
			last[i] = m[i] ^ x.k2[i]
		}
	} else {
		copy(last[:], m)
		last[len(m)] = 0x80
		for i := range last {
			last[i] ^= x.k3[i]
		}
	}
	for i := range e {
		e[i] ^= last[i]
	}
	x.c.Encrypt(e[:], e[:])
	return append(b, e[:]...)
}

func (x *xcbcPRF) Reset()         { clear(x.buf); x.buf = x.buf[:0] }
func (x *xcbcPRF) Size() int      { return 16 }
func (x *xcbcPRF) BlockSize() int { return 16 }
