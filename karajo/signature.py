"""
Webhook and management-call authentication over the raw request body.

Signatures are checked on the exact bytes the client sent, before anything
parses them, because any re-encoding (JSON round trip, form decoding) would
change the bytes the client signed.  The module does no I/O and does not
depend on twisted.web: headers come in through a callable that returns the
first raw value of a header (case-insensitive name) or C{None}.

Every check returns a L{Verdict} instead of raising: a request is untrusted
input, and a malformed header is just one more way for it to be wrong.  The
verdict's reason is short and safe to log or send back; it never contains the
secret, the expected signature or the value the client sent.

Comparisons use L{hmac.compare_digest} on decoded bytes of the expected
length, so timing does not leak how much of a guess was right, and so two
spellings of the same digest (upper/lower-case hex) compare equal.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable

import attrs
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "SOURCEHUT_PUBLIC_KEY_B64",
    "Headers",
    "Secret",
    "Verdict",
    "sign",
    "verify",
    "verify_github",
    "verify_hmac_sha256",
    "verify_sourcehut",
]

#: SourceHut's published webhook signing key (ed25519, base64).
SOURCEHUT_PUBLIC_KEY_B64 = "uX7KWyyDNMaBma4aVbJ/cbUQpdjqczuCyK/HxzV/u+4="

#: Returns the first raw value of a header (name matched case-insensitively),
#: or None when the request does not carry it.
Headers = Callable[[str], bytes | None]
Secret = str | bytes

DEFAULT_HEADER_SIGN = "X-Karajo-Sign"

_ED25519_SIGNATURE_LEN = 64
# Exact-length hex, keyed by digest size (sha1: 20, sha256: 32).  Values are
# trimmed with bytes.strip(), which removes ASCII whitespace only.
_HEX_RE = {n: re.compile(rb"[0-9A-Fa-f]{%d}" % (2 * n)) for n in (20, 32)}


@attrs.frozen
class Verdict:
    """
    The outcome of a signature check.

    @ivar ok: True only when the signature is present, well formed and right.
    @ivar reason: why, in a few words; safe to log and to return to the client.
    @ivar replay_key: an identifier of this delivery for replay protection
        (C{b"github:" + X-GitHub-Delivery}, C{b"sourcehut:" + nonce}), only
        on accepted verdicts that carry one; None otherwise.
    """

    ok: bool
    reason: str
    replay_key: bytes | None = None


def _secret_bytes(secret: object) -> bytes | None:
    """
    The secret as key bytes, or None when there is no usable secret.

    An empty secret is refused rather than used: HMAC with an empty key is
    computable by anyone, so accepting it would make the check decorative.
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, (bytes, bytearray)) or not secret:
        return None
    return bytes(secret)


def _header(headers: Headers, name: str) -> bytes | None:
    """
    The raw header value as bytes; a str value (some callers decode) is
    accepted only when it is pure latin-1, like the bytes it came from.
    """
    value = headers(name)
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return value.encode("latin-1")
        except UnicodeEncodeError:
            return b"\xff"  # guaranteed not to parse as hex or base64
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return b"\xff"


def _parse_hex_digest(
    value: bytes, algorithm: bytes, size: int
) -> bytes | None:
    """
    Decode C{[algorithm=]<hex>} into exactly C{size} digest bytes.

    The C{algorithm=} prefix is optional (GitHub sends it, curl users
    usually do not) and its name is matched case-insensitively; any other
    prefix, extra C{=}, inner whitespace or wrong length is refused.  The
    charset is checked with a regular expression before L{bytes.fromhex}
    because fromhex silently skips whitespace.
    """
    value = value.strip()
    if b"=" in value:
        prefix, _, value = value.partition(b"=")
        if prefix.lower() != algorithm:
            return None
    if _HEX_RE[size].fullmatch(value) is None:
        return None
    return bytes.fromhex(value.decode("ascii"))


#: Digest sizes of the HMAC algorithms the signatures use, in bytes.
_DIGEST_SIZES = {"sha1": 20, "sha256": 32}


def _check_hmac(
    key: bytes,
    body: bytes,
    raw: bytes | None,
    header_name: str,
    algorithm: str,
) -> Verdict:
    """
    Shared HMAC check: header present, well formed, and equal to the HMAC of
    C{body} under C{key}.
    """
    if raw is None:
        return Verdict(False, f"missing {header_name} header")
    size = _DIGEST_SIZES[algorithm]
    given = _parse_hex_digest(raw, algorithm.encode("ascii"), size)
    if given is None:
        return Verdict(
            False,
            f"malformed {header_name} header: expected {2 * size} hex digits",
        )
    # The one-shot C function: no HMAC object per request.
    expected = hmac.digest(key, bytes(body), algorithm)
    if not hmac.compare_digest(given, expected):
        return Verdict(False, f"{header_name} signature does not match")
    return Verdict(True, f"valid {header_name} signature")


