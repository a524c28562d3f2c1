"""
Tests for L{karajo.users}: login, throttling and sessions.
"""

from __future__ import annotations

import bcrypt
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from karajo.model import User
from karajo.service import thread_runner
from karajo.users import (
    COOKIE_NAME,
    CSRF_HEADER,
    LoginFailed,
    LoginThrottled,
    Session,
    Sessions,
    hash_password,
    threaded_check,
)

PASSWORD = "correct horse battery staple"
# Hashing is slow by design; make each test hash once, at the lowest cost.
HASH = hash_password(PASSWORD, rounds=4)
START = 1_700_000_000.0


def sync_check(calls: list[str] | None = None):
    """
    A synchronous bcrypt check (cost 4 keeps the tests fast) that records
    which hashes it was asked about.
    """

    def check(password: str, hashed: str) -> Deferred[bool]:
        if calls is not None:
            calls.append(hashed)
        try:
            return succeed(bcrypt.checkpw(password.encode(), hashed.encode()))
        except ValueError as e:
            return fail(e)

    return check


def make_sessions(
    users: dict[str, str] | None = None, **kwargs
) -> tuple[Sessions, Clock, list[str]]:
    """Sessions for C{users} (name → hash) on a task.Clock, with a sync check."""
    clock = Clock()
    clock.advance(START)
    calls: list[str] = []
    if users is None:
        users = {"alice": HASH}
    table = {name: User(name=name, password=hashed) for name, hashed in users.items()}
    kwargs.setdefault("check", sync_check(calls))
    return Sessions(table, clock, **kwargs), clock, calls


class LoginHelpers:
    """Drive the coroutine API synchronously."""

    def login(self, sessions: Sessions, name: str, password: str, client: str = "192.0.2.1"):
        """The Session from a login that must succeed."""
        return self.successResultOf(Deferred.fromCoroutine(sessions.login(name, password, client)))

    def login_error(
        self, sessions: Sessions, name: str, password: str, client: str = "192.0.2.1"
    ) -> BaseException:
        """The exception from a login that must fail."""
        failure = self.failureResultOf(
            Deferred.fromCoroutine(sessions.login(name, password, client)),
            LoginFailed,
            LoginThrottled,
        )
        return failure.value


class ConstantsTests(SynchronousTestCase):
    """The names the HTTP layer relies on."""

    def test_names(self) -> None:
        """Cookie and CSRF header names are fixed: pages and scripts use them."""
        self.assertEqual(COOKIE_NAME, "karajo_session")
        self.assertEqual(CSRF_HEADER, "X-Karajo-CSRF")


