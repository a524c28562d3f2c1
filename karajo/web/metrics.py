"""
C{GET /karajo/metrics}: the server's state in the Prometheus text format.

Each server has its own L{CollectorRegistry} (never the process-global
one), so two servers in one process, as in the tests, never mix or clash.
Two sources fill it:

  - L{RunMetrics} listens to every L{karajo.run.JobRunner} (its
    C{listeners}) and counts runs started and finished, and their durations;
  - L{StateCollector}, the registry's one collector, turns those counts into
    metric families at scrape time, and reads the rest straight from the
    service: running and queued runs, paused jobs, the last success of each
    job, the API's count of refused webhook signatures and the notifier's
    count of mails given up.

Every per-job series has the labels C{kind} (C{job} or C{job_http}) and
C{job} (the job's ID).  The page is rendered on the reactor thread with
C{generate_latest}: L{prometheus_client.twisted.MetricsResource} would run
the collectors in a thread, where reading the runners' state is not safe.
The page asks L{karajo.web.access.Access} like the JSON API's reading
routes: an API token of any scope (Prometheus' C{bearer_token_file}), or
a logged-in session when users exist.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.utils import floatToGoString
from twisted.web.resource import Resource

from karajo.web.errors import APIError, describe, error

__all__ = ["DURATION_BUCKETS", "Metrics", "MetricsResource", "RunMetrics", "StateCollector"]

#: Run durations range from milliseconds (a webhook echo) to hours (backups).
DURATION_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200,
    float("inf"),
)

_LABELS = ("kind", "job")
#: The classic text format, which every Prometheus version accepts (our
#: metric names are plain ASCII, so generate_latest's output is exactly it).
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def _runners(service: Any) -> Iterator[tuple[str, str, Any]]:
    """C{(kind, job_id, runner)} of every job of the server."""
    for kind, table in (("job", service.jobs), ("job_http", service.http_jobs)):
        for job_id, svc in table.items():
            yield kind, job_id, svc.runner


class RunMetrics:
    """
    A runner listener: runs started, runs finished by status, durations
    (cumulative histogram buckets), and the end of each job's last
    successful run.  Plain numbers, read by L{StateCollector} at scrape
    time (no C{_created} series, no global switch to turn them off).
    """

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._bounds = DURATION_BUCKETS
        #: (kind, job id) -> runs started
        self.started: dict[tuple[str, str], int] = {}
        #: (kind, job id, status) -> runs finished
        self.finished: dict[tuple[str, str, str], int] = {}
        #: (kind, job id) -> [count per bucket (not cumulative), sum of seconds]
        self.durations: dict[tuple[str, str], list[Any]] = {}
        #: (kind, job id) -> unix time the last successful run ended
        self.last_success: dict[tuple[str, str], float] = {}

    def watch(self, kind: str, job_id: str, runner: Any) -> None:
        """Listen to C{runner}; its series exist (at 0) from now on."""
        self.started.setdefault((kind, job_id), 0)
        for status in ("success", "failed"):
            self.finished.setdefault((kind, job_id, status), 0)
        self.durations.setdefault((kind, job_id), [[0] * len(self._bounds), 0.0])
        if self not in runner.listeners:
            runner.listeners.append(self)

    def forget(self, kind: str, job_id: str) -> None:
        """A reload removed the job: its series go (a run still finishing is not counted)."""
        self.started.pop((kind, job_id), None)
        for key in [k for k in self.finished if k[:2] == (kind, job_id)]:
            del self.finished[key]
        self.durations.pop((kind, job_id), None)
        self.last_success.pop((kind, job_id), None)

    def run_started(self, runner: Any, record: Any) -> None:
        key = (runner.job.kind, runner.job.id)
        if key in self.started:
            self.started[key] += 1

    def run_finished(self, runner: Any, record: Any) -> None:
        kind, job_id, status = runner.job.kind, runner.job.id, str(record.status)
        if (kind, job_id) not in self.started:
            return  # removed by a reload
        key = (kind, job_id, status)
        self.finished[key] = self.finished.get(key, 0) + 1
        seconds = max(0.0, (record.ended or 0.0) - (record.started or 0.0))
        counts = self.durations.setdefault((kind, job_id), [[0] * len(self._bounds), 0.0])
        counts[0][bisect.bisect_left(self._bounds, seconds)] += 1
        counts[1] += seconds
        if status == "success":
            self.last_success[(kind, job_id)] = self._clock.seconds()

    def collect(self) -> Iterator[Metric]:
        started = CounterMetricFamily(
            "karajo_runs_started", "Runs started since karajo started.", labels=_LABELS)
        for labels, value in self.started.items():
            started.add_metric(labels, value)
        finished = CounterMetricFamily(
            "karajo_runs_finished",
            "Runs finished since karajo started, by status (success, failed, canceled).",
            labels=(*_LABELS, "status"))
        for status_labels, value in self.finished.items():
            finished.add_metric(status_labels, value)
        duration = HistogramMetricFamily(
            "karajo_run_duration_seconds",
            "How long runs took, from start to the end of the work.", labels=_LABELS)
        for labels, (counts, total) in self.durations.items():
            cumulative = list(itertools.accumulate(counts))
            buckets = [(floatToGoString(bound), n) for bound, n in zip(self._bounds, cumulative, strict=False)]
            duration.add_metric(labels, buckets, total)
        return iter((started, finished, duration))


class StateCollector:
    """Reads the server's live state at each scrape (a custom collector)."""

    def __init__(self, service: Any, refusals: Any, runs: RunMetrics) -> None:
        self._service = service
        self._refusals = refusals
        self._runs = runs

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily(
            "karajo_job_running", "1 while a run of the job is executing.", labels=_LABELS)
        queued = GaugeMetricFamily(
            "karajo_job_queued",
            "Accepted triggers not started yet (queued behind a run or waiting for a slot).",
            labels=_LABELS)
        paused = GaugeMetricFamily("karajo_job_paused", "1 while the job is paused.", labels=_LABELS)
        last_success = GaugeMetricFamily(
            "karajo_job_last_success_timestamp_seconds",
            "Unix time the last successful run ended (after a restart: when the last"
            " run, if it succeeded, last wrote its log); absent when none is known.",
            labels=_LABELS)
        seen = self._runs.last_success
        for kind, job_id, runner in _runners(self._service):
            labels = [kind, job_id]
            running.add_metric(labels, 1 if runner.executing else 0)
            queued.add_metric(labels, int(runner.queued) + int(runner.waiting))
            paused.add_metric(labels, 1 if runner.paused else 0)
            when = seen.get((kind, job_id))
            if when is None and runner.last_status == "success" and runner.last_run is not None:
                when = runner.last_run
            if when is not None:
                last_success.add_metric(labels, when)
        yield from self._runs.collect()
        yield running
        yield queued
        yield paused
        yield last_success
        yield CounterMetricFamily(
            "karajo_webhook_signatures_rejected",
            "Webhook requests refused for a missing or wrong signature.",
            value=self._refusals.total,
        )
        reloads = CounterMetricFamily(
            "karajo_config_reloads",
            "Configuration reloads (SIGHUP) by result: success, or failure (the"
            " running configuration stayed).", labels=("result",))
        for result, count in getattr(self._service, "reloads", {}).items():
            reloads.add_metric([result], count)
        yield reloads
        not_matched = CounterMetricFamily(
            "karajo_webhook_not_matched",
            "Signed webhook requests that started nothing: the job's trigger rules did not hold.",
            labels=_LABELS)
        for (kind, job_id), count in sorted(self._refusals.not_matched_by_job.items()):
            not_matched.add_metric([kind, job_id], count)
        yield not_matched
        notifier = getattr(self._service, "notifier", None)
        yield CounterMetricFamily(
            "karajo_notification_failures",
            "Notifications (mails and webhook posts) given up (after retries, or at once when"
            " permanent).",
            value=notifier.failures if notifier is not None else 0,
        )


