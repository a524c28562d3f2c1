"""
Tests for L{karajo.signature}.

The rejection matrix is built as data and turned into one test method per
case, so the trial count reflects how many distinct malformed or forged
requests are refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from karajo.signature import (
    SOURCEHUT_PUBLIC_KEY_B64,
    Verdict,
    sign,
    verify,
    verify_github,
    verify_hmac_sha256,
    verify_sourcehut,
)

HeaderValue = bytes | str


def headers_of(values: Mapping[str, HeaderValue]) -> Callable[[str], bytes | None]:
    """
    A headers callable over a dict, matching names case-insensitively like
    twisted.web's getRawHeaders()[0].
    """
    lowered = {k.lower(): v for k, v in values.items()}

    def get(name: str) -> bytes | None:
        return lowered.get(name.lower())  # type: ignore[return-value]

    return get


SECRET = "s3cret"
BODY = b'{"_karajo_epoch":1677350854}'
README_SIGN = "fef16cabebdcbdcc7fdbfb9bd5a01c00803af7568a05054e87b2239f84f38c54"

GH_SECRET = "It's a Secret to Everybody"
GH_BODY = b"Hello, World!"
GH_SIGN = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
GH_SHA1 = hmac.new(GH_SECRET.encode(), GH_BODY, hashlib.sha1).hexdigest()

# A fixed test key so the matrix is deterministic.
SH_PRIVATE = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SH_PUBLIC = SH_PRIVATE.public_key()
SH_OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
SH_BODY = b'{"event":"repo:post-update"}'
SH_NONCE = b"bm9uY2UtMTIzNDU2Nzg5MA"
SH_SIG_RAW = SH_PRIVATE.sign(SH_BODY + SH_NONCE)
SH_SIG = base64.b64encode(SH_SIG_RAW)


def flip(digest: bytes, byte: int, bit: int) -> bytes:
    """C{digest} with one bit changed."""
    out = bytearray(digest)
    out[byte] ^= 1 << bit
    return bytes(out)


def garbage_values(valid: str) -> list[tuple[str, HeaderValue]]:
    """
    Malformed spellings of a hex signature that no hex HMAC check may
    accept, shared by the hmac-sha256 and github matrices.
    """
    return [
        ("empty", b""),
        ("space_only", b" "),
        ("whitespace_only", b" \t \r\n"),
        ("truncated_by_one", valid[:-1].encode()),
        ("truncated_to_half", valid[:32].encode()),
        ("truncated_to_one_digit", valid[:1].encode()),
        ("odd_length", valid[:-3].encode()),
        ("extended_by_one", (valid + "0").encode()),
        ("extended_by_a_byte", (valid + "00").encode()),
        ("doubled", (valid * 2).encode()),
        ("non_hex_g", ("g" + valid[1:]).encode()),
        ("non_hex_z_at_end", (valid[:-1] + "z").encode()),
        ("latin1_byte", b"\xe9" + valid[1:].encode()),
        ("latin1_str", "\u00e9" + valid[1:]),
        ("non_latin1_str", "\u20ac" + valid[1:]),
        ("utf8_multibyte", "é".encode() + valid[2:].encode()),
        ("nul_inside", valid[:10].encode() + b"\x00" + valid[11:].encode()),
        ("nul_appended", valid.encode() + b"\x00"),
        ("nul_only", b"\x00" * 64),
        ("inner_space", (valid[:32] + " " + valid[32:]).encode()),
        ("inner_newline", (valid[:32] + "\n" + valid[32:]).encode()),
        ("hex_0x_prefix", ("0x" + valid).encode()),
        ("sha512_prefix", ("sha512=" + valid).encode()),
        ("md5_prefix", ("md5=" + valid).encode()),
        ("empty_prefix", ("=" + valid).encode()),
        ("double_prefix", ("sha256=sha256=" + valid).encode()),
        ("trailing_equals", (valid + "=").encode()),
        ("prefix_only", b"sha256="),
        ("base64_of_digest", base64.b64encode(bytes.fromhex(valid))),
        ("raw_digest_bytes", bytes.fromhex(valid)),
        ("all_zero", b"0" * 64),
    ]


def hmac_matrix() -> dict[str, tuple[Mapping[str, HeaderValue], bytes, str, str]]:
    """name -> (headers, body, secret, header_name) for hmac-sha256."""
    cases: dict[str, tuple[Mapping[str, HeaderValue], bytes, str, str]] = {}
    h = "X-Karajo-Sign"
    cases["missing"] = ({}, BODY, SECRET, h)
    for name, value in garbage_values(README_SIGN):
        cases[name] = ({h: value}, BODY, SECRET, h)
    digest = bytes.fromhex(README_SIGN)
    for byte in (0, 1, 31):
        for bit in range(8):
            cases[f"flip_byte{byte}_bit{bit}"] = (
                {h: flip(digest, byte, bit).hex()}, BODY, SECRET, h,
            )
    cases["sha1_where_sha256_expected"] = (
        {h: hmac.new(SECRET.encode(), BODY, hashlib.sha1).hexdigest()},
        BODY, SECRET, h,
    )
    cases["sha1_prefix_on_sha256"] = ({h: "sha1=" + README_SIGN}, BODY, SECRET, h)
    cases["different_body"] = ({h: README_SIGN}, BODY + b" ", SECRET, h)
    cases["empty_body"] = ({h: README_SIGN}, b"", SECRET, h)
    cases["different_secret"] = ({h: README_SIGN}, BODY, "s3cret!", h)
    cases["empty_secret"] = ({h: sign(b"", BODY)}, BODY, "", h)
    cases["sha256_of_body_not_hmac"] = (
        {h: hashlib.sha256(BODY).hexdigest()}, BODY, SECRET, h,
    )
    cases["secret_as_signature"] = ({h: SECRET}, BODY, SECRET, h)
    cases["signature_in_other_header"] = (
        {"X-Hub-Signature-256": README_SIGN}, BODY, SECRET, h,
    )
    cases["default_header_when_custom_expected"] = (
        {h: README_SIGN}, BODY, SECRET, "X-Custom-Sign",
    )
    return cases


def github_matrix() -> dict[str, tuple[Mapping[str, HeaderValue], bytes, str]]:
    """name -> (headers, body, secret) for github."""
    cases: dict[str, tuple[Mapping[str, HeaderValue], bytes, str]] = {}
    h256, h1 = "X-Hub-Signature-256", "X-Hub-Signature"
    cases["missing_both"] = ({}, GH_BODY, GH_SECRET)
    cases["delivery_only"] = ({"X-GitHub-Delivery": "abc"}, GH_BODY, GH_SECRET)
    for name, value in garbage_values(GH_SIGN):
        cases[name] = ({h256: value}, GH_BODY, GH_SECRET)
    for name, value in garbage_values(GH_SIGN)[:8]:
        cases[f"{name}_with_prefix"] = (
            {h256: b"sha256=" + (value if isinstance(value, bytes) else value.encode())},
            GH_BODY, GH_SECRET,
        )
    digest = bytes.fromhex(GH_SIGN)
    for byte in (0, 31):
        for bit in range(8):
            cases[f"flip_byte{byte}_bit{bit}"] = (
                {h256: "sha256=" + flip(digest, byte, bit).hex()},
                GH_BODY, GH_SECRET,
            )
    sha1 = bytes.fromhex(GH_SHA1)
    for bit in range(8):
        cases[f"sha1_flip_byte0_bit{bit}"] = (
            {h1: "sha1=" + flip(sha1, 0, bit).hex()}, GH_BODY, GH_SECRET,
        )
    cases["sha1_in_sha256_header"] = ({h256: "sha1=" + GH_SHA1}, GH_BODY, GH_SECRET)
    cases["sha1_hex_in_sha256_header"] = ({h256: GH_SHA1}, GH_BODY, GH_SECRET)
    cases["sha256_in_sha1_header"] = ({h1: "sha256=" + GH_SIGN}, GH_BODY, GH_SECRET)
    cases["sha256_hex_in_sha1_header"] = ({h1: GH_SIGN}, GH_BODY, GH_SECRET)
    cases["sha1_header_empty"] = ({h1: ""}, GH_BODY, GH_SECRET)
    cases["sha1_header_wrong_prefix"] = ({h1: "sha256=" + GH_SHA1}, GH_BODY, GH_SECRET)
    cases["no_downgrade_broken_256_valid_sha1"] = (
        {h256: "sha256=garbage", h1: "sha1=" + GH_SHA1}, GH_BODY, GH_SECRET,
    )
    cases["no_downgrade_empty_256_valid_sha1"] = (
        {h256: "", h1: "sha1=" + GH_SHA1}, GH_BODY, GH_SECRET,
    )
    cases["different_body"] = ({h256: "sha256=" + GH_SIGN}, b"Hello, World?", GH_SECRET)
    cases["different_secret"] = ({h256: "sha256=" + GH_SIGN}, GH_BODY, "It's a secret to everybody")
    cases["empty_secret"] = (
        {h256: "sha256=" + hmac.new(b"", GH_BODY, hashlib.sha256).hexdigest()},
        GH_BODY, "",
    )
    cases["sha1_different_body"] = ({h1: "sha1=" + GH_SHA1}, b"", GH_SECRET)
    cases["karajo_header_instead"] = ({"X-Karajo-Sign": GH_SIGN}, GH_BODY, GH_SECRET)
    return cases


def sourcehut_matrix() -> dict[
    str, tuple[Mapping[str, HeaderValue], bytes, Ed25519PublicKey | None]
]:
    """name -> (headers, body, public key) for sourcehut; None is the real key."""
    cases: dict[
        str, tuple[Mapping[str, HeaderValue], bytes, Ed25519PublicKey | None]
    ] = {}
    hs, hn = "X-Payload-Signature", "X-Payload-Nonce"

    def ok_with(**changes: HeaderValue) -> dict[str, HeaderValue]:
        values: dict[str, HeaderValue] = {hs: SH_SIG, hn: SH_NONCE}
        for key, value in changes.items():
            values[{"sig": hs, "nonce": hn}[key]] = value
        return values

    cases["real_key_rejects_test_signature"] = (ok_with(), SH_BODY, None)
    cases["wrong_key"] = (ok_with(), SH_BODY, SH_OTHER.public_key())
    cases["missing_signature"] = ({hn: SH_NONCE}, SH_BODY, SH_PUBLIC)
    cases["missing_nonce"] = ({hs: SH_SIG}, SH_BODY, SH_PUBLIC)
    cases["missing_both"] = ({}, SH_BODY, SH_PUBLIC)
    cases["empty_nonce"] = (ok_with(nonce=b""), SH_BODY, SH_PUBLIC)
    cases["whitespace_nonce"] = (ok_with(nonce=b"  "), SH_BODY, SH_PUBLIC)
    cases["nonce_mismatch"] = (ok_with(nonce=SH_NONCE + b"x"), SH_BODY, SH_PUBLIC)
    cases["nonce_truncated"] = (ok_with(nonce=SH_NONCE[:-1]), SH_BODY, SH_PUBLIC)
    cases["different_body"] = (ok_with(), SH_BODY + b"\n", SH_PUBLIC)
    cases["empty_body"] = (ok_with(), b"", SH_PUBLIC)
    cases["signed_without_nonce"] = (
        ok_with(sig=base64.b64encode(SH_PRIVATE.sign(SH_BODY))), SH_BODY, SH_PUBLIC,
    )
    cases["signed_nonce_then_body"] = (
        ok_with(sig=base64.b64encode(SH_PRIVATE.sign(SH_NONCE + SH_BODY))),
        SH_BODY, SH_PUBLIC,
    )
    cases["signed_by_other_key"] = (
        ok_with(sig=base64.b64encode(SH_OTHER.sign(SH_BODY + SH_NONCE))),
        SH_BODY, SH_PUBLIC,
    )
    for name, sig in [
        ("empty", b""),
        ("space_only", b" "),
        ("whitespace_only", b"\t\r\n "),
        ("no_padding", SH_SIG.rstrip(b"=")),
        ("extra_padding", SH_SIG + b"=="),
        ("truncated_63_bytes", base64.b64encode(SH_SIG_RAW[:63])),
        ("extended_65_bytes", base64.b64encode(SH_SIG_RAW + b"\x00")),
        ("doubled", base64.b64encode(SH_SIG_RAW * 2)),
        ("hex_encoded", SH_SIG_RAW.hex().encode()),
        ("raw_bytes", SH_SIG_RAW),
        ("invalid_char", b"!" + SH_SIG[1:]),
        ("urlsafe_alphabet", base64.urlsafe_b64encode(b"\xfb\xff" * 32)),
        ("inner_space", SH_SIG[:40] + b" " + SH_SIG[40:]),
        ("latin1_byte", b"\xe9" + SH_SIG[1:]),
        ("non_latin1_str", "\u20ac" + SH_SIG[1:].decode()),
        ("nul_inside", SH_SIG[:10] + b"\x00" + SH_SIG[11:]),
        ("nul_appended", SH_SIG + b"\x00"),
        ("all_zero_signature", base64.b64encode(bytes(64))),
        ("ed25519_prefix", b"ed25519=" + SH_SIG),
    ]:
        cases[f"signature_{name}"] = (ok_with(sig=sig), SH_BODY, SH_PUBLIC)
    for byte in (0, 32, 63):
        for bit in range(8):
            cases[f"flip_byte{byte}_bit{bit}"] = (
                ok_with(sig=base64.b64encode(flip(SH_SIG_RAW, byte, bit))),
                SH_BODY, SH_PUBLIC,
            )
    return cases


HMAC_CASES = hmac_matrix()
GITHUB_CASES = github_matrix()
SOURCEHUT_CASES = sourcehut_matrix()


class RejectionMatrixMixin:
    """Assertions every refused request must satisfy."""

    def assertRefused(self, verdict: Verdict, *forbidden: str | bytes) -> None:
        """
        The verdict refuses, has a reason, and the reason leaks none of
        C{forbidden} (secret, expected signature).
        """
        self.assertIsInstance(verdict, Verdict)  # type: ignore[attr-defined]
        self.assertFalse(verdict.ok)  # type: ignore[attr-defined]
        self.assertIsNone(verdict.replay_key)  # type: ignore[attr-defined]
        self.assertTrue(verdict.reason)  # type: ignore[attr-defined]
        for secret in forbidden:
            if isinstance(secret, bytes):
                secret = secret.decode("latin-1")
            if secret:
                self.assertNotIn(secret, verdict.reason)  # type: ignore[attr-defined]


class HmacRejectionTests(RejectionMatrixMixin, SynchronousTestCase):
    """Every case in L{hmac_matrix} is refused without raising."""


class GithubRejectionTests(RejectionMatrixMixin, SynchronousTestCase):
    """Every case in L{github_matrix} is refused without raising."""


class SourcehutRejectionTests(RejectionMatrixMixin, SynchronousTestCase):
    """Every case in L{sourcehut_matrix} is refused without raising."""


def _add_hmac_case(name: str) -> None:
    headers, body, secret, header_name = HMAC_CASES[name]

    def test(self: HmacRejectionTests) -> None:
        expected = sign(secret, body) if secret else ""
        self.assertRefused(
            verify_hmac_sha256(secret, body, headers_of(headers), header_name),
            SECRET, expected,
        )
        self.assertRefused(
            verify("hmac-sha256", secret, body, headers_of(headers), header_name),
            SECRET, expected,
        )

    test.__doc__ = f"hmac-sha256 refuses case {name!r} with a Verdict, not an exception."
    setattr(HmacRejectionTests, f"test_reject_{name}", test)


def _add_github_case(name: str) -> None:
    headers, body, secret = GITHUB_CASES[name]

    def test(self: GithubRejectionTests) -> None:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        self.assertRefused(verify_github(secret, body, headers_of(headers)), GH_SECRET, expected)
        self.assertRefused(
            verify("github", secret, body, headers_of(headers)), GH_SECRET, expected
        )

    test.__doc__ = f"github refuses case {name!r} with a Verdict, not an exception."
    setattr(GithubRejectionTests, f"test_reject_{name}", test)


def _add_sourcehut_case(name: str) -> None:
    headers, body, key = SOURCEHUT_CASES[name]

    def test(self: SourcehutRejectionTests) -> None:
        self.assertRefused(verify_sourcehut(body, headers_of(headers), key))
        self.assertRefused(
            verify("sourcehut", "", body, headers_of(headers), sourcehut_key=key)
        )

    test.__doc__ = f"sourcehut refuses case {name!r} with a Verdict, not an exception."
    setattr(SourcehutRejectionTests, f"test_reject_{name}", test)


for _name in HMAC_CASES:
    _add_hmac_case(_name)
for _name in GITHUB_CASES:
    _add_github_case(_name)
for _name in SOURCEHUT_CASES:
    _add_sourcehut_case(_name)


class MatrixSizeTests(SynchronousTestCase):
    """The matrix is as big as promised."""

    def test_at_least_40_cases_per_kind(self) -> None:
        """Each auth kind has at least 40 distinct rejection cases."""
        self.assertGreaterEqual(len(HMAC_CASES), 40)
        self.assertGreaterEqual(len(GITHUB_CASES), 40)
        self.assertGreaterEqual(len(SOURCEHUT_CASES), 40)


class SignTests(SynchronousTestCase):
    """L{sign} produces what clients must send."""

    def test_spec_curl_example(self) -> None:
        """The README's curl example payload signs to the documented value."""
        self.assertEqual(sign("s3cret", BODY), README_SIGN)

    def test_bytes_secret(self) -> None:
        """A bytes secret signs like the equivalent str secret."""
        self.assertEqual(sign(b"s3cret", BODY), README_SIGN)


