"""
The webhook's short way (karajo.web.hotpath): which requests L{parse}
takes (the plainest webhook POSTs, whole) and which it leaves to Twisted's
parser, and the answer it writes.
"""

from __future__ import annotations

import gzip

from twisted.trial.unittest import SynchronousTestCase

from karajo.web import hotpath

BODY = b'{"_karajo_epoch":1700000000,"n":1}'


def request(
    target: bytes = b"/karajo/api/job_exec/run/a",
    headers: bytes = b"Host: x\r\nX-Karajo-Sign: abc\r\n",
    body: bytes = BODY,
    length: bytes | None = None,
    first: bytes | None = None,
) -> bytes:
    if length is None:
        length = b"Content-Length: %d\r\n" % len(body)
    line = first if first is not None else b"POST " + target + b" HTTP/1.1"
    return line + b"\r\n" + headers + length + b"\r\n" + body


def parse(data: bytes, max_body: int = 1000, max_head: int = 16384, max_headers: int = 500):
    return hotpath.parse(data, None, max_body, max_head, max_headers)


class Taken(SynchronousTestCase):
    def test_plain_webhook(self) -> None:
        """A whole webhook POST: its target, headers (Twisted's case) and body, and its length."""
        data = request(headers=b"host: x\r\nx-github-event:  push \t\r\n")
        parsed = parse(data)
        assert parsed is not None
        req, used = parsed
        self.assertEqual(used, len(data))
        self.assertEqual((req.method, req.uri, req.path), (b"POST", b"/karajo/api/job_exec/run/a",
                                                          b"/karajo/api/job_exec/run/a"))
        self.assertEqual(req.postpath, [b"karajo", b"api", b"job_exec", b"run", b"a"])
        self.assertEqual(req.content.read(), BODY)
        self.assertEqual(req.getHeader(b"X-GitHub-Event"), b"push")
        self.assertEqual(
            dict(req.requestHeaders.getAllRawHeaders()),
            {b"Host": [b"x"], b"X-Github-Event": [b"push"], b"Content-Length": [b"%d" % len(BODY)]},
        )

    def test_pipelined(self) -> None:
        """Only the first request is taken; the rest is left for the next call."""
        first = request()
        parsed = parse(first + b"GET / HTTP/1.1\r\n\r\n")
        assert parsed is not None
        self.assertEqual(parsed[1], len(first))

    def test_nested_path_and_empty_body(self) -> None:
        parsed = parse(request(target=b"/karajo/api/job_exec/run/a/b-c_d.e~f", body=b""))
        assert parsed is not None
        self.assertEqual(parsed[0].content.read(), b"")

    def test_repeated_header(self) -> None:
        parsed = parse(request(headers=b"X-A: 1\r\nX-A: 2\r\n"))
        assert parsed is not None
        self.assertEqual(parsed[0].requestHeaders.getRawHeaders(b"x-a"), [b"1", b"2"])


class LeftToTwisted(SynchronousTestCase):
    """Each of these is read by Twisted's parser, which accepts or refuses it as always."""

    def assertLeft(self, data: bytes, **limits: int) -> None:
        self.assertIsNone(parse(data, **limits), data)

    def test_partial(self) -> None:
        whole = request()
        for end in (10, whole.index(b"\r\n\r\n") + 2, len(whole) - 1):
            self.assertLeft(whole[:end])

    def test_other_requests(self) -> None:
        for first in (b"GET /karajo/api/job_exec/run/a HTTP/1.1",
                      b"POST /karajo/api/job_exec/run/a HTTP/1.0",
                      b"POST /karajo/api/job_exec/run/a HTTP/1.1 ",
                      b"POST  /karajo/api/job_exec/run/a HTTP/1.1",
                      b"POST /karajo/api/job_exec/cancel HTTP/1.1",
                      b"\r\nPOST /karajo/api/job_exec/run/a HTTP/1.1"):
            self.assertLeft(request(first=first))

    def test_targets(self) -> None:
        """Escapes, queries, empty segments and odd bytes: Twisted and Klein decide."""
        for target in (b"/karajo/api/job_exec/run/", b"/karajo/api/job_exec/run/a/",
                       b"/karajo/api/job_exec/run//a", b"/karajo/api/job_exec/run/a//b",
                       b"/karajo/api/job_exec/run/%61", b"/karajo/api/job_exec/run/a?x=1",
                       b"/karajo/api/job_exec/run/a#f", b'/karajo/api/job_exec/run/"a"',
                       b"/karajo/api/job_exec/run/\xc3\xa9", b"/karajo/api/job_exec/run/a\tb"):
            self.assertLeft(request(target=target))

    def test_headers(self) -> None:
        for headers in (b" folded: x\r\n", b"X-A: 1\r\n continued\r\n", b"No colon\r\n",
                        b"Bad Name: x\r\n", b": empty name\r\n", b"X-A: \xc3\xa9\r\n",
                        b"X-A: a\x00b\r\n", b"X-A: a\x7fb\r\n", b"X-A: a\nb\r\n", b"X-A: a\rb\r\n",
                        b"Transfer-Encoding: chunked\r\n", b"transfer-encoding: identity\r\n",
                        b"Expect: 100-continue\r\n"):
            self.assertLeft(request(headers=headers))

    def test_lengths(self) -> None:
        """No length, two, one that is no number, one over the body cap."""
        self.assertLeft(request(length=b""))
        self.assertLeft(request(length=b"Content-Length: 34\r\nContent-Length: 34\r\n"))
        for value in (b"-1", b"0x22", b"3 4", b"+34", b"\xd9\xa3"):
            self.assertLeft(request(length=b"Content-Length: " + value + b"\r\n"))
        self.assertLeft(request(), max_body=len(BODY) - 1)
        self.assertIsNotNone(parse(request(), max_body=len(BODY)))

    def test_huge_numbers_and_names(self) -> None:
        """A length of 19 digits or more, a name over MAX_NAME: Twisted's way, which refuses them."""
        self.assertLeft(request(length=b"Content-Length: " + b"0" * 17 + b"34\r\n"),
                        max_body=10**20)
        self.assertIsNotNone(parse(request(length=b"Content-Length: " + b"0" * 16 + b"34\r\n")))
        self.assertLeft(request(headers=b"X" * (hotpath.MAX_NAME + 1) + b": 1\r\n"))
        self.assertIsNotNone(parse(request(headers=b"X" * hotpath.MAX_NAME + b": 1\r\n")))

    def test_head_limits(self) -> None:
        data = request()
        head = data.index(b"\r\n\r\n")
        self.assertLeft(data, max_head=head - 1)
        self.assertIsNotNone(parse(data, max_head=head))
        self.assertLeft(request(headers=b"A: 1\r\nB: 2\r\n"), max_headers=2)
        self.assertIsNotNone(parse(request(headers=b"A: 1\r\nB: 2\r\n"), max_headers=3))