def sign(secret: Secret, payload: bytes) -> str:
    """
    Hex HMAC-SHA256 of C{payload}: what clients and JobHttp send in
    C{X-Karajo-Sign}.
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def verify_hmac_sha256(
    secret: Secret,
    body: bytes,
    headers: Headers,
    header_name: str = DEFAULT_HEADER_SIGN,
) -> Verdict:
    """
    Check a hex HMAC-SHA256 of the raw body in C{header_name}.

    An optional C{sha256=} prefix is tolerated so a client copying GitHub's
    format still works; nothing else is.
    """
    header_name = header_name or DEFAULT_HEADER_SIGN
    key = _secret_bytes(secret)
    if key is None:
        return Verdict(False, "no secret configured")
    return _check_hmac(
        key, body, _header(headers, header_name), header_name, "sha256"
    )


def _nonempty(value: bytes | None) -> bytes | None:
    """The stripped value, or None when missing, empty or whitespace."""
    if value is None:
        return None
    value = value.strip()
    return value or None


def verify_github(secret: Secret, body: bytes, headers: Headers) -> Verdict:
    """
    Check a GitHub webhook signature.

    C{X-Hub-Signature-256} (HMAC-SHA256) wins; only when it is absent is the
    legacy C{X-Hub-Signature} (HMAC-SHA1) consulted.  A present but broken
    SHA-256 header is refused rather than falling back, so an attacker cannot
    downgrade the check to SHA-1 by mangling it.
    """
    key = _secret_bytes(secret)
    if key is None:
        return Verdict(False, "no secret configured")
    raw256 = _header(headers, "X-Hub-Signature-256")
    if raw256 is not None:
        verdict = _check_hmac(key, body, raw256, "X-Hub-Signature-256", "sha256")
    else:
        raw1 = _header(headers, "X-Hub-Signature")
        if raw1 is None:
            return Verdict(
                False, "missing X-Hub-Signature-256 or X-Hub-Signature header"
            )
        verdict = _check_hmac(key, body, raw1, "X-Hub-Signature", "sha1")
    if not verdict.ok:
        return verdict
    delivery = _nonempty(_header(headers, "X-GitHub-Delivery"))
    if delivery is None:
        return verdict
    return attrs.evolve(verdict, replay_key=b"github:" + delivery)


_sourcehut_key: Ed25519PublicKey | None = None


def _default_sourcehut_key() -> Ed25519PublicKey:
    """SourceHut's published key, decoded once."""
    global _sourcehut_key
    if _sourcehut_key is None:
        _sourcehut_key = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(SOURCEHUT_PUBLIC_KEY_B64)
        )
    return _sourcehut_key


def verify_sourcehut(
    body: bytes,
    headers: Headers,
    public_key: Ed25519PublicKey | None = None,
) -> Verdict:
    """
    Check a SourceHut webhook: a base64 ed25519 signature in
    C{X-Payload-Signature} over the body followed by the C{X-Payload-Nonce}
    header value.

    The key defaults to SourceHut's published one; tests inject their own.
    The nonce must be present: without it the signed message is just the
    body, and a captured delivery could not be told from a fresh one.
    """
    key = public_key if public_key is not None else _default_sourcehut_key()
    raw_sig = _header(headers, "X-Payload-Signature")
    if raw_sig is None:
        return Verdict(False, "missing X-Payload-Signature header")
    nonce = _header(headers, "X-Payload-Nonce")
    if nonce is None or _nonempty(nonce) is None:
        return Verdict(False, "missing X-Payload-Nonce header")
    try:
        signature = base64.b64decode(raw_sig.strip(), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if len(signature) != _ED25519_SIGNATURE_LEN:
        return Verdict(
            False, "malformed X-Payload-Signature header: expected base64 ed25519"
        )
    try:
        key.verify(signature, bytes(body) + nonce)
    except InvalidSignature:
        return Verdict(False, "X-Payload-Signature signature does not match")
    return Verdict(
        True,
        "valid X-Payload-Signature signature",
        replay_key=b"sourcehut:" + nonce.strip(),
    )


def verify(
    auth_kind: str,
    secret: Secret,
    body: bytes,
    headers: Headers,
    header_sign: str = DEFAULT_HEADER_SIGN,
    sourcehut_key: Ed25519PublicKey | None = None,
) -> Verdict:
    """
    Check a request with the job's C{auth_kind}: C{hmac-sha256} (in
    C{header_sign}), C{github} or C{sourcehut}.  An unknown kind refuses the
    request instead of letting it through unauthenticated.
    """
    kind = auth_kind.strip().lower() if isinstance(auth_kind, str) else ""
    if kind == "hmac-sha256":
        return verify_hmac_sha256(secret, body, headers, header_sign)
    if kind == "github":
        return verify_github(secret, body, headers)
    if kind == "sourcehut":
        return verify_sourcehut(body, headers, sourcehut_key)
    return Verdict(False, "unknown auth_kind")
