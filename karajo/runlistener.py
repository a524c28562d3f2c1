"""
Whatever watches a job's runs: the timer, the notifier, the chains, the
metrics (docs/architecture.md, "How a run flows").  One protocol, so the
runner tells each of them the same two events in one loop, and one
listener that raises cannot keep the others from hearing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from twisted.logger import Logger

from karajo.runrecord import RunRecord

if TYPE_CHECKING:
    from karajo.run import JobRunner

log = Logger()


class RunListener(Protocol):
    """
    Everything that watches a job's runs (the timer, the notifier, the
    metrics; later retries, chains and the cluster) is one of these, in
    L{JobRunner.listeners}, called in that order.  A listener must return
    at once (queue work, never wait) and should not raise; one that does
    is logged and the others are still called.
    """

    def run_started(self, runner: JobRunner, record: RunRecord) -> None:
        """A run began: its log exists, C{record} is C{running}."""

    def run_finished(self, runner: JobRunner, record: RunRecord) -> None:
        """
        A run ended and its log is final (renamed and fsynced); C{record}
        has its status and C{started}/C{ended}.
        """


def tell(listeners: Iterable[RunListener], event: str, runner: JobRunner, record: RunRecord) -> None:
    """Call C{event} (C{run_started} or C{run_finished}) of each listener, in order."""
    for listener in list(listeners):
        try:
            getattr(listener, event)(runner, record)
        except Exception:
            log.failure("{job}: listener {event} failed", job=runner.name, event=event)