class MetricsResource(Resource):
    """The page: Prometheus text format, behind the API's reading checks."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, access: Any) -> None:
        super().__init__()
        self._registry = registry
        self._access = access

    def render(self, request: Any) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            return error(request, 405, "ERR_METHOD_NOT_ALLOWED",
                         "method not allowed on this endpoint", headers=[(b"allow", b"GET, HEAD")])
        try:
            self._access.require_session(request)
        except APIError as e:
            status, name, message, headers = describe(e)
            return error(request, status, name, message, headers=headers)
        body = generate_latest(self._registry)
        request.setHeader(b"content-type", CONTENT_TYPE)
        request.setHeader(b"cache-control", b"no-store")
        return body


class Metrics:
    """The metrics of one server: its registry, run listener and page."""

    def __init__(self, service: Any, refusals: Any, access: Any, clock: Any) -> None:
        # No auto_describe: it would run a whole collect() (every job) at
        # registration, i.e. at every start-up.
        self.registry = CollectorRegistry()
        self.runs = RunMetrics(clock)
        for kind, job_id, runner in _runners(service):
            self.runs.watch(kind, job_id, runner)
        self.registry.register(StateCollector(service, refusals, self.runs))
        self._access = access
        listeners = getattr(service, "reload_listeners", None)
        if listeners is not None:
            listeners.append(self)

    def reloaded(self, service: Any, added: Any, removed: Any) -> None:
        """A reload: series for the jobs it added, none for those it removed."""
        for svc in removed:
            job = svc.runner.job
            self.runs.forget(str(job.kind), job.id)
        for svc in added:
            job = svc.runner.job
            self.runs.watch(str(job.kind), job.id, svc.runner)

    def resource(self) -> MetricsResource:
        return MetricsResource(self.registry, self._access)