class LoginTests(LoginHelpers, SynchronousTestCase):
    """Right and wrong credentials."""

    def test_right_password(self) -> None:
        """The right password gives a session for that user."""
        sessions, clock, _ = make_sessions()
        session = self.login(sessions, "alice", PASSWORD)
        self.assertIsInstance(session, Session)
        self.assertEqual(session.user, "alice")
        self.assertEqual(session.expires, START + 12 * 3600)
        self.assertGreaterEqual(len(session.token), 43)
        self.assertGreaterEqual(len(session.csrf), 43)
        self.assertNotEqual(session.token, session.csrf)
        self.assertIs(sessions.get(session.token), session)

    def test_tokens_are_unique(self) -> None:
        """Two logins give two different sessions."""
        sessions, _, _ = make_sessions()
        one = self.login(sessions, "alice", PASSWORD)
        two = self.login(sessions, "alice", PASSWORD)
        self.assertNotEqual(one.token, two.token)
        self.assertNotEqual(one.csrf, two.csrf)

    def test_wrong_password_and_unknown_user_look_alike(self) -> None:
        """Wrong password and unknown user fail with the same message."""
        sessions, _, _ = make_sessions()
        wrong = self.login_error(sessions, "alice", "nope")
        unknown = self.login_error(sessions, "mallory", PASSWORD)
        self.assertIsInstance(wrong, LoginFailed)
        self.assertIsInstance(unknown, LoginFailed)
        self.assertEqual(str(wrong), "invalid name or password")
        self.assertEqual(str(wrong), str(unknown))

    def test_unknown_user_still_spends_a_check(self) -> None:
        """
        An unknown name is checked against a dummy hash of the users' cost,
        so timing does not reveal which names exist.
        """
        sessions, _, calls = make_sessions()
        self.login_error(sessions, "mallory", PASSWORD)
        self.assertEqual(len(calls), 1)
        self.assertNotEqual(calls[0], HASH)
        self.assertTrue(calls[0].startswith("$2b$04$"), "dummy cost follows the users' hashes")

    def test_no_users(self) -> None:
        """Without users the API is public, and no login can succeed."""
        sessions, _, calls = make_sessions(users={})
        self.assertFalse(sessions.enabled)
        self.assertIsInstance(self.login_error(sessions, "", ""), LoginFailed)
        self.assertTrue(calls[0].startswith("$2b$12$"))

    def test_enabled_with_users(self) -> None:
        """Any user makes the API require a session."""
        sessions, _, _ = make_sessions()
        self.assertTrue(sessions.enabled)

    def test_2a_hash_accepted(self) -> None:
        """A $2a$ hash (older tools) is the same algorithm and is accepted."""
        sessions, _, _ = make_sessions({"alice": "$2a$" + HASH[4:]})
        self.assertEqual(self.login(sessions, "alice", PASSWORD).user, "alice")
        self.assertIsInstance(self.login_error(sessions, "alice", "x"), LoginFailed)

    def test_2y_hash_accepted(self) -> None:
        """A $2y$ hash (PHP, htpasswd) is mapped to $2b$ and accepted."""
        calls: list[str] = []
        sessions, _, _ = make_sessions({"alice": "$2y$" + HASH[4:]}, check=sync_check(calls))
        self.assertEqual(self.login(sessions, "alice", PASSWORD).user, "alice")
        self.assertEqual(calls, ["$2b$" + HASH[4:]])

    def test_malformed_hash(self) -> None:
        """
        A malformed hash fails the login (never a crash) and is reported
        without the hash itself.
        """
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for bad in ["", "plain-text-secret", "$2x$04$" + HASH[7:], "$2b$99$" + HASH[7:], HASH[:-1]]:
            sessions, _, calls = make_sessions({"alice": bad})
            self.assertIsInstance(self.login_error(sessions, "alice", PASSWORD), LoginFailed)
            self.assertEqual(len(calls), 1, "a dummy check is still spent")
            self.assertNotEqual(calls[0], bad)
        text = repr(events)
        self.assertIn("malformed password hash", text)
        self.assertNotIn("plain-text-secret", text)
        self.assertNotIn(HASH[7:], text)

    def test_check_error_is_failure(self) -> None:
        """A check that raises counts as a failed login, not a crash."""
        sessions, _, _ = make_sessions(check=lambda p, h: fail(RuntimeError("boom")))
        self.assertIsInstance(self.login_error(sessions, "alice", PASSWORD), LoginFailed)
        self.flushLoggedErrors(RuntimeError)

    def test_long_password_default_check(self) -> None:
        """
        The default comparison truncates to bcrypt's 72 bytes like every
        other bcrypt implementation instead of raising.
        """
        from karajo.users import bcrypt_check

        long = "x" * 100
        hashed = bcrypt.hashpw(long[:72].encode(), bcrypt.gensalt(4)).decode()
        self.assertTrue(bcrypt_check(long, hashed))
        self.assertFalse(bcrypt_check("y" * 100, hashed))

    def test_hash_password(self) -> None:
        """hash_password makes a $2b$ hash of the requested cost that verifies."""
        hashed = hash_password("s3cret", rounds=4)
        self.assertTrue(hashed.startswith("$2b$04$"))
        self.assertEqual(len(hashed), 60)
        self.assertTrue(bcrypt.checkpw(b"s3cret", hashed.encode()))