class HmacAcceptanceTests(SynchronousTestCase):
    """Valid X-Karajo-Sign (or custom header) signatures are accepted."""

    def test_spec_example(self) -> None:
        """The README's curl example verifies with secret s3cret."""
        verdict = verify_hmac_sha256(SECRET, BODY, headers_of({"X-Karajo-Sign": README_SIGN}))
        self.assertEqual(verdict, Verdict(True, verdict.reason, None))
        self.assertTrue(verdict.ok)

    def test_header_name_case_insensitive(self) -> None:
        """Header lookup is left to the callable, which ignores case."""
        verdict = verify_hmac_sha256(SECRET, BODY, headers_of({"x-karajo-sign": README_SIGN}))
        self.assertTrue(verdict.ok)

    def test_upper_case_hex(self) -> None:
        """Upper-case hex is the same digest and is accepted."""
        verdict = verify_hmac_sha256(
            SECRET, BODY, headers_of({"X-Karajo-Sign": README_SIGN.upper()})
        )
        self.assertTrue(verdict.ok)

    def test_surrounding_whitespace(self) -> None:
        """Whitespace around the value is trimmed."""
        verdict = verify_hmac_sha256(
            SECRET, BODY, headers_of({"X-Karajo-Sign": f" \t{README_SIGN}\r\n"})
        )
        self.assertTrue(verdict.ok)

    def test_optional_sha256_prefix(self) -> None:
        """A GitHub-style C{sha256=} prefix is tolerated."""
        verdict = verify_hmac_sha256(
            SECRET, BODY, headers_of({"X-Karajo-Sign": "sha256=" + README_SIGN})
        )
        self.assertTrue(verdict.ok)

    def test_custom_header_name(self) -> None:
        """The job's header_sign names where the signature is read."""
        headers = headers_of({"X-Custom-Sign": README_SIGN})
        self.assertTrue(verify_hmac_sha256(SECRET, BODY, headers, "X-Custom-Sign").ok)
        self.assertTrue(verify("hmac-sha256", SECRET, BODY, headers, "X-Custom-Sign").ok)
        self.assertFalse(verify("hmac-sha256", SECRET, BODY, headers).ok)

    def test_empty_header_name_means_default(self) -> None:
        """An empty header_sign falls back to X-Karajo-Sign, like the original."""
        headers = headers_of({"X-Karajo-Sign": README_SIGN})
        self.assertTrue(verify("hmac-sha256", SECRET, BODY, headers, "").ok)

    def test_bytes_secret_and_str_header(self) -> None:
        """Secrets as bytes and header values decoded to str both work."""
        self.assertTrue(
            verify_hmac_sha256(b"s3cret", BODY, headers_of({"X-Karajo-Sign": README_SIGN})).ok
        )

    def test_no_replay_key(self) -> None:
        """hmac-sha256 has no delivery id, so no replay key."""
        verdict = verify_hmac_sha256(SECRET, BODY, headers_of({"X-Karajo-Sign": README_SIGN}))
        self.assertIsNone(verdict.replay_key)


