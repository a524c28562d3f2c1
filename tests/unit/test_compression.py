"""
gzip when the client asks (karajo.web.compression): the API's JSON, the
UI and the metrics, never the events stream; the same bytes once
decompressed, and a large body compressed once while it stays the same.
"""

from __future__ import annotations

import gzip
import os
import zlib
from datetime import timedelta
from typing import Any

from treq.testing import RequestTraversalAgent
from twisted.internet import defer, task
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import readBody
from twisted.web.http_headers import Headers

from karajo.config import Loaded, validate
from karajo.model import Environment, Job
from karajo.service import build_job_services
from karajo.web import compression
from karajo.web.compression import accepts_gzip
from karajo.web.site import build_site


class AcceptsGzipTests(SynchronousTestCase):
    def test_values(self) -> None:
        """The codings and q-values of RFC 9110: gzip, x-gzip or *, unless q=0."""
        for value in (b"gzip", b"GZIP", b"deflate, gzip", b"gzip;q=0.5", b"br;q=1, *",
                      b"x-gzip", b" gzip ; q=1.0 "):
            self.assertTrue(accepts_gzip(value), value)
        for value in (None, b"", b"identity", b"deflate, br", b"gzip;q=0", b"gzip; q=0.0",
                      b"gzipx", b"*;q=0", b"gzip;q=x"):
            self.assertFalse(accepts_gzip(value), value)


class SiteTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        clock = task.Clock()
        clock.advance(1_800_000_000)
        jobs = {f"job {n}": Job(path=f"/hook{n}", interval=timedelta(hours=1),
                                description="x" * 200, call=lambda log, request: None)
                for n in range(200)}
        env, warnings = validate(Environment(dir_base=base, secret="s3cret", jobs=jobs))

        def inline(f: Any, *args: Any) -> defer.Deferred:
            return defer.maybeDeferred(f, *args)

        self.service = build_job_services(Loaded(env, warnings), clock, inline)
        self.service.startService()
        self.addCleanup(self.service.stopService)
        # An agent without treq's decoding: the test sees the bytes sent.
        self.agent = RequestTraversalAgent(build_site(self.service, clock, inline).resource)

    def get(self, path: str, encoding: str | None = "gzip") -> tuple[Any, bytes]:
        headers = Headers({"Accept-Encoding": [encoding]} if encoding else {})
        d = self.agent.request(b"GET", b"http://karajo.test" + path.encode(), headers)
        self.agent.flush()
        response = self.successResultOf(d)
        body = readBody(response)
        self.agent.flush()
        return response, self.successResultOf(body)

    def test_json_and_ui_gzipped_when_asked(self) -> None:
        """Asked: C{Content-Encoding: gzip}, the same body once decompressed; else plain."""
        for path in ("/karajo/api/environment", "/karajo/api/job_exec?id=job_1",
                     "/karajo/api/nope", "/karajo/app/nope", "/karajo/app/job?id=job_1",
                     "/karajo/static/app.css"):
            plain_response, plain = self.get(path, None)
            response, packed = self.get(path)
            self.assertEqual(plain_response.code, response.code, path)
            self.assertIsNone(plain_response.headers.getRawHeaders("content-encoding"), path)
            self.assertEqual(response.headers.getRawHeaders("content-encoding"), ["gzip"], path)
            self.assertIn("Accept-Encoding", response.headers.getRawHeaders("vary"), path)
            self.assertEqual(gzip.decompress(packed), plain, path)
            _, refused = self.get(path, "gzip;q=0, identity")
            self.assertEqual(refused, plain, path)

    def test_environment_compressed_once_while_unchanged(self) -> None:
        """
        The environment (over 32 KiB) is compressed once, then served from
        the cache while no job changes; a change compresses it again.
        """
        made = []
        real = zlib.compressobj

        def counting(*args: Any) -> Any:
            made.append(args)
            return real(*args)

        self.patch(compression.zlib, "compressobj", counting)
        _, plain = self.get("/karajo/api/environment", None)
        self.assertGreater(len(plain), compression.CACHE_MIN_BYTES)
        bodies = [self.get("/karajo/api/environment")[1] for _ in range(3)]
        self.assertEqual(len(made), 1)
        self.assertEqual([gzip.decompress(b) for b in bodies], [plain] * 3)
        self.service.jobs["job_7"].runner.pause()
        _, changed = self.get("/karajo/api/environment")
        self.assertEqual(len(made), 2)
        self.assertIn(b'"status":"paused"', gzip.decompress(changed))

    def test_events_stream_never_gzipped(self) -> None:
        """The events stream goes out as written, asked or not."""
        response, body = self.get("/karajo/api/job_exec/events?id=job_1&counter=9")
        self.assertEqual(response.code, 404)
        self.assertIsNone(response.headers.getRawHeaders("content-encoding"))
        self.assertIn(b"ERR_LOG_NOT_FOUND", body)


class StreamedBodyTests(SynchronousTestCase):
    def test_a_streamed_page_reaches_the_client_as_it_is_written(self) -> None:
        """
        A page written in pieces is flushed every STREAM_FLUSH_BYTES of
        input, so its head and first rows can be painted before the rest
        is built; the pieces still make one valid gzip body.
        """
        from karajo.web.compression import _Cache, _GzipEncoder

        class Request:
            responseHeaders = Headers()

        encoder = _GzipEncoder(Request(), _Cache())
        pieces = [os.urandom(300).hex().encode() for _ in range(100)]  # 600 bytes each
        out = []
        fed = 0
        decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        seen = b""
        for piece in pieces:
            out.append(encoder.encode(piece))
            fed += len(piece)
            seen += decoder.decompress(out[-1])
            self.assertLessEqual(fed - len(seen), 8 * 1024)
        out.append(encoder.finish())
        self.assertEqual(zlib.decompress(b"".join(out), 16 + zlib.MAX_WBITS), b"".join(pieces))