class ThrottleTests(LoginHelpers, SynchronousTestCase):
    """Failures are rate limited per client."""

    def test_sixth_failure_throttled(self) -> None:
        """
        After 5 failures within the window the next attempt is refused
        without checking the password, even if it is right.
        """
        sessions, clock, calls = make_sessions()
        for _ in range(5):
            self.assertIsInstance(self.login_error(sessions, "alice", "bad"), LoginFailed)
            clock.advance(1)
        checks = len(calls)
        err = self.login_error(sessions, "alice", PASSWORD)
        self.assertIsInstance(err, LoginThrottled)
        self.assertEqual(len(calls), checks, "no bcrypt check while throttled")
        # First failure at START, window 300 s, now START + 5.
        self.assertEqual(err.retry_after, 295)
        self.assertIn("retry in 295 s", str(err))

    def test_window_passes(self) -> None:
        """Once the window has passed, logins are checked again."""
        sessions, clock, _ = make_sessions()
        for _ in range(5):
            self.login_error(sessions, "alice", "bad")
        clock.advance(299)
        self.assertIsInstance(self.login_error(sessions, "alice", PASSWORD), LoginThrottled)
        clock.advance(1)
        self.assertEqual(self.login(sessions, "alice", PASSWORD).user, "alice")

    def test_sliding_window(self) -> None:
        """Only failures inside the window count."""
        sessions, clock, _ = make_sessions()
        for _ in range(4):
            self.login_error(sessions, "alice", "bad")
        clock.advance(200)
        self.login_error(sessions, "alice", "bad")
        clock.advance(101)  # the first four are out of the window now
        self.assertIsInstance(self.login_error(sessions, "alice", "bad"), LoginFailed)

    def test_per_client(self) -> None:
        """A throttled client does not lock out another client."""
        sessions, _, _ = make_sessions()
        for _ in range(5):
            self.login_error(sessions, "alice", "bad", client="198.51.100.7")
        self.assertIsInstance(
            self.login_error(sessions, "alice", PASSWORD, client="198.51.100.7"), LoginThrottled
        )
        self.assertEqual(self.login(sessions, "alice", PASSWORD, client="198.51.100.8").user, "alice")

    def test_unknown_users_count(self) -> None:
        """Guessing names counts like guessing passwords."""
        sessions, _, _ = make_sessions()
        for i in range(5):
            self.login_error(sessions, f"user{i}", "bad")
        self.assertIsInstance(self.login_error(sessions, "alice", PASSWORD), LoginThrottled)

    def test_success_does_not_reset(self) -> None:
        """
        A successful login does not clear the client's failures: someone with
        one account must not be able to interleave it with guesses.
        """
        sessions, _, _ = make_sessions({"alice": HASH, "bob": HASH})
        for _ in range(4):
            self.login_error(sessions, "bob", "guess")
        self.login(sessions, "alice", PASSWORD)
        self.login_error(sessions, "bob", "guess")
        self.assertIsInstance(self.login_error(sessions, "bob", "guess"), LoginThrottled)

    def test_ipv6_per_64(self) -> None:
        """IPv6 clients are counted per /64, which one host usually owns."""
        sessions, _, _ = make_sessions()
        for i in range(5):
            self.login_error(sessions, "alice", "bad", client=f"2001:db8::{i + 1}")
        self.assertIsInstance(
            self.login_error(sessions, "alice", PASSWORD, client="2001:db8::ffff:1"), LoginThrottled
        )
        self.assertEqual(self.login(sessions, "alice", PASSWORD, client="2001:db8:0:1::1").user, "alice")

    def test_ipv4_mapped(self) -> None:
        """An IPv4-mapped IPv6 address counts as its IPv4 address."""
        sessions, _, _ = make_sessions()
        for _ in range(5):
            self.login_error(sessions, "alice", "bad", client="::ffff:192.0.2.9")
        self.assertIsInstance(self.login_error(sessions, "alice", PASSWORD, client="192.0.2.9"), LoginThrottled)

    def test_concurrent_attempts_count(self) -> None:
        """
        Checks still running count against the limit, so a burst of parallel
        guesses cannot all be checked before the first failure is recorded.
        """
        pending: list[Deferred[bool]] = []

        def slow_check(password: str, hashed: str) -> Deferred[bool]:
            d: Deferred[bool] = Deferred()
            pending.append(d)
            return d

        sessions, _, _ = make_sessions(check=slow_check)
        running = [Deferred.fromCoroutine(sessions.login("alice", "bad", "192.0.2.1")) for _ in range(5)]
        self.assertEqual(len(pending), 5)
        err = self.login_error(sessions, "alice", "bad")
        self.assertIsInstance(err, LoginThrottled)
        self.assertEqual(err.retry_after, 1)
        self.assertEqual(len(pending), 5)
        for d in pending:
            d.callback(False)
        for d in running:
            self.failureResultOf(d, LoginFailed)

    def test_failure_table_bounded(self) -> None:
        """The failure table keeps at most max_clients clients, oldest evicted."""
        sessions, _, _ = make_sessions(max_clients=3)
        for i in range(10):
            self.login_error(sessions, "alice", "bad", client=f"192.0.2.{i}")
        self.assertEqual(len(sessions._failures), 3)
        self.assertEqual(list(sessions._failures), ["192.0.2.7", "192.0.2.8", "192.0.2.9"])


