"""
Tests for L{karajo.web.limits}, over real loopback sockets.

The limits are about what happens on the wire (what is read, when the
connection closes), so these tests talk raw HTTP/1.1 to a real listening
port rather than through an in-memory transport.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, LoopingCall, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from karajo.web import limits
from karajo.web.limits import (
    BODY_TIMEOUT,
    DESCRIPTOR_RESERVE,
    MAX_CONNECTIONS_PER_CLIENT,
    LimitedRequest,
    connection_limit,
    limited_site,
)


class Recorder(Resource):
    """A resource that remembers every request that reached it and its body."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render(self, request: Any) -> bytes:
        body = request.content.read()
        self.bodies.append(body)
        request.setHeader(b"content-type", b"text/plain")
        return b"got %d" % len(body)


class CountingFile:
    """A request content file that counts the bytes written into it."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.written = 0

    def write(self, data: bytes) -> int:
        self.written += len(data)
        return self.wrapped.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


class RawClient(Protocol):
    """Writes whatever the test says and collects every byte received."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: Deferred[bytes] = Deferred()
        self.is_closed = False

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure) -> None:
        self.is_closed = True
        self.closed.callback(self.received)


def too_large(limit: int) -> bytes:
    """The exact 413 body for C{limit}."""
    return json.dumps(
        {
            "code": 413,
            "message": f"request body is larger than {limit} bytes",
            "name": "ERR_BODY_TOO_LARGE",
            "data": None,
        },
        separators=(",", ":"),
    ).encode()


def split_response(raw: bytes) -> tuple[bytes, bytes]:
    """Status line + headers, and body, of the first response in C{raw}."""
    head, _, body = raw.partition(b"\r\n\r\n")
    return head, body


class LimitsTestCase(TestCase):
    """Serve a site on loopback and connect raw clients to it."""

    def serve(self, resource: Resource, max_body_size: int = 1000, **kwargs: Any) -> Site:
        """
        Listen on a random loopback port; every server-side connection must
        be gone before the test ends, so the reactor stays clean.
        """
        kwargs.setdefault("clock", reactor)
        site = limited_site(resource, max_body_size, **kwargs)
        self.requests: list[LimitedRequest] = []
        requests = self.requests

        class CountingRequest(site.requestFactory):  # type: ignore[misc, valid-type]
            """Records itself and counts what is written into its content."""

            def __init__(self, *args: Any, **kw: Any) -> None:
                super().__init__(*args, **kw)
                requests.append(self)

            def gotLength(self, length: int | None) -> None:
                super().gotLength(length)
                self.content_file = CountingFile(self.content)
                self.content = self.content_file

        site.requestFactory = CountingRequest
        lost: list[Deferred[None]] = []
        build = site.buildProtocol

        def build_protocol(addr: Any) -> Any:
            channel = build(addr)
            if channel is None:  # refused: over a connection cap
                return None
            done: Deferred[None] = Deferred()
            original = channel.connectionLost

            def connection_lost(reason: Failure) -> None:
                original(reason)
                done.callback(None)

            channel.connectionLost = connection_lost
            lost.append(done)
            return channel

        site.buildProtocol = build_protocol
        self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.addCleanup(lambda: gatherResults(lost))
        return site

    async def connect(self, source: str | None = None) -> RawClient:
        """A raw client connected to the test site, from C{source} if given."""
        bind = (source, 0) if source is not None else None
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.port.getHost().port, bindAddress=bind
        )
        client = await connectProtocol(endpoint, RawClient())
        self.addCleanup(lambda: None if client.is_closed else client.transport.loseConnection())
        return client

    def no_tempfiles(self) -> list[Any]:
        """Record every temporary file opened during the test."""
        opened: list[Any] = []
        real = tempfile.TemporaryFile

        def recording(*args: Any, **kwargs: Any) -> Any:
            opened.append(args)
            return real(*args, **kwargs)

        self.patch(tempfile, "TemporaryFile", recording)
        return opened


