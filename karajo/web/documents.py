"""
The JSON documents of the API (docs/http-api.md): a job (C{Job} and
C{JobHttp} JSON) and the environment, which holds every job.

Both are built from explicit lists of fields, so a secret never appears:
job secrets are left out, URL passwords and credential headers are masked
(L{karajo.redact}).  A job's encoded JSON is cached with the dynamic state
it was built from (status, last run, next run, logs): dashboards poll the
environment every few seconds, and with a thousand jobs re-encoding them
all would dominate the daemon's work.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from karajo.model import Job, JobHttp, JobKind
from karajo.redact import masked_headers, masked_url
from karajo.web import envelope
from karajo.web.envelope import dumps, duration_ns, format_time

__all__ = ["Cached", "Documents", "job_dict", "job_http_dict"]


def _logs_json(records: Iterable[Any]) -> list[dict[str, Any]]:
    """The C{logs} of a job: one entry per L{karajo.joblog.RunRecord}."""
    return [
        {
            "job_id": record.job_id,
            "name": record.filename,
            "status": record.status,
            "counter": record.counter,
            "started": format_time(record.started),
            "ended": format_time(record.ended),
            "trigger": record.trigger,
            "attempt": record.attempt,
            "node": record.node,
        }
        for record in records
    ]


def cluster_dict(cluster: Any) -> dict[str, Any]:
    """
    The C{cluster} of the environment (docs/cluster.md): this node, every
    node the database lists (a dead one stays, C{"alive": false}), and
    the alive nodes whose configuration digest differs from this one's.
    """
    return {
        "node": cluster.me,
        "connected": cluster.connected,
        "config_digest": cluster.digest,
        "config_mismatch": cluster.mismatched(),
        "nodes": [
            {
                "name": n.name,
                "alive": n.alive,
                "last_seen": format_time(n.last_seen),
                "running": n.running,
                "version": n.version,
                "config_digest": n.config_digest,
            }
            for n in sorted(cluster.nodes.values(), key=lambda n: n.name)
        ],
    }


def _policies(job: Job | JobHttp) -> dict[str, Any]:
    """The run policies of either kind (docs/configuration.md, "Run policies")."""
    return {
        "retry": job.retry,
        "retry_delay": duration_ns(job.retry_delay),
        "overlap": job.overlap,
        "catch_up": duration_ns(job.catch_up),
        "random_delay": duration_ns(job.random_delay),
        "timeout": duration_ns(job.timeout),
    }


def _head(job: Job | JobHttp, status: str, last_run: float | None,
          next_run: float | None) -> dict[str, Any]:
    """The fields both kinds of job start with, in the original's order."""
    return {
        "id": job.id,
        "name": job.name,
        "description": job.description,
        "status": status,
        "schedule": job.schedule or "",
        "interval": duration_ns(job.interval),
        "last_run": format_time(last_run),
        "next_run": format_time(next_run),
    }


def job_dict(job: Job, status: str, last_run: float | None, next_run: float | None,
             logs: Iterable[Any]) -> dict[str, Any]:
    """The Job JSON of docs/http-api.md (secrets never appear)."""
    return {
        **_head(job, status, last_run, next_run),
        "path": job.path,
        "auth_kind": job.auth_kind,
        "header_sign": job.header_sign,
        "commands": list(job.commands),
        "log_retention": job.log_retention,
        "notif_on_success": list(job.notif_on_success),
        "notif_on_failed": list(job.notif_on_failed),
        # Names only: the values are secrets (docs/http-api.md).
        "env_names": job.env_names,
        "logs": _logs_json(logs),
        **_policies(job),
        "on_success": list(job.on_success),
        "on_failed": list(job.on_failed),
    }


def job_http_dict(job: JobHttp, status: str, last_run: float | None,
                  next_run: float | None, logs: Iterable[Any]) -> dict[str, Any]:
    """The JobHttp JSON of docs/http-api.md (secrets never appear)."""
    return {
        **_head(job, status, last_run, next_run),
        "log_retention": job.log_retention,
        "notif_on_success": list(job.notif_on_success),
        "notif_on_failed": list(job.notif_on_failed),
        "logs": _logs_json(logs),
        "http_method": job.http_method,
        "http_url": masked_url(job.http_url),
        "http_request_type": job.http_request_type,
        "http_headers": masked_headers(job.http_headers),
        "http_timeout": duration_ns(job.http_timeout),
        "http_insecure": job.http_insecure,
        "header_sign": job.header_sign,
        **_policies(job),
    }


#: Stand-ins for the dynamic fields while a job's template is encoded: a
#: NUL never survives config parsing, and the template checks each appears
#: exactly once anyway.
_MARKS = ("\0karajo-status\0", "\0karajo-last-run\0", "\0karajo-next-run\0",
          "\0karajo-logs\0")


