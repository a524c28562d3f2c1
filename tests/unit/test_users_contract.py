"""
L{karajo.users} where the mutation run found no test: messages and log
events an operator reads, the shape of tokens and of the dummy hash, the
keys failures are counted under, the default table sizes, and the cookie
a request is read from.  All on a L{task.Clock}, with checks that never
run bcrypt unless the test is about bcrypt itself.
"""

from __future__ import annotations

import bcrypt
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from karajo.model import User
from karajo.users import (
    LoginFailed,
    LoginThrottled,
    Sessions,
    bcrypt_check,
    hash_password,
)
from karajo.validators import is_bcrypt_hash

#: A well-formed cost-4 hash (of "pw"); the checks below never verify it.
HASH4 = "$2b$04$" + "a" * 53


def sessions_with(users: dict[str, str] | None = None, ok: bool = False, **kw):
    """Sessions on a Clock whose check answers C{ok} and records the hashes asked about."""
    clock = Clock()
    clock.advance(1_700_000_000)
    seen: list[str] = []

    def check(password: str, hashed: str) -> Deferred[bool]:
        seen.append(hashed)
        return succeed(ok)

    table = {n: User(name=n, password=h) for n, h in (users or {"alice": HASH4}).items()}
    kw.setdefault("check", check)
    return Sessions(table, clock, **kw), clock, seen


def attempt(sessions: Sessions, name: str = "alice", client: str = "192.0.2.1") -> Deferred:
    return Deferred.fromCoroutine(sessions.login(name, "pw", client))


class EventCatcher:
    def catch(self) -> list[dict]:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)  # type: ignore[attr-defined]
        return events


class MessageTests(SynchronousTestCase):
    def test_login_failed(self) -> None:
        self.assertEqual(LoginFailed().message, "invalid name or password")
        self.assertEqual(str(LoginFailed()), "invalid name or password")

    def test_login_throttled(self) -> None:
        error = LoginThrottled(7)
        self.assertEqual(error.retry_after, 7)
        self.assertEqual(error.message, "too many failed logins; retry in 7 s")
        self.assertEqual(str(error), "too many failed logins; retry in 7 s")


class HashTests(SynchronousTestCase):
    def test_default_cost(self) -> None:
        """hash-password makes cost-12 $2b$ hashes unless told otherwise."""
        self.assertTrue(hash_password("x").startswith("$2b$12$"))

    def test_is_bcrypt_hash(self) -> None:
        for good in ("$2a$04$" + "a" * 53, "$2b$31$" + "a" * 53, "$2y$10$" + "." * 53):
            self.assertTrue(is_bcrypt_hash(good), good)
        for bad in ("$2b$03$" + "a" * 53, "$2b$32$" + "a" * 53, "$2x$10$" + "a" * 53,
                    "$2b$10$" + "a" * 52, "", "plain"):
            self.assertFalse(is_bcrypt_hash(bad), bad)

    def test_lone_surrogate_password(self) -> None:
        """
        A password that is not valid Unicode text (a lone surrogate, as a
        surrogate-escaping decoder gives) is checked byte for byte, never
        an encoding error.
        """
        hashed = bcrypt.hashpw(b"\xed\xa0\x80", bcrypt.gensalt(4)).decode()
        self.assertTrue(bcrypt_check("\ud800", hashed))
        self.assertFalse(bcrypt_check("\ud801", hashed))


class DummyHashTests(SynchronousTestCase):
    """An unknown name costs one check against a well-formed hash of the users' highest cost."""

    def test_same_cost_well_formed(self) -> None:
        cost10 = "$2b$10$" + "b" * 53
        sessions, _, seen = sessions_with({"alice": cost10, "bob": cost10, "carol": HASH4})
        self.failureResultOf(attempt(sessions, "nobody"), LoginFailed)
        (dummy,) = seen
        self.assertTrue(is_bcrypt_hash(dummy), dummy)
        self.assertTrue(dummy.startswith("$2b$10$"), dummy)
        self.assertNotIn(dummy, (cost10, HASH4))

    def test_highest_cost_not_most_common(self) -> None:
        """
        With users of several costs, the dummy has the highest: a name whose
        hash costs more than the dummy answered slower than an unknown one.
        """
        cost10 = "$2b$10$" + "b" * 53
        sessions, _, seen = sessions_with({"alice": HASH4, "bob": HASH4, "carol": cost10})
        self.failureResultOf(attempt(sessions, "nobody"), LoginFailed)
        self.assertTrue(seen[0].startswith("$2b$10$"), seen[0])

    def test_default_cost_without_users_hashes(self) -> None:
        sessions, _, seen = sessions_with({"alice": "not-a-hash"})
        self.failureResultOf(attempt(sessions, "nobody"), LoginFailed)
        self.assertTrue(seen[0].startswith("$2b$12$"), seen[0])
        self.assertTrue(is_bcrypt_hash(seen[0]))