class BodyLimitTests(LimitsTestCase):
    """Bodies over max_body_size are refused without being read."""

    async def test_huge_content_length(self) -> None:
        """
        A Content-Length of 10**12 is answered 413 from the headers alone:
        the resource is never called, nothing is buffered, no temporary file
        is opened, and the connection is closed.
        """
        recorder = Recorder()
        self.serve(recorder, max_body_size=1000)
        opened = self.no_tempfiles()
        client = await self.connect()
        client.transport.write(
            b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n"
            b"Content-Type: application/json\r\n\r\n" + b"x" * 65536
        )
        raw = await client.closed
        head, body = split_response(raw)
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), head)
        self.assertIn(b"Content-Type: application/json", head)
        self.assertIn(b"Connection: close", head)
        self.assertEqual(body, too_large(1000))
        self.assertEqual(recorder.bodies, [])
        self.assertEqual(opened, [])
        self.assertEqual(len(self.requests), 1)
        self.assertEqual(self.requests[0].content_file.written, 0)

    async def test_client_keeps_sending(self) -> None:
        """
        A client that keeps streaming after the 413 still reads the answer,
        and is cut off once the (bounded) drain is spent.
        """
        recorder = Recorder()
        self.serve(recorder, max_body_size=10)
        client = await self.connect()
        client.transport.write(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        chunk = b"y" * 65536

        def pump() -> None:
            if not client.is_closed:
                client.transport.write(chunk)

        loop = LoopingCall(pump)
        loop.start(0.01)
        self.addCleanup(lambda: loop.running and loop.stop())
        started = time.monotonic()
        raw = await client.closed
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(split_response(raw)[1], too_large(10))
        self.assertEqual(recorder.bodies, [])

    async def test_expect_continue_not_sent(self) -> None:
        """An oversized request with Expect: 100-continue gets no 100, only the 413."""
        recorder = Recorder()
        self.serve(recorder, max_body_size=10)
        client = await self.connect()
        client.transport.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"
        )
        raw = await client.closed
        self.assertTrue(raw.startswith(b"HTTP/1.1 413 "), raw)
        self.assertNotIn(b"100 Continue", raw)
        self.assertEqual(recorder.bodies, [])

    async def test_one_byte_over(self) -> None:
        """A declared length of limit + 1 is refused."""
        recorder = Recorder()
        self.serve(recorder, max_body_size=1000)
        client = await self.connect()
        client.transport.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n" + b"a" * 1001)
        raw = await client.closed
        self.assertEqual(split_response(raw)[1], too_large(1000))
        self.assertEqual(recorder.bodies, [])

    async def test_exactly_the_limit(self) -> None:
        """A body of exactly max_body_size bytes reaches the resource intact."""
        recorder = Recorder()
        self.serve(recorder, max_body_size=1000)
        client = await self.connect()
        body = bytes(range(256)) * 3 + b"z" * 232
        self.assertEqual(len(body), 1000)
        client.transport.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n" + body
        )
        raw = await client.closed
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 "), raw)
        self.assertEqual(split_response(raw)[1], b"got 1000")
        self.assertEqual(recorder.bodies, [body])

    async def test_large_limit_uses_tempfile_for_large_bodies(self) -> None:
        """
        Under a large cap, a big (allowed) body goes to a temporary file as
        Twisted does, and arrives intact.
        """
        recorder = Recorder()
        self.serve(recorder, max_body_size=1 << 20)
        opened = self.no_tempfiles()
        client = await self.connect()
        body = b"q" * 200_000
        client.transport.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 200000\r\n\r\n" + body
        )
        raw = await client.closed
        self.assertEqual(split_response(raw)[1], b"got 200000")
        self.assertEqual(recorder.bodies, [body])
        self.assertEqual(len(opened), 1)

    async def test_chunked_over_limit(self) -> None:
        """A chunked body is counted as it arrives and refused past the cap."""
        recorder = Recorder()
        self.serve(recorder, max_body_size=100)
        opened = self.no_tempfiles()
        client = await self.connect()
        chunk = b"3c\r\n" + b"c" * 60 + b"\r\n"
        client.transport.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 3 + b"0\r\n\r\n"
        )
        raw = await client.closed
        self.assertTrue(raw.startswith(b"HTTP/1.1 413 "), raw)
        self.assertEqual(split_response(raw)[1], too_large(100))
        self.assertEqual(recorder.bodies, [])
        self.assertEqual(opened, [])
        self.assertLessEqual(self.requests[0].content_file.written, 100)

    async def test_chunked_at_limit(self) -> None:
        """A chunked body of exactly the cap is accepted."""
        recorder = Recorder()
        self.serve(recorder, max_body_size=100)
        client = await self.connect()
        client.transport.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"32\r\n" + b"a" * 50 + b"\r\n" + b"32\r\n" + b"b" * 50 + b"\r\n0\r\n\r\n"
        )
        raw = await client.closed
        self.assertEqual(split_response(raw)[1], b"got 100")
        self.assertEqual(recorder.bodies, [b"a" * 50 + b"b" * 50])

    async def test_keep_alive(self) -> None:
        """Two requests on one connection are both served; limits reset per request."""
        recorder = Recorder()
        self.serve(recorder, max_body_size=10, header_timeout=5)
        client = await self.connect()
        client.transport.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
        await deferLater(reactor, 0.1, lambda: None)
        client.transport.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 10\r\n\r\nabcdefghij"
        )
        raw = await client.closed
        self.assertEqual(raw.count(b"HTTP/1.1 200 "), 2)
        self.assertEqual(recorder.bodies, [b"0123456789", b"abcdefghij"])


