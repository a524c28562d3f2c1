"""
The C{karajo} command: the everyday chores around a karajo server.

    karajo hash-password [--rounds N]         bcrypt hash for user.conf
    karajo token new NAME [--scope S]          a fresh API token and its user.conf lines
    karajo sign --secret-env VAR [FILE|-]      hex HMAC-SHA256 of a payload
    karajo trigger URL --secret-env VAR [...]  send a signed webhook
        [--follow | --wait]                    ... and print / wait for its run
    karajo check [--config FILE]               validate a config, show its jobs
    karajo version

Exit status: 0 on success, 1 on a runtime error (network, I/O, a refused
request), 2 on a usage or configuration error; C{trigger --follow} and
C{--wait} exit 0, 1 or 3 when the run ended C{success}, C{failed} or
C{canceled}.  Errors go to stderr as
C{karajo: ...}; configuration errors as C{FILE:LINE: reason}.

Secrets are never taken on the command line (where C{ps} and the shell
history would show them): C{--secret-env} names an environment variable.

This is a short-lived process, so it uses the standard library (C{urllib})
rather than the reactor.
"""

from __future__ import annotations

import argparse
import datetime
import getpass
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import urljoin, urlsplit

from karajo.follow_client import FollowError, NoRedirects, follow
from karajo.kinds import JobKind
from karajo.policywords import policy_rows

__all__ = ["main", "policy_rows"]

OK, FAILED, USAGE = 0, 1, 2

API_RUN = f"/karajo/api/{JobKind.JOB.api}/run"