class ClientKeyTests(SynchronousTestCase):
    """Failures count per address, per /64 for IPv6, per 64 characters otherwise."""

    def throttled_after_one(self, first: str, second: str) -> bool:
        sessions, _, _ = sessions_with(max_failures=1)
        self.failureResultOf(attempt(sessions, client=first), LoginFailed)
        failure = self.failureResultOf(attempt(sessions, client=second), LoginFailed, LoginThrottled)
        return isinstance(failure.value, LoginThrottled)

    def test_ipv6_64(self) -> None:
        self.assertTrue(self.throttled_after_one("2001:db8::1", "2001:db8::8000:0:0:1"))
        self.assertFalse(self.throttled_after_one("2001:db8::1", "2001:db8:0:1::1"))

    def test_ipv4_mapped(self) -> None:
        self.assertTrue(self.throttled_after_one("::ffff:192.0.2.1", "192.0.2.1"))

    def test_other_clients_truncated(self) -> None:
        """Two non-IP peers (UNIX sockets) that share 64 characters share a count."""
        self.assertTrue(self.throttled_after_one("u" * 64 + "A", "u" * 64 + "B"))
        self.assertFalse(self.throttled_after_one("u" * 63 + "A", "u" * 63 + "B"))


class TableSizeTests(SynchronousTestCase):
    def test_default_max_clients(self) -> None:
        """The failure table keeps 10,000 clients by default."""
        sessions, _, _ = sessions_with()
        for i in range(10_001):
            self.failureResultOf(attempt(sessions, client=f"c{i}"), LoginFailed)
        self.assertEqual(len(sessions._failures), 10_000)
        self.assertNotIn("c0", sessions._failures)

    def test_default_max_sessions(self) -> None:
        """The session table keeps 10,000 sessions by default; the oldest goes."""
        sessions, _, _ = sessions_with(ok=True)
        first = self.successResultOf(attempt(sessions))
        for _ in range(10_000):
            self.successResultOf(attempt(sessions))
        self.assertEqual(len(sessions._sessions), 10_000)
        self.assertIsNone(sessions.get(first.token))

    def test_failure_after_eviction_kept(self) -> None:
        """
        A failure whose client was pushed out of a full table while its
        check ran is remembered (the other client goes instead).
        """
        pending: list[Deferred[bool]] = []

        def slow(password: str, hashed: str) -> Deferred[bool]:
            d: Deferred[bool] = Deferred()
            pending.append(d)
            return d

        sessions, _, _ = sessions_with(check=slow, max_clients=1, max_failures=1)
        a = attempt(sessions, client="192.0.2.1")
        b = attempt(sessions, client="192.0.2.2")
        pending[0].callback(False)
        self.failureResultOf(a, LoginFailed)
        self.assertEqual(list(sessions._failures), ["192.0.2.1"])
        again = self.failureResultOf(attempt(sessions, client="192.0.2.1"), LoginThrottled)
        self.assertEqual(again.value.retry_after, 300)
        pending[1].callback(False)
        self.failureResultOf(b, LoginFailed)


class TokenTests(SynchronousTestCase):
    def test_token_shapes(self) -> None:
        """Session and CSRF tokens are 43 URL-safe characters (32 random bytes)."""
        sessions, _, _ = sessions_with(ok=True)
        session = self.successResultOf(attempt(sessions))
        for token in (session.token, session.csrf):
            self.assertEqual(len(token), 43)
            self.assertRegex(token, r"\A[A-Za-z0-9_-]{43}\Z")
        self.assertNotEqual(session.token, session.csrf)

    def test_from_request(self) -> None:
        """The session is read from the C{karajo_session} cookie, and only from it."""
        sessions, _, _ = sessions_with(ok=True)
        session = self.successResultOf(attempt(sessions))

        class Request:
            def __init__(self, cookies: dict[bytes, bytes]) -> None:
                self.cookies = cookies

            def getCookie(self, name: bytes) -> bytes | None:
                return self.cookies.get(name)

        token = session.token.encode()
        self.assertIs(sessions.from_request(Request({b"karajo_session": token})), session)
        self.assertIsNone(sessions.from_request(Request({b"session": token})))
        self.assertIsNone(sessions.from_request(Request({})))


class LogEventTests(EventCatcher, SynchronousTestCase):
    def test_malformed_hash_logged(self) -> None:
        """A user whose hash is malformed is named in an error event (the hash is not)."""
        events = self.catch()
        sessions, _, _ = sessions_with({"alice": "$2b$04$short"})
        self.failureResultOf(attempt(sessions), LoginFailed)
        errors = [e for e in events if e["log_level"].name == "error"]
        self.assertEqual(
            [formatEvent(e) for e in errors],
            ["user alice has a malformed password hash; it needs a bcrypt $2a$, $2b$ or $2y$ hash"],
        )
        self.assertEqual(errors[0]["user"], "alice")
        self.assertNotIn("$2b$04$short", repr(events))

    def test_check_error_logged(self) -> None:
        """A check that raises is a failed login and one critical event, without the hash."""
        events = self.catch()

        def broken(password: str, hashed: str) -> Deferred[bool]:
            raise ValueError(f"bad hash {hashed}")

        sessions, _, _ = sessions_with(check=broken)
        self.failureResultOf(attempt(sessions), LoginFailed)
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertEqual(failures[0]["log_format"], "password check raised; counted as a failed login")
        self.assertEqual(failures[0]["log_level"].name, "critical")
        self.flushLoggedErrors(ValueError)
