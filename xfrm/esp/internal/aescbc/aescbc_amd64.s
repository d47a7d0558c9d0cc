// AES-CBC with AES-NI for amd64: one chain at a time, four or eight
// independent chains interleaved (encryption is serial within a chain, so
// only several packets at once keep the AES unit busy), and decryption of
// eight blocks of one chain at once (CBC decryption is parallel).
//
// Round keys: xk points at nr+1 consecutive 16-byte round keys, in the
// order AESENC (encryption) or AESDEC (decryption, the equivalent inverse
// cipher's keys) uses them. nr is 10, 12 or 14. X8 holds the round key of
// the current round, R10 walks the round keys so that AES-192 and AES-256
// only add rounds in front of AES-128's ten.

//go:build amd64 && !purego

#include "textflag.h"

#define ENC1(off) MOVOU off(R10), X8; AESENC X8, X0
#define ENC1LAST(off) MOVOU off(R10), X8; AESENCLAST X8, X0

#define ENC4(off) MOVOU off(R10), X8; AESENC X8, X0; AESENC X8, X1; AESENC X8, X2; AESENC X8, X3
#define ENC4LAST(off) MOVOU off(R10), X8; AESENCLAST X8, X0; AESENCLAST X8, X1; AESENCLAST X8, X2; AESENCLAST X8, X3

#define ENC8(off) MOVOU off(R10), X8; AESENC X8, X0; AESENC X8, X1; AESENC X8, X2; AESENC X8, X3; AESENC X8, X4; AESENC X8, X5; AESENC X8, X6; AESENC X8, X7
#define ENC8LAST(off) MOVOU off(R10), X8; AESENCLAST X8, X0; AESENCLAST X8, X1; AESENCLAST X8, X2; AESENCLAST X8, X3; AESENCLAST X8, X4; AESENCLAST X8, X5; AESENCLAST X8, X6; AESENCLAST X8, X7

#define DEC1(off) MOVOU off(R10), X8; AESDEC X8, X0
#define DEC1LAST(off) MOVOU off(R10), X8; AESDECLAST X8, X0

#define DEC8(off) MOVOU off(R10), X8; AESDEC X8, X0; AESDEC X8, X1; AESDEC X8, X2; AESDEC X8, X3; AESDEC X8, X4; AESDEC X8, X5; AESDEC X8, X6; AESDEC X8, X7
#define DEC8LAST(off) MOVOU off(R10), X8; AESDECLAST X8, X0; AESDECLAST X8, X1; AESDECLAST X8, X2; AESDECLAST X8, X3; AESDECLAST X8, X4; AESDECLAST X8, X5; AESDECLAST X8, X6; AESDECLAST X8, X7

// ROUNDS runs the rounds after the first key's XOR: R(off) is one round
// with the key at off(R10), RLAST(off) the last one. R10 starts at the
// second round key; AES-256 runs four rounds and AES-192 two before the
// ten every key size has, moving R10 on so that those ten always find
// their keys at the same offsets. L10 and L12 are labels for the jumps,
// unique within the function.
#define ROUNDS(R, RLAST, L10, L12) \
	LEAQ 16(AX), R10; CMPQ CX, $12; JB L10; JE L12; \
	R(0); R(16); ADDQ $32, R10; \
L12: \
	R(0); R(16); ADDQ $32, R10; \
L10: \
	R(0); R(16); R(32); R(48); R(64); R(80); R(96); R(112); R(128); RLAST(144)

// func encryptCBC(nr int, xk *byte, iv *byte, dst *byte, src *byte, nblocks int)
TEXT ·encryptCBC(SB), NOSPLIT, $0-48
	MOVQ nr+0(FP), CX
	MOVQ xk+8(FP), AX
	MOVQ iv+16(FP), DX
	MOVQ dst+24(FP), DI
	MOVQ src+32(FP), SI
	MOVQ nblocks+40(FP), BX
	TESTQ BX, BX
	JZ   done
	MOVOU (DX), X0
	MOVOU (AX), X9