class CommandError(Exception):
    """Ends the command with C{karajo: MESSAGE} on stderr and C{status}."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _secret_from_env(var: str) -> bytes:
    value = os.environ.get(var)
    if not value:
        raise CommandError(
            f"environment variable {var} is {'empty' if value == '' else 'not set'}; "
            "it must hold the secret", USAGE)
    return value.encode("utf-8")


# --- hash-password -----------------------------------------------------------


def _read_password(confirm: bool) -> str:
    if sys.stdin.isatty():
        try:
            password = getpass.getpass("Password: ")
            if confirm and getpass.getpass("Again: ") != password:
                raise CommandError("the passwords do not match")
        except EOFError:
            raise CommandError("no password given") from None
        return password
    line = sys.stdin.buffer.readline()
    if not line:
        raise CommandError("no password on standard input", USAGE)
    if line.endswith(b"\n"):
        line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("the password is not UTF-8", USAGE) from None


def cmd_hash_password(args: argparse.Namespace) -> int:
    from karajo.users import BCRYPT_MAX_PASSWORD, hash_password

    password = _read_password(confirm=not args.no_confirm)
    if not password:
        raise CommandError("the password is empty", USAGE)
    if len(password.encode("utf-8")) > BCRYPT_MAX_PASSWORD:
        raise CommandError(
            f"the password is longer than {BCRYPT_MAX_PASSWORD} bytes, which bcrypt"
            " cannot use", USAGE)
    _out(hash_password(password, rounds=args.rounds))
    return OK


def _rounds(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 4 <= value <= 31:
        raise argparse.ArgumentTypeError("must be 4 to 31")
    return value


# --- token ---------------------------------------------------------------------


def cmd_token_new(args: argparse.Namespace) -> int:
    """
    Print a fresh token once, then the C{user.conf} lines holding only its
    hash: the token itself is written nowhere else.
    """
    from karajo.tokens import hash_token, new_token

    name = args.name
    if not name or any(c in name for c in '"\\') or not name.isprintable():
        raise CommandError(f"token name {name!r}: no quotes, backslashes or control"
                           " characters", USAGE)
    token = new_token()
    _out(f"token: {token}")
    _out("(shown once; send it as 'Authorization: Bearer TOKEN')")
    _out("")
    _out("add to user.conf:")
    _out(f'[token "{name}"]')
    _out(f"\thash = {hash_token(token)}")
    _out(f"\tscope = {args.scope}")
    return OK


# --- sign --------------------------------------------------------------------


def _read_payload(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        with open(name, "rb") as f:
            return f.read()
    except OSError as e:
        raise CommandError(f"cannot read {name}: {e.strerror or e}") from None


def cmd_sign(args: argparse.Namespace) -> int:
    from karajo.signature import sign

    secret = _secret_from_env(args.secret_env)
    _out(sign(secret, _read_payload(args.file)))
    return OK


# --- trigger -----------------------------------------------------------------


def _payload(data: str | None) -> bytes:
    document: Any = {}
    if data is not None:
        try:
            document = json.loads(data)
        except ValueError as e:
            raise CommandError(f"--data is not JSON: {e}", USAGE) from None
        if not isinstance(document, dict):
            raise CommandError("--data must be a JSON object", USAGE)
    document["_karajo_epoch"] = int(time.time())
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def cmd_trigger(args: argparse.Namespace) -> int:
    from karajo.signature import sign

    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CommandError(f"{args.url!r} is not an http:// or https:// URL", USAGE)
    if args.timeout <= 0:
        raise CommandError("--timeout must be positive", USAGE)
    secret = _secret_from_env(args.secret_env)
    body = _payload(args.data)
    request = urllib.request.Request(args.url, data=body, method="POST", headers={
        "Content-Type": "application/json",
        args.header_sign: sign(secret, body),
        "User-Agent": "karajo-cli",
    })
    opener = urllib.request.build_opener(NoRedirects)
    try:
        with opener.open(request, timeout=args.timeout) as response:
            status, reason, content = response.status, response.reason, response.read()
    except urllib.error.HTTPError as e:
        status, reason = e.code, e.reason
        try:
            content = e.read()
        except OSError:
            content = b""
        location = e.headers.get("Location") if e.headers else None
        if location:
            reason = f"{reason}; redirect to {location} not followed"
    except (urllib.error.URLError, OSError) as e:
        why = getattr(e, "reason", None) or e
        raise CommandError(f"cannot reach {args.url}: {why}") from None
    following = args.follow or args.wait
    if not following or not 200 <= status < 300:
        _write_body(content)
    if not 200 <= status < 300:
        sys.stderr.write(f"karajo: {args.url}: HTTP {status} {reason}\n")
        return FAILED
    if not following:
        return OK
    try:
        run = json.loads(content)["data"]["run"]
        events_url = urljoin(args.url, str(run["events_url"]))
    except (ValueError, KeyError, TypeError):
        raise CommandError(f"{args.url}: the answer names no run to follow") from None
    token = _secret_from_env(args.token_env).decode("utf-8") if args.token_env else None
    try:
        return follow(events_url, token, show=args.follow, timeout=max(args.timeout, 45.0))
    except FollowError as e:
        raise CommandError(str(e)) from None


def _write_body(content: bytes) -> None:
    if not content:
        return
    sys.stdout.buffer.write(content)
    if not content.endswith(b"\n"):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()


# --- check -------------------------------------------------------------------


def _utc(when: datetime.datetime | float) -> str:
    if not isinstance(when, datetime.datetime):
        when = datetime.datetime.fromtimestamp(when, datetime.UTC)
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _last_run(job: Any, paths: Any) -> float | None:
    """
    When the job last ran, from the run records exactly as the daemon
    restores them (L{karajo.joblog.last_run_of}: the start of the newest
    run), so C{check} and the daemon agree on the next run of an interval
    job.  Read-only: a live daemon's files are left as they are.
    """
    from karajo.joblog import RECORDS_SUFFIX, last_run_of, load_records

    try:
        records = load_records(
            paths.log_dir(job.kind, job.id), job.id,
            paths.state_file(job.kind, job.id) + RECORDS_SUFFIX,
        )
    except OSError:
        return None
    return last_run_of(records)


def _timing(job: Any, paths: Any, now: datetime.datetime) -> list[tuple[str, str]]:
    """The schedule or interval in words and the next fire, as report rows."""
    from zoneinfo import ZoneInfo

    from karajo.duration import format_duration
    from karajo.schedule import parse_schedule

    zone = job.timezone or "UTC"
    if job.schedule:
        schedule = parse_schedule(job.schedule, ZoneInfo(job.timezone) if job.timezone else None)
        words = schedule.describe()
        if zone not in words:
            words += f" ({zone})"
        rows = [("schedule", f"{job.schedule!r}: {words}")]
        if job.interval is not None:
            rows.append(("interval", f"{format_duration(job.interval)} (ignored: schedule wins)"))
        rows.append(("next run", _utc(schedule.next_after(now))))
        return rows
    if job.interval is not None:
        rows = [("interval", f"every {format_duration(job.interval)} after the last run")]
        last = _last_run(job, paths)
        if last is None:
            rows.append(("next run", "at start (it has never run)"))
        else:
            due = last + job.interval.total_seconds()
            when = _utc(due)
            rows.append(("next run", when if due > now.timestamp() else f"at start (was due {when})"))
        return rows
    return [("schedule", "none: runs only when triggered over HTTP")]


def _print_rows(rows: list[tuple[str, str]]) -> None:
    width = max((len(key) for key, _ in rows), default=0)
    for key, value in rows:
        _out(f"  {key.ljust(width)}  {value}")


def _where(origin: Any) -> str:
    if origin.line is None:
        return origin.filename
    return f"{origin.filename}:{origin.line}"


def cmd_check(args: argparse.Namespace) -> int:
    from karajo.config import load_environment
    from karajo.errors import ConfigError
    from karajo.paths import Paths
    from karajo.redact import masked_headers, masked_url

    try:
        loaded = load_environment(args.config)
    except ConfigError as e:
        for warning in e.warnings:
            sys.stderr.write(f"warning: {warning}\n")
        sys.stderr.write(f"{e}\n")
        return USAGE
    except OSError as e:
        sys.stderr.write(f"{getattr(e, 'filename', None) or args.config}: {e.strerror or e}\n")
        return USAGE
    for warning in loaded.warnings:
        sys.stderr.write(f"warning: {warning}\n")

    env = loaded.environment
    paths = Paths(env.dir_base)
    now = datetime.datetime.now(datetime.UTC)
    _out(f"{args.config}: OK ({len(env.jobs)} job(s), {len(env.http_jobs)} {JobKind.JOB_HTTP.section},"
         f" {len(loaded.warnings)} warning(s)); times in UTC, now {_utc(now)}")
    _out("")
    _out(f"[karajo] {env.name!r}")
    users = ", ".join(sorted(env.users)) or "none: the dashboard and API are public"
    _print_rows([
        ("listen_address", env.listen_address),
        ("dir_base", env.dir_base),
        ("secret", "set" if env.secret else "not set: a random one is generated at each start"),
        ("max_job_running", str(env.max_job_running)),
        ("users", users),
        ("notifs", ", ".join(sorted(env.notifs)) or "none"),
    ])

    for job in env.jobs.values():
        _out("")
        _out(f"[job \"{job.name}\"]  ID {job.id}  ({_where(job.origin)})")
        rows: list[tuple[str, str]] = []
        if job.path:
            rows.append(("trigger", f"POST {API_RUN}{job.path}"))
            sign_with = job.header_sign if job.auth_kind == "hmac-sha256" else "its own headers"
            rows.append(("auth", f"{job.auth_kind}, signature in {sign_with},"
                                 f" {'own' if job.secret else 'global'} secret"))
        else:
            rows.append(("trigger", "none (no path)"))
        rows += _timing(job, paths, now)
        rows += policy_rows(job)
        rows.append(("work dir", paths.work_dir(job.kind, job.id)))
        for attr in ("notif_on_success", "notif_on_failed"):
            if getattr(job, attr):
                rows.append((attr, ", ".join(getattr(job, attr))))
        if job.env_file:
            rows.append(("env_file", job.env_file))
        if job.env_names:
            # Names only: the values are secrets.
            rows.append(("env names", ", ".join(job.env_names)))
        _print_rows(rows)
        _out("  commands, each run as /bin/sh -c, in order:")
        for number, command in enumerate(job.commands, 1):
            _out(f"    {number}. {command!r}")

    for http_job in env.http_jobs.values():
        _out("")
        _out(f"[{JobKind.JOB_HTTP.section} \"{http_job.name}\"]  ID {http_job.id}  ({_where(http_job.origin)})")
        rows = [
            ("request", f"{http_job.http_method} {masked_url(http_job.http_url)}"),
            ("request type", http_job.http_request_type),
            ("signature",
             f"in {http_job.header_sign}, {'own' if http_job.secret else 'global'} secret"),
        ]
        for header in masked_headers(http_job.http_headers):
            rows.append(("header", header))
        rows += _timing(http_job, paths, now)
        rows += policy_rows(http_job)
        _print_rows(rows)
    if env.cluster is not None:
        _check_cluster(env)
    return OK


def _check_cluster(env: Any) -> None:
    """[cluster]: this node's digest, and the live nodes started from other files."""
    from karajo.cluster import digest_warnings, read_nodes
    from karajo.digest import config_digest

    digest = config_digest(env)
    _out("")
    _out(f"[cluster] node {env.cluster.node!r}, config digest {digest}")
    try:
        nodes = read_nodes(env.cluster.database)
    except Exception as e:  # no psycopg, no database, no tables yet: said, not fatal
        # The reason only: a connection error may quote the database string.
        _out(f"  nodes: not read from the database ({type(e).__name__})")
        return
    _out(f"  nodes: {', '.join(n for n, alive, _ in sorted(nodes) if alive) or 'none alive'}")
    for warning in digest_warnings(digest, nodes):
        sys.stderr.write(f"warning: {warning}\n")


