"""
L{karajo.replay.ReplayGuard} where the mutation run found no test: the
validation of its durations, L{ReplayGuard.forget}, and which entry goes
when the table is full (it refuses, never evicts).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from karajo.replay import FULL, ReplayGuard


def guard(max_age: float = 300, max_entries: int = 100_000) -> tuple[ReplayGuard, Clock]:
    clock = Clock()
    return ReplayGuard(max_age=max_age, clock=clock.seconds, max_entries=max_entries), clock


class ValidationTests(SynchronousTestCase):
    def test_zero_and_fractions_accepted(self) -> None:
        """0 (only this second) and fractions are valid durations."""
        for value in (0, 0.5, 300):
            ReplayGuard(max_age=value, clock=lambda: 0.0)
            ReplayGuard(max_age=300, clock=lambda: 0.0, delivery_ttl=value)

    def test_negative_refused_with_message(self) -> None:
        with self.assertRaises(ValueError) as caught:
            ReplayGuard(max_age=-1, clock=lambda: 0.0)
        self.assertEqual(str(caught.exception), "max_age must be >= 0, got -1")
        with self.assertRaises(ValueError) as caught:
            ReplayGuard(max_age=1, clock=lambda: 0.0, delivery_ttl=-0.5)
        self.assertEqual(str(caught.exception), "delivery_ttl must be >= 0, got -0.5")

    def test_nan_refused(self) -> None:
        self.assertRaises(ValueError, ReplayGuard, max_age=float("nan"), clock=lambda: 0.0)


class ForgetTests(SynchronousTestCase):
    """forget() undoes an accepting check, so the client may send it again."""

    def test_forget_both(self) -> None:
        g, _ = guard()
        self.assertIsNone(g.check(0, b"sig", b"github:1"))
        self.assertEqual(g.check(0, b"sig", b"github:1"), "replayed request")
        g.forget(b"sig", b"github:1")
        self.assertEqual(len(g), 0)
        self.assertIsNone(g.check(0, b"sig", b"github:1"))

    def test_forget_one_kind(self) -> None:
        """Only what is named is forgotten."""
        g, _ = guard()
        self.assertIsNone(g.check(0, b"sig", b"github:1"))
        g.forget(b"sig", None)
        self.assertEqual(g.check(0, b"sig", b"github:1"), "replayed delivery")
        self.assertIsNone(g.check(0, b"sig", b"github:2"))
        g.forget(None, b"github:1")
        self.assertEqual(g.check(0, b"sig", b"github:1"), "replayed request")
        g.forget(b"sig", None)
        self.assertIsNone(g.check(0, b"sig", b"github:1"))

    def test_kinds_do_not_collide(self) -> None:
        """The same bytes as a signature key and as a delivery key are two entries."""
        g, _ = guard()
        self.assertIsNone(g.check(0, b"same", None))
        self.assertIsNone(g.check(None, None, b"same"))
        g.forget(None, b"same")
        self.assertEqual(g.check(0, b"same", None), "replayed request")

    def test_forget_unknown(self) -> None:
        g, _ = guard()
        g.forget(b"never", b"seen")
        g.forget(None, None)
        self.assertEqual(len(g), 0)


class FullTableTests(SynchronousTestCase):
    def test_full_refuses_never_evicts(self) -> None:
        """A full table refuses the new entry and keeps every live one."""
        g, _ = guard(max_entries=2)
        for key in (b"d1", b"d2"):
            self.assertIsNone(g.check(None, None, key))
        self.assertEqual(g.check(None, None, b"d3"), FULL)
        self.assertEqual(g.check(None, None, b"d1"), "replayed delivery")
        self.assertEqual(g.check(None, None, b"d2"), "replayed delivery")

    def test_expired_entry_behind_live_one_makes_room(self) -> None:
        """
        When full, expired entries anywhere in the table are dropped (two
        TTLs: a stale signature entry may sit behind a live delivery id).
        """
        g, clock = guard(max_age=300, max_entries=3)
        self.assertIsNone(g.check(None, None, b"d1"))  # kept a day
        self.assertIsNone(g.check(0, b"s1", None))  # kept until epoch 300
        self.assertIsNone(g.check(None, None, b"d2"))
        clock.advance(700)
        self.assertIsNone(g.check(None, None, b"d3"))  # s1 expired: room
        self.assertEqual(g.check(None, None, b"d4"), FULL)
        self.assertEqual(g.check(None, None, b"d1"), "replayed delivery")

    def test_request_needing_two_entries(self) -> None:
        """A signed delivery needs two entries: with one free it is refused whole."""
        g, _ = guard(max_entries=2)
        self.assertIsNone(g.check(None, None, b"d1"))
        self.assertEqual(g.check(0, b"s", b"d2"), FULL)
        self.assertIsNone(g.check(None, None, b"d2"))  # nothing was recorded