class _Template:
    """
    A job's JSON with its static fields encoded once (per job value: a
    reload makes a new one), cut where the dynamic ones go; and the
    encoded entry of each of its run records.  A trigger changes the
    status and the logs, so its answer is rebuilt every time: this keeps
    that to a few string joins.
    """

    __slots__ = ("job", "parts", "records")

    def __init__(self, job: Job | JobHttp, build: Any) -> None:
        self.job = job
        document = build(job, "", None, None, ())
        for field, mark in zip(("status", "last_run", "next_run", "logs"), _MARKS, strict=True):
            document[field] = mark
        text = dumps(document)
        parts: list[str] = []
        for mark in map(dumps, _MARKS):
            head, found, text = text.partition(mark)
            if not found or mark in text:
                raise ValueError("a job's JSON holds a template mark")
            parts.append(head)
        parts.append(text)
        self.parts = parts
        self.records: dict[Any, str] = {}

    def render(self, status: str, last_run: float | None, next_run: float | None,
               logs: tuple[Any, ...]) -> str:
        known = self.records
        fresh = {}
        for record in logs:
            text = known.get(record)
            fresh[record] = text if text is not None else dumps(_logs_json((record,))[0])
        self.records = fresh
        p = self.parts
        return "".join((
            p[0], dumps(status), p[1], dumps(format_time(last_run)), p[2],
            dumps(format_time(next_run)), p[3], "[", ",".join(fresh.values()), "]", p[4],
        ))


class Cached:
    """One job's encoded JSON and the dynamic state it was built from."""

    __slots__ = ("key", "json", "named")

    def __init__(self, key: tuple, json_text: str, named: bytes) -> None:
        self.key = key
        #: the Job / JobHttp JSON
        self.json = json_text
        #: C{"NAME":{...}} as bytes, a member of the environment's job maps
        self.named = named


class Documents:
    """
    The documents of one L{karajo.service.KarajoService}, encoded once and
    rebuilt only when what they show changed.

    @param service: the server whose jobs are shown.
    @param version: the C{version} of the environment document.
    """

    def __init__(self, service: Any, version: str) -> None:
        self._service = service
        self._version = version
        self._cache: dict[Any, Cached] = {}
        self._templates: dict[Any, _Template] = {}
        self._env_head: bytes | None = None
        #: the environment the head was built from (a reload replaces it)
        self._head_of: Any = None
        #: the last environment answer: its head, its jobs' entries, its bytes
        self._env_last: tuple[bytes, list[list[Cached]], bytes] | None = None

    def job(self, kind: JobKind, svc: Any) -> Cached:
        """
        A job's encoded JSON, rebuilt only when its dynamic state (status,
        last run, next run, logs) changed since the last request.  Keyed by
        the job's service object: computing C{job.id} costs a regex.
        """
        runner = svc.runner
        logs = runner.snapshot()  # the same tuple while no record changed
        # The job value too: a reload gives a job service a new one (the
        # same object compares by identity, at no cost).
        key = (runner.status, runner.last_run, svc.next_run, logs, runner.job)
        entry = self._cache.get(svc)
        if entry is not None and entry.key == key:
            return entry
        job = key[4]
        build = job_dict if kind is JobKind.JOB else job_http_dict
        template = self._templates.get(svc)
        try:
            if template is None or template.job is not job:
                template = self._templates[svc] = _Template(job, build)
            text = template.render(key[0], key[1], key[2], logs)
        except ValueError:  # a mark in the job's own text: encode it whole
            text = dumps(build(job, key[0], key[1], key[2], logs))
        entry = Cached(key, text, (dumps(job.name) + ":" + text).encode("ascii"))
        self._cache[svc] = entry
        return entry

    def forget(self, services: Iterable[Any]) -> None:
        """Drop the cached documents of jobs a reload removed."""
        for svc in services:
            self._cache.pop(svc, None)
            self._templates.pop(svc, None)

    def environment(self) -> bytes:
        """The whole C{GET /karajo/api/environment} answer, envelope included."""
        if self._env_head is None or self._head_of is not self._service.env:
            env = self._head_of = self._service.env
            fields = dumps({
                "name": env.name,
                "listen_address": env.listen_address,
                "dir_base": env.dir_base,
                "dir_public": env.dir_public or "",
                "version": self._version,
                "http_timeout": duration_ns(env.http_timeout),
                "max_job_running": env.max_job_running,
            })
            # The envelope up to the job maps; the data object stays open.
            self._env_head = envelope.envelope_raw(200, "OK", fields[:-1])[:-1]
        # One flat list and one join: the document is large (about 750 kB
        # for 1,000 jobs with 5 logs each), so every extra copy counts.
        job = self.job
        head: bytes = self._env_head
        cluster = getattr(self._service, "cluster", None)
        if cluster is not None:
            head += b',"cluster":' + dumps(cluster_dict(cluster)).encode("ascii")
        entries = [[job(kind, svc) for svc in getattr(self._service, kind.table).values()]
                   for kind in JobKind]
        # Nothing changed since the last answer (the same head, the same
        # cached entry for every job: Cached compares by identity): the
        # same bytes object, which the gzip wrapper recognises without
        # comparing a megabyte.
        last = self._env_last
        if last is not None and last[0] == head and last[1] == entries:
            return last[2]
        parts = [head]
        for kind, cached in zip(JobKind, entries, strict=True):
            parts.append(b',"' + kind.table.encode("ascii") + b'":{')
            parts.append(b",".join([entry.named for entry in cached]))
            parts.append(b"}")
        parts.append(b"}}")
        document = b"".join(parts)
        self._env_last = (head, entries, document)
        return document
