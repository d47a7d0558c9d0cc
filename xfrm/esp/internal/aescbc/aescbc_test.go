package aescbc

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"testing"
)

// implementations are the paths a Cipher can take on this machine: the
// assembly where the CPU has AES-NI, and always the crypto/aes fallback.
func implementations(t testing.TB) map[string]bool {
	m := map[string]bool{"generic": false}
	if hasAESNI() {
		m["asm"] = true
	} else {
		t.Logf("no AES-NI on this CPU (or purego build): only the crypto/aes fallback is tested")
	}
	return m
}

// reference encrypts or decrypts a copy of buf with crypto/cipher.
func reference(t testing.TB, key, iv, buf []byte, encrypt bool) []byte {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	out := append([]byte(nil), buf...)
	if encrypt {
		cipher.NewCBCEncrypter(b, iv).CryptBlocks(out, out)
	} else {
		cipher.NewCBCDecrypter(b, iv).CryptBlocks(out, out)
	}
	return out
}

func fill(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestKnownAnswers checks RFC 3602's AES-128 vectors and NIST SP 800-38A's
// CBC vectors (F.2.1, F.2.3, F.2.5), whose values come from outside this
// code and outside Go.
func TestKnownAnswers(t *testing.T) {
	sp80038a := "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
	cases := []struct{ name, key, iv, plain, cipher string }{
		{"RFC 3602 case 1", "06a9214036b8a15b512e03d534120006", "3dafba429d9eb430b422da802c9fac41",
			hex.EncodeToString([]byte("Single block msg")), "e353779c1079aeb82708942dbe77181a"},
		{"RFC 3602 case 2", "c286696d887c9aa0611bbb3e2025a45a", "562e17996d093d28ddb3ba695a2e6f58",
			"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
			"d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1"},
		{"SP 800-38A F.2.1 AES-128", "2b7e151628aed2a6abf7158809cf4f3c", "000102030405060708090a0b0c0d0e0f", sp80038a,
			"7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b273bed6b8e3c1743b7116e69e222295163ff1caa1681fac09120eca307586e1a7"},
		{"SP 800-38A F.2.3 AES-192", "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b", "000102030405060708090a0b0c0d0e0f", sp80038a,
			"4f021db243bc633d7178183a9fa071e8b4d9ada9ad7dedf4e5e738763f69145a571b242012fb7ae07fa9baac3df102e008b0e27988598881d920a9e64f5615cd"},
		{"SP 800-38A F.2.5 AES-256", "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4", "000102030405060708090a0b0c0d0e0f", sp80038a,
			"f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b"},
	}
	for name, asm := range implementations(t) {
		for _, tc := range cases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				key, iv, plain, want := unhex(t, tc.key), unhex(t, tc.iv), unhex(t, tc.plain), unhex(t, tc.cipher)
				c, err := newCipher(key, asm)
				if err != nil {
					t.Fatal(err)
				}
				buf := append([]byte(nil), plain...)
				c.Encrypt(iv, buf)
				if !bytes.Equal(buf, want) {
					t.Fatalf("Encrypt = %x, want %x", buf, want)
				}
				c.Decrypt(iv, buf)
				if !bytes.Equal(buf, plain) {
					t.Fatalf("Decrypt = %x, want %x", buf, plain)
				}
			})
		}
	}
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAgainstCryptoCipher compares every path with crypto/cipher for each
// key size and every length up to 40 blocks (covering the eight-block
// decryption groups and their tails).
func TestAgainstCryptoCipher(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for name, asm := range implementations(t) {
		for _, kl := range []int{16, 24, 32} {
			for trial := 0; trial < 3; trial++ {
				key, iv := fill(r, kl), fill(r, BlockSize)
				c, err := newCipher(key, asm)
				if err != nil {
					t.Fatal(err)
				}
				for blocks := 0; blocks <= 40; blocks++ {
					plain := fill(r, blocks*BlockSize)
					want := reference(t, key, iv, plain, true)
					buf := append([]byte(nil), plain...)
					c.Encrypt(iv, buf)
					if !bytes.Equal(buf, want) {
						t.Fatalf("%s AES-%d, %d blocks: Encrypt differs from crypto/cipher", name, kl*8, blocks)
					}
					c.Decrypt(iv, buf)
					if !bytes.Equal(buf, plain) {
						t.Fatalf("%s AES-%d, %d blocks: Decrypt does not give the plaintext back", name, kl*8, blocks)
					}
					// Decrypt of foreign ciphertext too, not only of its own.
					rnd := fill(r, blocks*BlockSize)
					want = reference(t, key, iv, rnd, false)
					c.Decrypt(iv, rnd)
					if !bytes.Equal(rnd, want) {
						t.Fatalf("%s AES-%d, %d blocks: Decrypt differs from crypto/cipher", name, kl*8, blocks)
					}
				}
			}
		}
	}
}