class Answer(SynchronousTestCase):
    def _request(self, accept: bytes = b"") -> hotpath.HotRequest:
        parsed = parse(request(headers=accept))
        assert parsed is not None
        req = parsed[0]
        req.setResponseCode(403)
        req.setHeader(b"Content-Type", b"application/json")
        req.setHeader(b"retry-after", b"3")
        req.setHeader(b"X-Note", b"two\r\nlines")
        return req

    def test_plain(self) -> None:
        """Status, Twisted's Server and Date, the handler's headers, Vary, the length, the body."""
        out = hotpath.answer(self._request(), b"{}", 0.0, close=False)
        head, _, body = out.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 403 Forbidden")
        self.assertEqual(lines[1:3], [b"Server: " + hotpath.SERVER_VERSION,
                                      b"Date: Thu, 01 Jan 1970 00:00:00 GMT"])
        self.assertEqual(sorted(lines[3:]), [b"Content-Length: 2", b"Content-Type: application/json",
                                             b"Retry-After: 3", b"Vary: Accept-Encoding",
                                             b"X-Note: two lines"])
        self.assertEqual(body, b"{}")

    def test_gzip_and_close(self) -> None:
        out = hotpath.answer(self._request(b"Accept-Encoding: br, gzip\r\n"), b"{}" * 100, 1.0,
                             close=True)
        head, _, body = out.partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Encoding: gzip\r\n", head)
        self.assertIn(b"\r\nConnection: close\r\n", head)
        self.assertIn(b"\r\nContent-Length: %d" % len(body), head)
        self.assertEqual(gzip.decompress(body), b"{}" * 100)

    def test_gzip_refused(self) -> None:
        out = hotpath.answer(self._request(b"Accept-Encoding: gzip;q=0\r\n"), b"{}", 1.0, close=False)
        self.assertNotIn(b"Content-Encoding", out)
        self.assertTrue(out.endswith(b"\r\n\r\n{}"))


class Offsets(SynchronousTestCase):
    def test_from_an_offset(self) -> None:
        """Pipelined requests are read in place, each from where the previous one ended."""
        one = request()
        data = one + request(body=b"{}") + b"GET / HTTP/1.1\r\n\r\n"
        first = parse(data)
        assert first is not None
        second = hotpath.parse(data, None, 1000, 16384, 500, start=first[1])
        assert second is not None
        self.assertEqual(second[0].content.read(), b"{}")
        self.assertIsNone(hotpath.parse(data, None, 1000, 16384, 500, start=second[1]))

    def test_wants_close(self) -> None:
        """As Twisted's checkPersistence: the first Connection value, split at spaces."""
        for value, close in ((b"close", True), (b"Keep-Alive, Close", True), (b"close,te", False),
                             (b"keep-alive", False), (b"closed", False)):
            parsed = parse(request(headers=b"Connection: " + value + b"\r\n"))
            assert parsed is not None
            self.assertEqual(hotpath.wants_close(parsed[0]), close, value)
        parsed = parse(request())
        assert parsed is not None
        self.assertFalse(hotpath.wants_close(parsed[0]))
        parsed = parse(request(headers=b"Connection: keep-alive\r\nConnection: close\r\n"))
        assert parsed is not None
        self.assertFalse(hotpath.wants_close(parsed[0]))