class GithubAcceptanceTests(SynchronousTestCase):
    """GitHub's published test vector and the SHA-1 fallback."""

    def test_published_vector_with_prefix(self) -> None:
        """GitHub's documented example verifies with the C{sha256=} prefix."""
        verdict = verify_github(
            GH_SECRET, GH_BODY, headers_of({"X-Hub-Signature-256": "sha256=" + GH_SIGN})
        )
        self.assertTrue(verdict.ok)

    def test_published_vector_without_prefix(self) -> None:
        """The prefix is optional."""
        verdict = verify_github(GH_SECRET, GH_BODY, headers_of({"X-Hub-Signature-256": GH_SIGN}))
        self.assertTrue(verdict.ok)

    def test_upper_case(self) -> None:
        """Upper-case hex and prefix are accepted."""
        verdict = verify_github(
            GH_SECRET, GH_BODY,
            headers_of({"X-Hub-Signature-256": "SHA256=" + GH_SIGN.upper()}),
        )
        self.assertTrue(verdict.ok)

    def test_sha1_fallback(self) -> None:
        """With only X-Hub-Signature, the legacy SHA-1 HMAC is checked."""
        for value in ("sha1=" + GH_SHA1, GH_SHA1):
            verdict = verify_github(GH_SECRET, GH_BODY, headers_of({"X-Hub-Signature": value}))
            self.assertTrue(verdict.ok, value)

    def test_sha256_wins_over_sha1(self) -> None:
        """When both are valid, SHA-256 is what is checked (and passes)."""
        verdict = verify_github(
            GH_SECRET, GH_BODY,
            headers_of({"X-Hub-Signature-256": "sha256=" + GH_SIGN,
                        "X-Hub-Signature": "sha1=" + "0" * 40}),
        )
        self.assertTrue(verdict.ok)

    def test_replay_key_from_delivery(self) -> None:
        """An accepted delivery carries C{github:<X-GitHub-Delivery>}."""
        verdict = verify(
            "github", GH_SECRET, GH_BODY,
            headers_of({"X-Hub-Signature-256": "sha256=" + GH_SIGN,
                        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}),
        )
        self.assertTrue(verdict.ok)
        self.assertEqual(verdict.replay_key, b"github:72d3162e-cc78-11e3-81ab-4c9367dc0958")

    def test_no_delivery_no_replay_key(self) -> None:
        """Without (or with an empty) X-GitHub-Delivery there is no replay key."""
        for extra in ({}, {"X-GitHub-Delivery": "  "}):
            values = {"X-Hub-Signature-256": GH_SIGN, **extra}
            verdict = verify_github(GH_SECRET, GH_BODY, headers_of(values))
            self.assertTrue(verdict.ok)
            self.assertIsNone(verdict.replay_key)


