"""
Tests for L{karajo.replay}.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from karajo.replay import DELIVERY_MIN_TTL, FULL, InvalidEpoch, ReplayGuard, extract_epoch

NOW = 1_677_350_854


def make_guard(max_age: float = 300, max_entries: int = 100_000) -> tuple[ReplayGuard, Clock]:
    """A guard on a task.Clock set to L{NOW}."""
    clock = Clock()
    clock.advance(NOW)
    return ReplayGuard(max_age=max_age, clock=clock.seconds, max_entries=max_entries), clock


class EpochWindowTests(SynchronousTestCase):
    """C{_karajo_epoch} must be within max_age of the server clock."""

    def test_current_epoch_accepted(self) -> None:
        """An epoch equal to now is accepted."""
        guard, _ = make_guard()
        self.assertIsNone(guard.check(NOW, None, None))

    def test_edges_accepted(self) -> None:
        """Exactly max_age old or ahead is still inside the window."""
        guard, _ = make_guard()
        self.assertIsNone(guard.check(NOW - 300, None, None))
        self.assertIsNone(guard.check(NOW + 300, None, None))

    def test_too_old(self) -> None:
        """One second beyond max_age in the past is refused, naming the limit."""
        guard, _ = make_guard()
        self.assertEqual(
            guard.check(NOW - 301, b"sig", None),
            "_karajo_epoch is too old or too far in the future (max 300s)",
        )

    def test_too_far_in_future(self) -> None:
        """Pre-dated payloads are refused too, so they cannot be banked."""
        guard, _ = make_guard()
        self.assertEqual(
            guard.check(NOW + 301, b"sig", None),
            "_karajo_epoch is too old or too far in the future (max 300s)",
        )

    def test_limit_in_message_follows_config(self) -> None:
        """The reason states the configured sign_max_age."""
        guard, _ = make_guard(max_age=60)
        self.assertIn("(max 60s)", guard.check(0, None, None) or "")
        guard, _ = make_guard(max_age=2.5)
        self.assertIn("(max 2.5s)", guard.check(0, None, None) or "")

    def test_absurd_epochs(self) -> None:
        """Huge or negative epochs are refused without overflow errors."""
        guard, _ = make_guard()
        for epoch in (10**400, -(10**400), 0, -1, 2**63):
            self.assertIsNotNone(guard.check(epoch, b"sig", None))

    def test_refused_epoch_not_recorded(self) -> None:
        """A stale request leaves no trace that could block anything later."""
        guard, _ = make_guard()
        guard.check(NOW - 1000, b"sig", b"github:1")
        self.assertEqual(len(guard), 0)

    def test_invalid_config(self) -> None:
        """Negative max_age or a zero bound are configuration mistakes."""
        self.assertRaises(ValueError, ReplayGuard, max_age=-1, clock=lambda: 0.0)
        self.assertRaises(ValueError, ReplayGuard, max_age=float("nan"), clock=lambda: 0.0)
        self.assertRaises(ValueError, ReplayGuard, max_age=1, clock=lambda: 0.0, max_entries=0)


class SignedPayloadReplayTests(SynchronousTestCase):
    """An identical signed payload with an epoch is accepted once per window."""

    def test_second_identical_refused(self) -> None:
        """The same signature key with an epoch is refused the second time."""
        guard, clock = make_guard()
        self.assertIsNone(guard.check(NOW, b"sig+body", None))
        clock.advance(299)
        self.assertEqual(guard.check(NOW, b"sig+body", None), "replayed request")

    def test_different_payload_accepted(self) -> None:
        """A different signed payload in the same second is a new request."""
        guard, _ = make_guard()
        self.assertIsNone(guard.check(NOW, b"sig1", None))
        self.assertIsNone(guard.check(NOW, b"sig2", None))

    def test_replay_after_window_is_too_old(self) -> None:
        """
        Once the entry could expire the epoch is already stale: the replay is
        refused either way, so expiry never opens a gap.
        """
        guard, clock = make_guard()
        epoch = NOW + 300  # pre-dated as far as allowed: the longest life
        self.assertIsNone(guard.check(epoch, b"sig", None))
        for step in (1, 299, 300, 1, 1, 1000):
            clock.advance(step)
            self.assertIsNotNone(guard.check(epoch, b"sig", None))

    def test_entries_expire(self) -> None:
        """A signature entry lives until its epoch leaves the window (epoch + max_age)."""
        guard, clock = make_guard()
        guard.check(NOW, b"sig", None)
        self.assertEqual(len(guard), 1)
        clock.advance(301)
        guard.check(None, None, None)
        self.assertEqual(len(guard), 0)

    def test_expiry_window_with_injected_clock(self) -> None:
        """
        The window is measured on the injected clock: the entry refuses
        while its epoch is acceptable, and once the epoch is stale the
        epoch check refuses on its own.
        """
        now = [100.0]
        guard = ReplayGuard(max_age=10, clock=lambda: now[0])
        self.assertIsNone(guard.check(100, b"sig", None))
        now[0] = 110.0  # epoch + max_age, inclusive
        self.assertEqual(guard.check(100, b"sig", None), "replayed request")
        now[0] = 110.5
        self.assertIn("too old", guard.check(100, b"sig", None) or "")
        guard.check(None, None, None)
        self.assertEqual(len(guard), 0)

    def test_signature_without_epoch_not_tracked(self) -> None:
        """Without an epoch identical requests may be legitimate: accepted."""
        guard, _ = make_guard()
        self.assertIsNone(guard.check(None, b"sig", None))
        self.assertIsNone(guard.check(None, b"sig", None))
        self.assertEqual(len(guard), 0)


class DeliveryReplayTests(SynchronousTestCase):
    """Delivery ids (GitHub, SourceHut) are accepted once."""

    def test_repeated_github_delivery(self) -> None:
        """A repeated X-GitHub-Delivery is refused."""
        guard, clock = make_guard()
        self.assertIsNone(guard.check(None, None, b"github:72d3162e"))
        clock.advance(3600)
        self.assertEqual(guard.check(None, None, b"github:72d3162e"), "replayed delivery")

    def test_repeated_sourcehut_nonce(self) -> None:
        """A repeated SourceHut nonce is refused."""
        guard, _ = make_guard()
        self.assertIsNone(guard.check(None, None, b"sourcehut:abc"))
        self.assertEqual(guard.check(None, None, b"sourcehut:abc"), "replayed delivery")

    def test_namespaces_distinct(self) -> None:
        """A GitHub id and a SourceHut nonce with the same text do not clash."""
        guard, _ = make_guard()
        self.assertIsNone(guard.check(None, None, b"github:x"))
        self.assertIsNone(guard.check(None, None, b"sourcehut:x"))

    def test_signature_and_delivery_keys_distinct(self) -> None:
        """The same bytes as a signature key and a delivery key do not clash."""
        guard, _ = make_guard()
        self.assertIsNone(guard.check(NOW, b"k", None))
        self.assertIsNone(guard.check(None, None, b"k"))

    def test_delivery_kept_for_a_day(self) -> None:
        """Delivery ids are kept max(max_age, a day), then forgotten."""
        self.assertEqual(DELIVERY_MIN_TTL, 86400)
        guard, clock = make_guard()
        guard.check(None, None, b"github:1")
        clock.advance(86400)
        self.assertEqual(guard.check(None, None, b"github:1"), "replayed delivery")
        clock.advance(1)
        self.assertIsNone(guard.check(None, None, b"github:1"))

    def test_delivery_kept_max_age_when_longer(self) -> None:
        """A sign_max_age above a day stretches the delivery window with it."""
        guard, clock = make_guard(max_age=2 * 86400)
        guard.check(None, None, b"github:1")
        clock.advance(2 * 86400)
        self.assertEqual(guard.check(None, None, b"github:1"), "replayed delivery")
        clock.advance(1)
        self.assertIsNone(guard.check(None, None, b"github:1"))

    def test_refusal_records_nothing(self) -> None:
        """A replayed delivery does not record its signature key either."""
        guard, _ = make_guard()
        guard.check(None, None, b"github:1")
        self.assertEqual(guard.check(NOW, b"sig", b"github:1"), "replayed delivery")
        self.assertIsNone(guard.check(NOW, b"sig", b"github:2"))

    def test_nothing_given_accepted(self) -> None:
        """No epoch and no keys: accepted every time, as in the original."""
        guard, _ = make_guard()
        for _ in range(3):
            self.assertIsNone(guard.check(None, None, None))
        self.assertEqual(len(guard), 0)


class MemoryBoundTests(SynchronousTestCase):
    """The table never grows beyond max_entries."""

    def test_bound_respected(self) -> None:
        """Beyond max_entries live entries, new requests are refused, never evicting."""
        guard, _ = make_guard(max_entries=1000)
        for i in range(500):
            self.assertIsNone(guard.check(NOW, b"sig%d" % i, b"github:%d" % i))
        for i in range(500, 600):
            self.assertEqual(guard.check(NOW, b"sig%d" % i, b"github:%d" % i), FULL)
            self.assertEqual(guard.check(None, None, b"github:%d" % i), FULL)
        self.assertEqual(len(guard), 1000)

    def test_flood_cannot_flush_a_replay(self) -> None:
        """
        Filling the table with fresh signed requests never lets an earlier
        one be replayed: the table refuses instead of forgetting.
        """
        guard, clock = make_guard(max_entries=100)
        self.assertIsNone(guard.check(NOW, b"victim", b"github:victim"))
        for i in range(500):
            guard.check(NOW, b"flood%d" % i, None)
        self.assertEqual(len(guard), 100)
        self.assertEqual(guard.check(NOW, b"victim", None), "replayed request")
        self.assertEqual(guard.check(None, None, b"github:victim"), "replayed delivery")

    def test_room_again_once_entries_expire(self) -> None:
        """A full table takes new requests again once its entries expire."""
        guard, clock = make_guard(max_entries=10)
        for i in range(10):
            self.assertIsNone(guard.check(NOW, b"s%d" % i, None))
        self.assertEqual(guard.check(NOW, b"new", None), FULL)
        clock.advance(301)
        self.assertIsNone(guard.check(NOW + 301, b"new", None))
        self.assertEqual(len(guard), 1)

    def test_large_keys_stored_as_digests(self) -> None:
        """Huge keys cost a fixed-size entry (a SHA-256 digest)."""
        guard, _ = make_guard()
        guard.check(None, None, b"x" * 1_000_000)
        (key,) = guard._seen.keys()
        self.assertEqual(len(key), 32)


class ExtractEpochTests(SynchronousTestCase):
    """Finding C{_karajo_epoch} in bodies and query strings."""

    def test_body_parsed_already(self) -> None:
        """The caller's parse of the body is used as is; None for a '{' body is refused."""
        body = b'{"_karajo_epoch":1}'
        self.assertEqual(extract_epoch(body, body_document={"_karajo_epoch": 7}), 7)
        self.assertIsNone(extract_epoch(body, body_document={}))
        with self.assertRaises(InvalidEpoch):
            extract_epoch(b"{bad", body_document=None)
        self.assertEqual(extract_epoch(b"_karajo_epoch=3", body_document=None), 3)  # a form

    def test_json(self) -> None:
        """A JSON object body with an integer epoch; other fields ignored."""
        self.assertEqual(extract_epoch(b'{"_karajo_epoch":1677350854}'), 1677350854)
        self.assertEqual(extract_epoch(b' {"id": "x", "_karajo_epoch": 5, "extra": [1]}'), 5)

    def test_json_with_byte_order_mark(self) -> None:
        """A UTF-8 BOM before the object does not turn the body into a form."""
        self.assertEqual(extract_epoch(b'\xef\xbb\xbf{"_karajo_epoch":7}'), 7)

    def test_json_numeric_string(self) -> None:
        """A numeric string is accepted, whitespace trimmed."""
        self.assertEqual(extract_epoch(b'{"_karajo_epoch":" 42 "}'), 42)

    def test_json_non_integer_refused(self) -> None:
        """
        Floats, booleans, nulls, objects and text are refused, not ignored:
        ignoring them would switch the replay check off for the payload.
        """
        for value in (b"1.5", b"1e9", b"1677350854.0", b"true", b"null",
                      b'"abc"', b'"12a"', b"[1]", b"{}", b'"\\u0661"', b'""'):
            with self.assertRaises(InvalidEpoch, msg=value) as caught:
                extract_epoch(b'{"_karajo_epoch":' + value + b"}")
            self.assertIn("must be an integer Unix time", str(caught.exception))

    def test_json_absent_or_not_object(self) -> None:
        """No field, or a non-object document, gives None."""
        for body in (b"{}", b"[]", b"1677350854", b'"_karajo_epoch"', b'[{"_karajo_epoch":1}]'):
            self.assertIsNone(extract_epoch(body), body)

    def test_malformed_json(self) -> None:
        """Bodies that are not JSON objects at all carry no epoch."""
        for body in (b"\xff\xfe\x00", b"", b"[" * 100_000, b"[1,]"):
            self.assertIsNone(extract_epoch(body))

    def test_unparseable_json_object_refused(self) -> None:
        """
        A body that starts like a JSON object but does not parse is refused,
        not read as a form: read as a form, it hid its epoch and so skipped
        the expiry and replay checks.  The name may be spelled with JSON
        escapes, so whether the bytes mention it does not matter.
        """
        epoch = b'"_karajo_epoch":1677350854'
        for body in (
            b"{",
            b'{"_karajo_epoch":}',
            b"{" + epoch + b",}",  # trailing comma
            b"{" + epoch + b',"n":' + b"9" * 4301 + b"}",  # over int's digit limit
            b"{" + epoch + b',"n":' + b"[" * 5000 + b"]" * 5000 + b"}",  # too deep
            b'{"\\u005fkarajo_epoch":1,}',
            b"\xef\xbb\xbf {" + epoch + b",}",
            b'{"_karajo_epoch":1,"x":"\xff"}',
        ):
            with self.assertRaises(InvalidEpoch, msg=body[:60]):
                extract_epoch(body)
        with self.assertRaises(InvalidEpoch):
            extract_epoch(b"", b"{" + epoch + b",}")

    def test_json_large_integer_kept(self) -> None:
        """An out-of-range integer is returned so the window check refuses it."""
        self.assertEqual(
            extract_epoch(b'{"_karajo_epoch":99999999999999999999}'), 99999999999999999999
        )

    def test_form(self) -> None:
        """A urlencoded form body, like the management calls send."""
        self.assertEqual(extract_epoch(b"_karajo_epoch=1677350854&id=hello"), 1677350854)

    def test_form_first_value_wins(self) -> None:
        """Repeated fields: the first wins, like Go's url.Values.Get."""
        self.assertEqual(extract_epoch(b"_karajo_epoch=1&_karajo_epoch=2"), 1)

    def test_form_malformed_refused(self) -> None:
        """Non-integer, empty, percent-garbage or over-long values are refused."""
        for body in (b"_karajo_epoch=", b"_karajo_epoch=abc", b"_karajo_epoch=%ff%00",
                     b"_karajo_epoch=1.5", b"_karajo_epoch", b"_karajo_epoch=" + b"9" * 5000):
            with self.assertRaises(InvalidEpoch, msg=body):
                extract_epoch(body)

    def test_query(self) -> None:
        """The raw query string is searched when the body has no epoch."""
        self.assertEqual(extract_epoch(b"", b"_karajo_epoch=9&id=x"), 9)
        self.assertEqual(extract_epoch(b"id=x", b"_karajo_epoch=9"), 9)
        with self.assertRaises(InvalidEpoch):
            extract_epoch(b"", b"_karajo_epoch=x")

    def test_body_wins_over_query(self) -> None:
        """A signed body's epoch is not overridden by the query string."""
        self.assertEqual(extract_epoch(b'{"_karajo_epoch":1}', b"_karajo_epoch=2"), 1)

    def test_absent_everywhere(self) -> None:
        """Nothing anywhere gives None."""
        self.assertIsNone(extract_epoch(b"", None))
        self.assertIsNone(extract_epoch(b"id=x", b"id=y"))
        self.assertIsNone(extract_epoch(b"\xff\xfe=\x00"))

    @settings(max_examples=300, deadline=None)
    @given(
        body=st.binary(max_size=300),
        query=st.one_of(st.none(), st.binary(max_size=100)),
    )
    def test_never_raises_otherwise(self, body, query) -> None:
        """Arbitrary bytes give an int, None or L{InvalidEpoch}, nothing else."""
        try:
            result = extract_epoch(body, query)
        except InvalidEpoch:
            return
        self.assertTrue(result is None or isinstance(result, int))

    @settings(max_examples=200, deadline=None)
    @given(
        epoch=st.one_of(st.none(), st.integers()),
        sig=st.one_of(st.none(), st.binary(max_size=50)),
        delivery=st.one_of(st.none(), st.binary(max_size=50)),
    )
    def test_check_never_raises(self, epoch, sig, delivery) -> None:
        """Any epoch and keys give None or a reason string."""
        guard, _ = make_guard(max_entries=5)
        result = guard.check(epoch, sig, delivery)
        self.assertTrue(result is None or isinstance(result, str))
