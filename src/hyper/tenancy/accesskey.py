"""Access keys: their format, and how their secrets are stored (no I/O).

A key reads ``hk_<id>_<secret>``: 16 hex digits of id (public: it names the key in ``key ls``
and is how hyperd finds its record) and 48 hex digits of secret (192 random bits, shown once at
creation). Only a salted hash of the secret is stored, so a copy of the database is no key.

The hash is PBKDF2-HMAC-SHA256 with a random 16-byte salt and few iterations, on purpose: the
secret is random with 192 bits of entropy, so no amount of key stretching changes how hard it is
to guess (slow hashes such as scrypt exist for human passwords); but every request over TCP pays
for one hash, and so does every wrong key an attacker sends. 4096 iterations cost ~1 ms here;
scrypt with its usual parameters ~70 ms and 16 MiB, a denial-of-service lever. The algorithm and
its parameters are stored with each hash, so they can be raised later without breaking keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from hyper import errors

PREFIX = "hk"
MAX_LENGTH = 128
"""Longer credentials are refused before any parsing or lookup."""
_FORMAT = re.compile(r"hk_([0-9a-f]{16})_([0-9a-f]{48})")
_ALGORITHM = "pbkdf2_sha256"
ITERATIONS = 4096
_MAX_ITERATIONS = 1_000_000


def new() -> tuple[str, str, str]:
    """A fresh key: ``(key id, secret, the whole key to show once)``."""
    key_id = secrets.token_hex(8)
    secret = secrets.token_hex(24)
    return key_id, secret, f"{PREFIX}_{key_id}_{secret}"


def looks_like(credential: str) -> bool:
    """Whether a credential is meant as an access key (rather than a Keystone token)."""
    return credential.startswith(PREFIX + "_")


def parse(credential: str) -> tuple[str, str]:
    """``(key id, secret)`` of a well-formed key; Unauthenticated for anything else."""
    if not isinstance(credential, str) or len(credential) > MAX_LENGTH:
        raise errors.Unauthenticated("the access key is malformed")
    match = _FORMAT.fullmatch(credential)
    if match is None:
        raise errors.Unauthenticated("the access key is malformed")
    return match.group(1), match.group(2)


def hash_secret(secret: str, *, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"{_ALGORITHM}${iterations}${salt.hex()}${digest.hex()}"


def verify(secret: str, stored: str) -> bool:
    """Whether ``secret`` matches ``stored``, compared in constant time."""
    try:
        algorithm, iterations_text, salt_hex, digest_hex = stored.split("$")
        iterations = int(iterations_text)
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    if algorithm != _ALGORITHM or not 1 <= iterations <= _MAX_ITERATIONS:
        return False
    actual = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return hmac.compare_digest(actual, expected)


DUMMY_HASH = hash_secret("0" * 48)
"""Verified against when a key id is unknown, so that an unknown id costs what a wrong secret
costs and the answer's timing does not tell ids apart."""
