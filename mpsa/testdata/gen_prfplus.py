#!/usr/bin/env python3
"""Writes prfplus_kat.json: prf+ (RFC 7296 section 2.13) known answers made
with Python's hmac module, an implementation independent of mpsa's.

Run from this folder:  python3 gen_prfplus.py > prfplus_kat.json
"""
import hashlib, hmac, json

PRFS = {2: hashlib.sha1, 5: hashlib.sha256, 6: hashlib.sha384, 7: hashlib.sha512}

def prf_plus(h, key, seed, n):
    out, t, i = b"", b"", 1
    while len(out) < n:
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
print(json.dumps(cases, indent=1))