class SlowClientTests(LimitsTestCase):
    """Slow and idle clients cannot keep a connection open."""

    async def test_slowloris(self) -> None:
        """
        A client sending one header byte every 0.2 s is disconnected once the
        0.5 s header deadline passes, although it is never idle.
        """
        self.serve(Recorder(), header_timeout=0.5, idle_timeout=60)
        client = await self.connect()
        request = iter(b"GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 1000)

        def drip() -> None:
            if not client.is_closed:
                client.transport.write(bytes([next(request)]))

        loop = LoopingCall(drip)
        loop.start(0.2)
        self.addCleanup(lambda: loop.running and loop.stop())
        started = time.monotonic()
        raw = await client.closed
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.4)
        self.assertLess(elapsed, 1.2)
        self.assertTrue(raw.startswith(b"HTTP/1.1 408 "), raw)
        self.assertIn(b'"name":"ERR_REQUEST_TIMEOUT"', raw)

    async def test_deadline_rearmed_on_keep_alive(self) -> None:
        """
        After a response, the next request's headers get a fresh deadline:
        a keep-alive connection left silent is closed (without a 408).
        """
        self.serve(Recorder(), header_timeout=0.5, idle_timeout=60)
        client = await self.connect()
        await deferLater(reactor, 0.3, lambda: None)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        raw = await client.closed
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.4)
        self.assertLess(elapsed, 1.2)
        self.assertEqual(raw.count(b"HTTP/1.1 "), 1)
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 "))

    async def test_idle_connection(self) -> None:
        """A connection that sends nothing is closed after idle_timeout."""
        self.serve(Recorder(), header_timeout=10, idle_timeout=0.3)
        client = await self.connect()
        started = time.monotonic()
        raw = await client.closed
        self.assertLess(time.monotonic() - started, 1.5)
        self.assertEqual(raw, b"")

    async def test_idle_during_body(self) -> None:
        """
        Once headers are in, a client that stops sending its body is closed
        after idle_timeout, and the resource is not called.
        """
        recorder = Recorder()
        self.serve(recorder, header_timeout=10, idle_timeout=0.3)
        client = await self.connect()
        client.transport.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
        started = time.monotonic()
        await client.closed
        self.assertLess(time.monotonic() - started, 1.5)
        self.assertEqual(recorder.bodies, [])


