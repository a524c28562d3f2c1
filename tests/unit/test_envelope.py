"""
Tests for L{karajo.web.envelope}: the JSON envelope of every API answer
(docs/http-api.md), byte for byte, and its time and duration formats.
"""

from __future__ import annotations

import datetime

from twisted.trial.unittest import SynchronousTestCase

from karajo.web import envelope, errors


class FakeRequest:
    """Records what a writer sets on a request."""

    def __init__(self) -> None:
        self.code: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        # Header names are case-insensitive; Twisted writes them as it likes.
        self.headers.append((name.lower(), value))


JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]


class BytesTests(SynchronousTestCase):
    """The exact bytes: clients of the original parse them."""

    def test_success_envelope(self) -> None:
        self.assertEqual(
            envelope.envelope(200, "OK", {"a": [1, "x"]}),
            b'{"code":200,"message":"OK","data":{"a":[1,"x"]}}',
        )

    def test_error_envelope(self) -> None:
        """The name comes between message and data."""
        self.assertEqual(
            envelope.envelope(404, "no such job", None, "ERR_NOT_FOUND"),
            b'{"code":404,"message":"no such job","name":"ERR_NOT_FOUND","data":null}',
        )

    def test_raw(self) -> None:
        """Already encoded data is inserted as it is."""
        self.assertEqual(
            envelope.envelope_raw(200, "OK", '{"cached":true}'),
            b'{"code":200,"message":"OK","data":{"cached":true}}',
        )

    def test_escaping(self) -> None:
        """Non-ASCII, line separators and quotes in messages are escaped."""
        self.assertEqual(
            envelope.envelope(400, '\u00e9\u2028"</script>', None, "ERR_\u00e9"),
            b'{"code":400,"message":"\\u00e9\\u2028\\"</script>",'
            b'"name":"ERR_\\u00e9","data":null}',
        )
        self.assertEqual(envelope.dumps({"a": "\u00e9", "b": [1, 2]}), '{"a":"\\u00e9","b":[1,2]}')


class WriterTests(SynchronousTestCase):
    def test_success(self) -> None:
        request = FakeRequest()
        body = envelope.success(request, [1])
        self.assertEqual((request.code, request.headers), (200, JSON_HEADERS))
        self.assertEqual(body, b'{"code":200,"message":"OK","data":[1]}')

    def test_success_other_code(self) -> None:
        request = FakeRequest()
        body = envelope.success(request, None, "created", 201)
        self.assertEqual(request.code, 201)
        self.assertEqual(body, b'{"code":201,"message":"created","data":null}')

    def test_success_raw(self) -> None:
        request = FakeRequest()
        body = envelope.success_raw(request, "[2]", "fine", 202)
        self.assertEqual((request.code, request.headers), (202, JSON_HEADERS))
        self.assertEqual(body, b'{"code":202,"message":"fine","data":[2]}')

    def test_error(self) -> None:
        """Extra headers come after the JSON ones."""
        request = FakeRequest()
        body = errors.error(
            request, 429, "ERR_THROTTLED", "slow down", {"n": 1}, [(b"retry-after", b"7")]
        )
        self.assertEqual(request.code, 429)
        self.assertEqual(request.headers, JSON_HEADERS + [(b"retry-after", b"7")])
        self.assertEqual(
            body, b'{"code":429,"message":"slow down","name":"ERR_THROTTLED","data":{"n":1}}'
        )


class FormatTimeTests(SynchronousTestCase):
    def test_never(self) -> None:
        self.assertEqual(envelope.ZERO_TIME, "0001-01-01T00:00:00Z")
        self.assertEqual(envelope.format_time(None), "0001-01-01T00:00:00Z")

    def test_whole_seconds(self) -> None:
        self.assertEqual(envelope.format_time(0), "1970-01-01T00:00:00Z")
        self.assertEqual(envelope.format_time(1767323045.999), "2026-01-02T03:04:05Z")

    def test_range_ends(self) -> None:
        """Four-digit years only: year 1 to 9999; beyond is 'never'."""
        self.assertEqual(envelope.format_time(253402300799), "9999-12-31T23:59:59Z")
        self.assertEqual(envelope.format_time(253402300800), "0001-01-01T00:00:00Z")
        self.assertEqual(envelope.format_time(-62135596799), "0001-01-01T00:00:01Z")
        self.assertEqual(envelope.format_time(-62135596801), "0001-01-01T00:00:00Z")
        self.assertEqual(envelope.format_time(-62135596800 - 86400 * 365), "0001-01-01T00:00:00Z")

    def test_before_1970(self) -> None:
        self.assertEqual(envelope.format_time(-1), "1969-12-31T23:59:59Z")
        self.assertEqual(envelope.format_time(-86400 * 365), "1969-01-01T00:00:00Z")
        self.assertEqual(envelope.format_time(-2208988800), "1900-01-01T00:00:00Z")

    def test_not_a_time(self) -> None:
        for value in (float("nan"), float("inf"), float("-inf"), "soon", object()):
            self.assertEqual(envelope.format_time(value), "0001-01-01T00:00:00Z", value)  # type: ignore[arg-type]


class DurationTests(SynchronousTestCase):
    def test_duration_ns(self) -> None:
        self.assertEqual(envelope.duration_ns(None), 0)
        self.assertEqual(envelope.duration_ns(datetime.timedelta(0)), 0)
        self.assertEqual(envelope.duration_ns(datetime.timedelta(microseconds=1)), 1000)
        self.assertEqual(envelope.duration_ns(datetime.timedelta(days=1)), 86_400_000_000_000)
        self.assertEqual(envelope.duration_ns(datetime.timedelta(seconds=-1)), -1_000_000_000)