// TestEncryptMany checks the interleaved encryption against crypto/cipher
// on batches of every size up to 19 (groups of eight and four and single
// chains), with equal lengths and with mixed ones, some empty.
func TestEncryptMany(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for name, asm := range implementations(t) {
		for _, kl := range []int{16, 24, 32} {
			key := fill(r, kl)
			c, err := newCipher(key, asm)
			if err != nil {
				t.Fatal(err)
			}
			for n := 0; n <= 19; n++ {
				for _, mixed := range []bool{false, true} {
					t.Run(fmt.Sprintf("%s/AES-%d/%d/mixed=%v", name, kl*8, n, mixed), func(t *testing.T) {
						ivs, bufs, want := make([][]byte, n), make([][]byte, n), make([][]byte, n)
						for i := range bufs {
							blocks := 89 // a 1420-byte packet
							if mixed {
								blocks = r.IntN(12)
							}
							ivs[i], bufs[i] = fill(r, BlockSize), fill(r, blocks*BlockSize)
							want[i] = reference(t, key, ivs[i], bufs[i], true)
						}
						c.EncryptMany(ivs, bufs)
						for i := range bufs {
							if !bytes.Equal(bufs[i], want[i]) {
								t.Fatalf("buffer %d of %d (%d bytes) differs from crypto/cipher", i, n, len(bufs[i]))
							}
						}
					})
				}
			}
		}
	}
}

func TestBadInput(t *testing.T) {
	for _, kl := range []int{0, 15, 17, 33, 64} {
		if _, err := New(make([]byte, kl)); err == nil {
			t.Errorf("New accepted a %d-byte key", kl)
		}
	}
	c, err := New(make([]byte, 16))
	if err != nil {
		t.Fatal(err)
	}
	mustPanic(t, "short IV", func() { c.Encrypt(make([]byte, 8), make([]byte, 16)) })
	mustPanic(t, "partial block", func() { c.Decrypt(make([]byte, 16), make([]byte, 17)) })
	mustPanic(t, "IV count", func() { c.EncryptMany(nil, [][]byte{make([]byte, 16)}) })
}

func mustPanic(t *testing.T, what string, f func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Errorf("%s: no panic", what)
		}
	}()
	f()
}

func TestZero(t *testing.T) {
	if !hasAESNI() {
		t.Skip("no AES-NI: the key schedule is crypto/aes's and Zero cannot reach it")
	}
	c, err := New(bytes.Repeat([]byte{0xaa}, 32))
	if err != nil {
		t.Fatal(err)
	}
	c.Zero()
	if !bytes.Equal(c.enc[:], make([]byte, len(c.enc))) || !bytes.Equal(c.dec[:], make([]byte, len(c.dec))) {
		t.Fatal("Zero left key schedule bytes")
	}
}

