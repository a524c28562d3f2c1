"""The C{overlap} policy's table (L{karajo.overlap.decide})."""

from __future__ import annotations

import itertools

from twisted.trial.unittest import SynchronousTestCase

from karajo.overlap import Action, decide


def _decide(overlap: str, **state: bool):
    base = dict(active=True, executing=False, retry_pending=False, queued=False)
    base.update(state)
    return decide(overlap, **base)


class DecideTests(SynchronousTestCase):
    def test_an_idle_job_starts_whatever_the_policy(self) -> None:
        for overlap, executing, retry, queued in itertools.product(
            ("queue", "skip", "replace"), (False, True), (False, True), (False, True)
        ):
            decision = decide(overlap, active=False, executing=executing,
                              retry_pending=retry, queued=queued)
            self.assertIs(decision.action, Action.START)

    def test_queue_keeps_one_and_refuses_more(self) -> None:
        self.assertIs(_decide("queue", executing=True).action, Action.QUEUE)
        refused = _decide("queue", executing=True, queued=True)
        self.assertIs(refused.action, Action.REFUSE)
        self.assertEqual(refused.why, "is running and a run is already queued")

    def test_skip_refuses_while_busy(self) -> None:
        refused = _decide("skip", executing=True)
        self.assertIs(refused.action, Action.REFUSE)
        self.assertEqual(refused.why, "is running (overlap = skip)")

    def test_a_pending_retry_holds_the_queue_place(self) -> None:
        for overlap in ("queue", "skip"):
            refused = _decide(overlap, retry_pending=True)
            self.assertIs(refused.action, Action.REFUSE)
            self.assertEqual(refused.why, "waits to retry a failed run")

    def test_replace_cancels_the_running_or_drops_the_waiting(self) -> None:
        self.assertIs(_decide("replace", executing=True).action, Action.REPLACE_RUNNING)
        self.assertIs(_decide("replace", executing=True, queued=True).action,
                      Action.REPLACE_RUNNING)
        self.assertIs(_decide("replace", retry_pending=True).action, Action.REPLACE_WAITING)
        self.assertIs(_decide("replace").action, Action.REPLACE_WAITING)