class SessionTests(LoginHelpers, SynchronousTestCase):
    """Looking sessions up, expiry, logout, CSRF."""

    def test_expiry(self) -> None:
        """A session is valid until ttl has passed, then forgotten."""
        sessions, clock, _ = make_sessions(ttl=60)
        session = self.login(sessions, "alice", PASSWORD)
        clock.advance(59)
        self.assertIs(sessions.get(session.token), session)
        clock.advance(1)
        self.assertIsNone(sessions.get(session.token))
        self.assertNotIn(session.token, sessions._sessions)

    def test_expired_pruned_on_login(self) -> None:
        """Expired sessions nobody asks about again are dropped by later logins."""
        sessions, clock, _ = make_sessions(ttl=60)
        old = self.login(sessions, "alice", PASSWORD)
        clock.advance(61)
        new = self.login(sessions, "alice", PASSWORD)
        self.assertEqual(list(sessions._sessions), [new.token])
        self.assertIsNone(sessions.get(old.token))

    def test_get_bytes(self) -> None:
        """A cookie value as bytes finds the session."""
        sessions, _, _ = make_sessions()
        session = self.login(sessions, "alice", PASSWORD)
        self.assertIs(sessions.get(session.token.encode()), session)

    def test_get_garbage(self) -> None:
        """Garbage, None, empty, non-ASCII and huge values are simply unknown."""
        sessions, _, _ = make_sessions()
        self.login(sessions, "alice", PASSWORD)
        for value in [None, "", b"", "nope", b"\xff\xfe", "é" * 43, "a" * 10_000, b"a" * 10_000, 42]:
            self.assertIsNone(sessions.get(value))  # type: ignore[arg-type]

    def test_logout(self) -> None:
        """After logout the token is no longer valid; unknown tokens are ignored."""
        sessions, _, _ = make_sessions()
        session = self.login(sessions, "alice", PASSWORD)
        other = self.login(sessions, "alice", PASSWORD)
        sessions.logout(session.token.encode())
        self.assertIsNone(sessions.get(session.token))
        self.assertIs(sessions.get(other.token), other)
        sessions.logout(None)
        sessions.logout("unknown")
        sessions.logout(b"\xff")
        sessions.logout(session.token)

    def test_csrf(self) -> None:
        """Only the session's own CSRF token passes, as str or bytes."""
        sessions, _, _ = make_sessions()
        session = self.login(sessions, "alice", PASSWORD)
        other = self.login(sessions, "alice", PASSWORD)
        self.assertTrue(sessions.check_csrf(session, session.csrf))
        self.assertTrue(sessions.check_csrf(session, session.csrf.encode()))
        for bad in [None, "", b"", other.csrf, session.token, session.csrf[:-1], b"\xff", "é", session.csrf + "x"]:
            self.assertFalse(sessions.check_csrf(session, bad), bad)

    def test_sessions_bounded(self) -> None:
        """At most max_sessions sessions are kept; the oldest is evicted."""
        sessions, clock, _ = make_sessions(max_sessions=3)
        made = []
        for _ in range(5):
            made.append(self.login(sessions, "alice", PASSWORD))
            clock.advance(1)
        self.assertEqual(len(sessions._sessions), 3)
        self.assertIsNone(sessions.get(made[0].token))
        self.assertIsNone(sessions.get(made[1].token))
        for session in made[2:]:
            self.assertIs(sessions.get(session.token), session)


