"""
L{karajo.pgstore.PgStore} when the database fails: a private server
(L{tests.pgserver.PgServer}) stopped, killed and started again; a statement
stuck behind a lock; a database that is not there.  Every failure must be
L{Unavailable}, quickly, with the reactor free meanwhile; once the database
is back, statements work again and the listening connection is made again.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from twisted.internet import defer, reactor, task
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from karajo.clusterstore import RECONNECTED, NodeInfo, Unavailable
from karajo.pgstore import PgStore
from karajo.runrecord import RunRecord
from tests.integration.test_pgstore import StoreCase, wait_for
from tests.pgserver import PgServer, available


def me() -> NodeInfo:
    return NodeInfo("n1", True, 0.0, 0, "1.0", "d", 1000.0)


class ReactorWatch:
    """The longest the reactor went without running a 20 ms tick."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._last = time.monotonic()
        self._loop = task.LoopingCall(self._tick)
        self._loop.start(0.02)

    def _tick(self) -> None:
        now = time.monotonic()
        self.worst = max(self.worst, now - self._last)
        self._last = now

    def stop(self) -> float:
        if self._loop.running:
            self._loop.stop()
        return self.worst


async def unavailable(test: unittest.TestCase, d: defer.Deferred) -> float:
    """Seconds until C{d} failed with L{Unavailable} (fails the test otherwise)."""
    start = time.monotonic()
    with test.assertRaises(Unavailable):
        await d
    return time.monotonic() - start


class ServerFaultTests(unittest.TestCase):
    if not available():
        skip = "no PostgreSQL server programs (.ci/run installs them)"

    def setUp(self) -> defer.Deferred:
        self.server = PgServer()
        self.addCleanup(self.server.cleanup)
        self.server.start()
        self.store = PgStore(reactor, self.server.conninfo, connect_timeout=2,
                             statement_timeout=2.0)
        self.addCleanup(self.store.close)
        self.heard: list[tuple[str, str]] = []
        return self.store.migrate()

    async def listening(self) -> None:
        self.store.listen(lambda channel, payload: self.heard.append((channel, payload)))
        await wait_for(lambda: self.store._listener._conn is not None)

    async def back(self) -> None:
        """Wait until a statement works again (the store fails fast for a second after a failure)."""
        deadline = time.monotonic() + 10
        while True:
            try:
                await self.store.heartbeat(me())
                return
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                await task.deferLater(reactor, 0.2, lambda: None)

    async def check_outage(self, take_down: Any) -> None:
        await self.listening()
        await self.store.heartbeat(me())
        watch = ReactorWatch()
        self.addCleanup(watch.stop)
        await deferToThread(take_down)
        # Every call fails, quickly, while the reactor keeps ticking.
        took = await unavailable(self, self.store.heartbeat(me()))
        self.assertLess(took, 3.0)
        calls = [self.store.claim_slots("n1", [("job", "j", 60.0)]),
                 self.store.begin_run("n1", "job", RunRecord("j", 1, "running", 1.0)),
                 self.store.append_logs([("job", "j", 1, 0, b"x")])]
        for call in calls:
            self.assertLess(await unavailable(self, call), 3.0)
        await wait_for(lambda: self.store._listener._conn is None)
        self.assertLess(watch.stop(), 0.5)
        # Back: statements work, listening resumes (told), notifications arrive again.
        await deferToThread(self.server.start)
        await self.back()
        await wait_for(lambda: (RECONNECTED, "") in self.heard, timeout=10)
        await self.store.set_paused("job", "j", True)
        await wait_for(lambda: ("karajo_pause", "job/j") in self.heard)
        self.assertEqual(await self.store.paused_jobs(), {("job", "j")})

    async def test_stopped_then_started(self) -> None:
        await self.check_outage(self.server.stop)

    async def test_killed_then_started(self) -> None:
        await self.check_outage(self.server.kill)

    async def test_restart_between_statements_is_not_an_outage(self) -> None:
        """A restart noticed by the listening connection: the next statement finds a fresh one."""
        await self.listening()
        await defer.gatherResults([self.store.heartbeat(me()) for _ in range(4)])
        await deferToThread(self.server.stop)
        await wait_for(lambda: self.store._listener._conn is None)
        await deferToThread(self.server.start)
        await wait_for(lambda: (RECONNECTED, "") in self.heard, timeout=10)
        nodes = await defer.gatherResults([self.store.heartbeat(me()) for _ in range(4)])
        self.assertEqual([[n.name for n in ns] for ns in nodes], [["n1"]] * 4)


