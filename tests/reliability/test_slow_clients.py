"""
Slow clients: idle and slowloris connections are closed at the header
timeout while signed webhooks keep being answered without waiting on them
(p99 under a second here: a stall behind the slow clients would be the
10 s header timeout; the speed figure, p99 < 100 ms with 1,000 attackers,
is bench/operations.py's, not a test's, as it moves with the machine's
load); a body declared
(or streamed) far past C{max_body_size} gets a 413 without growing the disk.

Half the connections send nothing; the other half start a request and then
drip one header byte a second, the classic slowloris.  The daemon's header
timeout is L{karajo.web.limits.limited_site}'s default, 10 s, so this suite
takes a little over that.
"""

from __future__ import annotations

import os
import select
import socket
import time

import treq
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool

from .harness import LONG, Daemon, percentile, report, scale, sign, sleep, webhook_body

HEADER_TIMEOUT = 10.0  # karajo.web.limits.limited_site's default
#: how late after the header timeout a close may come (a loaded 2-core box)
CLOSE_SLACK = 1.5


class SlowClient(protocol.Protocol):
    """An idle connection, or one that drips a header byte every second."""

    def __init__(self, slow: bool) -> None:
        self.slow = slow
        self.received = b""
        self.opened = self.closed_at = None
        self.done: defer.Deferred = defer.Deferred()
        self._drip: task.LoopingCall | None = None

    def connectionMade(self) -> None:
        self.opened = time.monotonic()
        if self.slow:
            self.transport.write(
                b"POST /karajo/api/job_exec/run/fast HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
            )
            self._drip = task.LoopingCall(self.transport.write, b"a")
            self._drip.start(1.0, now=False)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.closed_at = time.monotonic()
        if self._drip is not None and self._drip.running:
            self._drip.stop()
        self.done.callback(None)


