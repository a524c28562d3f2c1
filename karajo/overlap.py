"""
What a trigger does to a job that is busy: the C{overlap} run policy as a
table (docs/configuration.md, "Run policies").

Kept apart from the runner because it is a decision, not a state machine:
the runner (and, in a cluster, the claim of the one job's run) asks it and
acts on the answer.  The values here are what an accepted trigger becomes:
a run L{Accepted} now, owning its counter, or a L{QueuedRun} behind the
running one.  Pure: no Twisted, no state.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs


class Action(enum.Enum):
    """What the runner does with an accepted or refused trigger."""

    #: nothing runs or waits: the run starts
    START = "start"
    #: a run goes on: this one waits behind it, owning its counter
    QUEUE = "queue"
    #: C{replace}: the running run is canceled and this one queued
    REPLACE_RUNNING = "replace_running"
    #: C{replace}: the run waiting to start (a slot, a retry) is dropped
    REPLACE_WAITING = "replace_waiting"
    #: the trigger is refused (429 on the API), L{Decision.why} says why
    REFUSE = "refuse"


@attrs.frozen
class Decision:
    action: Action
    #: for L{Action.REFUSE}: the end of "job ID …" in the refusal
    why: str = ""


START = Decision(Action.START)

#: the one line of a run dropped before it started, by a cancel
NOT_STARTED = "??? CANCELED before it started"
#: … by a later trigger under C{overlap = replace}
REPLACED = "??? CANCELED: replaced by a later trigger before it started"


@attrs.frozen
class QueuedRun:
    """A run accepted while the job runs: it starts when the running one ends."""

    request: Any
    trigger: str | None
    counter: int


@attrs.frozen
class Accepted:
    """
    A trigger the runner accepted: whether its run C{started} or is
    C{queued}, and the counter it owns from now on (docs/http-api.md,
    "Following a run").
    """

    outcome: str
    counter: int


def decide(
    overlap: str, *, active: bool, executing: bool, retry_pending: bool, queued: bool
) -> Decision:
    """
    The answer of C{overlap} (C{queue}, C{skip} or C{replace}) to a
    trigger, given the job's state: C{active} (a run runs or waits to
    start), C{executing} (its work has started), C{retry_pending} (a
    failed run's retry holds the queue place) and C{queued} (a run
    already waits behind the running one).
    """
    if not active:
        return START
    if overlap == "replace":
        return Decision(Action.REPLACE_RUNNING if executing else Action.REPLACE_WAITING)
    if retry_pending:
        return Decision(Action.REFUSE, "waits to retry a failed run")
    if overlap == "skip":
        return Decision(Action.REFUSE, "is running (overlap = skip)")
    if queued:
        return Decision(Action.REFUSE, "is running and a run is already queued")
    return Decision(Action.QUEUE)
