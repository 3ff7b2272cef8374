"""Mint access tokens for the benchmark with PyJWT (an independent JOSE implementation).

usage: tokens.py KEYDIR ALG KID COUNT  -> COUNT tokens, one per line, valid for 1 hour
"""
import sys, time, uuid
import jwt
from cryptography.hazmat.primitives import serialization

keydir, alg, kid, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
# Parse the key once: PyJWT would re-parse (and re-validate) a PEM string on every call.
key = serialization.load_pem_private_key(open(f"{keydir}/{kid}.private.pem", "rb").read(), password=None)
now = int(time.time())
for i in range(count):
    claims = {"iss": "https://bench.test", "aud": "legacy-apps", "sub": f"user{i}", "email": f"user{i}@example.com",
              "roles": ["user"], "sid": str(uuid.uuid4()), "jti": str(uuid.uuid4()), "iat": now, "nbf": now, "exp": now + 3600}
    print(jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "at+jwt"}))