class FrozenServerTests(unittest.TestCase):
    if not available():
        skip = "no PostgreSQL server programs (.ci/run installs them)"

    async def test_a_server_that_answers_nothing_is_unavailable_by_the_deadline(self) -> None:
        """
        Stopped with SIGSTOP, the server's kernel still takes bytes, so no
        timeout of the server or of TCP fires: the store's own deadline
        (connect + statement timeouts + 1 s) does.
        """
        server = PgServer()
        self.addCleanup(server.cleanup)
        self.addCleanup(server.thaw)
        await deferToThread(server.start)
        store = PgStore(reactor, server.conninfo, connect_timeout=2, statement_timeout=1.0)
        self.addCleanup(store.close)
        await store.migrate()
        await defer.gatherResults([store.heartbeat(me()) for _ in range(4)])
        server.freeze()
        watch = ReactorWatch()
        self.addCleanup(watch.stop)
        took = await defer.gatherResults([
            defer.ensureDeferred(unavailable(self, store.heartbeat(me()))) for _ in range(6)
        ])
        self.assertLess(watch.stop(), 0.5)
        # A call on an open connection gives up at the store's deadline (4 s);
        # one that had to connect (the pool grew meanwhile) at the connect
        # timeout (2 s).  Neither sooner: nothing failed for another reason.
        self.assertTrue(all(1.9 < t < 6.0 for t in took), took)
        self.assertTrue(any(t > 3.5 for t in took), took)
        server.thaw()
        deadline = time.monotonic() + 10
        while True:
            try:
                nodes = await store.heartbeat(me())
                break
            except Unavailable:
                self.assertLess(time.monotonic(), deadline)
                await task.deferLater(reactor, 0.2, lambda: None)
        self.assertEqual([n.name for n in nodes], ["n1"])


class LockFaultTests(StoreCase):
    async def test_statement_stuck_behind_a_lock_is_unavailable(self) -> None:
        store = PgStore(reactor, self.store._conninfo, options=self.options,
                        statement_timeout=1.0)
        self.addCleanup(store.close)
        await store.set_paused("job", "j", False)
        with psycopg.connect(self.store._conninfo, options=self.options) as holder:
            holder.execute("SELECT 1 FROM karajo_job WHERE job_id = 'j' FOR UPDATE")
            watch = ReactorWatch()
            self.addCleanup(watch.stop)
            took = await unavailable(self, store.begin_run("n", "job", RunRecord("j", 1, "running")))
            self.assertLess(watch.stop(), 0.5)
            holder.rollback()
        self.assertGreater(took, 0.9)
        self.assertLess(took, 3.0)


class UnreachableTests(unittest.TestCase):
    async def test_fails_fast_and_never_shows_the_password(self) -> None:
        with socketless_port() as port:
            conninfo = f"postgresql://karajo:s3cret-pw@127.0.0.1:{port}/cluster"
            events: list[dict] = []
            globalLogPublisher.addObserver(events.append)
            self.addCleanup(globalLogPublisher.removeObserver, events.append)
            store = PgStore(reactor, conninfo, connect_timeout=2)
            self.addCleanup(store.close)
            store.listen(lambda channel, payload: None)
            with self.assertRaises(Unavailable) as first:
                await store.heartbeat(me())
            # Right after a failure, calls fail without trying.
            with self.assertRaises(Unavailable) as second:
                await store.migrate()
            self.assertIn("unreachable a moment ago", str(second.exception))
            await task.deferLater(reactor, 0.6, lambda: None)  # a listening retry logged too
        shown = [str(first.exception)] + [formatEvent(e) for e in events]
        self.assertTrue(any("127.0.0.1" in text for text in shown), shown)
        for text in shown:
            self.assertNotIn("s3cret", text)


class socketless_port:
    """A loopback port nobody listens on (held bound, not listening, while used)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        return self._sock.getsockname()[1]

    def __exit__(self, *exc: object) -> None:
        self._sock.close()
