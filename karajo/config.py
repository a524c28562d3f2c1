"""
From git-config files to a validated L{Environment}.

Two steps that a code-built server shares with a file-built one:
L{load_environment} turns files into model values (and knows every file and
line), then L{validate} checks the whole environment, pointing at the line
of the offending key.  Warnings (unknown keys, duplicates) are returned,
never silently dropped.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import string
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from typing import Any

from attrs import evolve, frozen

from karajo import gitconfig
from karajo.duration import parse_duration
from karajo.errors import ConfigError
from karajo.jobchecks import (
    HEADER_TOKEN,
    check_chains,
    check_cluster,
    check_job,
    check_job_http,
    check_notif_at,
    fail,
    job_env,
    job_payload,
)
from karajo.model import (
    Cluster,
    Environment,
    Job,
    JobHttp,
    JobKind,
    Notif,
    Origin,
    Token,
    User,
)
from karajo.validators import TokenConfigError, check_token, is_bcrypt_hash

DEFAULT_CONFIG = "/etc/karajo/karajo.conf"


@frozen
class Loaded:
    """An environment plus what the operator should be told about it."""

    environment: Environment
    warnings: tuple[str, ...]
    #: the environment variables named by C{$VAR} credentials: the daemon
    #: takes them out of its own environment once read (L{karajo.scrub}).
    credential_vars: frozenset[str] = frozenset()


# --- value converters: each gets the entries of one key (in order) -------


def _str(entries: list[gitconfig.Entry]) -> str:
    return entries[-1].value or ""


def _list(entries: list[gitconfig.Entry]) -> tuple[str, ...]:
    return tuple(e.value or "" for e in entries)


def _int(entries: list[gitconfig.Entry]) -> int:
    return gitconfig.parse_int(entries[-1])


def _bool(entries: list[gitconfig.Entry]) -> bool:
    return gitconfig.parse_bool(entries[-1])


def _duration(entries: list[gitconfig.Entry]) -> timedelta:
    entry = entries[-1]
    try:
        return parse_duration(entry.value or "")
    except ValueError as e:
        raise ConfigError(entry.filename, entry.line, f"{entry.key}: {e}") from None


def _headers(entries: list[gitconfig.Entry]) -> tuple[tuple[str, str], ...]:
    headers = []
    for e in entries:
        name, sep, value = (e.value or "").partition(":")
        if not sep:
            # The line is not shown: it may be a token missing its colon.
            raise ConfigError(e.filename, e.line, f"{e.key}: expected 'Name: value' (no ':')")
        if not HEADER_TOKEN.fullmatch(name.strip()):
            raise ConfigError(
                e.filename, e.line, f"{e.key}: {name.strip()!r} is not a header name"
            )
        headers.append((name.strip(), value.strip()))
    return tuple(headers)



Converter = Callable[[list[gitconfig.Entry]], Any]

# config key -> (model attribute, converter)
KARAJO_KEYS: dict[str, tuple[str, Converter]] = {
    "name": ("name", _str),
    "listen_address": ("listen_address", _str),
    "http_timeout": ("http_timeout", _duration),
    "dir_base": ("dir_base", _str),
    "dir_public": ("dir_public", _str),
    "secret": ("secret", _str),
    "max_job_running": ("max_job_running", _int),
    "sign_max_age": ("sign_max_age", _duration),
    "max_body_size": ("max_body_size", _int),
}
_COMMON_JOB_KEYS: dict[str, tuple[str, Converter]] = {
    "description": ("description", _str),
    "schedule": ("schedule", _str),
    "interval": ("interval", _duration),
    "timezone": ("timezone", _str),
    "secret": ("secret", _str),
    "header_sign": ("header_sign", _str),
    "log_retention": ("log_retention", _int),
    "notif_on_success": ("notif_on_success", _list),
    "notif_on_failed": ("notif_on_failed", _list),
    # the run policies (docs/configuration.md, "Run policies")
    "timeout": ("timeout", _duration),
    "retry": ("retry", _int),
    "retry_delay": ("retry_delay", _duration),
    "overlap": ("overlap", _str),
    "catch_up": ("catch_up", _duration),
    "random_delay": ("random_delay", _duration),
}
JOB_KEYS = {
    **_COMMON_JOB_KEYS,
    "path": ("path", _str),
    "env": ("env", _list),
    "env_file": ("env_file", _str),
    "match": ("match", _list),
    "payload_env": ("payload_env", _list),
    "auth_kind": ("auth_kind", _str),
    "command": ("commands", _list),
    "on_success": ("on_success", _list),
    "on_failed": ("on_failed", _list),
}
JOB_HTTP_KEYS = {
    **_COMMON_JOB_KEYS,
    "http_method": ("http_method", _str),
    "http_url": ("http_url", _str),
    "http_request_type": ("http_request_type", _str),
    "http_header": ("http_headers", _headers),
    "http_timeout": ("http_timeout", _duration),
    "http_insecure": ("http_insecure", _bool),
}
NOTIF_KEYS = {
    "kind": ("kind", _str),
    "smtp_server": ("smtp_server", _str),
    "smtp_user": ("smtp_user", _str),
    "smtp_password": ("smtp_password", _str),
    "smtp_insecure": ("smtp_insecure", _bool),
    "from": ("sender", _str),
    "to": ("to", _list),
    "url": ("url", _str),
    "secret": ("secret", _str),
    "http_header": ("http_headers", _headers),
    "http_insecure": ("http_insecure", _bool),
}
CLUSTER_KEYS = {
    "database": ("database", _str),
    "node": ("node", _str),
    "heartbeat": ("heartbeat", _duration),
    "node_timeout": ("node_timeout", _duration),
}
USER_KEYS = {"password": ("password", _str)}
TOKEN_KEYS = {"hash": ("hash", _str), "scope": ("scope", _str)}
# Keys that may repeat and accumulate: an empty entry is a value of its own.
_LIST_CONVERTERS = (_list, _headers)


def _fields(
    section: gitconfig.Section,
    keys: Mapping[str, tuple[str, Converter]],
    warnings: list[str],
) -> tuple[dict[str, Any], Origin]:
    """Convert a section's entries by C{keys}; unknown keys become warnings."""
    grouped: dict[str, list[gitconfig.Entry]] = {}
    for entry in section.entries:
        if entry.key in keys:
            grouped.setdefault(entry.key, []).append(entry)
        else:
            warnings.append(
                f"{entry.filename}:{entry.line}: unknown key {entry.key!r} "
                f"in [{_header(section)}], ignored"
            )
    values = {}
    key_lines = {}
    entry_lines = {}
    for key, entries in grouped.items():
        attr, convert = keys[key]
        if convert not in _LIST_CONVERTERS and entries[-1].value == "":
            # "key =" with nothing after it leaves the key at its default,
            # as the original documents for header_sign, http_method, ...
            continue
        values[attr] = convert(entries)
        key_lines[attr] = entries[-1].line
        if convert in _LIST_CONVERTERS:
            entry_lines[attr] = tuple(e.line for e in entries)
    return values, Origin(section.filename, section.line, key_lines, entry_lines)


