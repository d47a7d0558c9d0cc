#!/usr/bin/env python3
"""Writes prfplus_kat.json: prf+ (RFC 7296 section 2.13) known answers made
with Python's hmac module and, for PRF_AES128_XCBC, AES-XCBC-PRF-128
(RFC 4434) written here on the AES of Python's `cryptography` package:
implementations independent of mpsa's.

Run from this folder:  python3 gen_prfplus.py > prfplus_kat.json
"""
import hashlib, hmac, json
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def aes(key, block):
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(block) + e.finalize()


def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


def xcbc_mac(key, msg):
    """AES-XCBC-MAC (RFC 3566 section 4), untruncated."""
    k1, k2, k3 = (aes(key, bytes([i]) * 16) for i in (1, 2, 3))
    blocks = [msg[i:i + 16] for i in range(0, len(msg), 16)] or [b""]
    e = bytes(16)
    for b in blocks[:-1]:
        e = aes(k1, xor(e, b))
    last = blocks[-1]
    if len(last) == 16:
        last = xor(last, k2)
    else:
        last = xor(last + b"\x80" + bytes(15 - len(last)), k3)
    return aes(k1, xor(e, last))


def xcbc_prf(key, msg):
    """AES-XCBC-PRF-128 (RFC 4434 section 2): keys other than 16 octets are
    zero-padded (shorter) or reduced with the PRF under a zero key."""
    if len(key) < 16:
        key = key + bytes(16 - len(key))
    elif len(key) > 16:
        key = xcbc_mac(bytes(16), key)
    return xcbc_mac(key, msg)


# RFC 4434 section 6 test vectors: the AES-XCBC code above must give them.
_k = bytes(range(16))
_m = bytes(range(20))
assert xcbc_prf(_k, _m).hex() == "47f51b4564966215b8985c63055ed308"
assert xcbc_prf(_k[:10], _m).hex() == "0fa087af7d866e7653434e602fdde835"
assert xcbc_prf(_k + b"\xed\xcb", _m).hex() == "8cd3c93ae598a9803006ffb67c40e9e4"

PRFS = {2: hashlib.sha1, 5: hashlib.sha256, 6: hashlib.sha384, 7: hashlib.sha512}

def prf_plus(h, key, seed, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
        if h == "xcbc":
            t = xcbc_prf(key, t + seed + bytes([i]))
        else:
            t = hmac.new(key, t + seed + bytes([i]), h).digest()
        out += t
        i += 1
    return out[:n]

cases = []
for prf, h in PRFS.items():
    size = h().digest_size
    for klen, slen, n in [(size, 16, 64), (size, 32, 7), (size, 256, 3 * size + 5), (7, 20, size), (100, 17, 200)]:
        key = bytes((i * 7 + prf + klen) & 0xFF for i in range(klen))
        seed = bytes((i * 13 + 5 + slen) & 0xFF for i in range(slen))
        cases.append({"prf": prf, "key": key.hex(), "seed": seed.hex(), "n": n,
                      "out": prf_plus(h, key, seed, n).hex()})
# PRF_AES128_XCBC (4): 16-octet keys as IKE uses them (SK_d is the PRF's
# preferred key length), and 10- and 18-octet ones for the key rule; the
# outputs span several 16-octet PRF blocks, so the chaining of T(n) is
# checked, not only the first block.
for klen, slen, n in [(16, 16, 64), (16, 32, 7), (16, 256, 53), (10, 20, 16), (18, 17, 200)]:
    key = bytes((i * 7 + 4 + klen) & 0xFF for i in range(klen))
    seed = bytes((i * 13 + 5 + slen) & 0xFF for i in range(slen))
    cases.append({"prf": 4, "key": key.hex(), "seed": seed.hex(), "n": n,
                  "out": prf_plus("xcbc", key, seed, n).hex()})
print(json.dumps(cases, indent=1))
