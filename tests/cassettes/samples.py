"""Secrets to plant in tests of the scrubber and the scanner, made at run time (no key is committed)."""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

#: A real PEM private key (PKCS#8) and a real RS256 JWT signed with it.
PEM_SAMPLE = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()
JWT_SAMPLE = jwt.encode({"iss": "client", "sub": "sandbox", "iat": int(time.time())}, _KEY, algorithm="RS256")
