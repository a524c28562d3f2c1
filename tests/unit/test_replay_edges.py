"""
L{karajo.replay.ReplayGuard} where the mutation run found no test: the
validation of its durations, L{ReplayGuard.forget}, and which entry goes
when the table is full.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from karajo.replay import ReplayGuard


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


class EvictionOrderTests(SynchronousTestCase):
    def test_oldest_evicted(self) -> None:
        """A full table drops its oldest entry, never the one just added."""
        g, _ = guard(max_entries=2)
        for key in (b"d1", b"d2", b"d3"):
            self.assertIsNone(g.check(None, None, key))
        self.assertEqual(g.check(None, None, b"d3"), "replayed delivery")
        self.assertEqual(g.check(None, None, b"d2"), "replayed delivery")
        self.assertIsNone(g.check(None, None, b"d1"))

    def test_rerecorded_leftover_is_newest(self) -> None:
        """
        An expired signature entry still held behind a live delivery id
        (two TTLs) is, once accepted again, the newest entry: later
        evictions take older ones first.
        """
        g, clock = guard(max_age=300, max_entries=3)
        self.assertIsNone(g.check(None, None, b"d1"))  # kept a day
        self.assertIsNone(g.check(0, b"s1", None))  # kept 600 s
        self.assertIsNone(g.check(None, None, b"d2"))
        clock.advance(700)
        self.assertIsNone(g.check(700, b"s1", None))  # expired: accepted again
        self.assertIsNone(g.check(None, None, b"d3"))  # evicts d1
        self.assertIsNone(g.check(None, None, b"d4"))  # evicts d2, not s1
        self.assertEqual(g.check(700, b"s1", None), "replayed request")
        self.assertIsNone(g.check(None, None, b"d2"))