func TestNoAllocations(t *testing.T) {
	c, err := New(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	iv := make([]byte, BlockSize)
	ivs, bufs := make([][]byte, 8), make([][]byte, 8)
	for i := range bufs {
		ivs[i], bufs[i] = iv, make([]byte, 1424)
	}
	if n := testing.AllocsPerRun(100, func() {
		c.Encrypt(iv, bufs[0])
		c.Decrypt(iv, bufs[0])
		c.EncryptMany(ivs, bufs)
	}); n != 0 {
		t.Fatalf("%v allocations per run", n)
	}
}

func FuzzAgainstCryptoCipher(f *testing.F) {
	f.Add(make([]byte, 16), make([]byte, 16), make([]byte, 32), uint8(3))
	f.Add(make([]byte, 32), make([]byte, 16), make([]byte, 16*17), uint8(9))
	f.Fuzz(func(t *testing.T, key, iv, data []byte, lanes uint8) {
		if len(key) != 16 && len(key) != 24 && len(key) != 32 || len(iv) != BlockSize {
			return
		}
		data = data[:len(data)/BlockSize*BlockSize]
		c, err := New(key)
		if err != nil {
			t.Fatal(err)
		}
		buf := append([]byte(nil), data...)
		c.Encrypt(iv, buf)
		if want := reference(t, key, iv, data, true); !bytes.Equal(buf, want) {
			t.Fatal("Encrypt differs from crypto/cipher")
		}
		buf = append(buf[:0], data...)
		c.Decrypt(iv, buf)
		if want := reference(t, key, iv, data, false); !bytes.Equal(buf, want) {
			t.Fatal("Decrypt differs from crypto/cipher")
		}
		// The same data split into lanes of different lengths.
		n := int(lanes%12) + 1
		ivs, bufs, want := make([][]byte, n), make([][]byte, n), make([][]byte, n)
		rest := data
		for i := range bufs {
			l := min(len(rest), (len(data)/n+i*BlockSize)/BlockSize*BlockSize)
			ivs[i], bufs[i] = iv, append([]byte(nil), rest[:l]...)
			want[i] = reference(t, key, iv, bufs[i], true)
			rest = rest[l:]
		}
		c.EncryptMany(ivs, bufs)
		for i := range bufs {
			if !bytes.Equal(bufs[i], want[i]) {
				t.Fatalf("EncryptMany lane %d of %d differs from crypto/cipher", i, n)
			}
		}
	})
}

func benchCipher(b *testing.B, asm bool, kl int) *Cipher {
	if asm && !hasAESNI() {
		b.Skip("no AES-NI")
	}
	c, err := newCipher(make([]byte, kl), asm)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// BenchmarkCBC compares this package with crypto/cipher on 1424 bytes,
// the payload of a 1420-byte packet.
func BenchmarkCBC(b *testing.B) {
	const size = 1424
	iv := make([]byte, BlockSize)
	for _, kl := range []int{16, 32} {
		buf := make([]byte, size)
		std, _ := aes.NewCipher(make([]byte, kl))
		b.Run(fmt.Sprintf("AES-%d/encrypt/crypto-cipher", kl*8), func(b *testing.B) {
			enc := cipher.NewCBCEncrypter(std, iv)
			b.SetBytes(size)
			for b.Loop() {
				enc.CryptBlocks(buf, buf)
			}
		})
		b.Run(fmt.Sprintf("AES-%d/decrypt/crypto-cipher", kl*8), func(b *testing.B) {
			dec := cipher.NewCBCDecrypter(std, iv)
			b.SetBytes(size)
			for b.Loop() {
				dec.CryptBlocks(buf, buf)
			}
		})
		b.Run(fmt.Sprintf("AES-%d/encrypt/asm", kl*8), func(b *testing.B) {
			c := benchCipher(b, true, kl)
			b.SetBytes(size)
			for b.Loop() {
				c.Encrypt(iv, buf)
			}
		})
		b.Run(fmt.Sprintf("AES-%d/decrypt/asm", kl*8), func(b *testing.B) {
			c := benchCipher(b, true, kl)
			b.SetBytes(size)
			for b.Loop() {
				c.Decrypt(iv, buf)
			}
		})
		for _, n := range []int{4, 8, 64} {
			b.Run(fmt.Sprintf("AES-%d/encrypt-many-%d/asm", kl*8, n), func(b *testing.B) {
				c := benchCipher(b, true, kl)
				ivs, bufs := make([][]byte, n), make([][]byte, n)
				for i := range bufs {
					ivs[i], bufs[i] = iv, make([]byte, size)
				}
				b.SetBytes(int64(n * size))
				for b.Loop() {
					c.EncryptMany(ivs, bufs)
				}
			})
		}
	}
}

// TestHardwareReportsPath: Hardware, on which mpsad's warning about
// table-based AES rests, tells the path New takes on this machine and
// build (false with -tags purego or without AES-NI).
func TestHardwareReportsPath(t *testing.T) {
	c, err := New(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	if asm := c.block == nil; Hardware() != asm {
		t.Fatalf("Hardware() = %v, but New took the %s path", Hardware(), map[bool]string{true: "assembly", false: "crypto/aes"}[asm])
	}
}
