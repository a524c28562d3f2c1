"""
What the pages show of a job and its runs, read from the live services.

A view is built per request from a job's service: status, last and next
run, and its runs from the runner's run records (in memory: no file is read
to draw a page). Only a job's timer in words is cached here, once per server.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from karajo.joblog import RunRecord
from karajo.kinds import JobKind
from karajo.schedule import parse_schedule
from karajo.status import RunStatus
from karajo.web.words import describe_timer

__all__ = ["FINAL_STATUSES", "HISTORY_PAGE", "JobView", "RunView", "Views", "retry_chain"]

#: runs per page of a job page's history
HISTORY_PAGE = 50

FINAL_STATUSES = (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED)


class RunView:
    """One run: its counter, status and times (None when unknown)."""

    __slots__ = ("counter", "status", "start", "end", "trigger", "attempt", "node")

    def __init__(self, counter: int, status: str, start: float | None, end: float | None,
                 trigger: str | None = None, attempt: int = 1, node: str | None = None):
        self.counter = counter
        self.status = status
        self.start = start
        self.end = end
        self.trigger = trigger
        self.attempt = attempt
        self.node = node

    @classmethod
    def of(cls, record: RunRecord) -> RunView:
        return cls(record.counter, str(record.status), record.started, record.ended,
                   record.trigger, record.attempt, record.node)

    @property
    def duration(self) -> float | None:
        if self.status not in FINAL_STATUSES or self.start is None or self.end is None:
            return None
        return max(0.0, self.end - self.start)


def retry_chain(records: Sequence[RunRecord], counter: int) -> list[RunRecord]:
    """
    The attempts of the failure chain run C{counter} belongs to, first
    attempt first; just that run when it is alone (no retry before or
    after it), and nothing when there is no record of it.

    A record says which attempt a run is, not which run it retried, so the
    chain is derived: a retry (L{karajo.run.JobRunner}) starts after the
    failed attempt before it ended, and nothing else of the job runs in
    between (a trigger meanwhile is queued behind the retry).  In the
    order the runs I{started}, a chain is therefore a run followed by the
    runs whose attempts go on counting up by one (1, 2, ... n).  Counter
    order would not do: a trigger queued during a retry's wait owns its
    counter at once, and the retry takes the next one when it starts, so
    the retry of run 7 may be run 9 while run 8 ran after it.

    A run without a start time (a log from before run records, or a run
    dropped before it started) is in no chain; a chain whose first
    attempts were pruned starts at the oldest one still kept.
    """
    ordered = sorted((r for r in records if r.started is not None),
                     key=lambda r: (r.started, r.counter))
    at = next((i for i, r in enumerate(ordered) if r.counter == counter), None)
    if at is None:
        return [r for r in records if r.counter == counter][:1]
    first = at
    while first > 0 and ordered[first].attempt > 1 \
            and ordered[first - 1].attempt == ordered[first].attempt - 1:
        first -= 1
    last = at
    while last + 1 < len(ordered) and ordered[last + 1].attempt == ordered[last].attempt + 1:
        last += 1
    return ordered[first:last + 1]


class JobView:
    """What the pages show of one job, taken from its service."""

    def __init__(self, views: Views, kind: JobKind, svc: Any) -> None:
        runner = svc.runner
        job = runner.job
        self.kind = kind
        self.job = job
        self.id = job.id
        self.name = job.name
        self.status = runner.status
        self.last_run = runner.last_run
        self.next_run = svc.next_run
        #: the kept runs, oldest first
        self.records: list[RunRecord] = runner.records()
        #: a run is going on (its log is the newest, not final yet), as the
        #: page's script tells it from the API's logs
        self.active = bool(self.records) and self.records[-1].status is RunStatus.RUNNING
        self.schedule_words = views.timer_words(job)
        self.raw_schedule = job.schedule or (
            f"interval {int(job.interval.total_seconds())}s" if job.interval is not None else ""
        )
        self.store = runner.store

    @property
    def last_failure(self) -> float | None:
        """When the newest failed run started (or ended), for sorting the dashboard."""
        for record in reversed(self.records):
            if record.status is RunStatus.FAILED:
                when = record.started if record.started is not None else record.ended
                return when if when is not None else 0.0
        return None

    @property
    def counters(self) -> list[int]:
        """The counters of the kept runs, oldest first."""
        return [r.counter for r in self.records]

    def runs(self, limit: int | None = None) -> list[RunView]:
        """The newest C{limit} runs, newest first, with their times."""
        newest = self.records[::-1]
        if limit is not None:
            newest = newest[:limit]
        return [RunView.of(r) for r in newest]

    def pages(self, size: int = HISTORY_PAGE) -> int:
        """How many pages of C{size} runs the kept runs fill (at least 1)."""
        return max(1, math.ceil(len(self.records) / size))

    def page(self, number: int, size: int = HISTORY_PAGE) -> list[RunView]:
        """Page C{number} (1 = the newest runs) of the kept runs, newest first."""
        newest = self.records[::-1]
        start = (number - 1) * size
        return [RunView.of(r) for r in newest[start:start + size]]

    def success_rate(self, last: int) -> tuple[int, int]:
        """
        C{(succeeded, finished)} among the newest C{last} finished runs:
        a running run has no outcome yet and is not counted.
        """
        finished = [r for r in self.records if r.status in FINAL_STATUSES][-last:]
        return sum(1 for r in finished if r.status is RunStatus.SUCCESS), len(finished)

    def next_fires(self, count: int, now: float) -> list[float]:
        """
        The next C{count} times the timer fires (Unix times): from its next
        run, then the schedule's next slots or the interval's steps; none
        for a job without a timer.  A paused job's schedule is still shown
        (from C{now}): resuming it keeps the same slots.
        """
        job = self.job
        if job.schedule:
            zone = ZoneInfo(job.timezone) if job.timezone else None
            schedule = parse_schedule(job.schedule, zone)
            start = self.next_run
            if start is None:
                start = schedule.next_after(
                    datetime.datetime.fromtimestamp(now, datetime.UTC)).timestamp()
            fires = [start]
            while len(fires) < count:
                fires.append(schedule.next_after(
                    datetime.datetime.fromtimestamp(fires[-1], datetime.UTC)).timestamp())
            return fires
        if job.interval is not None and self.next_run is not None:
            step = max(1.0, job.interval.total_seconds())
            return [self.next_run + k * step for k in range(count)]
        return []

    def run(self, counter: int) -> RunView:
        """
        Run C{counter}: this server's record of it, else the kept runs' (on
        a cluster node, a run of another node); a run without a record (its
        log only) has no times.
        """
        record = self.store.record(counter)
        if record is None:
            record = next((r for r in self.records if r.counter == counter), None)
        if record is None:
            return RunView(counter, str(RunStatus.RUNNING), None, None)
        return RunView.of(record)

    def chain(self, counter: int) -> list[RunView]:
        """The attempts of run C{counter}'s failure chain (L{retry_chain})."""
        return [RunView.of(r) for r in retry_chain(self.records, counter)]

    def run_href(self, counter: int) -> str:
        """The page of run C{counter}: its facts and its log."""
        return self.run_href_of(self.kind, self.id, counter)

    @staticmethod
    def run_href_of(kind: JobKind, job_id: str, counter: int) -> str:
        return f"/karajo/app/run?kind={kind}&id={quote(job_id, safe='')}&counter={counter}"

    def job_href(self) -> str:
        return self.href_of(self.kind, self.id)

    @staticmethod
    def href_of(kind: JobKind, job_id: str) -> str:
        """The page of job C{job_id} of C{kind}."""
        return f"/karajo/app/job?kind={kind}&id={quote(job_id)}"


class Views:
    """
    Builds L{JobView}s of one server's jobs, remembering what does not
    change: each job's timer in words.
    """

    def __init__(self, service: Any) -> None:
        self._service = service
        self._timers: dict[tuple, str] = {}

    def all(self) -> list[JobView]:
        """Every job, commands jobs first, in config order."""
        return [JobView(self, kind, svc)
                for kind in JobKind
                for svc in getattr(self._service, kind.table).values()]

    def find(self, kind: JobKind, job_id: str) -> JobView | None:
        svc = getattr(self._service, kind.table).get(job_id)
        return None if svc is None else JobView(self, kind, svc)

    def timer_words(self, job: Any) -> str:
        key = (job.schedule, job.interval, job.timezone)
        words = self._timers.get(key)
        if words is None:
            words = self._timers[key] = describe_timer(*key)
        return words
