// Package aescbc is AES in CBC mode (RFC 3602) for the ESP codec: in place,
// with no allocation, over many packets at once.
//
// crypto/cipher's CBC modes call the AES block function once per 16-byte
// block and encrypt one chain at a time. With AES-NI this package instead
// runs the whole chain in assembly, decrypts eight blocks of a chain at
// once (CBC decryption is parallel), and encrypts four or eight packets
// side by side (CBC encryption is serial within a packet, so only
// independent packets keep the AES unit's pipeline full). Without AES-NI,
// or built with the purego tag, it falls back to crypto/aes one block at a
// time. Its output is that of crypto/cipher in every case; the tests and a
// fuzz target compare the two.
//
// A Cipher holds its own key schedule, so that Zero can wipe it.
package aescbc

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"math/bits"
)

// BlockSize is the AES block size.
const BlockSize = aes.BlockSize

// maxRounds is the number of rounds of AES-256.
const maxRounds = 14

// Cipher is one AES key, expanded for CBC encryption and decryption. It
// is read-only after New and safe for concurrent use, until Zero.
type Cipher struct {
	nr  int
	enc [(maxRounds + 1) * BlockSize]byte
	dec [(maxRounds + 1) * BlockSize]byte
	// block is the fallback when there is no AES-NI; nil otherwise.
	block cipher.Block
}

// Hardware reports whether Ciphers run on AES-NI. When false (a CPU
// without AES-NI, another architecture, or the purego build tag), they use
// crypto/aes's portable code, which on amd64 is table-based: slower, and
// its memory accesses depend on the key and data (cache-timing side
// channels).
func Hardware() bool { return hasAESNI() }

// New expands key, which must be 16, 24 or 32 bytes (AES-128, -192 or
// -256).
func New(key []byte) (*Cipher, error) {
	return newCipher(key, hasAESNI())
}

func newCipher(key []byte, asm bool) (*Cipher, error) {
	switch len(key) {
	case 16, 24, 32:
	default:
		return nil, fmt.Errorf("aescbc: key is %d bytes, want 16, 24 or 32", len(key))
	}
	if !asm {
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("aescbc: %w", err)
		}
		return &Cipher{block: b}, nil
	}
	c := &Cipher{nr: len(key)/4 + 6}
	c.expand(key)
	return c, nil
}

// expand writes the encryption key schedule (FIPS 197 section 5.2) and the
// decryption one of the equivalent inverse cipher (section 5.3.5): the
// encryption round keys in reverse order, InvMixColumns applied to all but
// the first and the last. Words are little-endian, as the bytes lie in an
// XMM register, so RotWord is a rotation right by 8 bits and Rcon goes in
// the low byte.
func (c *Cipher) expand(key []byte) {
	nk := len(key) / 4
	n := 4 * (c.nr + 1)
	var w [4 * (maxRounds + 1)]uint32
	for i := 0; i < nk; i++ {
		w[i] = binary.LittleEndian.Uint32(key[4*i:])
	}
	rcon := uint32(1)
	for i := nk; i < n; i++ {
		t := w[i-1]
		switch {
		case i%nk == 0:
			t = subWord(bits.RotateLeft32(t, -8)) ^ rcon
			rcon <<= 1
			if rcon&0x100 != 0 {
				rcon ^= 0x11b
			}
		case nk > 6 && i%nk == 4:
			t = subWord(t)
		}
		w[i] = w[i-nk] ^ t
	}
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint32(c.enc[4*i:], w[i])
	}
	clear(w[:])
	for r := 0; r <= c.nr; r++ {
		src := c.enc[(c.nr-r)*BlockSize:][:BlockSize]
		dst := c.dec[r*BlockSize:][:BlockSize]
		if r == 0 || r == c.nr {
			copy(dst, src)
		} else {
			invMixColumns(&dst[0], &src[0])
		}
	}
}

// Zero overwrites the key schedule; the Cipher must not be used again.
// The fallback's schedule lives inside crypto/aes and cannot be wiped.
func (c *Cipher) Zero() {
	clear(c.enc[:])
	clear(c.dec[:])
}

