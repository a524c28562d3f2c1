"""
The checks of one job's (and one notif's, and C{[cluster]}'s) values, shared by jobs from
files and jobs built in code: timer, signature and path, run policies,
chains, environment, JobHttp request.  Each failure is a L{ConfigError}
naming the file and line of the key at fault (L{fail}).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from attrs import evolve

from karajo import envvars
from karajo.errors import ConfigError
from karajo.model import (
    AUTH_KINDS,
    DEFAULT_JOB_HTTP_INTERVAL,
    HTTP_METHODS,
    HTTP_REQUEST_TYPES,
    OVERLAPS,
    Cluster,
    Environment,
    Job,
    JobHttp,
    Notif,
    Origin,
)
from karajo.redact import masked_url
from karajo.schedule import parse_schedule
from karajo.selectors import SelectorError, parse_rule, parse_selector
from karajo.validators import NotifConfigError, check_notif

#: An HTTP header name (RFC 9110 token).
HEADER_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def fail(origin: Origin, attr: str | None, reason: str) -> ConfigError:
    line = origin.line_of(attr) if attr else origin.line
    return ConfigError(origin.filename, line, reason)



def _check_timer(job: Job | JobHttp) -> None:
    origin = job.origin
    if job.timezone:
        try:
            zone = ZoneInfo(job.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise fail(origin, "timezone", f"timezone: unknown zone {job.timezone!r}") from None
    else:
        zone = None
    if job.schedule:
        try:
            parse_schedule(job.schedule, zone)
        except ValueError as e:
            raise fail(origin, "schedule", f"schedule: {e}") from None
    if job.interval is not None and job.interval < timedelta(seconds=1):
        raise fail(origin, "interval", "interval: must be at least 1s")


def _check_common(job: Job | JobHttp, env: Environment) -> None:
    origin = job.origin
    if not job.name:
        raise fail(origin, None, "a job needs a name")
    if job.log_retention < 1:
        raise fail(origin, "log_retention", "log_retention: must be at least 1")
    if job.timeout is not None and job.timeout <= timedelta(0):
        raise fail(origin, "timeout", "timeout: must be positive")
    _check_policies(job)
    if not HEADER_TOKEN.fullmatch(job.header_sign or ""):
        raise fail(origin, "header_sign", f"header_sign: {job.header_sign!r} is not a header name")
    for attr in ("notif_on_success", "notif_on_failed"):
        for name in getattr(job, attr):
            if name not in env.notifs:
                raise fail(origin, attr, f"{attr}: no [notif \"{name}\"] is defined")
    _check_timer(job)


#: The most retries a job may ask for: beyond this a failing job would keep
#: its queue place for days (the wait is capped at 1h per retry).
MAX_RETRY = 100


def _check_policies(job: Job | JobHttp) -> None:
    """The run policies' values (docs/configuration.md, "Run policies")."""
    origin = job.origin
    if not 0 <= job.retry <= MAX_RETRY:
        raise fail(origin, "retry", f"retry: must be between 0 and {MAX_RETRY}")
    if job.retry_delay <= timedelta(0):
        raise fail(origin, "retry_delay", "retry_delay: must be positive")
    if job.overlap not in OVERLAPS:
        raise fail(
            origin, "overlap", f"overlap: {job.overlap!r} is not one of {', '.join(OVERLAPS)}"
        )
    for attr in ("catch_up", "random_delay"):
        if getattr(job, attr) < timedelta(0):
            raise fail(origin, attr, f"{attr}: must not be negative")


def check_chains(jobs: Mapping[str, Job]) -> None:
    """
    Every C{on_success}/C{on_failed} names an existing C{[job]} by ID, and
    no chain leads back to where it started (a run would trigger itself
    for ever): the error names each link's file and line.
    """
    by_id = {job.id: job for job in jobs.values()}
    for job in by_id.values():
        for attr in ("on_success", "on_failed"):
            for target in getattr(job, attr):
                if target not in by_id:
                    raise fail(job.origin, attr, f"{attr}: no [job] has the ID {target!r}")
    # Depth-first search; a grey node met again closes a cycle.
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[tuple[str, str]] = []  # (job ID, the key that leads on)

    def visit(job_id: str) -> None:
        state[job_id] = 1
        job = by_id[job_id]
        for attr in ("on_success", "on_failed"):
            for target in dict.fromkeys(getattr(job, attr)):
                path.append((job_id, attr))
                if state.get(target) == 1:
                    start = next(i for i, (j, _) in enumerate(path) if j == target)
                    raise _cycle(by_id, path[start:], target)
                if target not in state:
                    visit(target)
                path.pop()
        state[job_id] = 2

    for job_id in by_id:
        if job_id not in state:
            visit(job_id)


def _cycle(by_id: Mapping[str, Job], links: list[tuple[str, str]], back_to: str) -> ConfigError:
    first, attr = links[0]
    names = " -> ".join([j for j, _ in links] + [back_to])
    where = ", ".join(
        f"{j} {a} at {by_id[j].origin.filename}:{by_id[j].origin.line_of(a)}" for j, a in links
    )
    return fail(by_id[first].origin, attr, f"{attr}: chain cycle {names} ({where})")


def check_job(job: Job, env: Environment) -> Job:
    _check_common(job, env)
    origin = job.origin
    if job.auth_kind not in AUTH_KINDS:
        raise fail(
            origin, "auth_kind",
            f"auth_kind: {job.auth_kind!r} is not one of {', '.join(AUTH_KINDS)}",
        )
    if not job.commands and job.call is None:
        raise fail(origin, None, f'[job "{job.name}"] has no command')
    path = job.path.strip()
    if path and not path.startswith("/"):
        path = "/" + path
    if path and ("//" in path or any(part in (".", "..") for part in path.split("/"))):
        raise fail(origin, "path", f"path: {job.path!r} is not a clean URL path")
    return evolve(job, path=path)


