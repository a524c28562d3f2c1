"""
The values karajo is configured with.

The same frozen values come out of the config loader and can be written by
hand in Python, so that a server built from code and one built from files
are validated and run by exactly the same code (see L{karajo.validate}).
Durations are L{datetime.timedelta}; C{None} means "not set".
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, ClassVar

from attrs import field, frozen

from karajo.kinds import JobKind
from karajo.selectors import Rule, Selector

AUTH_KINDS = ("hmac-sha256", "github", "sourcehut")
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE")
HTTP_REQUEST_TYPES = ("query", "form", "json")
DEFAULT_HEADER_SIGN = "X-Karajo-Sign"
DEFAULT_LOG_RETENTION = 5
DEFAULT_JOB_HTTP_INTERVAL = timedelta(seconds=30)
#: What a trigger does while the job runs (docs/configuration.md, "Run policies").
OVERLAPS = ("queue", "skip", "replace")
DEFAULT_RETRY_DELAY = timedelta(minutes=1)
#: A retry's wait doubles from C{retry_delay} up to this.
MAX_RETRY_DELAY = timedelta(hours=1)

_NOT_ID = re.compile(r"[^a-z0-9_-]")


@functools.lru_cache(maxsize=16384)
def job_id(name: str) -> str:
    """
    Normalise a job name into the ID used in paths, log names and the API.

    The original derives IDs this way, so log directories and API calls keep
    working when a config moves from the Go program to this one: each
    character lower-cased on its own (Go's C{unicode.ToLower}: U+0130 is
    C{i}, the Kelvin sign C{k}), then every I{byte} of the UTF-8 outside
    C{[a-z0-9_-]} replaced by C{_} (so C{日本} is six of them, not two).
    Cached: a job's C{id} is asked for on every request about it.
    """
    lowered = "".join("i" if c == "\u0130" else c.lower() for c in name)
    ident = _NOT_ID.sub("_", lowered.encode("utf-8").decode("latin-1"))
    if not ident or not (ident[0].isalpha() or ident[0] == "_"):
        ident = "_" + ident
    return ident




@frozen
class Origin:
    """
    Where a value was defined, so that a late check (a notif that does not
    exist, a path used twice) can still name the file and line to fix.
    """

    filename: str = "<code>"
    line: int | None = None
    key_lines: Mapping[str, int] = field(factory=dict, eq=False, repr=False)
    #: every line of a repeatable key, in order (C{env}: an error or a
    #: warning about its third entry names that entry's line)
    entry_lines: Mapping[str, tuple[int, ...]] = field(factory=dict, eq=False, repr=False)

    def line_of(self, key: str) -> int | None:
        """The line of C{key} when known, else the section's line."""
        return self.key_lines.get(key, self.line)

    def line_of_entry(self, key: str, index: int) -> int | None:
        """The line of entry C{index} of a repeatable C{key}, else L{line_of}."""
        lines = self.entry_lines.get(key, ())
        return lines[index] if index < len(lines) else self.line_of(key)


@frozen
class User:
    """A dashboard login; C{password} is a bcrypt hash, never a clear text."""

    name: str = ""
    password: str = field(default="", repr=False)
    origin: Origin = field(factory=Origin, eq=False, repr=False)


#: What an API token may do (docs/http-api.md, "Authentication").
TOKEN_SCOPES = ("read", "manage")


@frozen
class Token:
    """
    An API token of C{user.conf}: only the SHA-256 of the token is kept
    (C{hash}, C{sha256:<hex>}), so the file never holds the token itself.
    C{scope} is C{read} (GET API, logs, metrics) or C{manage} (also pause,
    resume, cancel and run_now, without a signature).
    """

    name: str = ""
    hash: str = field(default="", repr=False)
    scope: str = "read"
    origin: Origin = field(factory=Origin, eq=False, repr=False)


#: The kinds of C{[notif]}: a mail over SMTP, or a JSON POST (Slack,
#: Mattermost, Rocket.Chat incoming webhooks, or any receiver).
NOTIF_KINDS = ("email", "webhook")