// check panics unless iv is one block and buf whole blocks: callers pass
// lengths they computed, so a mismatch is a bug, as in crypto/cipher.
func check(iv, buf []byte) {
	if len(iv) != BlockSize {
		panic("aescbc: IV is not one block")
	}
	if len(buf)%BlockSize != 0 {
		panic("aescbc: input is not whole blocks")
	}
}

// Encrypt encrypts buf in place in CBC mode with iv. buf must be a whole
// number of blocks.
func (c *Cipher) Encrypt(iv, buf []byte) {
	check(iv, buf)
	if len(buf) == 0 {
		return
	}
	if c.block != nil {
		c.encryptGeneric(iv, buf)
		return
	}
	encryptCBC(c.nr, &c.enc[0], &iv[0], &buf[0], &buf[0], len(buf)/BlockSize)
}

func (c *Cipher) encryptGeneric(iv, buf []byte) {
	prev := iv
	for i := 0; i < len(buf); i += BlockSize {
		b := buf[i : i+BlockSize]
		subtle.XORBytes(b, b, prev)
		c.block.Encrypt(b, b)
		prev = b
	}
}

// Decrypt decrypts buf in place in CBC mode with iv. buf must be a whole
// number of blocks.
func (c *Cipher) Decrypt(iv, buf []byte) {
	check(iv, buf)
	if len(buf) == 0 {
		return
	}
	if c.block != nil {
		c.decryptGeneric(iv, buf)
		return
	}
	decryptCBC(c.nr, &c.dec[0], &iv[0], &buf[0], &buf[0], len(buf)/BlockSize)
}

// decryptGeneric works from the last block to the first, so that the
// ciphertext block each plaintext needs is still there.
func (c *Cipher) decryptGeneric(iv, buf []byte) {
	for i := len(buf) - BlockSize; i >= 0; i -= BlockSize {
		b := buf[i : i+BlockSize]
		c.block.Decrypt(b, b)
		if i == 0 {
			subtle.XORBytes(b, b, iv)
		} else {
			subtle.XORBytes(b, b, buf[i-BlockSize:i])
		}
	}
}

// lanes is the argument block of the interleaved encryption: per chain
// its IV, destination and source. The assembly reads it at fixed offsets.
type lanes struct {
	iv, dst, src [8]*byte
}

// EncryptMany encrypts bufs[i] in place in CBC mode with ivs[i], for every
// i; each buf must be a whole number of blocks. Packets are taken eight
// or four at a time and encrypted side by side for as many blocks as the
// shortest of them has; the rest of each is finished on its own. The
// result is that of Encrypt on each.
func (c *Cipher) EncryptMany(ivs, bufs [][]byte) {
	if len(ivs) != len(bufs) {
		panic("aescbc: EncryptMany needs one IV per buffer")
	}
	for i := range bufs {
		check(ivs[i], bufs[i])
	}
	if c.block != nil {
		for i := range bufs {
			if len(bufs[i]) > 0 {
				c.encryptGeneric(ivs[i], bufs[i])
			}
		}
		return
	}
	var l lanes
	for len(bufs) >= 4 {
		n := 8
		if len(bufs) < 8 {
			n = 4
		}
		blocks := len(bufs[0])
		for _, b := range bufs[1:n] {
			blocks = min(blocks, len(b))
		}
		blocks /= BlockSize
		if blocks > 0 {
			for i := 0; i < n; i++ {
				l.iv[i], l.dst[i], l.src[i] = &ivs[i][0], &bufs[i][0], &bufs[i][0]
			}
			if n == 8 {
				encryptCBC8(c.nr, &c.enc[0], &l, blocks)
			} else {
				encryptCBC4(c.nr, &c.enc[0], &l, blocks)
			}
		}
		// Finish each chain alone from its last ciphertext block.
		done := blocks * BlockSize
		for i := 0; i < n; i++ {
			if rest := bufs[i][done:]; len(rest) > 0 {
				iv := ivs[i]
				if done > 0 {
					iv = bufs[i][done-BlockSize : done]
				}
				encryptCBC(c.nr, &c.enc[0], &iv[0], &rest[0], &rest[0], len(rest)/BlockSize)
			}
		}
		ivs, bufs = ivs[n:], bufs[n:]
	}
	for i := range bufs {
		c.Encrypt(ivs[i], bufs[i])
	}
}