def job_env(job: Job, warnings: list[str]) -> tuple[tuple[str, str], ...]:
    """
    Read the job's C{env_file} and parse its C{env} lines: the environment
    its commands get (L{karajo.envvars} has the rule; no value is ever in
    an error or a warning).
    """
    origin = job.origin
    if job.call is not None:
        if job.env or job.env_file:
            warnings.append(
                f"{origin.filename}:{origin.line_of('env')}: {job.name!r} runs a callable, "
                "not commands: env and env_file are not used"
            )
        return ()
    from_file = []
    if job.env_file:
        from_file = envvars.read_env_file(
            job.env_file, origin.filename, origin.line_of("env_file")
        )
    lines = [
        envvars.parse_assignment(text, origin.filename, origin.line_of_entry("env", i))
        for i, text in enumerate(job.env)
    ]
    return envvars.merge(from_file, lines, warnings=warnings)


def job_payload(job: Job, warnings: list[str]) -> Job:
    """
    Parse the job's trigger rules (C{match}) and payload variables
    (C{payload_env}); each error names its entry's line.  A payload
    variable's name follows the rules of C{env} (L{karajo.envvars}: no
    C{KARAJO_*}) and may be neither one of the job's C{env}/C{env_file}
    names nor given twice: one name, one meaning.
    """
    origin = job.origin
    rules = []
    for i, text in enumerate(job.match):
        try:
            rules.append(parse_rule(text))
        except SelectorError as e:
            raise ConfigError(origin.filename, origin.line_of_entry("match", i), f"match: {e}") from None
    if rules and not job.path:
        warnings.append(
            f"{origin.filename}:{origin.line_of('match')}: {job.name!r} has no path: "
            "its match rules are never checked"
        )
    pairs = []
    seen = {name for name, _ in job.resolved_env}
    for i, text in enumerate(job.payload_env):
        line = origin.line_of_entry("payload_env", i)
        item = envvars.parse_assignment(text, origin.filename, line, "payload_env")
        try:
            selector = parse_selector(item.value.strip())
        except SelectorError as e:
            raise ConfigError(origin.filename, line, f"payload_env: {item.name}: {e}") from None
        if item.name in seen:
            raise ConfigError(
                origin.filename, line,
                f"payload_env: {item.name} is already set (env, env_file or payload_env)",
            )
        seen.add(item.name)
        pairs.append((item.name, selector))
    if pairs and job.call is not None:
        warnings.append(
            f"{origin.filename}:{origin.line_of('payload_env')}: {job.name!r} runs a callable, "
            "not commands: payload_env is not used (the callable gets the request)"
        )
    return evolve(job, rules=tuple(rules), payload_vars=tuple(pairs))


def check_job_http(job: JobHttp, env: Environment) -> JobHttp:
    _check_common(job, env)
    origin = job.origin
    method = job.http_method.upper()
    if method not in HTTP_METHODS:
        raise fail(
            origin, "http_method",
            f"http_method: {job.http_method!r} is not one of {', '.join(HTTP_METHODS)}",
        )
    rtype = job.http_request_type.lower()
    if rtype not in HTTP_REQUEST_TYPES:
        raise fail(
            origin, "http_request_type",
            f"http_request_type: {job.http_request_type!r} is not one of "
            f"{', '.join(HTTP_REQUEST_TYPES)}",
        )
    if rtype in ("form", "json") and method not in ("POST", "PUT"):
        raise fail(
            origin, "http_request_type",
            f"http_request_type: {rtype} needs http_method POST or PUT, not {method}",
        )
    url = job.http_url.strip()
    if not url:
        raise fail(origin, None, f'[job.http "{job.name}"] has no http_url')
    if not url.startswith("/"):
        try:
            parts = urlsplit(url)
            _ = parts.port  # raises for a port that is not one
        except ValueError as e:
            raise fail(origin, "http_url", f"http_url: {masked_url(url)!r}: {e}") from None
        if (parts.scheme not in ("http", "https") or not parts.hostname
                or any(c.isspace() for c in parts.netloc)):
            raise fail(
                origin, "http_url",
                f"http_url: {masked_url(url)!r} is neither an http(s) URL nor a path starting with /",
            )
    interval = job.interval
    if not job.schedule and interval is None:
        interval = DEFAULT_JOB_HTTP_INTERVAL
    return evolve(job, http_method=method, http_request_type=rtype, http_url=url, interval=interval)


def check_notif_at(notif: Notif) -> None:
    try:
        check_notif(notif)
    except NotifConfigError as e:
        raise fail(notif.origin, e.key, str(e)) from None


#: A node name: shown in logs, the API and the log line of a lost node.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def check_cluster(cluster: Cluster) -> None:
    """
    C{[cluster]} (docs/cluster.md): a database, a node name, and a
    C{node_timeout} above two heartbeats (one late heartbeat must never
    make a live node look dead).
    """
    origin = cluster.origin
    if not cluster.database.strip():
        raise fail(origin, "database", "[cluster] needs database (a libpq URL or $VARIABLE)")
    if not NODE_NAME.fullmatch(cluster.node):
        raise fail(origin, "node", "node: 1-63 letters, digits, '.', '_' or '-', "
                   f"starting with a letter or digit, not {cluster.node!r}")
    if cluster.heartbeat <= timedelta(0):
        raise fail(origin, "heartbeat", "heartbeat: must be positive")
    if cluster.node_timeout <= 2 * cluster.heartbeat:
        raise fail(origin, "node_timeout", "node_timeout: must be more than twice heartbeat")