# --- version -----------------------------------------------------------------


def cmd_version(args: argparse.Namespace) -> int:
    from karajo import __version__

    _out(__version__)
    return OK


# --- the parser --------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from karajo import __version__
    from karajo.config import DEFAULT_CONFIG
    from karajo.signature import DEFAULT_HEADER_SIGN

    parser = argparse.ArgumentParser(
        prog="karajo",
        description="Chores around a karajo server. The daemon itself runs with"
                    " 'twistd -n karajo --config FILE'.",
        epilog="Exit status: 0 success, 1 runtime error, 2 usage or configuration error.",
    )
    parser.add_argument("--version", action="version", version=f"karajo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "hash-password", help="print a bcrypt hash for user.conf",
        description="Read a password and print its bcrypt hash for the password key of"
                    " a [user \"NAME\"] section in user.conf. On a terminal the password"
                    " is asked for twice without echo; otherwise the first line of"
                    " standard input is the password (its line end removed).",
    )
    p.add_argument("--rounds", type=_rounds, default=12, metavar="N",
                   help="bcrypt cost, 4 to 31 (default 12)")
    p.add_argument("--no-confirm", action="store_true",
                   help="on a terminal, ask for the password only once")
    p.set_defaults(run=cmd_hash_password)

    p = sub.add_parser(
        "token", help="make an API token for user.conf",
        description="API tokens (Authorization: Bearer) for scripts and Prometheus.",
    )
    token_sub = p.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = token_sub.add_parser(
        "new", help="print a fresh token and the user.conf lines to add",
        description="Print a fresh random token once, then the [token \"NAME\"] section"
                    " to add to user.conf, which holds only the token's SHA-256. The"
                    " token is stored nowhere: keep it where the client reads it.",
    )
    p.add_argument("name", metavar="NAME", help="the token's name in user.conf")
    p.add_argument("--scope", choices=("read", "manage"), default="read",
                   help="read: GET API, logs, metrics; manage: also pause, resume,"
                        " cancel and run_now (default read)")
    p.set_defaults(run=cmd_token_new)

    p = sub.add_parser(
        "sign", help="print the hex HMAC-SHA256 of a payload",
        description="Print the hex HMAC-SHA256 of the exact bytes of FILE (or standard"
                    " input), as karajo expects in X-Karajo-Sign. Nothing is stripped:"
                    " 'echo' adds a newline that becomes part of the payload; use"
                    " 'printf %%s'.",
    )
    p.add_argument("--secret-env", required=True, metavar="VAR",
                   help="environment variable holding the secret")
    p.add_argument("file", nargs="?", default="-", metavar="FILE",
                   help="the payload; '-' or nothing for standard input")
    p.set_defaults(run=cmd_sign)

    p = sub.add_parser(
        "trigger", help="send a signed webhook and print the response",
        description="POST a signed JSON webhook to URL (for example"
                    f" http://127.0.0.1:31937{API_RUN}/hello-world). The body is the"
                    " --data object with _karajo_epoch set to the current time, as"
                    " compact JSON; its hex HMAC-SHA256 goes in the signature header."
                    " The response body is printed; the exit status is 0 for a 2xx"
                    " answer and 1 otherwise. Redirects are not followed. With"
                    " --follow the run's log is printed as it grows instead (read"
                    " from its events stream), with --wait nothing is; both exit"
                    " 0, 1 or 3 when the run ends success, failed or canceled.",
    )
    p.add_argument("url", metavar="URL")
    p.add_argument("--secret-env", required=True, metavar="VAR",
                   help="environment variable holding the job's secret")
    p.add_argument("--data", metavar="JSON", help="a JSON object to send (default {})")
    p.add_argument("--header-sign", default=DEFAULT_HEADER_SIGN, metavar="NAME",
                   help=f"signature header (default {DEFAULT_HEADER_SIGN})")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds to wait for the answer (default 30)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--follow", action="store_true",
                     help="print the run's log as it grows; exit 0/1/3 for success/failed/canceled")
    how.add_argument("--wait", action="store_true",
                     help="wait for the run silently; exit 0/1/3 for success/failed/canceled")
    p.add_argument("--token-env", metavar="VAR",
                   help="environment variable holding an API token, to follow"
                        " a run on a server with users")
    p.set_defaults(run=cmd_trigger)

    p = sub.add_parser(
        "check", help="validate a configuration and show its jobs",
        description="Load and validate the configuration like the daemon does, without"
                    " starting anything; print warnings, then every job with its ID,"
                    " trigger path, schedule, next run (UTC) and commands exactly as they"
                    " will run (quotes removed, inline comments cut).",
    )
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, metavar="FILE",
                   help=f"the main configuration file (default {DEFAULT_CONFIG})")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("version", help="print the version",
                       description="Print karajo's version.")
    p.set_defaults(run=cmd_version)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.run(args)
    except CommandError as e:
        sys.stderr.write(f"karajo: {e}\n")
        status = e.status
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        status = 130
    except BrokenPipeError:
        # The reader went away (`karajo check | head`): stop quietly, as
        # other Unix tools do, instead of a traceback.
        _silence_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for such a pipe
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    return status


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail too."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())
