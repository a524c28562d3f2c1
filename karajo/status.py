"""
The one vocabulary of run and job statuses, and of what triggered a run.

They are C{StrEnum}s: each member I{is} its string (C{RunStatus.FAILED ==
"failed"}, JSON encodes it as C{"failed"}, a log file name ends in it), so
code that still compares with a literal keeps working while every producer
names the status through the enum and a typo fails at import, not in
production.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["FINAL_STATUSES", "JobStatus", "RunStatus", "Trigger"]


class RunStatus(StrEnum):
    """How a run stands: C{running} until it ends in one of the others."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELED = "canceled"


#: The statuses a finished run (and its log file name) can end in.
FINAL_STATUSES: tuple[RunStatus, ...] = (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED)


class JobStatus(StrEnum):
    """
    The statuses a job shows besides its last run's (L{RunStatus}): a job
    that has not run since it was configured is C{started}; a paused one is
    C{paused}, whatever its runs do.
    """

    STARTED = "started"
    PAUSED = "paused"


class Trigger(StrEnum):
    """
    What started a run (the run record's C{trigger}, a command's
    C{KARAJO_TRIGGER}): its timer (C{schedule}, C{interval}), a webhook,
    the dashboard or management API (C{manual}), the job's own failed run
    (C{retry}), another job's run (C{chain}), or a slot missed while
    karajo was down or its clock jumped (C{catch_up}).
    """

    SCHEDULE = "schedule"
    INTERVAL = "interval"
    WEBHOOK = "webhook"
    MANUAL = "manual"
    RETRY = "retry"
    CHAIN = "chain"
    CATCH_UP = "catch_up"
