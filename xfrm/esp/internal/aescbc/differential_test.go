package aescbc

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"fmt"
	"math/rand/v2"
	"testing"
)

// Differential tests against crypto/cipher's CBC, laid out as ESP lays
// packets out: each payload sits at an arbitrary (unaligned) offset of a
// larger buffer, right behind its IV, with guard bytes of a known pattern
// before the IV and after the payload. Every comparison checks the
// output, that the IV is unchanged, and that no guard byte was touched.
// Run with and without the purego build tag, which selects the fallback:
//
//	go test ./xfrm/esp/internal/aescbc/ && go test -tags purego ./xfrm/esp/internal/aescbc/

// guardLen is the number of guard bytes on each side of an IV and payload.
const guardLen = 48

// slot is one payload in a buffer: guard, IV, payload, guard.
type slot struct {
	buf        []byte // the whole buffer the slot lives in
	start      int    // where the front guard starts
	blocks     int
	guardFront []byte // copies of what the guards and IV held
	guardBack  []byte
	ivCopy     []byte
}

func (s *slot) iv() []byte { return s.buf[s.start+guardLen : s.start+guardLen+BlockSize] }
func (s *slot) payload() []byte {
	p := s.start + guardLen + BlockSize
	return s.buf[p : p+s.blocks*BlockSize]
}
func (s *slot) end() int { return s.start + 2*guardLen + BlockSize + s.blocks*BlockSize }

// placeSlot writes a slot of blocks blocks at buf[start:], with random
// guards, IV and payload, and returns it.
func placeSlot(r *rand.Rand, buf []byte, start, blocks int) *slot {
	s := &slot{buf: buf, start: start, blocks: blocks}
	for i := start; i < s.end(); i++ {
		buf[i] = byte(r.Uint32())
	}
	s.guardFront = bytes.Clone(buf[start : start+guardLen])
	s.guardBack = bytes.Clone(buf[s.end()-guardLen : s.end()])
	s.ivCopy = bytes.Clone(s.iv())
	return s
}

// intact fails the test unless the slot's guards and IV are as placed.
func (s *slot) intact(t *testing.T, what string) {
	t.Helper()
	if !bytes.Equal(s.buf[s.start:s.start+guardLen], s.guardFront) {
		t.Fatalf("%s: the guard bytes before the IV changed", what)
	}
	if !bytes.Equal(s.buf[s.end()-guardLen:s.end()], s.guardBack) {
		t.Fatalf("%s: the guard bytes after the payload changed", what)
	}
	if !bytes.Equal(s.iv(), s.ivCopy) {
		t.Fatalf("%s: the IV changed", what)
	}
}

// cbcReference is crypto/cipher's CBC of a copy of in.
func cbcReference(key, iv, in []byte, encrypt bool) []byte {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	out := bytes.Clone(in)
	if encrypt {
		cipher.NewCBCEncrypter(b, iv).CryptBlocks(out, out)
	} else {
		cipher.NewCBCDecrypter(b, iv).CryptBlocks(out, out)
	}
	return out
}

// TestDifferentialSingle: random keys of every size, payloads of 0 to
// 100 blocks at every offset modulo 64 of their buffer, encrypted and
// decrypted in place as crypto/cipher does, guards and IV untouched.
func TestDifferentialSingle(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for name, asm := range implementations(t) {
		for _, kl := range []int{16, 24, 32} {
			for trial := range 300 {
				key := fill(r, kl)
				c, err := newCipher(key, asm)
				if err != nil {
					t.Fatal(err)
				}
				blocks := r.IntN(101)
				off := trial % 64
				buf := make([]byte, off+2*guardLen+BlockSize+blocks*BlockSize+r.IntN(32))
				s := placeSlot(r, buf, off, blocks)
				what := fmt.Sprintf("%s AES-%d, %d blocks at offset %d", name, kl*8, blocks, off)
				plain := bytes.Clone(s.payload())
				want := cbcReference(key, s.iv(), plain, true)
				c.Encrypt(s.iv(), s.payload())
				if !bytes.Equal(s.payload(), want) {
					t.Fatalf("%s: Encrypt differs from crypto/cipher", what)
				}
				s.intact(t, what+", Encrypt")
				c.Decrypt(s.iv(), s.payload())
				if !bytes.Equal(s.payload(), plain) {
					t.Fatalf("%s: Decrypt does not give the plaintext back", what)
				}
				s.intact(t, what+", Decrypt")
				// Foreign ciphertext, not only its own.
				ct := bytes.Clone(s.payload())
				want = cbcReference(key, s.iv(), ct, false)
				c.Decrypt(s.iv(), s.payload())
				if !bytes.Equal(s.payload(), want) {
					t.Fatalf("%s: Decrypt differs from crypto/cipher", what)
				}
				s.intact(t, what+", Decrypt of foreign ciphertext")
			}
		}
	}
}

// TestDifferentialBatches: EncryptMany on long batches (up to 300
// packets) of mixed lengths, including empty payloads, laid out back to
// back in one buffer at unaligned offsets, each IV right before its
// payload and guards between them, as a batch of ESP packets in adjacent
// buffers: every payload as crypto/cipher encrypts it, no byte outside
// the payloads touched, whichever lanes (eight, four, single) the batch
// is cut into.
func TestDifferentialBatches(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	for name, asm := range implementations(t) {
		for trial := range 60 {
			kl := []int{16, 24, 32}[trial%3]
			key := fill(r, kl)
			c, err := newCipher(key, asm)
			if err != nil {
				t.Fatal(err)
			}
			n := 1 + r.IntN(300)
			// Mostly full-size packets with short ones mixed in, as
			// TCP with its acknowledgements gives.
			sizes := make([]int, n)
			total := 0
			for i := range sizes {
				switch x := r.IntN(10); {
				case x < 6:
					sizes[i] = 89 // 1420 bytes
				case x < 9:
					sizes[i] = r.IntN(8)
				default:
					sizes[i] = r.IntN(200)
				}
				total += 2*guardLen + BlockSize + sizes[i]*BlockSize + 15
			}
			buf := make([]byte, total+64)
			slots := make([]*slot, n)
			ivs, bufs, want := make([][]byte, n), make([][]byte, n), make([][]byte, n)
			at := r.IntN(64)
			for i := range slots {
				slots[i] = placeSlot(r, buf, at, sizes[i])
				// The next slot's front guard overlaps this one's
				// back guard, by up to all of it.
				at = slots[i].end() - guardLen + r.IntN(16)
				ivs[i], bufs[i] = slots[i].iv(), slots[i].payload()
			}
			// Guards that overlap hold the later slot's bytes: read
			// them back after placing every slot.
			for _, s := range slots {
				s.guardFront = bytes.Clone(buf[s.start : s.start+guardLen])
				s.guardBack = bytes.Clone(buf[s.end()-guardLen : s.end()])
				s.ivCopy = bytes.Clone(s.iv())
			}
			for i := range want {
				want[i] = cbcReference(key, ivs[i], bufs[i], true)
			}
			c.EncryptMany(ivs, bufs)
			for i, s := range slots {
				what := fmt.Sprintf("%s AES-%d, batch of %d, packet %d (%d blocks at offset %d)", name, kl*8, n, i, s.blocks, s.start+guardLen+BlockSize)
				if !bytes.Equal(bufs[i], want[i]) {
					t.Fatalf("%s: EncryptMany differs from crypto/cipher", what)
				}
				s.intact(t, what)
			}
		}
	}
}
