"""
API tokens: how one is made, how its hash is written in C{user.conf}, and
how a presented token is matched against the configured hashes (pure).

Only C{sha256:<hex>} of a token is ever stored: a leaked C{user.conf}
gives no token.  A token is 32 random bytes (C{secrets.token_urlsafe}),
so a plain SHA-256 is enough; a slow hash (bcrypt) would only add CPU to
every API call of a scraper.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from typing import Any

__all__ = ["HASH_PREFIX", "digest_of", "hash_token", "match", "new_token"]

HASH_PREFIX = "sha256:"
_HEX = re.compile(r"\A[0-9a-f]{64}\Z")


def new_token() -> str:
    """A fresh random token (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """The C{hash} value of C{token} for C{user.conf}."""
    return HASH_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


def digest_of(hashed: str) -> bytes | None:
    """
    The 32 bytes of a C{sha256:<hex>} value (hex in either case), or None
    when it is not one.
    """
    if not hashed.startswith(HASH_PREFIX):
        return None
    hexpart = hashed[len(HASH_PREFIX):].strip().lower()
    if not _HEX.match(hexpart):
        return None
    return bytes.fromhex(hexpart)


def match(tokens: Iterable[Any], presented: bytes) -> Any | None:
    """
    The token (a value with C{hash}) whose hash is that of C{presented},
    or None.  Every configured hash is compared, each in constant time, so
    the answer's timing says neither which token nor how much matched.
    """
    digest = hashlib.sha256(presented).digest()
    found = None
    for token in tokens:
        expected = digest_of(token.hash)
        if expected is not None and hmac.compare_digest(expected, digest) and found is None:
            found = token
    return found