@frozen
class Notif:
    """
    A destination that job results are sent to: an e-mail (C{smtp_*},
    C{from}, C{to}) or a webhook (C{url}, C{secret}, C{http_headers},
    C{http_insecure}).
    """

    name: str = ""
    kind: str = "email"
    smtp_server: str = ""
    smtp_user: str = field(default="", repr=False)
    smtp_password: str = field(default="", repr=False)
    smtp_insecure: bool = False
    sender: str = ""
    to: tuple[str, ...] = field(default=(), converter=tuple)
    url: str = field(default="", repr=False)
    #: signs a webhook's body (hex HMAC-SHA256 in C{X-Karajo-Sign})
    secret: str = field(default="", repr=False)
    http_headers: tuple[tuple[str, str], ...] = field(default=(), converter=tuple, repr=False)
    http_insecure: bool = False
    origin: Origin = field(factory=Origin, eq=False, repr=False)


def _tuple(value: Any) -> tuple:
    return tuple(value or ())


def _env_lines(value: Any) -> tuple[str, ...]:
    """C{env} as C{NAME=VALUE} strings; code may give a mapping instead."""
    if isinstance(value, Mapping):
        return tuple(f"{name}={text}" for name, text in value.items())
    return tuple(value or ())


@frozen
class JobBase:
    """
    What every kind of job has: a name, a timer (schedule or interval), a
    secret, its logs' retention, a run timeout and its notifications.  The
    runner, the timer and the API treat both kinds alike through these
    fields.  C{secret=None} means the global secret.  C{timeout} ends a
    run still going after it C{failed} (L{karajo.run.JobRunner}), for
    either kind (a JobHttp's request also has its C{http_timeout}).
    C{None} means no limit.

    The run policies (docs/configuration.md, "Run policies"): C{retry}
    more attempts after a failed run, the first C{retry_delay} later, each
    next one twice as late (L{retry_wait}); C{overlap}, what a trigger
    does while the job runs (one of L{OVERLAPS}); C{catch_up}, how long
    ago a missed timer slot may be and still run once at start or after
    a clock jump (zero: off); C{random_delay}, the bound of each timer
    fire's random wait (zero: none).
    """

    name: str = ""
    description: str = ""
    schedule: str | None = None
    interval: timedelta | None = None
    timezone: str | None = None
    secret: str | None = field(default=None, repr=False)
    header_sign: str = DEFAULT_HEADER_SIGN
    log_retention: int = DEFAULT_LOG_RETENTION
    timeout: timedelta | None = None
    retry: int = 0
    retry_delay: timedelta = DEFAULT_RETRY_DELAY
    overlap: str = "queue"
    catch_up: timedelta = timedelta(0)
    random_delay: timedelta = timedelta(0)
    notif_on_success: tuple[str, ...] = field(default=(), converter=_tuple)
    notif_on_failed: tuple[str, ...] = field(default=(), converter=_tuple)
    origin: Origin = field(factory=Origin, eq=False, repr=False)

    @property
    def id(self) -> str:
        return job_id(self.name)

    kind: ClassVar[JobKind] = JobKind.JOB

    def retry_wait(self, retry: int) -> timedelta:
        """
        How long retry number C{retry} (1 = the first) waits after the
        failed run before it: C{retry_delay}, doubled for each next retry,
        never more than L{MAX_RETRY_DELAY}.
        """
        wait = self.retry_delay
        for _ in range(retry - 1):
            if wait >= MAX_RETRY_DELAY:
                break
            wait *= 2
        return min(wait, MAX_RETRY_DELAY)


