"""
Refusals of L{karajo.signature} for the right reason.

The rejection matrix in L{tests.unit.test_signature} checks that bad
requests are refused; these check I{why}, for cases where a request could
be refused by a later check while an earlier one is broken: a blank
SourceHut nonce with an otherwise valid signature, and header values that
cannot be read as bytes (which must never count as missing: a missing
C{X-Hub-Signature-256} lets the weaker SHA-1 header decide).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from twisted.trial.unittest import SynchronousTestCase

from karajo.signature import Headers, verify, verify_github, verify_hmac_sha256, verify_sourcehut

BODY = b'{"_karajo_epoch":1700000000}'
SECRET = "gh-s3cret"


def headers_of(values: Mapping[str, object]) -> Headers:
    """A header lookup over C{values} (names case-insensitive), values as given."""
    lowered = {name.lower(): value for name, value in values.items()}
    return lambda name: lowered.get(name.lower())  # type: ignore[return-value]


def sha256_header(body: bytes = BODY, secret: str = SECRET) -> bytes:
    return b"sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()


def sha1_header(body: bytes = BODY, secret: str = SECRET) -> bytes:
    return b"sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest().encode()


class SourcehutNonceTests(SynchronousTestCase):
    """
    The nonce is part of the signed message, so a signature over the body
    and an empty (or blank) nonce is a valid signature: only the nonce
    check may refuse it, and it must.
    """

    def setUp(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.public = self.private.public_key()

    def signed(self, nonce: bytes) -> dict[str, bytes]:
        signature = self.private.sign(BODY + nonce)
        return {
            "X-Payload-Signature": base64.b64encode(signature),
            "X-Payload-Nonce": nonce,
        }

    def test_good_nonce_accepted(self) -> None:
        """The control case: the same construction with a real nonce passes."""
        verdict = verify_sourcehut(BODY, headers_of(self.signed(b"n-1")), self.public)
        self.assertEqual(
            (verdict.ok, verdict.reason, verdict.replay_key),
            (True, "valid X-Payload-Signature signature", b"sourcehut:n-1"),
        )

    def test_empty_nonce(self) -> None:
        """An empty nonce with a valid signature is refused as a missing nonce."""
        verdict = verify_sourcehut(BODY, headers_of(self.signed(b"")), self.public)
        self.assertEqual((verdict.ok, verdict.reason), (False, "missing X-Payload-Nonce header"))
        self.assertIsNone(verdict.replay_key)

    def test_blank_nonce(self) -> None:
        """Whitespace only is no nonce either, whatever the signature."""
        for nonce in (b" ", b"\t", b"  \t "):
            verdict = verify_sourcehut(BODY, headers_of(self.signed(nonce)), self.public)
            self.assertEqual(
                (verdict.ok, verdict.reason), (False, "missing X-Payload-Nonce header"), nonce
            )

    def test_absent_nonce(self) -> None:
        """No nonce header: refused as missing, before the signature is looked at."""
        headers = self.signed(b"")
        del headers["X-Payload-Nonce"]
        verdict = verify_sourcehut(BODY, headers_of(headers), self.public)
        self.assertEqual((verdict.ok, verdict.reason), (False, "missing X-Payload-Nonce header"))

    def test_through_verify(self) -> None:
        """The dispatcher gives the same answer."""
        verdict = verify("sourcehut", "", BODY, headers_of(self.signed(b" ")), sourcehut_key=self.public)
        self.assertEqual((verdict.ok, verdict.reason), (False, "missing X-Payload-Nonce header"))

    def test_nonce_stripped_in_replay_key(self) -> None:
        """Spaces around a nonce are not part of the replay key."""
        verdict = verify_sourcehut(BODY, headers_of(self.signed(b" n-2 ")), self.public)
        self.assertEqual((verdict.ok, verdict.replay_key), (True, b"sourcehut:n-2"))


class UndecodableHeaderTests(SynchronousTestCase):
    """
    A header value that is not latin-1 text or bytes (a caller that decoded
    it differently, a bug elsewhere) is present but malformed, never absent.
    """

    def test_github_sha256_undecodable_does_not_fall_back_to_sha1(self) -> None:
        """
        With an unreadable X-Hub-Signature-256 and a valid SHA-1 header, the
        request is refused for the SHA-256 header: reading it as missing
        would let the SHA-1 signature decide.
        """
        for bad in ("sha256=\u20ac" + "0" * 63, "\u0100", 12345, object()):
            headers = headers_of({"X-Hub-Signature-256": bad, "X-Hub-Signature": sha1_header()})
            verdict = verify_github(SECRET, BODY, headers)
            self.assertEqual(
                (verdict.ok, verdict.reason),
                (False, "malformed X-Hub-Signature-256 header: expected 64 hex digits"),
                repr(bad),
            )

    def test_github_sha1_alone_still_accepted(self) -> None:
        """The control case: without a SHA-256 header the SHA-1 one is checked."""
        verdict = verify_github(SECRET, BODY, headers_of({"X-Hub-Signature": sha1_header()}))
        self.assertEqual((verdict.ok, verdict.reason), (True, "valid X-Hub-Signature signature"))

    def test_latin1_str_value_is_read(self) -> None:
        """A str value in latin-1 is read as the bytes it came from."""
        headers = headers_of({"X-Hub-Signature-256": sha256_header().decode("ascii")})
        verdict = verify_github(SECRET, BODY, headers)
        self.assertEqual((verdict.ok, verdict.reason), (True, "valid X-Hub-Signature-256 signature"))

    def test_memoryview_and_bytearray_values_are_read(self) -> None:
        """Other byte containers are read as bytes."""
        for wrap in (bytearray, memoryview):
            headers = headers_of({"X-Hub-Signature-256": wrap(sha256_header())})
            self.assertTrue(verify_github(SECRET, BODY, headers).ok, wrap.__name__)

    def test_hmac_undecodable(self) -> None:
        """X-Karajo-Sign that cannot be read: malformed, not missing."""
        for bad in ("\u20ac", 7):
            verdict = verify_hmac_sha256("s3cret", BODY, headers_of({"X-Karajo-Sign": bad}))
            self.assertEqual(
                (verdict.ok, verdict.reason),
                (False, "malformed X-Karajo-Sign header: expected 64 hex digits"),
            )

    def test_hmac_missing(self) -> None:
        """The control case: an absent header is reported as missing."""
        verdict = verify_hmac_sha256("s3cret", BODY, headers_of({}))
        self.assertEqual((verdict.ok, verdict.reason), (False, "missing X-Karajo-Sign header"))

    def test_sourcehut_undecodable_nonce(self) -> None:
        """An unreadable nonce is present: the signature check refuses it, not the nonce check."""
        private = Ed25519PrivateKey.generate()
        headers = headers_of({
            "X-Payload-Signature": base64.b64encode(private.sign(BODY + b"n")),
            "X-Payload-Nonce": "\u20ac",
        })
        verdict = verify_sourcehut(BODY, headers, private.public_key())
        self.assertEqual(
            (verdict.ok, verdict.reason), (False, "X-Payload-Signature signature does not match")
        )

    def test_sourcehut_latin1_str_nonce(self) -> None:
        """A str nonce is read as latin-1, byte for byte: the signed bytes are b'n\\xe9'."""
        private = Ed25519PrivateKey.generate()
        headers = headers_of({
            "X-Payload-Signature": base64.b64encode(private.sign(BODY + b"n\xe9")),
            "X-Payload-Nonce": "n\xe9",
        })
        verdict = verify_sourcehut(BODY, headers, private.public_key())
        self.assertEqual((verdict.ok, verdict.replay_key), (True, b"sourcehut:n\xe9"))


class DefaultSourcehutKeyTests(SynchronousTestCase):
    """Without an injected key, SourceHut's published key is the one used."""

    def test_published_key(self) -> None:
        """The key as SourceHut publishes it, written out."""
        from karajo import signature

        self.assertEqual(
            signature.SOURCEHUT_PUBLIC_KEY_B64, "uX7KWyyDNMaBma4aVbJ/cbUQpdjqczuCyK/HxzV/u+4="
        )

    def test_default_reads_the_constant(self) -> None:
        """The default key is decoded from the constant (once)."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        from karajo import signature

        private = Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.patch(signature, "SOURCEHUT_PUBLIC_KEY_B64", base64.b64encode(raw).decode())
        self.patch(signature, "_sourcehut_key", None)
        headers = headers_of({
            "X-Payload-Signature": base64.b64encode(private.sign(BODY + b"n")),
            "X-Payload-Nonce": b"n",
        })
        self.assertTrue(verify_sourcehut(BODY, headers).ok)
        self.assertTrue(verify("sourcehut", "", BODY, headers).ok)


class ReasonTableTests(SynchronousTestCase):
    """
    Every refusal's reason, word for word: it is logged and sent back to
    the client.  C{ok} is the boolean False, not merely falsy.
    """

    def assertRefusedWith(self, verdict: object, reason: str) -> None:
        self.assertIs(verdict.ok, False)  # type: ignore[attr-defined]
        self.assertEqual(verdict.reason, reason)  # type: ignore[attr-defined]
        self.assertIsNone(verdict.replay_key)  # type: ignore[attr-defined]

    def test_hmac(self) -> None:
        sign_ok = hmac.new(b"s3cret", BODY, hashlib.sha256).hexdigest().encode()
        self.assertRefusedWith(
            verify_hmac_sha256("", BODY, headers_of({"X-Karajo-Sign": sign_ok})),
            "no secret configured",
        )
        self.assertRefusedWith(
            verify_hmac_sha256("s3cret", BODY + b" ", headers_of({"X-Karajo-Sign": sign_ok})),
            "X-Karajo-Sign signature does not match",
        )
        self.assertRefusedWith(
            verify_hmac_sha256("s3cret", BODY, headers_of({"X-Sig": b"00"}), "X-Sig"),
            "malformed X-Sig header: expected 64 hex digits",
        )

    def test_github(self) -> None:
        self.assertRefusedWith(
            verify_github("", BODY, headers_of({"X-Hub-Signature-256": sha256_header()})),
            "no secret configured",
        )
        self.assertRefusedWith(
            verify_github(SECRET, BODY, headers_of({})),
            "missing X-Hub-Signature-256 or X-Hub-Signature header",
        )
        self.assertRefusedWith(
            verify_github(SECRET, BODY, headers_of({"X-Hub-Signature": sha1_header(secret="x")})),
            "X-Hub-Signature signature does not match",
        )
        self.assertRefusedWith(
            verify_github(SECRET, BODY, headers_of({"X-Hub-Signature": b"sha1=00"})),
            "malformed X-Hub-Signature header: expected 40 hex digits",
        )

    def test_sourcehut(self) -> None:
        private = Ed25519PrivateKey.generate()
        key = private.public_key()
        self.assertRefusedWith(
            verify_sourcehut(BODY, headers_of({"X-Payload-Nonce": b"n"}), key),
            "missing X-Payload-Signature header",
        )
        for signature in (b"not base64!", base64.b64encode(b"short"), b""):
            self.assertRefusedWith(
                verify_sourcehut(
                    BODY,
                    headers_of({"X-Payload-Signature": signature, "X-Payload-Nonce": b"n"}),
                    key,
                ),
                "malformed X-Payload-Signature header: expected base64 ed25519",
            )
        self.assertRefusedWith(
            verify_sourcehut(
                BODY,
                headers_of({
                    "X-Payload-Signature": base64.b64encode(private.sign(BODY + b"m")),
                    "X-Payload-Nonce": b"n",
                }),
                key,
            ),
            "X-Payload-Signature signature does not match",
        )

    def test_unknown_kind(self) -> None:
        for kind in ("", "hmac", "sha1", None, 3):
            self.assertRefusedWith(
                verify(kind, "s", BODY, headers_of({})), "unknown auth_kind"  # type: ignore[arg-type]
            )

    def test_kind_spelling(self) -> None:
        """The kind is matched without case or surrounding spaces."""
        headers = headers_of({"X-Hub-Signature-256": sha256_header()})
        self.assertTrue(verify(" GitHub ", SECRET, BODY, headers).ok)