def _header(section: gitconfig.Section) -> str:
    if section.subsection is None:
        return section.name
    return f'{section.name} "{section.subsection}"'


def _read_sections(path: str) -> list[gitconfig.Section]:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file") from None
    except OSError as e:
        raise ConfigError(path, None, e.strerror or str(e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(path, line, "not valid UTF-8") from None
    return gitconfig.parse(text, path)


def conf_files(directory: str) -> list[str]:
    """
    The C{*.conf} regular files of a C{job.d}-style directory, in name order;
    hidden files and directories are skipped, a missing directory is empty.
    """
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise ConfigError(directory, None, e.strerror or str(e)) from None
    return [
        os.path.join(directory, n)
        for n in names
        if n.endswith(".conf")
        and not n.startswith(".")
        and os.path.isfile(os.path.join(directory, n))
    ]


def _first(seen: Mapping[str, Any], name: str, section: gitconfig.Section, warnings: list[str]) -> bool:
    """
    Whether C{section} is the first of its kind and name; a later one is
    reported and ignored (the first one read wins).
    """
    if name not in seen:
        return True
    first = seen[name].origin
    warnings.append(
        f"{section.filename}:{section.line}: duplicate [{_header(section)}] "
        f"ignored; the first one, at {first.filename}:{first.line}, is used"
    )
    return False


def _need_name(section: gitconfig.Section) -> str:
    if not section.subsection:
        raise ConfigError(
            section.filename,
            section.line,
            f'[{section.name}] needs a name: [{section.name} "NAME"]',
        )
    return section.subsection


def _credential(
    value: str, origin: Origin, attr: str, environ: Mapping[str, str], used: set[str]
) -> str:
    """
    A credential written as C{$NAME} comes from the environment so that
    config files can be shared without the password in them; C{NAME} is
    added to C{used}.
    """
    if not value.startswith("$"):
        return value
    var = value[1:]
    if var not in environ:
        raise ConfigError(
            origin.filename,
            origin.line_of(attr),
            f"{attr}: environment variable {var} is not set",
        )
    used.add(var)
    return environ[var]


def load_environment(
    path: str, environ: Mapping[str, str] | None = None
) -> Loaded:
    """
    Read the main config file and everything it implies under C{dir_base}
    (C{job.d/}, C{job_http.d/}, C{user.conf}), then L{validate} it.
    """
    environ = os.environ if environ is None else environ
    warnings: list[str] = []
    jobs: dict[str, Job] = {}
    http_jobs: dict[str, JobHttp] = {}
    notifs: dict[str, Notif] = {}
    users: dict[str, User] = {}
    tokens: dict[str, Token] = {}
    env_values: dict[str, Any] = {}
    env_origin = Origin(path, None)
    cluster: Cluster | None = None
    main_dir = os.path.dirname(os.path.abspath(path))
    used: set[str] = set()

    def add_job_section(section: gitconfig.Section, allowed: tuple[str, ...]) -> bool:
        if section.name not in allowed:
            return False
        name = _need_name(section)
        if section.name == JobKind.JOB.section:
            values, origin = _fields(section, JOB_KEYS, warnings)
            if "env_file" in values:
                # Relative to the main file's directory, wherever the job is
                # written (job.d/ too) and wherever the daemon was started.
                values["env_file"] = os.path.join(main_dir, values["env_file"])
            if _first(jobs, name, section, warnings):
                jobs[name] = Job(name=name, origin=origin, **values)
        else:
            values, origin = _fields(section, JOB_HTTP_KEYS, warnings)
            if _first(http_jobs, name, section, warnings):
                http_jobs[name] = JobHttp(name=name, origin=origin, **values)
        return True

    for section in _read_sections(path):
        if section.name == "karajo" and section.subsection is None:
            values, env_origin = _fields(section, KARAJO_KEYS, warnings)
            env_values.update(values)
        elif section.name == "cluster" and section.subsection is None:
            values, origin = _fields(section, CLUSTER_KEYS, warnings)
            if "database" in values:
                values["database"] = _credential(values["database"], origin, "database",
                                                 environ, used)
            values.setdefault("node", socket.gethostname().split(".")[0])
            cluster = Cluster(origin=origin, **values)
        elif section.name == "notif":
            name = _need_name(section)
            values, origin = _fields(section, NOTIF_KEYS, warnings)
            for attr in ("smtp_user", "smtp_password", "secret"):
                if attr in values:
                    values[attr] = _credential(values[attr], origin, attr, environ, used)
            if _first(notifs, name, section, warnings):
                notifs[name] = Notif(name=name, origin=origin, **values)
        elif not add_job_section(section, (JobKind.JOB.section, JobKind.JOB_HTTP.section)):
            warnings.append(
                f"{section.filename}:{section.line}: unknown section "
                f"[{_header(section)}], ignored"
            )

    dir_base = os.path.abspath(env_values.get("dir_base") or ".")
    env_values["dir_base"] = dir_base
    etc = os.path.join(dir_base, "etc", "karajo")
    for subdir, kind in ((k.config_dir, k.section) for k in JobKind):
        for file in conf_files(os.path.join(etc, subdir)):
            for section in _read_sections(file):
                if not add_job_section(section, (kind,)):
                    warnings.append(
                        f"{section.filename}:{section.line}: [{_header(section)}] "
                        f"does not belong in {subdir}/, ignored"
                    )

    user_conf = os.path.join(etc, "user.conf")
    if os.path.isfile(user_conf):
        for section in _read_sections(user_conf):
            if section.name == "token":
                name = _need_name(section)
                values, origin = _fields(section, TOKEN_KEYS, warnings)
                if _first(tokens, name, section, warnings):
                    tokens[name] = Token(name=name, origin=origin, **values)
                continue
            if section.name != "user":
                warnings.append(
                    f"{section.filename}:{section.line}: [{_header(section)}] "
                    "does not belong in user.conf, ignored"
                )
                continue
            name = _need_name(section)
            values, origin = _fields(section, USER_KEYS, warnings)
            if _first(users, name, section, warnings):
                users[name] = User(name=name, origin=origin, password=values.get("password", ""))

    environment = Environment(
        jobs=jobs,
        http_jobs=http_jobs,
        notifs=notifs,
        users=users,
        tokens=tokens,
        cluster=cluster,
        origin=env_origin,
        **env_values,
    )
    try:
        environment, more = validate(environment)
    except ConfigError as e:
        e.warnings = tuple(warnings)
        raise
    return Loaded(environment, tuple(warnings) + more, frozenset(used))


# --- validation shared by file and code ----------------------------------



_LISTEN = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})$")


