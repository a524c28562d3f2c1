"""
The webhook's short way (karajo.web.hotpath) against Twisted's, on a real
site over loopback: the same request, sent whole (the short way) and in two
writes (the second part after a pause, so Twisted's parser reads it), gets
the same status, headers and body; only the framing differs
(C{Content-Length} against chunks).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
import socket
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from karajo.config import load_environment
from karajo.server import build_service
from karajo.service import thread_runner
from karajo.web import hotpath
from karajo.web.apiresource import APIResource
from karajo.web.site import build_site
from tests.helpers import config_tree
from tests.integration.served import serve

SECRET = b"hot-s3cret"
FRAMING = {b"date", b"content-length", b"transfer-encoding"}


def signed(body: bytes) -> bytes:
    return hmac.new(SECRET, body, hashlib.sha256).hexdigest().encode()


def fresh() -> bytes:
    """A body the replay guard has not seen."""
    return b'{"_karajo_epoch":%d,"nonce":"%s"}' % (time.time(), os.urandom(8).hex().encode())


def webhook(path: bytes, body: bytes, sign: bytes | None = None, extra: bytes = b"") -> bytes:
    return (b"POST /karajo/api/job_exec/run/" + path + b" HTTP/1.1\r\nHost: t\r\n"
            b"Content-Type: application/json\r\nX-Karajo-Sign: " + (sign or signed(body))
            + b"\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body)


Answer = tuple[bytes, dict[bytes, bytes], bytes]


def _read_answer(sock: socket.socket) -> Answer:
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b": ")
        headers[name.lower()] = value
    if b"content-length" in headers:
        size = int(headers[b"content-length"])
        while len(rest) < size:
            rest += sock.recv(65536)
        return lines[0], headers, rest[:size]
    body = b""
    while True:  # chunked
        while b"\r\n" not in rest:
            rest += sock.recv(65536)
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        while len(rest) < size + 2:
            rest += sock.recv(65536)
        if size == 0:
            return lines[0], headers, body
        body, rest = body + rest[:size], rest[size + 2:]


def _exchange(port: int, parts: list[bytes]) -> Answer:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i, part in enumerate(parts):
            if i:
                time.sleep(0.05)
            sock.sendall(part)
        return _read_answer(sock)


class SameAnswers(TestCase):
    timeout = 60

    async def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        config = config_tree(base, f"""
            secret = {SECRET.decode()}
            [job "quick"]
            path = /quick
            command = true
            [job "slow"]
            path = /slow
            command = sleep 2
            overlap = skip
        """)
        _, self.service, url = await serve(self, config)
        self.port = int(url.rsplit(":", 1)[1])

    async def send(self, request: bytes, whole: bool = True) -> Answer:
        """C{request} sent whole (the short way) or in two writes (Twisted's way)."""
        parts = [request]
        if not whole:
            split = request.index(b"\r\n\r\n") + 2
            parts = [request[:split], request[split:]]
        answer = await deferToThread(_exchange, self.port, parts)
        if whole:
            self.assertIn(b"content-length", answer[1])
        else:
            self.assertEqual(answer[1].get(b"transfer-encoding"), b"chunked")
        return answer

    async def both(self, request: bytes | Any) -> tuple[Answer, Answer]:
        """The answer to C{request} sent whole, then to it sent in two writes."""
        make = request if callable(request) else (lambda: request)
        return await self.send(make()), await self.send(make(), whole=False)

    def assertSame(self, short: Any, long: Any) -> None:
        for answer in (short, long):
            answer[1].pop(b"date")
        self.assertEqual(short[0], long[0])
        self.assertEqual({k: v for k, v in short[1].items() if k not in FRAMING},
                         {k: v for k, v in long[1].items() if k not in FRAMING})
        self.assertEqual(short[2], long[2])

    async def test_refusals(self) -> None:
        """Forged, malformed signature, unknown job, a body that is no JSON object, replayed."""
        body = fresh()
        requests = [
            webhook(b"quick", body, sign=b"0" * 64),
            webhook(b"quick", body, sign=b"nothex"),
            webhook(b"nope", body),
            webhook(b"quick", b"{not json", sign=signed(b"{not json")),
        ]
        for request in requests:
            self.assertSame(*await self.both(request))
        await deferToThread(_exchange, self.port, [webhook(b"quick", body)])
        short, long = await self.both(webhook(b"quick", body))
        self.assertSame(short, long)
        self.assertEqual(json.loads(short[2])["name"], "ERR_REQUEST_REPLAYED")

    async def test_busy(self) -> None:
        """A 429 for a job that skips while it runs, with its headers."""
        first = await deferToThread(_exchange, self.port, [webhook(b"slow", fresh())])
        self.assertEqual(first[0], b"HTTP/1.1 200 OK")
        short, long = await self.both(lambda: webhook(b"slow", fresh()))
        self.assertTrue(short[0].startswith(b"HTTP/1.1 429"), short)
        self.assertSame(short, long)

    async def test_started(self) -> None:
        """Two runs started: the same message and Job, but for the run itself."""
        runner = self.service.jobs["quick"].runner
        short = await self.send(webhook(b"quick", fresh()))
        await runner.when_idle()
        long = await self.send(webhook(b"quick", fresh()), whole=False)
        await runner.when_idle()
        for answer in (short, long):
            self.assertEqual(answer[0], b"HTTP/1.1 200 OK")
        self.assertEqual(short[1].keys() - FRAMING, long[1].keys() - FRAMING)
        a, b = json.loads(short[2]), json.loads(long[2])
        self.assertEqual((a["message"], a["data"]["id"]), (b["message"], b["data"]["id"]))
        self.assertEqual((a["data"]["run"]["counter"], b["data"]["run"]["counter"]), (1, 2))
        self.assertEqual([r.status for r in runner.store.records()], ["success", "success"])

    async def test_gzip(self) -> None:
        short, long = await self.both(
            webhook(b"quick", b"{}", sign=b"0" * 64, extra=b"Accept-Encoding: gzip\r\n"))
        self.assertEqual(short[1][b"content-encoding"], b"gzip")
        self.assertEqual(gzip.decompress(short[2]), gzip.decompress(long[2]))
        self.assertSame((short[0], short[1], b""), (long[0], long[1], b""))


class Declined(TestCase):
    """The webhook's short way is not taken before the jobs are ready, nor on a cluster node."""

    def test_not_ready(self) -> None:
        config = config_tree(os.path.abspath(self.mktemp()),
                             '[job "quick"]\npath = /quick\ncommand = true\n')
        service = build_service(load_environment(config), reactor)
        site = build_site(service, reactor, thread_runner(reactor))
        self.assertFalse(service.ready)
        parsed = hotpath.parse(webhook(b"quick", fresh()), None, 1000, 16384, 500)
        assert parsed is not None
        self.assertIsNone(site.hotRoute(parsed[0]))

    def test_cluster_node(self) -> None:
        class ClusterAPI:
            _cluster = object()

            def job_exec_run(self, request: Any, path: str) -> bytes:
                raise AssertionError("a cluster node's webhook is Klein's to answer")

        parsed = hotpath.parse(webhook(b"quick", fresh()), None, 1000, 16384, 500)
        assert parsed is not None
        self.assertIsNone(APIResource(None, ClusterAPI()).hot(parsed[0]))