class SlowBodyTests(LimitsTestCase):
    """A body has a deadline of its own, however steadily it trickles."""

    async def test_trickling_body_cut_at_the_deadline(self) -> None:
        """
        A client sending one body byte every 0.1 s (never idle) gets a JSON
        408 and is closed once the 0.5 s body deadline passes; the resource
        is never called and the body's temporary file is closed.
        """
        recorder = Recorder()
        self.serve(recorder, max_body_size=10_000_000, header_timeout=10,
                   idle_timeout=60, body_timeout=0.5)
        client = await self.connect()
        client.transport.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"
        )

        def drip() -> None:
            if not client.is_closed:
                client.transport.write(b"x")

        loop = LoopingCall(drip)
        loop.start(0.1)
        self.addCleanup(lambda: loop.running and loop.stop())
        started = time.monotonic()
        raw = await client.closed
        elapsed = time.monotonic() - started
        self.assertGreaterEqual(elapsed, 0.4)
        self.assertLess(elapsed, 1.5)
        head, body = split_response(raw)
        self.assertTrue(head.startswith(b"HTTP/1.1 408 "), raw)
        self.assertEqual(json.loads(body)["name"], "ERR_REQUEST_TIMEOUT")
        self.assertEqual(json.loads(body)["message"], "request body was not received in time")
        self.assertEqual(recorder.bodies, [])
        [request] = self.requests
        self.assertTrue(request.content_file.wrapped.closed)

    async def test_body_in_time_is_served(self) -> None:
        """A body complete before the deadline is served; no timer is left."""
        recorder = Recorder()
        site = self.serve(recorder, header_timeout=10, idle_timeout=60, body_timeout=0.5)
        client = await self.connect()
        client.transport.write(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nConnection: close\r\n\r\nab"
        )
        await deferLater(reactor, 0.1, lambda: None)
        client.transport.write(b"cd")
        raw = await client.closed
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 "), raw)
        self.assertEqual(recorder.bodies, [b"abcd"])
        self.assertEqual(site.open_connections, 0)


class ConnectionCapTests(LimitsTestCase):
    """Connections are capped per client address and in all."""

    async def assert_refused(self, client: RawClient) -> None:
        """C{client} was closed at once, with nothing said."""
        raw = await client.closed
        self.assertEqual(raw, b"")

    async def test_65th_connection_of_one_address_refused(self) -> None:
        """
        64 idle connections from 127.0.0.1 are kept; the 65th is closed at
        once while 127.0.0.2 is still served; once one closes, 127.0.0.1
        may connect again.
        """
        recorder = Recorder()
        site = self.serve(recorder, header_timeout=10, idle_timeout=60)
        clients = [await self.connect() for _ in range(64)]
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(site.open_connections, 64)
        self.assertFalse(any(c.is_closed for c in clients))

        started = time.monotonic()
        await self.assert_refused(await self.connect())
        self.assertLess(time.monotonic() - started, 1)

        other = await self.connect(source="127.0.0.2")
        other.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = await other.closed
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 "), raw)

        clients[0].transport.loseConnection()
        await clients[0].closed
        await deferLater(reactor, 0.1, lambda: None)
        again = await self.connect()
        again.transport.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        raw = await again.closed
        self.assertTrue(raw.startswith(b"HTTP/1.1 200 "), raw)

    async def test_total_cap(self) -> None:
        """Over max_connections, any address's new connection is closed at once."""
        site = self.serve(Recorder(), header_timeout=10, idle_timeout=60, max_connections=3)
        clients = [await self.connect(source=f"127.0.0.{i + 1}") for i in range(3)]
        await deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(site.open_connections, 3)
        await self.assert_refused(await self.connect(source="127.0.0.9"))
        self.assertFalse(any(c.is_closed for c in clients))