def listen_endpoint(listen_address: str) -> str:
    """
    Turn C{host:port} (or C{:port} for every interface) into a Twisted
    server endpoint description; C{ValueError} when it is not one.
    """
    m = _LISTEN.match(listen_address.strip())
    if not m or not 0 <= int(m["port"]) <= 65535:
        raise ValueError(f"listen_address {listen_address!r} is not host:port")
    port = int(m["port"])
    if m["v6"]:
        return f"tcp6:{port}:interface=" + m["v6"].replace(":", r"\:")
    if m["host"]:
        return f"tcp:{port}:interface={m['host']}"
    return f"tcp:{port}"


def _named(items: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """Fill an empty name from its dict key, as a code-built env writes them."""
    out = {}
    for key, item in items.items():
        if not item.name:
            item = evolve(item, name=key)
        elif item.name != key:
            raise fail(item.origin, None, f"{kind} {key!r} holds a value named {item.name!r}")
        out[key] = item
    return out


def _unique_ids(jobs: Iterable[Job | JobHttp], kind: str) -> None:
    seen: dict[str, Job | JobHttp] = {}
    for job in jobs:
        if job.id in seen:
            other = seen[job.id]
            raise fail(
                job.origin, None,
                f"{kind} {job.name!r} has the same ID {job.id!r} as {other.name!r}",
            )
        seen[job.id] = job


def validate(env: Environment) -> tuple[Environment, tuple[str, ...]]:
    """
    Check a whole environment (from files or code) and return it with
    defaults applied, plus warnings.  Raises L{ConfigError}.
    """
    warnings: list[str] = []
    origin = env.origin
    if not env.name:
        env = evolve(env, name="karajo")
    # Relative to the current directory once, so nothing later depends on
    # where the daemon happens to be when it writes.
    env = evolve(env, dir_base=os.path.abspath(env.dir_base or "."))
    try:
        listen_endpoint(env.listen_address)
    except ValueError as e:
        raise fail(origin, "listen_address", str(e)) from None
    if env.max_job_running < 1:
        raise fail(origin, "max_job_running", "max_job_running: must be at least 1")
    if env.max_body_size < 1:
        raise fail(origin, "max_body_size", "max_body_size: must be positive")
    if env.sign_max_age <= timedelta(0):
        raise fail(origin, "sign_max_age", "sign_max_age: must be positive")
    if env.dir_public and not os.path.isdir(env.dir_public):
        raise fail(origin, "dir_public", f"dir_public: {env.dir_public!r} is not a directory")

    if env.cluster is not None:
        check_cluster(env.cluster)
        if not env.secret:
            # Generated at each start, it would differ on every node.
            warnings.append(f"{env.cluster.origin.filename}:{env.cluster.origin.line}: "
                            "[cluster] without [karajo] secret: each node generates its own, "
                            "so a request signed for one node is refused by the others")

    notifs = _named(env.notifs, "notif")
    for notif in notifs.values():
        check_notif_at(notif)
    env = evolve(env, notifs=notifs)

    jobs = {k: check_job(j, env) for k, j in _named(env.jobs, JobKind.JOB.section).items()}
    jobs = {k: evolve(j, resolved_env=job_env(j, warnings)) for k, j in jobs.items()}
    jobs = {k: job_payload(j, warnings) for k, j in jobs.items()}
    http_jobs = {k: check_job_http(j, env) for k, j in _named(env.http_jobs, JobKind.JOB_HTTP.section).items()}
    _unique_ids(jobs.values(), JobKind.JOB.section)
    _unique_ids(http_jobs.values(), JobKind.JOB_HTTP.section)
    check_chains(jobs)

    paths: dict[str, Job] = {}
    for job in jobs.values():
        if job.path and job.path in paths:
            raise fail(
                job.origin, "path",
                f"path: {job.path} is already used by job {paths[job.path].name!r}",
            )
        if job.path:
            paths[job.path] = job
    for any_job in [*jobs.values(), *http_jobs.values()]:
        if any_job.schedule and any_job.interval is not None:
            line = any_job.origin.line_of("interval")
            warnings.append(
                f"{any_job.origin.filename}:{line}: {any_job.name!r} has both schedule and "
                "interval; the schedule is used"
            )

    users = _named(env.users, "user")
    for user in users.values():
        if not user.password:
            raise fail(user.origin, None, f'[user "{user.name}"] has no password')
        if not is_bcrypt_hash(user.password):
            raise fail(
                user.origin, "password",
                "password: must be a bcrypt hash ($2a$, $2b$ or $2y$; see karajo hash-password)",
            )

    tokens = _named(env.tokens, "token")
    for token in tokens.values():
        try:
            check_token(token)
        except TokenConfigError as e:
            raise fail(token.origin, e.key, str(e)) from None

    return (
        evolve(env, jobs=jobs, http_jobs=http_jobs, users=users, tokens=tokens),
        tuple(warnings),
    )


_SECRET_ALPHABET = string.ascii_letters + string.digits


def generate_secret() -> str:
    """32 random letters and digits, as the original makes when none is set."""
    return "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(32))
