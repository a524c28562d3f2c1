"""
Who may call what in the API: sessions and their CSRF token, API tokens
(C{Authorization: Bearer}), the global secret's signature on management
calls, the replay guard, and the bookkeeping of refused webhook
signatures.

An API token is read from the C{Authorization} header only, never from a
cookie: a browser never sends it on its own, so a bearer request needs no
CSRF check.  A request that presents one is judged by it alone: a wrong
token is refused (401) even where no login is needed, rather than ignored,
so a misconfigured scraper fails loudly.

The rules per route are in L{karajo.web.api}'s docstring; this module
holds the checks, each raising an error of L{karajo.web.errors} that the
API answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from karajo.replay import FULL, ReplayGuard
from karajo.signature import DEFAULT_HEADER_SIGN, verify
from karajo.tokens import match
from karajo.users import CSRF_HEADER
from karajo.web.errors import (
    CSRFRefused,
    ReplayMemoryFull,
    RequestExpired,
    RequestReplayed,
    TokenScope,
    Unauthorized,
)

__all__ = ["MANAGE", "READ", "Access", "RefusalLog", "client_host", "header_getter"]

log = Logger()

_CSRF_B = CSRF_HEADER.encode("ascii")
_BEARER = b"bearer"
#: Read tokens may call the GET API, logs and metrics; manage tokens also
#: pause, resume, cancel and run_now.
READ = "read"
MANAGE = "manage"


def client_host(request: Any) -> str:
    """The client's address, for logs and the login throttle."""
    address = request.getClientAddress()
    return str(getattr(address, "host", None) or getattr(address, "name", None) or "unknown")


def header_getter(request: Any) -> Callable[[str], bytes | None]:
    """A request's first value of a header by name, as L{verify} reads headers."""
    raw = request.requestHeaders.getRawHeaders

    def get(name: str) -> bytes | None:
        values = raw(name.encode("latin-1"))
        return values[0] if values else None

    return get