@frozen
class Job(JobBase):
    """
    A job that runs shell commands, or a Python callable when built from code.

    C{call(log, request)} receives a writable log (C{write(bytes)}) and the
    triggering HTTP request or C{None}; it may return a Deferred or be a
    coroutine function.

    C{on_success} and C{on_failed} name the IDs of the jobs (C{[job]}s)
    triggered when a run ends so, after its last retry.
    """

    path: str = ""
    auth_kind: str = "hmac-sha256"
    #: C{NAME=VALUE} lines added to the commands' environment (a mapping
    #: is accepted from code); values are secrets: never in a repr.  Not
    #: for a C{call}: a callable runs inside the daemon, not as a command
    env: tuple[str, ...] = field(default=(), converter=_env_lines, repr=False)
    #: a file of C{NAME=VALUE} lines (L{karajo.envvars}); the config loader
    #: makes a relative one relative to the main file's directory
    env_file: str | None = None
    #: what the commands get of C{env_file} and C{env}, as sorted
    #: C{(name, value)} pairs: filled by L{karajo.validate}, which reads the
    #: file (the file first, an C{env} line overriding it)
    resolved_env: tuple[tuple[str, str], ...] = field(default=(), converter=_tuple, repr=False)
    #: trigger rules, C{SELECTOR OP VALUE} as written (L{karajo.selectors});
    #: a webhook request for which one does not hold starts nothing
    match: tuple[str, ...] = field(default=(), converter=_tuple)
    #: C{NAME=SELECTOR} lines: a value of the webhook request in the
    #: commands' environment
    payload_env: tuple[str, ...] = field(default=(), converter=_tuple)
    #: L{match} parsed, and L{payload_env} as C{(name, selector)} pairs:
    #: filled by L{karajo.validate}
    rules: tuple[Rule, ...] = field(default=(), converter=_tuple)
    payload_vars: tuple[tuple[str, Selector], ...] = field(default=(), converter=_tuple)
    commands: tuple[str, ...] = field(default=(), converter=_tuple)
    call: Callable[..., Any] | None = field(default=None, eq=False, repr=False)
    on_success: tuple[str, ...] = field(default=(), converter=_tuple)
    on_failed: tuple[str, ...] = field(default=(), converter=_tuple)

    kind: ClassVar[JobKind] = JobKind.JOB

    @property
    def env_names(self) -> list[str]:
        """The names of L{resolved_env}, sorted: what the API and C{karajo check} show."""
        return [name for name, _ in self.resolved_env]


@frozen
class JobHttp(JobBase):
    """A job that sends one signed HTTP request each time its timer fires."""

    http_method: str = "GET"
    http_url: str = ""
    http_request_type: str = "query"
    http_headers: tuple[tuple[str, str], ...] = field(default=(), converter=_tuple)
    http_timeout: timedelta = timedelta(0)
    http_insecure: bool = False

    kind: ClassVar[JobKind] = JobKind.JOB_HTTP


#: How often a cluster node renews its lease, and after how long without
#: one a node counts as dead (docs/cluster.md).
DEFAULT_HEARTBEAT = timedelta(seconds=2)
DEFAULT_NODE_TIMEOUT = timedelta(seconds=15)


@frozen
class Cluster:
    """
    C{[cluster]}: this server is one node of several sharing one
    PostgreSQL database (docs/cluster.md).  C{database} is a libpq URL or
    key=value string (a C{$NAME} in the file is read from the environment
    at load): it may hold a password, so it is never shown.  C{node} is
    this node's unique name (the config loader defaults it to the host
    name).
    """

    database: str = field(default="", repr=False)
    node: str = ""
    heartbeat: timedelta = DEFAULT_HEARTBEAT
    node_timeout: timedelta = DEFAULT_NODE_TIMEOUT
    origin: Origin = field(factory=Origin, eq=False, repr=False)


@frozen
class Environment:
    """
    The whole server: C{[karajo]} settings plus every job, notif and user.

    Dicts are keyed by name, as in the original's code API.
    """

    name: str = "karajo"
    listen_address: str = "127.0.0.1:31937"
    http_timeout: timedelta = timedelta(minutes=5)
    dir_base: str = "."
    dir_public: str | None = None
    secret: str = field(default="", repr=False)
    max_job_running: int = 1
    sign_max_age: timedelta = timedelta(minutes=5)
    max_body_size: int = 1024 * 1024
    jobs: Mapping[str, Job] = field(factory=dict)
    http_jobs: Mapping[str, JobHttp] = field(factory=dict)
    notifs: Mapping[str, Notif] = field(factory=dict)
    users: Mapping[str, User] = field(factory=dict)
    tokens: Mapping[str, Token] = field(factory=dict)
    #: C{[cluster]}, or None: a single process (the default)
    cluster: Cluster | None = None
    origin: Origin = field(factory=Origin, eq=False, repr=False)

    def secret_of(self, job: Job | JobHttp) -> str:
        """A job's own secret, or the global one when it has none."""
        return job.secret if job.secret else self.secret



@frozen
class TriggerRequest:
    """
    The HTTP request that triggered a run, as a code job's callable sees it.

    A plain value rather than the live request: a queued run starts after
    the HTTP exchange is over.
    """

    method: str
    path: str
    headers: Mapping[str, str] = field(factory=dict)
    body: bytes = b""