class SourcehutAcceptanceTests(SynchronousTestCase):
    """Ed25519 signatures over body + nonce."""

    def test_injected_key(self) -> None:
        """A signature by a test key verifies against that injected key."""
        headers = headers_of({"X-Payload-Signature": SH_SIG, "X-Payload-Nonce": SH_NONCE})
        verdict = verify_sourcehut(SH_BODY, headers, SH_PUBLIC)
        self.assertTrue(verdict.ok)
        self.assertEqual(verdict.replay_key, b"sourcehut:" + SH_NONCE)
        self.assertTrue(verify("sourcehut", "", SH_BODY, headers, sourcehut_key=SH_PUBLIC).ok)

    def test_real_key_rejects(self) -> None:
        """The same signature is refused by SourceHut's real key (the default)."""
        headers = headers_of({"X-Payload-Signature": SH_SIG, "X-Payload-Nonce": SH_NONCE})
        self.assertFalse(verify_sourcehut(SH_BODY, headers).ok)
        self.assertFalse(verify("sourcehut", "", SH_BODY, headers).ok)

    def test_real_key_constant(self) -> None:
        """The published key decodes to a 32-byte ed25519 public key."""
        raw = base64.b64decode(SOURCEHUT_PUBLIC_KEY_B64)
        self.assertEqual(len(raw), 32)
        Ed25519PublicKey.from_public_bytes(raw)

    def test_surrounding_whitespace(self) -> None:
        """Whitespace around the base64 signature is trimmed."""
        headers = headers_of(
            {"X-Payload-Signature": b" " + SH_SIG + b"\t", "X-Payload-Nonce": SH_NONCE}
        )
        self.assertTrue(verify_sourcehut(SH_BODY, headers, SH_PUBLIC).ok)