class ConstructionTests(TestCase):
    """limited_site's arguments."""

    def test_negative_limit(self) -> None:
        """A negative cap is a programming error."""
        self.assertRaises(ValueError, limited_site, Recorder(), -1, clock=Clock())

    def test_site_shape(self) -> None:
        """The site uses the limited request and channel, and the idle timeout."""
        site = limited_site(Recorder(), 5, clock=Clock(), idle_timeout=7)
        self.assertTrue(issubclass(site.requestFactory, LimitedRequest))
        self.assertEqual(site.requestFactory.maxBodySize, 5)
        self.assertEqual(site.timeOut, 7)
        self.assertEqual(site.bodyTimeout, BODY_TIMEOUT)
        self.assertEqual(site.maxPerClient, MAX_CONNECTIONS_PER_CLIENT)
        self.assertEqual(site.maxConnections, connection_limit())

    def test_connection_limit_keeps_a_reserve(self) -> None:
        """
        The reserve comes off the soft RLIMIT_NOFILE, and the rest is halved
        (a large body's temporary file is a second descriptor).
        """
        self.patch(limits, "getrlimit", lambda _: (1024, 4096))
        self.assertEqual(connection_limit(), (1024 - DESCRIPTOR_RESERVE) // 2)
        self.patch(limits, "getrlimit", lambda _: (100, 4096))
        self.assertEqual(connection_limit(), 1)


class MalformedRequestTests(LimitsTestCase):
    """What Twisted's own parser refuses is answered in the JSON envelope."""

    async def answer(self, raw: bytes) -> tuple[bytes, dict[str, Any]]:
        recorder = Recorder()
        self.serve(recorder)
        client = await self.connect()
        client.transport.write(raw)
        head, body = split_response(await client.closed)
        self.assertIn(b"Content-Type: application/json", head)
        self.assertIn(b"Cache-Control: no-store", head)
        self.assertIn(b"Connection: close", head)
        self.assertEqual(recorder.bodies, [])
        return head.split(b"\r\n", 1)[0], json.loads(body)

    async def test_bad_content_length(self) -> None:
        for value in (b"abc", b"-5", b"1, 2"):
            status, doc = await self.answer(
                b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Length: " + value + b"\r\n\r\n")
            self.assertEqual(status, b"HTTP/1.1 400 Bad Request", value)
            self.assertEqual(doc, {"code": 400, "name": "ERR_BAD_REQUEST",
                                   "message": "malformed HTTP request", "data": None})

    async def test_malformed_request_line(self) -> None:
        status, doc = await self.answer(b"GARBAGE\r\n\r\n")
        self.assertEqual(status, b"HTTP/1.1 400 Bad Request")
        self.assertEqual(doc["name"], "ERR_BAD_REQUEST")

    async def test_huge_request_line(self) -> None:
        status, doc = await self.answer(
            b"GET /karajo/api/environment?" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertEqual(status, b"HTTP/1.1 414 URI Too Long")
        self.assertEqual(doc["name"], "ERR_URI_TOO_LONG")

    async def test_huge_header_line(self) -> None:
        status, doc = await self.answer(
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        self.assertEqual(status, b"HTTP/1.1 431 Request Header Fields Too Large")
        self.assertEqual(doc["name"], "ERR_HEADERS_TOO_LARGE")

    async def test_headers_too_large_in_total(self) -> None:
        headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 1000) for i in range(20))
        status, doc = await self.answer(b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        self.assertEqual(status, b"HTTP/1.1 431 Request Header Fields Too Large")
        self.assertEqual(doc["name"], "ERR_HEADERS_TOO_LARGE")


HOT = (b"POST /karajo/api/job_exec/run/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
       b"X-Karajo-Sign: s\r\n\r\n{}")


class HotRouteTests(LimitsTestCase):
    """
    The channel's short way (karajo.web.hotpath): whole webhook requests at
    the start of what a connection sends go to C{hot_route}; the rest, and
    what the route declines, to the resource through Twisted's parser.
    """

    def serve_hot(self, declined: bool = False, broken: bool = False,
                  **kwargs: Any) -> tuple[Recorder, list[Any]]:
        recorder = Recorder()
        taken: list[Any] = []

        def hot_route(request: Any) -> bytes | None:
            if broken:
                raise RuntimeError("a bug")
            if declined:
                return None
            taken.append((request.path, request.content.read()))
            request.setResponseCode(202)
            return b"hot"

        self.serve(recorder, hot_route=hot_route, **kwargs)
        return recorder, taken

    async def read_until(self, client: RawClient, count: int) -> bytes:
        while client.received.count(b"HTTP/1.1 ") < count or not client.received.endswith(
                (b"hot", b"got 2", b"got 0")):
            await deferLater(reactor, 0.01, lambda: None)
        return client.received

    async def test_pipelined_mixed(self) -> None:
        """Hot, hot, then a GET and a hot one after it: every answer in order, each once."""
        recorder, taken = self.serve_hot()
        client = await self.connect()
        client.transport.write(HOT + HOT + b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n" + HOT)
        raw = await self.read_until(client, 4)
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)
        self.assertEqual(statuses, [b"202", b"202", b"200", b"200"])
        self.assertEqual(taken, [(b"/karajo/api/job_exec/run/a", b"{}")] * 2)
        self.assertEqual(recorder.bodies, [b"", b"{}"])  # the last one came after Twisted's
        self.assertIn(b"Content-Length: 3\r\n", raw)

    async def test_split_request_goes_twisteds_way(self) -> None:
        """A request that is not whole in one read is Twisted's; the next whole one is hot again."""
        recorder, taken = self.serve_hot()
        client = await self.connect()
        client.transport.write(HOT[:40])
        await deferLater(reactor, 0.05, lambda: None)
        client.transport.write(HOT[40:])
        await self.read_until(client, 1)
        self.assertEqual((recorder.bodies, taken), ([b"{}"], []))
        client.transport.write(HOT)
        await self.read_until(client, 2)
        self.assertEqual(len(taken), 1)

    async def test_declined(self) -> None:
        recorder, taken = self.serve_hot(declined=True)
        client = await self.connect()
        client.transport.write(HOT)
        raw = await self.read_until(client, 1)
        self.assertEqual((recorder.bodies, taken), ([b"{}"], []))
        self.assertTrue(raw.endswith(b"got 2"), raw)

    async def test_route_failing(self) -> None:
        """A bug in the route: the JSON 500 Twisted's way gives, logged, then the close."""
        self.serve_hot(broken=True)
        client = await self.connect()
        client.transport.write(HOT + HOT)
        raw = await client.closed
        self.assertEqual(re.findall(rb"HTTP/1\.1 (\d{3}) ", raw), [b"500"])
        self.assertTrue(raw.endswith(b'"name":"ERR_INTERNAL","data":null}'), raw)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    async def test_connection_close(self) -> None:
        self.serve_hot()
        client = await self.connect()
        client.transport.write(HOT.replace(b"Host: x", b"Connection: keep-alive, close"))
        raw = await client.closed
        self.assertIn(b"\r\nConnection: close\r\n", raw)
        self.assertTrue(raw.endswith(b"\r\n\r\nhot"))

    async def test_header_deadline_rearmed(self) -> None:
        """After a hot answer on a kept connection, the next request's headers have their deadline."""
        self.serve_hot(header_timeout=0.3)
        client = await self.connect()
        await deferLater(reactor, 0.2, lambda: None)
        client.transport.write(HOT)
        started = time.monotonic()
        raw = await client.closed
        self.assertTrue(raw.endswith(b"hot"))
        self.assertNotIn(b"408", raw)  # idle between requests: closed without an answer
        self.assertGreater(time.monotonic() - started, 0.25)

    async def test_stray_crlf_after_each_body(self) -> None:
        """
        A client that sends CRLF after every body (Twisted forgives one per
        request): every request is answered, the short way too.
        """
        _, taken = self.serve_hot()
        client = await self.connect()
        for n in range(1, 4):
            client.transport.write(HOT + b"\r\n")
            await self.read_until(client, n)
            await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(re.findall(rb"HTTP/1\.1 (\d{3}) ", client.received), [b"202"] * 3)
        self.assertEqual(len(taken), 3)
        self.assertFalse(client.is_closed)

    async def test_huge_length_and_name_refused(self) -> None:
        """
        A Content-Length of thousands of digits gets the 413 (not an
        unhandled error and a silent drop), the same number of zeros before
        a small one the 400, a header name of kilobytes the 431, whether the
        request came whole or in pieces.
        """
        self.serve_hot()
        heads = {
            b"413": b"POST /x HTTP/1.1\r\nContent-Length: " + b"1" * 5000 + b"\r\n\r\n",
            b"400": b"POST /x HTTP/1.1\r\nContent-Length: " + b"0" * 5000 + b"2\r\n\r\n{}",
            b"431": b"POST /x HTTP/1.1\r\n" + b"N" * 5000 + b": 1\r\nContent-Length: 0\r\n\r\n",
        }
        for status, head in heads.items():
            for parts in ([head], [head[:30], head[30:]]):
                client = await self.connect()
                for part in parts:
                    client.transport.write(part)
                    await deferLater(reactor, 0.02, lambda: None)
                raw = await client.closed
                self.assertTrue(raw.startswith(b"HTTP/1.1 " + status + b" "), raw[:80])
                self.assertIn(b"Content-Type: application/json", raw)
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_over_body_cap(self) -> None:
        """A body over the cap is never the route's: Twisted's parser answers 413."""
        _, taken = self.serve_hot(max_body_size=1)
        client = await self.connect()
        client.transport.write(HOT)
        raw = await client.closed
        self.assertTrue(raw.startswith(b"HTTP/1.1 413 "), raw)
        self.assertEqual(taken, [])
