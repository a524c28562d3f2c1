"""
What the pages show of a job and its runs, read from the live services.

A view is built per request from a job's service (status, last and next
run, its logs); the slow parts are cached here, once per server: a run's
start and end times (read from the head and tail of its log, every line of
which starts with a UTC timestamp) once the run is final, and a job's
timer in words.
"""

from __future__ import annotations

import datetime
import os
import re
from typing import Any
from urllib.parse import quote

from karajo.kinds import JobKind
from karajo.web.words import describe_timer

__all__ = ["FINAL_STATUSES", "JobView", "RunView", "Views", "log_span"]

FINAL_STATUSES = ("success", "failed", "canceled")

_STAMP = re.compile(rb"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC ")
#: finished runs whose times are remembered before the cache starts over
_SPANS_KEPT = 20000


def _stamp(line: bytes) -> float | None:
    m = _STAMP.match(line)
    if m is None:
        return None
    try:
        when = datetime.datetime.strptime(m.group(1).decode("ascii"), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return None
    return when.replace(tzinfo=datetime.UTC).timestamp()


def log_span(path: str) -> tuple[float | None, float | None]:
    """
    The times of the first and last lines of a log file (every line starts
    with a UTC timestamp); reads only its head and its tail.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 8192))
            tail = f.read()
    except OSError:
        return None, None
    start = _stamp(head)
    end = None
    for line in reversed(tail.splitlines()):
        end = _stamp(line)
        if end is not None:
            break
    return start, end


class RunView:
    """One run: its counter, status and times (None when unknown)."""

    __slots__ = ("counter", "status", "start", "end")

    def __init__(self, counter: int, status: str, start: float | None, end: float | None):
        self.counter = counter
        self.status = status
        self.start = start
        self.end = end

    @property
    def duration(self) -> float | None:
        if self.status not in FINAL_STATUSES or self.start is None or self.end is None:
            return None
        return max(0.0, self.end - self.start)


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
        self.logs = list(runner.logs())
        #: a run is going on (its log is the newest, not final yet), as the
        #: page's script tells it from the API's logs
        self.active = bool(self.logs) and self.logs[-1].status is None
        self.schedule_words = views.timer_words(job)
        self.raw_schedule = job.schedule or (
            f"interval {int(job.interval.total_seconds())}s" if job.interval is not None else ""
        )
        self.store = runner.store
        self._views = views

    def runs(self, limit: int | None = None) -> list[RunView]:
        """The newest C{limit} runs, newest first, with their times."""
        names = sorted(self.logs, key=lambda n: n.counter, reverse=True)
        if limit is not None:
            names = names[:limit]
        return [self.run(name) for name in names]

    def run(self, name: Any) -> RunView:
        """The run of the log C{name}."""
        return self._views.run_view(self.store, self.kind, name)

    def log_href(self, counter: int) -> str:
        return f"/karajo/app/log?kind={self.kind}&id={quote(self.id)}&counter={counter}"

    def job_href(self) -> str:
        return f"/karajo/app/job?kind={self.kind}&id={quote(self.id)}"


class Views:
    """
    Builds L{JobView}s of one server's jobs, remembering what does not
    change: the times of finished runs and each job's timer in words.
    """

    def __init__(self, service: Any) -> None:
        self._service = service
        self._spans: dict[tuple, tuple[float | None, float | None]] = {}
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

    def run_view(self, store: Any, kind: JobKind, name: Any) -> RunView:
        status = name.status or "running"
        key = (kind, name.job_id, name.counter, status)
        span = self._spans.get(key)
        if span is None:
            span = log_span(store.path_of(name))
            if name.status is not None:
                if len(self._spans) > _SPANS_KEPT:
                    self._spans.clear()
                self._spans[key] = span
        return RunView(name.counter, status, span[0], span[1] if name.status else None)