loop:
	MOVOU (SI), X10
	PXOR X10, X0
	PXOR X9, X0
	ROUNDS(ENC1, ENC1LAST, r10, r12)
	MOVOU X0, (DI)
	ADDQ $16, SI
	ADDQ $16, DI
	DECQ BX
	JNZ  loop
done:
	RET

// func encryptCBC4(nr int, xk *byte, l *lanes, nblocks int)
//
// l holds per chain its IV, destination and source ([8]*byte each, at
// offsets 0, 64 and 128); chain i is in X<i>.
TEXT ·encryptCBC4(SB), NOSPLIT, $0-32
	MOVQ nr+0(FP), CX
	MOVQ xk+8(FP), AX
	MOVQ l+16(FP), DX
	MOVQ nblocks+24(FP), BX
	TESTQ BX, BX
	JZ   done
	MOVQ 0(DX), R9
	MOVOU (R9), X0
	MOVQ 8(DX), R9
	MOVOU (R9), X1
	MOVQ 16(DX), R9
	MOVOU (R9), X2
	MOVQ 24(DX), R9
	MOVOU (R9), X3
	XORQ R8, R8
loop:
	MOVOU (AX), X9
	MOVQ 128(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X0
	PXOR X9, X0
	MOVQ 136(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X1
	PXOR X9, X1
	MOVQ 144(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X2
	PXOR X9, X2
	MOVQ 152(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X3
	PXOR X9, X3
	ROUNDS(ENC4, ENC4LAST, r10, r12)
	MOVQ 64(DX), R9
	MOVOU X0, (R9)(R8*1)
	MOVQ 72(DX), R9
	MOVOU X1, (R9)(R8*1)
	MOVQ 80(DX), R9
	MOVOU X2, (R9)(R8*1)
	MOVQ 88(DX), R9
	MOVOU X3, (R9)(R8*1)
	ADDQ $16, R8
	DECQ BX
	JNZ  loop
done:
	RET

// func encryptCBC8(nr int, xk *byte, l *lanes, nblocks int)
//
// l holds per chain its IV, destination and source ([8]*byte each, at
// offsets 0, 64 and 128); chain i is in X<i>.
TEXT ·encryptCBC8(SB), NOSPLIT, $0-32
	MOVQ nr+0(FP), CX
	MOVQ xk+8(FP), AX
	MOVQ l+16(FP), DX
	MOVQ nblocks+24(FP), BX
	TESTQ BX, BX
	JZ   done
	MOVQ 0(DX), R9
	MOVOU (R9), X0
	MOVQ 8(DX), R9
	MOVOU (R9), X1
	MOVQ 16(DX), R9
	MOVOU (R9), X2
	MOVQ 24(DX), R9
	MOVOU (R9), X3
	MOVQ 32(DX), R9
	MOVOU (R9), X4
	MOVQ 40(DX), R9
	MOVOU (R9), X5
	MOVQ 48(DX), R9
	MOVOU (R9), X6
	MOVQ 56(DX), R9
	MOVOU (R9), X7
	XORQ R8, R8
loop:
	MOVOU (AX), X9
	MOVQ 128(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X0
	PXOR X9, X0
	MOVQ 136(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X1
	PXOR X9, X1
	MOVQ 144(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X2
	PXOR X9, X2
	MOVQ 152(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X3
	PXOR X9, X3
	MOVQ 160(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X4
	PXOR X9, X4
	MOVQ 168(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X5
	PXOR X9, X5
	MOVQ 176(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X6
	PXOR X9, X6
	MOVQ 184(DX), R9
	MOVOU (R9)(R8*1), X10
	PXOR X10, X7
	PXOR X9, X7
	ROUNDS(ENC8, ENC8LAST, r10, r12)
	MOVQ 64(DX), R9
	MOVOU X0, (R9)(R8*1)
	MOVQ 72(DX), R9
	MOVOU X1, (R9)(R8*1)
	MOVQ 80(DX), R9
	MOVOU X2, (R9)(R8*1)
	MOVQ 88(DX), R9
	MOVOU X3, (R9)(R8*1)
	MOVQ 96(DX), R9
	MOVOU X4, (R9)(R8*1)
	MOVQ 104(DX), R9
	MOVOU X5, (R9)(R8*1)
	MOVQ 112(DX), R9
	MOVOU X6, (R9)(R8*1)
	MOVQ 120(DX), R9
	MOVOU X7, (R9)(R8*1)
	ADDQ $16, R8
	DECQ BX
	JNZ  loop
done:
	RET

// func decryptCBC(nr int, xk *byte, iv *byte, dst *byte, src *byte, nblocks int)
//
// Eight blocks at a time, then one at a time. X9 holds the ciphertext block
// before the current one (the IV at first). Every source block a group
// needs is read before the group is stored, so dst may equal src.
TEXT ·decryptCBC(SB), NOSPLIT, $0-48
	MOVQ nr+0(FP), CX
	MOVQ xk+8(FP), AX
	MOVQ iv+16(FP), DX
	MOVQ dst+24(FP), DI
	MOVQ src+32(FP), SI
	MOVQ nblocks+40(FP), BX
	MOVOU (DX), X9
loop8:
	CMPQ BX, $8
	JB   tail
	MOVOU 0(SI), X0
	MOVOU 16(SI), X1
	MOVOU 32(SI), X2
	MOVOU 48(SI), X3
	MOVOU 64(SI), X4
	MOVOU 80(SI), X5
	MOVOU 96(SI), X6
	MOVOU 112(SI), X7
	MOVOU (AX), X8
	PXOR X8, X0
	PXOR X8, X1
	PXOR X8, X2
	PXOR X8, X3
	PXOR X8, X4
	PXOR X8, X5
	PXOR X8, X6
	PXOR X8, X7
	ROUNDS(DEC8, DEC8LAST, gr10, gr12)
	PXOR X9, X0
	MOVOU 0(SI), X10
	PXOR X10, X1
	MOVOU 16(SI), X10
	PXOR X10, X2
	MOVOU 32(SI), X10
	PXOR X10, X3
	MOVOU 48(SI), X10
	PXOR X10, X4
	MOVOU 64(SI), X10
	PXOR X10, X5
	MOVOU 80(SI), X10
	PXOR X10, X6
	MOVOU 96(SI), X10
	PXOR X10, X7
	MOVOU 112(SI), X9
	MOVOU X0, 0(DI)
	MOVOU X1, 16(DI)
	MOVOU X2, 32(DI)
	MOVOU X3, 48(DI)
	MOVOU X4, 64(DI)
	MOVOU X5, 80(DI)
	MOVOU X6, 96(DI)
	MOVOU X7, 112(DI)
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $8, BX
	JMP  loop8
tail:
	TESTQ BX, BX
	JZ   done
	MOVOU (SI), X0
	MOVO X0, X10
	MOVOU (AX), X8
	PXOR X8, X0
	ROUNDS(DEC1, DEC1LAST, tr10, tr12)
	PXOR X9, X0
	MOVO X10, X9
	MOVOU X0, (DI)
	ADDQ $16, SI
	ADDQ $16, DI
	DECQ BX
	JMP  tail
done:
	RET

// func subWord(w uint32) uint32
//
// The AES S-box applied to each byte of w, for the key schedule:
// AESKEYGENASSIST puts SubWord of its source's second doubleword in the
// first doubleword of its result.
TEXT ·subWord(SB), NOSPLIT, $0-12
	MOVL w+0(FP), AX
	SHLQ $32, AX
	MOVQ AX, X0
	AESKEYGENASSIST $0, X0, X1
	MOVQ X1, AX
	MOVL AX, ret+8(FP)
	RET

// func invMixColumns(dst *byte, src *byte)
//
// InvMixColumns of one round key, for the decryption key schedule.
TEXT ·invMixColumns(SB), NOSPLIT, $0-16
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVOU (SI), X0
	AESIMC X0, X1
	MOVOU X1, (DI)
	RET