class SecretsNotLeakedTests(LoginHelpers, SynchronousTestCase):
    """Passwords, hashes and tokens stay out of reprs and logs."""

    def test_repr(self) -> None:
        """repr(Session) names the user but shows neither token."""
        sessions, _, _ = make_sessions()
        session = self.login(sessions, "alice", PASSWORD)
        text = repr(session)
        self.assertIn("alice", text)
        self.assertNotIn(session.token, text)
        self.assertNotIn(session.csrf, text)
        self.assertNotIn(PASSWORD, text)

    def test_logged_events(self) -> None:
        """
        Every login outcome is logged as its own event, without the
        password, the hash or the token; an unknown name (often a mistyped
        password) is logged as C{<unknown user>}, never as typed.
        """
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        sessions, _, _ = make_sessions()
        session = self.login(sessions, "alice", PASSWORD)
        sessions.logout(session.token)
        self.login_error(sessions, "alice", "wrong-password-xyz")
        self.login_error(sessions, "hunter2-typed-as-name", "wrong-password-xyz")
        for _ in range(3):
            self.login_error(sessions, "alice", "wrong-password-xyz")
        self.assertIsInstance(self.login_error(sessions, "alice", PASSWORD), LoginThrottled)
        ours = [e for e in events if e.get("log_namespace") == "karajo.users"]
        self.assertEqual(
            [(e["log_level"].name, formatEvent(e)) for e in ours],
            [
                ("info", "login: alice from 192.0.2.1"),
                ("info", "logout: alice"),
                ("warn", "failed login for alice from 192.0.2.1"),
                ("warn", "failed login for <unknown user> from 192.0.2.1"),
                ("warn", "failed login for alice from 192.0.2.1"),
                ("warn", "failed login for alice from 192.0.2.1"),
                ("warn", "failed login for alice from 192.0.2.1"),
                ("warn", "login throttled for 192.0.2.1"),
            ],
        )
        text = repr(events)
        for secret in [PASSWORD, "wrong-password-xyz", "hunter2-typed-as-name", HASH, session.token, session.csrf]:
            self.assertNotIn(secret, text)


class FailedLoginLogTests(LoginHelpers, SynchronousTestCase):
    """The failed-login event carries the fields an operator filters on."""

    def failed_events(self, name: str, client: str) -> list[dict]:
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        sessions, _, _ = make_sessions()
        self.login_error(sessions, name, "wrong", client=client)
        return [e for e in events if e.get("log_format", "").startswith("failed login")]

    def test_known_user(self) -> None:
        """A known name is logged with the client address, at warn level."""
        (event,) = self.failed_events("alice", "2001:db8::7")
        self.assertEqual(event["user"], "alice")
        self.assertEqual(event["client"], "2001:db8::7")
        self.assertEqual(event["log_level"].name, "warn")

    def test_unknown_user(self) -> None:
        """An unknown name is replaced: users type passwords into the name field."""
        (event,) = self.failed_events("s3cret-typed-in-name", "192.0.2.9")
        self.assertEqual(event["user"], "<unknown user>")
        self.assertEqual(event["client"], "192.0.2.9")
        self.assertNotIn("s3cret-typed-in-name", repr(event))