class Access:
    """
    The access checks of one API.

    @param env: the environment (its global secret signs management calls).
    @param sessions: the login sessions (L{karajo.users.Sessions}).
    @param guard: the replay guard of signed requests.
    """

    def __init__(self, env: Any, sessions: Any, guard: ReplayGuard) -> None:
        self._env = env
        self._sessions = sessions
        self._guard = guard

    def use(self, env: Any) -> None:
        """
        A reload's environment from now on: its global secret and its API
        tokens.  One object for the API and the metrics page, so both see it.
        """
        self._env = env

    def session(self, request: Any) -> Any:
        """The request's live session, or None."""
        return self._sessions.from_request(request)

    def token(self, request: Any) -> Any:
        """
        The API token of the request's C{Authorization: Bearer} header, or
        None when it has no such header.

        @raise Unauthorized: a bearer header whose token is not configured;
            the message says no more than that (not which part was wrong).
        """
        values = request.requestHeaders.getRawHeaders(b"authorization")
        if not values:
            return None
        scheme, _, presented = values[0].strip().partition(b" ")
        if scheme.lower() != _BEARER:
            return None
        found = match(self._env.tokens.values(), presented.strip())
        if found is None:
            raise Unauthorized("invalid API token")
        return found

    def require_session(self, request: Any) -> None:
        """
        Refuse a reading request without a session, when there are users;
        a valid API token of any scope stands for a session.
        """
        if self.token(request) is not None:
            return
        if self._sessions.enabled and self.session(request) is None:
            raise Unauthorized("login required")

    def _same_origin(self, request: Any) -> bool:
        origin = request.getHeader(b"origin")
        host = request.getHeader(b"host")
        if not origin or not host:
            return False
        scheme = b"https" if request.isSecure() else b"http"
        return origin.strip().lower() == scheme + b"://" + host.strip().lower()

    def csrf_ok(self, request: Any, session: Any) -> bool:
        """
        The session's CSRF token in its header, or else a same-origin
        C{Origin}.  C{Origin: null} (a sandboxed document, such as a public
        file under its CSP, a C{data:} URL, a redirect across origins) is
        refused either way: no page of karajo itself has an opaque origin.
        """
        origin = request.getHeader(b"origin")
        if origin is not None and origin.strip().lower() == b"null":
            return False
        value = request.getHeader(_CSRF_B)
        if value is not None:
            try:
                text = value.decode("ascii")
            except UnicodeDecodeError:
                return False
            return bool(self._sessions.check_csrf(session, text))
        return self._same_origin(request)

    def check_replay(
        self, epoch: int | None, key: bytes | None, delivery: bytes | None
    ) -> Callable[[], None]:
        """
        Refuse a replay or an expired payload; else record it and return
        how to forget it again if the request is refused further on.
        """
        reason = self._guard.check(epoch, key, delivery)
        if reason is None:
            return lambda: self._guard.forget(key, delivery)
        if reason == FULL:
            raise ReplayMemoryFull(reason)
        if reason.startswith("replayed"):
            raise RequestReplayed(f"{reason}: a signed request is accepted only once")
        raise RequestExpired(reason)

    def authorize_management(
        self, request: Any, action: str, signed: bytes, epoch_of: Callable[[], int | None]
    ) -> Callable[[], None]:
        """
        Accept a C{manage} API token (no signature, no replay guard: the
        token is the proof, and it is not in the request's body), a valid
        C{X-Karajo-Sign} of C{signed} with the global secret (then the
        replay guard), or a session with CSRF protection.
        Returns how to forget the signed payload if the action is refused.

        @param action: what the request does, e.g. C{"job_exec/pause"}.  The
            replay key is this action and the signed bytes (which name the
            job), never the request's path: routing decodes the path, so
            its spellings (C{run_no%77}, C{/%6Barajo/...}) are one action,
            and keying on the raw path would let each spelling replay.
        """
        token = self.token(request)
        if token is not None:
            if token.scope != MANAGE:
                raise TokenScope("this API token may only read")
            return lambda: None
        reason = "missing X-Karajo-Sign header"
        if request.requestHeaders.hasHeader(b"x-karajo-sign"):
            verdict = verify(
                "hmac-sha256", self._env.secret, signed, header_getter(request),
                DEFAULT_HEADER_SIGN,
            )
            if verdict.ok:
                key = b"manage\0" + action.encode("ascii") + b"\0" + signed
                return self.check_replay(epoch_of(), key, None)
            reason = verdict.reason
        session = self.session(request)
        if session is None:
            raise Unauthorized(f"{reason}, and no session")
        if not self.csrf_ok(request, session):
            raise CSRFRefused(f"missing or wrong {CSRF_HEADER} header")
        return lambda: None


class RefusalLog:
    """
    Refused webhook signatures, counted, and logged at most once per
    C{interval} seconds: a flood of forged requests stays visible in the
    log without a disk write per request.  Also the count of signed
    webhook requests that a job's trigger rules turned away, per job
    (not logged: a GitHub hook sends many events a job ignores).
    """

    def __init__(self, clock: IReactorTime, interval: float = 10.0) -> None:
        self._clock = clock
        self._interval = interval
        self._last = float("-inf")
        self._pending = 0
        self.total = 0
        #: (kind, job ID) -> signed requests whose trigger rules did not hold
        self.not_matched_by_job: dict[tuple[str, str], int] = {}

    def not_matched(self, kind: str, job_id: str) -> None:
        key = (str(kind), job_id)
        self.not_matched_by_job[key] = self.not_matched_by_job.get(key, 0) + 1

    def refused(self, job_id: str, client: str, reason: str) -> None:
        self.total += 1
        self._pending += 1
        now = self._clock.seconds()
        if now - self._last < self._interval:
            return
        log.warn(
            "refused {count} webhook request(s) since the last report; latest: "
            "job {job} from {client}: {reason}",
            count=self._pending, job=job_id, client=client, reason=reason,
        )
        self._last = now
        self._pending = 0