def disk_usage(path: str) -> int:
    """Bytes allocated under C{path} (like C{du -s --block-size=1})."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def huge_body(port: int, chunked: bool, send_limit: int = 16 * 1024 * 1024) -> tuple[bytes, int]:
    """
    Announce a 10^12-byte body (or an endless chunked one) and stream data
    until the server answers or closes; (the response, the bytes sent).
    Blocking: run it in a thread.
    """
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = webhook_body()
    head = (
        b"POST /karajo/api/job_exec/run/fast HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"X-Karajo-Sign: " + sign(body).encode() + b"\r\nContent-Type: application/json\r\n"
    )
    head += b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: 1000000000000\r\n\r\n"
    piece = b"x" * 65536
    if chunked:
        piece = b"%x\r\n" % len(piece) + piece + b"\r\n"
    response = b""
    sent = 0
    try:
        s.sendall(head)
        while sent < send_limit:
            readable, _, _ = select.select([s], [], [], 0)
            if readable:
                break
            s.sendall(piece)
            sent += len(piece)
    except OSError:
        pass  # the server closed on us: the answer may still be readable
    try:
        s.settimeout(5)
        while True:
            data = s.recv(65536)
            if not data:
                break
            response += data
    except OSError:
        pass
    finally:
        s.close()
    return response, sent


class SlowClientTests(TestCase):
    timeout = 180 if LONG else 60

    @defer.inlineCallbacks
    def test_slow_clients_and_huge_bodies(self):
        yield defer.ensureDeferred(self.slow_clients())

    async def slow_clients(self) -> None:
        count = scale(100, 500)
        base = os.path.abspath(self.mktemp())
        tmp = os.path.join(base, "tmp")
        os.makedirs(tmp)
        daemon = Daemon(
            base,
            'max_job_running = 2\n[job "fast"]\npath = /fast\ncommand = true\n',
            env={"TMPDIR": tmp},
        )
        self.addCleanup(lambda: defer.ensureDeferred(daemon.cleanup()))
        await daemon.start()

        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.retryAutomatically = False
        self.addCleanup(pool.closeCachedConnections)
        client = treq.client.HTTPClient(Agent(reactor, pool=pool))

        # Open the slow connections in batches (the listen backlog is 50),
        # each batch from its own loopback address: one address may hold
        # only 64 connections (karajo.web.limits.MAX_CONNECTIONS_PER_CLIENT).
        clients = []
        for start in range(0, count, 25):
            endpoint = TCP4ClientEndpoint(
                reactor, "127.0.0.1", daemon.port,
                bindAddress=(f"127.0.1.{start // 25 + 1}", 0),
            )
            batch = [SlowClient(slow=i % 2 == 1) for i in range(start, min(count, start + 25))]
            await defer.gatherResults([connectProtocol(endpoint, c) for c in batch])
            clients.extend(batch)
        everyone_closed = defer.gatherResults([c.done for c in clients])

        latencies: list[float] = []
        statuses: dict[int, int] = {}
        while not everyone_closed.called:
            body = webhook_body()
            started = time.monotonic()
            response = await client.post(
                daemon.url + "/karajo/api/job_exec/run/fast",
                data=body,
                headers={"X-Karajo-Sign": sign(body), "Content-Type": "application/json"},
            )
            await response.content()
            latencies.append(time.monotonic() - started)
            statuses[response.code] = statuses.get(response.code, 0) + 1
            if time.monotonic() - clients[0].opened > HEADER_TIMEOUT + 10:
                break
            await sleep(0.05)
        await pool.closeCachedConnections()

        lifetimes = [c.closed_at - c.opened for c in clients if c.closed_at is not None]
        still_open = [c for c in clients if c.closed_at is None]
        for c in still_open:
            c.transport.abortConnection()
        got_408 = sum(1 for c in clients if c.slow and c.received.startswith(b"HTTP/1.1 408"))
        idle_answered = sum(1 for c in clients if not c.slow and c.received)

        # Huge bodies, once the runs above are over (their logs use disk).
        await sleep(1.0)
        before = disk_usage(base)
        fd_dir = f"/proc/{daemon.pid}/fd"
        answers = []
        for chunked in (False, True):
            answers.append(await deferToThread(huge_body, daemon.port, chunked))
        await sleep(0.5)
        after = disk_usage(base)
        open_tmp = [
            os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)
            if os.readlink(os.path.join(fd_dir, fd)).startswith(tmp)
        ]
        code, _ = await daemon.stop()

        p99 = percentile(latencies, 99)
        report(
            "slow_clients",
            connections=count,
            slowloris=sum(1 for c in clients if c.slow),
            closed=len(lifetimes),
            closed_after_s_min=f"{min(lifetimes):.2f}",
            closed_after_s_max=f"{max(lifetimes):.2f}",
            slowloris_got_408=got_408,
            webhooks=len(latencies),
            webhook_statuses=statuses,
            webhook_p50_ms=f"{1000 * percentile(latencies, 50):.1f}",
            webhook_p99_ms=f"{1000 * p99:.1f}",
            webhook_max_ms=f"{1000 * max(latencies):.1f}",
            huge_body_answers=[a[:12].decode("ascii", "replace") for a, _ in answers],
            huge_body_bytes_sent=[sent for _, sent in answers],
            disk_growth_bytes=after - before,
        )
        self.assertEqual(still_open, [])
        self.assertGreaterEqual(min(lifetimes), HEADER_TIMEOUT - 0.1)
        self.assertLessEqual(max(lifetimes), HEADER_TIMEOUT + CLOSE_SLACK)
        self.assertEqual(got_408, count // 2)
        self.assertEqual(idle_answered, 0)
        self.assertEqual(set(statuses) - {200, 429}, set())
        self.assertGreaterEqual(len(latencies), 50)
        self.assertLess(p99, 1.0)
        for answer, _ in answers:
            self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:200])
        self.assertEqual(after - before, 0)
        self.assertEqual(open_tmp, [])
        self.assertEqual(code, 0)
