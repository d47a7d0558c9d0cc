//go:build !amd64 || purego

package aescbc

// Without the assembly every Cipher takes crypto/aes's path, so none of
// these is called.

func hasAESNI() bool { return false }

func encryptCBC(nr int, xk *byte, iv *byte, dst *byte, src *byte, nblocks int) {
	panic("aescbc: no assembly")
}

func encryptCBC4(nr int, xk *byte, l *lanes, nblocks int) { panic("aescbc: no assembly") }

func encryptCBC8(nr int, xk *byte, l *lanes, nblocks int) { panic("aescbc: no assembly") }

func decryptCBC(nr int, xk *byte, iv *byte, dst *byte, src *byte, nblocks int) {
	panic("aescbc: no assembly")
}

func subWord(w uint32) uint32 { panic("aescbc: no assembly") }

func invMixColumns(dst *byte, src *byte) { panic("aescbc: no assembly") }