class DispatchTests(SynchronousTestCase):
    """L{verify} chooses the check from the auth kind."""

    def test_unknown_kind(self) -> None:
        """Unknown or empty kinds refuse instead of skipping authentication."""
        headers = headers_of({"X-Karajo-Sign": README_SIGN})
        for kind in ("", "none", "hmac-sha1", "HMAC", None):
            verdict = verify(kind, SECRET, BODY, headers)  # type: ignore[arg-type]
            self.assertFalse(verdict.ok)
            self.assertIn("auth_kind", verdict.reason)

    def test_kind_case_insensitive(self) -> None:
        """Kinds are matched case-insensitively, surrounding spaces ignored."""
        headers = headers_of({"X-Karajo-Sign": README_SIGN})
        self.assertTrue(verify(" HMAC-SHA256 ", SECRET, BODY, headers).ok)


header_values = st.one_of(st.none(), st.binary(max_size=200), st.text(max_size=100))


class NeverRaisesTests(SynchronousTestCase):
    """Property: arbitrary request bytes never make a check raise."""

    @settings(max_examples=300, deadline=None)
    @given(
        body=st.binary(max_size=300),
        secret=st.one_of(st.binary(max_size=40), st.text(max_size=40)),
        values=st.dictionaries(
            st.sampled_from([
                "X-Karajo-Sign", "X-Hub-Signature-256", "X-Hub-Signature",
                "X-GitHub-Delivery", "X-Payload-Signature", "X-Payload-Nonce",
            ]),
            header_values,
        ),
        kind=st.sampled_from(["hmac-sha256", "github", "sourcehut", "other"]),
    )
    def test_arbitrary_input(self, body, secret, values, kind) -> None:
        """Any body, secret and header values give a refusing Verdict."""
        headers = headers_of({k: v for k, v in values.items() if v is not None})
        verdict = verify(kind, secret, body, headers, sourcehut_key=SH_PUBLIC)
        self.assertIsInstance(verdict, Verdict)
        self.assertFalse(verdict.ok)

    @settings(max_examples=200, deadline=None)
    @given(body=st.binary(max_size=100), garbage=st.binary(min_size=1, max_size=80))
    def test_prefixed_valid_signature_garbage(self, body, garbage) -> None:
        """Valid signatures with arbitrary bytes appended are refused quietly."""
        good = sign(SECRET, body).encode()
        headers = headers_of({"X-Karajo-Sign": good + b"\x00" + garbage})
        self.assertFalse(verify_hmac_sha256(SECRET, body, headers).ok)
