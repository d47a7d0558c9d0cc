//go:build amd64 && !purego

package aescbc

import "golang.org/x/sys/cpu"

func hasAESNI() bool { return cpu.X86.HasAES }

//go:noescape
func encryptCBC(nr int, xk *byte, iv *byte, dst *byte, src *byte, nblocks int)

//go:noescape
func encryptCBC4(nr int, xk *byte, l *lanes, nblocks int)

//go:noescape
func encryptCBC8(nr int, xk *byte, l *lanes, nblocks int)

//go:noescape
func decryptCBC(nr int, xk *byte, iv *byte, dst *byte, src *byte, nblocks int)

//go:noescape
func subWord(w uint32) uint32

//go:noescape
func invMixColumns(dst *byte, src *byte)
