"""
Dashboard login and server-side sessions.

The original karajo left its API open to anyone who could reach the port.
When users are configured (C{user.conf} or code), the HTTP layer requires a
session made here; with no users, L{Sessions.enabled} is false and the API
stays public as in the original.

Design notes (why, not just what):

  - Password hashes are bcrypt (C{$2a$}, C{$2b$}, C{$2y$}), checked off the
    reactor thread (L{threaded_check}): a bcrypt check at cost 12 takes a quarter of
    a second, which would freeze every other request and every timer.
  - Failures are rate limited per client (IPv6 clients per /64, since one
    host usually owns a whole /64).  The throttle is checked I{before}
    spending a bcrypt check, so a flood of guesses costs no CPU, and checks
    still in flight count against the limit so a burst of concurrent guesses
    cannot slip through before the first failure is recorded.  A successful
    login does not clear the client's failures: otherwise anyone holding one
    account could interleave its own login with guesses at another.
  - An unknown user still costs one bcrypt check against a dummy hash of the
    same cost, so response time does not tell which names exist; the error
    message is the same for both cases.
  - Sessions expire on the server (a stolen cookie is not valid forever), are
    looked up by a 256-bit random token, and carry a separate CSRF token that
    the page must echo in C{X-Karajo-CSRF} on state-changing calls.
  - Every table is bounded and evicts its oldest entry, so no client can grow
    the server's memory without limit.
  - Neither passwords, hashes nor tokens are ever logged or shown in a repr;
    an unknown login name is not logged either (users often type their
    password into the name field).
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import bcrypt
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from karajo.model import User
from karajo.validators import normalize_hash

__all__ = [
    "COOKIE_NAME",
    "CSRF_HEADER",
    "LoginFailed",
    "LoginThrottled",
    "Session",
    "Sessions",
    "hash_password",
    "threaded_check",
]

COOKIE_NAME = "karajo_session"
CSRF_HEADER = "X-Karajo-CSRF"

log = Logger()

#: bcrypt only uses the first 72 bytes of a password; the C{bcrypt} package
#: refuses longer ones instead of truncating, but hashes made by other tools
#: (htpasswd, the original Go program) were made from the truncated bytes.
BCRYPT_MAX_PASSWORD = 72

_LOGIN_FAILED_MESSAGE = "invalid name or password"

_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_DEFAULT_COST = 12
# A session or CSRF token is 43 characters (32 bytes, URL-safe base64);
# anything much longer is garbage and is not worth hashing into a lookup.
_MAX_TOKEN_LENGTH = 128


@attrs.frozen
class Session:
    """
    A logged-in user.

    C{token} goes into the session cookie and C{csrf} into pages; both are
    bearer secrets, so neither appears in C{repr()} (and thus in logs).
    """

    token: str = attrs.field(repr=False)
    user: str
    csrf: str = attrs.field(repr=False)
    expires: float


class LoginFailed(Exception):
    """
    Wrong name or wrong password.

    One message for both, so that the answer does not reveal which names
    exist.
    """

    def __init__(self, message: str = _LOGIN_FAILED_MESSAGE) -> None:
        super().__init__(message)
        self.message = message


class LoginThrottled(Exception):
    """
    Too many failed logins from this client recently.

    C{retry_after} is a whole number of seconds (suitable for a
    C{Retry-After} header) after which a new attempt will be checked.
    """

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"too many failed logins; retry in {retry_after} s")
        self.message = str(self)


def hash_password(password: str, rounds: int = 12) -> str:
    """
    Make a C{$2b$} bcrypt hash of C{password} for C{user.conf}.

    Passwords longer than 72 bytes are refused (C{ValueError}) rather than
    silently truncated, so an operator never believes the tail of a long
    password matters.
    """
    return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(rounds)).decode("ascii")


def bcrypt_check(password: str, hashed: str) -> bool:
    """
    Blocking bcrypt comparison, run in a thread by L{threaded_check}.

    The password is truncated to 72 bytes as bcrypt itself always did; a
    malformed hash raises C{ValueError}.
    """
    secret = password.encode("utf-8", "surrogatepass")[:BCRYPT_MAX_PASSWORD]
    return bcrypt.checkpw(secret, hashed.encode("ascii"))


def threaded_check(run_in_thread: Callable[..., Deferred[Any]]) -> Callable[[str, str], Deferred[bool]]:
    """
    The check a server uses: L{bcrypt_check} through C{run_in_thread}
    (C{f, *args -> Deferred} on the reactor's thread pool), since one check
    takes a quarter of a second of CPU.
    """

    def check(password: str, hashed: str) -> Deferred[bool]:
        return run_in_thread(bcrypt_check, password, hashed)

    return check


def _dummy_hash(cost: int) -> str:
    """
    A well-formed bcrypt hash that no password matches.

    Only the salt and cost decide how long a check takes, so a random salt
    with a random digest costs exactly as much as a real hash of that cost,
    without spending a hash computation to make it.
    """
    salt = bcrypt.gensalt(cost).decode("ascii")  # canonical salt, no hashing
    digest = "".join(secrets.choice(_BCRYPT_ALPHABET) for _ in range(30))
    return salt + digest + "."


def _client_key(client: str) -> str:
    """
    The key failures are counted under for C{client}.

    IPv6 hosts are usually given a whole /64, so counting per address would
    let one host rotate through 2**64 addresses; IPv4-mapped addresses count
    as their IPv4 address.  Anything that is not an IP (a UNIX socket) is
    used as is, truncated.
    """
    try:
        addr = ipaddress.ip_address(client)
    except ValueError:
        return client[:64]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


@attrs.define
class _Failures:
    """Recent failure times of one client and its checks still running."""

    times: deque[float] = attrs.field(factory=deque)
    pending: int = 0


def _as_text(value: str | bytes | None) -> str | None:
    """A token from a cookie or header as text, or None if unusable."""
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or not value or len(value) > _MAX_TOKEN_LENGTH:
        return None
    if not value.isascii():
        return None
    return value


class Sessions:
    """
    Checks logins and keeps the sessions they create.

    Time comes from C{clock} (the reactor, or a C{task.Clock} in tests);
    nothing is scheduled, expired entries are dropped lazily.  C{check}
    compares a password with a hash (L{threaded_check} in a server: bcrypt
    off the reactor thread); it is required, so no default can quietly
    reach for the global reactor's threads.
    """

    def __init__(
        self,
        users: Mapping[str, User],
        clock: IReactorTime,
        *,
        ttl: float = 12 * 3600,
        check: Callable[[str, str], Deferred[bool]],
        max_failures: int = 5,
        failure_window: float = 300.0,
        max_sessions: int = 10_000,
        max_clients: int = 10_000,
    ) -> None:
        self._set_users(users)
        self._clock = clock
        self._ttl = ttl
        self._check = check
        self._max_failures = max_failures
        self._failure_window = failure_window
        self._max_sessions = max_sessions
        self._max_clients = max_clients
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._failures: OrderedDict[str, _Failures] = OrderedDict()

    def _set_users(self, users: Mapping[str, User]) -> None:
        self._users = dict(users)
        # An unknown name is checked against a dummy of the highest cost:
        # with the most common one, a name whose hash costs more answered
        # measurably slower than an unknown name, which told it exists.
        costs = {
            int(normalized[4:6])
            for user in self._users.values()
            if (normalized := normalize_hash(user.password)) is not None
        }
        self._dummy = _dummy_hash(max(costs, default=_DEFAULT_COST))

    def replace_users(self, users: Mapping[str, User]) -> int:
        """
        A reload's users (docs/behaviour.md, "Reloading"): the sessions of
        a user who is gone, or whose password hash changed, end now.
        Returns how many ended.
        """
        old = self._users
        self._set_users(users)
        ended = [
            token for token, session in self._sessions.items()
            if self._users.get(session.user) != old.get(session.user)
        ]
        for token in ended:
            del self._sessions[token]
        if ended:
            log.info("{count} session(s) ended: their user was removed or changed",
                     count=len(ended))
        return len(ended)

    @property
    def enabled(self) -> bool:
        """True when any user exists: the API then requires a session."""
        return bool(self._users)

    # -- login ------------------------------------------------------------

    async def login(self, name: str, password: str, client: str) -> Session:
        """
        Check C{name} and C{password} from C{client} (the remote IP).

        @raise LoginThrottled: too many recent failures from this client; the
            password is not even checked.
        @raise LoginFailed: wrong name or password.
        """
        key = _client_key(client)
        record = self._failure_record(key)
        self._throttle_logged(record, client)

        user = self._users.get(name)
        hashed = None
        if user is not None:
            hashed = normalize_hash(user.password)
            if hashed is None:
                log.error(
                    "user {user} has a malformed password hash; "
                    "it needs a bcrypt $2a$, $2b$ or $2y$ hash",
                    user=name,
                )

        record.pending += 1
        try:
            ok = await self._run_check(password, hashed if hashed is not None else self._dummy)
        finally:
            record.pending -= 1
        if ok and hashed is not None and self._users.get(name) != user:
            # A reload removed or changed the user while the check ran.
            ok = False
        if ok and hashed is not None:
            if not record.times and not record.pending and self._failures.get(key) is record:
                del self._failures[key]
            session = self._new_session(name)
            log.info("login: {user} from {client}", user=session.user, client=client)
            return session

        self._record_failure(key, record)
        log.warn(
            "failed login for {user} from {client}",
            user=name if user is not None else "<unknown user>",
            client=client,
        )
        raise LoginFailed()

    async def _run_check(self, password: str, hashed: str) -> bool:
        """The check's verdict; any error counts as a mismatch."""
        try:
            return bool(await self._check(password, hashed))
        except Exception:
            # The failure's text may quote the hash; log only its type.
            log.failure("password check raised; counted as a failed login")
            return False

    def _failure_record(self, key: str) -> _Failures:
        """
        This client's record, old failures dropped, stored as the newest.

        It is stored before the check runs so that concurrent attempts from
        one client share one C{pending} count.
        """
        record = self._failures.get(key)
        if record is None:
            record = self._failures[key] = _Failures()
            while len(self._failures) > self._max_clients:
                self._failures.popitem(last=False)
        else:
            self._failures.move_to_end(key)
            horizon = self._clock.seconds() - self._failure_window
            while record.times and record.times[0] <= horizon:
                record.times.popleft()
        return record

    def check_throttle(self, client: str) -> None:
        """
        Refuse C{client} now if its next login would be throttled: the API
        calls this before it reads the login's body, so a throttled client
        costs no parsing.  L{login} checks again.

        @raise LoginThrottled: too many recent failures from this client.
        """
        self._throttle_logged(self._failure_record(_client_key(client)), client)

    def _throttle_logged(self, record: _Failures, client: str) -> None:
        try:
            self._throttle(record)
        except LoginThrottled:
            log.warn("login throttled for {client}", client=client)
            raise

    def _throttle(self, record: _Failures) -> None:
        """Raise L{LoginThrottled} when this attempt would exceed the limit."""
        if len(record.times) + record.pending < self._max_failures:
            return
        if len(record.times) >= self._max_failures:
            oldest = record.times[-self._max_failures]
            wait = oldest + self._failure_window - self._clock.seconds()
        else:
            # Only checks still running fill the budget: they end quickly.
            wait = 1.0
        raise LoginThrottled(max(1, math.ceil(wait)))

    def _record_failure(self, key: str, record: _Failures) -> None:
        """Remember a failure, keeping the table bounded."""
        record.times.append(self._clock.seconds())
        while len(record.times) > self._max_failures:
            record.times.popleft()
        # The record may have been evicted while its check ran.
        self._failures[key] = record
        self._failures.move_to_end(key)
        while len(self._failures) > self._max_clients:
            self._failures.popitem(last=False)

    # -- sessions -----------------------------------------------------------

    def _new_session(self, user: str) -> Session:
        """Create, store and return a session, evicting the oldest if full."""
        self._prune()
        session = Session(
            token=secrets.token_urlsafe(32),
            user=user,
            csrf=secrets.token_urlsafe(32),
            expires=self._clock.seconds() + self._ttl,
        )
        self._sessions[session.token] = session
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        return session

    def _prune(self) -> None:
        """
        Drop expired sessions from the front of the table.

        Sessions are stored in creation order with one ttl, so they also
        expire in that order.
        """
        now = self._clock.seconds()
        while self._sessions:
            token, session = next(iter(self._sessions.items()))
            if session.expires > now:
                break
            del self._sessions[token]

    def get(self, token: str | bytes | None) -> Session | None:
        """The live session for a cookie value, or None."""
        text = _as_text(token)
        if text is None:
            return None
        session = self._sessions.get(text)
        if session is None:
            return None
        if session.expires <= self._clock.seconds():
            del self._sessions[text]
            return None
        return session

    def from_request(self, request: Any) -> Session | None:
        """The live session named by a request's cookie, or None (the one place that reads it)."""
        return self.get(request.getCookie(COOKIE_NAME.encode("ascii")))

    def logout(self, token: str | bytes | None) -> None:
        """Forget a session; unknown or malformed tokens are ignored."""
        text = _as_text(token)
        if text is not None:
            session = self._sessions.pop(text, None)
            if session is not None:
                log.info("logout: {user}", user=session.user)

    def check_csrf(self, session: Session, header_value: bytes | str | None) -> bool:
        """
        Whether the request carries this session's CSRF token.

        Compared in constant time so the token cannot be guessed byte by
        byte from response times.
        """
        text = _as_text(header_value)
        if text is None:
            return False
        return hmac.compare_digest(session.csrf.encode("ascii"), text.encode("ascii"))