class FailureTableEvictionTests(LoginHelpers, SynchronousTestCase):
    """
    The failure table is bounded while checks are still running too: a
    burst of guesses from many addresses cannot grow it past max_clients
    before the first check returns.
    """

    def test_bounded_while_checks_pending(self) -> None:
        """Ten clients with checks in flight: the table holds the newest three."""
        pending: list[Deferred[bool]] = []

        def slow_check(password: str, hashed: str) -> Deferred[bool]:
            d: Deferred[bool] = Deferred()
            pending.append(d)
            return d

        sessions, _, _ = make_sessions(check=slow_check, max_clients=3)
        running = [
            Deferred.fromCoroutine(sessions.login("alice", "bad", f"192.0.2.{i}"))
            for i in range(10)
        ]
        self.assertEqual(len(pending), 10)
        self.assertEqual(list(sessions._failures), ["192.0.2.7", "192.0.2.8", "192.0.2.9"])
        for d in pending:
            d.callback(False)
        for d in running:
            self.failureResultOf(d, LoginFailed)
        self.assertEqual(list(sessions._failures), ["192.0.2.7", "192.0.2.8", "192.0.2.9"])

    def test_failure_makes_client_newest(self) -> None:
        """
        A failure that ends after another client's attempt began makes its
        client the newest: the other one is evicted first.
        """
        pending: list[Deferred[bool]] = []

        def slow_check(password: str, hashed: str) -> Deferred[bool]:
            d: Deferred[bool] = Deferred()
            pending.append(d)
            return d

        sessions, _, _ = make_sessions(check=slow_check, max_clients=2)
        first = Deferred.fromCoroutine(sessions.login("alice", "bad", "192.0.2.1"))
        second = Deferred.fromCoroutine(sessions.login("alice", "bad", "192.0.2.2"))
        pending[0].callback(False)
        self.failureResultOf(first, LoginFailed)
        self.assertEqual(list(sessions._failures), ["192.0.2.2", "192.0.2.1"])
        third = Deferred.fromCoroutine(sessions.login("alice", "bad", "192.0.2.3"))
        self.assertEqual(list(sessions._failures), ["192.0.2.1", "192.0.2.3"])
        for d in pending[1:]:
            d.callback(False)
        self.failureResultOf(second, LoginFailed)
        self.failureResultOf(third, LoginFailed)

    def test_evicted_client_forgotten(self) -> None:
        """
        A client pushed out of a full table by another client's attempt
        (here a successful login) starts again with no failures.
        """
        sessions, _, _ = make_sessions(max_clients=3, max_failures=1)
        for client in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
            self.login_error(sessions, "alice", "bad", client=client)
        self.assertIsInstance(
            self.login_error(sessions, "alice", "bad", client="192.0.2.1"), LoginThrottled
        )
        # .1 was used last, so .2 is the oldest now.
        self.login(sessions, "alice", PASSWORD, client="192.0.2.4")
        self.assertIsInstance(
            self.login_error(sessions, "alice", "bad", client="192.0.2.2"), LoginFailed
        )
        self.assertIsInstance(
            self.login_error(sessions, "alice", "bad", client="192.0.2.3"), LoginThrottled
        )

    def test_touched_client_kept(self) -> None:
        """A client that tried again recently is the newest, not evicted first."""
        sessions, _, _ = make_sessions(max_clients=2, max_failures=2)
        self.login_error(sessions, "alice", "bad", client="192.0.2.1")
        self.login_error(sessions, "alice", "bad", client="192.0.2.2")
        self.login_error(sessions, "alice", "bad", client="192.0.2.1")
        self.login_error(sessions, "alice", "bad", client="192.0.2.3")
        self.assertEqual(list(sessions._failures), ["192.0.2.1", "192.0.2.3"])
        self.assertIsInstance(
            self.login_error(sessions, "alice", "bad", client="192.0.2.1"), LoginThrottled
        )


class DefaultCheckTests(TestCase):
    """The server's check (L{threaded_check}) runs bcrypt in a thread of the real reactor."""

    async def test_real_check(self) -> None:
        """Right and wrong passwords through deferToThread."""
        users = {"alice": User(name="alice", password=HASH)}
        sessions = Sessions(users, reactor, check=threaded_check(thread_runner(reactor)))
        session = await sessions.login("alice", PASSWORD, "127.0.0.1")
        self.assertEqual(session.user, "alice")
        with self.assertRaises(LoginFailed):
            await sessions.login("alice", "wrong", "127.0.0.1")
        with self.assertRaises(LoginFailed):
            await sessions.login("nobody", "wrong", "127.0.0.1")
