"""
Descriptors: a daemon started with a small C{RLIMIT_NOFILE} (512, through
C{prlimit}) is flooded with connections that each announce a large body
(so each would hold a socket and a temporary file); its connection cap
(L{karajo.web.limits.connection_limit}: (512 - 256) / 2 = 128) refuses the
rest at once, and the reserve left keeps runs working: a webhook sent on a
connection opened before the flood gets a run with a log, and a job due
every second keeps succeeding.  Without the cap the flood takes every
descriptor and runs fail with "Too many open files".
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import time

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SkipTest, TestCase

from ..e2e.daemon import CollectingProtocol, twistd
from .harness import Daemon, report, sign, sleep, webhook_body

NOFILE = 512
#: (NOFILE - DESCRIPTOR_RESERVE) // 2, karajo.web.limits.connection_limit
CAP = (NOFILE - 256) // 2


class LimitedDaemon(Daemon):
    """The daemon under C{prlimit --nofile=512:512}."""

    def spawn(self) -> None:
        assert not self.alive
        self.proto = CollectingProtocol()
        environ = dict(os.environ)
        environ.update(self.env or {})
        prlimit = shutil.which("prlimit")
        assert prlimit is not None
        self.process = reactor.spawnProcess(
            self.proto,
            prlimit,
            [prlimit, f"--nofile={NOFILE}:{NOFILE}", twistd(), "--pidfile=", "-n", "karajo",
             "--config", self.config],
            env=environ,
            path=self.base,
        )
        self.pid = self.process.pid


class Flooder(protocol.Protocol):
    """Announces a 200 kB webhook body, sends one byte of it, and waits."""

    def __init__(self) -> None:
        self.received = b""
        self.closed = False
        self.done: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(
            b"POST /karajo/api/job_exec/run/fast HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 200000\r\n\r\n{"
        )

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.closed = True
        self.done.callback(None)


def http_exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send C{request} on C{sock}; the response head and body (Content-Length)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def finished_logs(base: str, job: str) -> list[str]:
    return sorted(glob.glob(os.path.join(base, f"var/log/karajo/job/{job}/{job}.*.*")))


def newest_counter(base: str, job: str) -> int:
    """
    The counter of the job's newest finished log: how many runs ended (the
    number of files stops growing at the job's log retention).
    """
    return max((int(os.path.basename(name).split(".")[1]) for name in finished_logs(base, job)),
               default=0)


class DescriptorReserveTests(TestCase):
    timeout = 60

    @defer.inlineCallbacks
    def test_runs_keep_working_under_a_connection_flood(self):
        yield defer.ensureDeferred(self.flood())

    async def flood(self) -> None:
        if shutil.which("prlimit") is None:
            raise SkipTest("prlimit (util-linux) is not installed")
        base = os.path.abspath(self.mktemp())
        daemon = LimitedDaemon(
            base,
            'max_job_running = 2\n[job "fast"]\npath = /fast\ncommand = echo webhook ran\n'
            '[job "tick"]\ninterval = 1s\ncommand = echo tick\n',
        )
        self.addCleanup(lambda: defer.ensureDeferred(daemon.cleanup()))
        await daemon.start()

        # A connection opened before the flood, kept alive.
        sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        self.addCleanup(sock.close)
        first = await deferToThread(
            http_exchange, sock, b"GET /karajo/api/environment HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        self.assertTrue(first.startswith(b"HTTP/1.1 200 "), first[:200])

        # 6 addresses x 70 connections: more than one address may hold (64)
        # and more than the daemon accepts in all (CAP).
        flooders: list[Flooder] = []
        for address in range(1, 7):
            endpoint = TCP4ClientEndpoint(
                reactor, "127.0.0.1", daemon.port, bindAddress=(f"127.0.3.{address}", 0)
            )
            for _batch in range(2):
                batch = [Flooder() for _ in range(35)]
                await defer.gatherResults([connectProtocol(endpoint, f) for f in batch])
                flooders.extend(batch)
                await sleep(0.05)
        self.addCleanup(
            lambda: [f.transport.abortConnection() for f in flooders if not f.closed]
        )
        await sleep(1.0)
        held = [f for f in flooders if not f.closed]
        fds = len(os.listdir(f"/proc/{daemon.pid}/fd"))
        ticks_before = newest_counter(base, "tick")

        # The webhook, on the connection opened before the flood.
        body = webhook_body()
        answer = await deferToThread(
            http_exchange,
            sock,
            b"POST /karajo/api/job_exec/run/fast HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nX-Karajo-Sign: " + sign(body).encode()
            + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        )
        started = time.monotonic()
        while not finished_logs(base, "fast") and time.monotonic() - started < 10:
            await sleep(0.1)
        await sleep(2.5)  # two more ticks
        fast = finished_logs(base, "fast")
        ticks = finished_logs(base, "tick")
        ticks_during_flood = newest_counter(base, "tick") - ticks_before
        tick_failures = [t for t in ticks if not t.endswith(".success")]
        code, _ = await daemon.stop()
        output = daemon.output()

        report(
            "descriptors",
            nofile=NOFILE,
            flood_connections=len(flooders),
            held=len(held),
            daemon_fds=fds,
            ticks=len(ticks),
            ticks_during_flood=ticks_during_flood,
        )
        self.assertTrue(answer.startswith(b"HTTP/1.1 200 "), answer[:300])
        self.assertLessEqual(len(held), CAP)
        self.assertGreater(len(held), CAP - 10)
        self.assertLess(fds, NOFILE - 100)
        self.assertEqual(len(fast), 1, output)
        self.assertTrue(fast[0].endswith(".success"), fast)
        with open(fast[0], "rb") as f:
            self.assertIn(b"webhook ran", f.read())
        self.assertGreaterEqual(ticks_during_flood, 2)
        self.assertEqual(tick_failures, [])
        self.assertNotIn("Too many open files", output)
        self.assertIn("refusing new connections", output)
        self.assertEqual(code, 0, output)
