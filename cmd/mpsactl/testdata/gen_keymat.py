#!/usr/bin/env python3
"""Prints the known answers of TestKeymat (cmd/mpsactl/main_test.go):
KEYMAT = prf+(SK_d, Nonce) (RFC 7296 sections 2.13 and 2.17, draft
section 3.3.2) with Python's hmac and hashlib, independent of mpsa's code,
split into the encryption key (salt included for an AEAD) and the
integrity key.

Run from this folder:  python3 gen_keymat.py
Each case prints its mpsactl arguments, SK_d in hex as mpsactl reads it
from --sk-d-file (stdin here), and then the two lines that `mpsactl
keymat` must print for them, as TestKeymat has them.
"""
import hashlib, hmac


def prf_plus(h, key, seed, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(key, t + seed + bytes([i]), h).digest()
        out += t
        i += 1
    return out[:n]


NONCE = "00112233445566778899aabbccddeeff"

# (mpsactl arguments, PRF, SK_d hex, encryption key octets, integrity key octets)
CASES = [
    # AES-CBC 256 (32) with HMAC-SHA-256-128 (32); the PRF follows sha256
    ("--proposal aes256-sha256", hashlib.sha256, "ab" * 32, 32, 32),
    # AES-GCM-16 256: 32 key octets and a 4-octet salt, no integrity key
    ("--proposal aes256gcm16 --prf prfsha256", hashlib.sha256, "ab" * 32, 36, 0),
    # AES-CBC 128 (16) with HMAC-SHA-1-96 (20); the PRF follows sha1
    ("--proposal aes128-sha1", hashlib.sha1, "cd" * 20, 16, 20),
    # AES-CBC 256 (32) with HMAC-SHA-512-256 (64) under PRF-HMAC-SHA1:
    # 96 octets, five SHA-1 blocks, so T(n) chaining is checked
    ("--proposal aes256-sha512 --prf prfsha1", hashlib.sha1, "ef" * 20, 32, 64),
]

for args, h, skd, encr, integ in CASES:
    keymat = prf_plus(h, bytes.fromhex(skd), bytes.fromhex(NONCE), encr + integ)
    print(f"{args} --sk-d-file - --nonce {NONCE}")
    print(skd)
    print(f"encr_key={keymat[:encr].hex()}")
    print(f"integ_key={keymat[encr:].hex()}")
