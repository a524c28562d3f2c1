"""
The one JSON envelope every API response is wrapped in, and the value
formats inside it (docs/http-api.md, "Conventions").

    {"code": <http status>, "message": <string>, "data": <...>}

An error also carries C{"name": "ERR_..."}.  Times are RFC 3339 UTC with
whole seconds (C{0001-01-01T00:00:00Z} for never, Go's zero time, which is
what clients of the original expect); durations are integer nanoseconds.

The writers here set the status and L{JSON_HEADERS} on a Twisted request
and return the body bytes for the caller (a Klein route) to write; errors
are written by L{karajo.web.errors.error}.  Messages are escaped by the JSON encoder (C{ensure_ascii}), so
no byte of user input can reach the client unescaped.
"""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

from karajo.duration import to_nanoseconds

__all__ = [
    "JSON_HEADERS",
    "ZERO_TIME",
    "dumps",
    "duration_ns",
    "envelope",
    "envelope_raw",
    "format_time",
    "set_json_headers",
    "success",
    "success_raw",
]

#: Go's zero C{time.Time}, which the original sends for "never".
ZERO_TIME = "0001-01-01T00:00:00Z"

# Largest epoch second that still formats as a four-digit year.
_MAX_EPOCH = 253402300799  # 9999-12-31T23:59:59Z

_encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
_encode = _encoder.encode

#: The headers of every JSON answer, success or error: an API answer is
#: never cached and never sniffed as anything but JSON.
JSON_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"Content-Type", b"application/json"),
    (b"Cache-Control", b"no-store"),
    (b"X-Content-Type-Options", b"nosniff"),
)


def dumps(value: Any) -> str:
    """Compact JSON with every non-ASCII character escaped."""
    return _encode(value)


def format_time(epoch: float | None) -> str:
    """
    RFC 3339 UTC with whole seconds for a Unix time; L{ZERO_TIME} for
    C{None} (never) and for anything that is not a representable time.
    """
    if epoch is None:
        return ZERO_TIME
    try:
        second = int(epoch)
    except (TypeError, ValueError, OverflowError):
        return ZERO_TIME
    if second < -62135596800 or second > _MAX_EPOCH:
        return ZERO_TIME
    if second >= 0:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
    when = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        seconds=second
    )
    return (
        f"{when.year:04d}-{when.month:02d}-{when.day:02d}"
        f"T{when.hour:02d}:{when.minute:02d}:{when.second:02d}Z"
    )


def duration_ns(td: datetime.timedelta | None) -> int:
    """A duration as integer nanoseconds; 0 when not set."""
    if td is None:
        return 0
    return to_nanoseconds(td)


def set_json_headers(request: Any, code: int) -> None:
    """Set the status and L{JSON_HEADERS} on a Twisted request."""
    request.setResponseCode(code)
    for header, value in JSON_HEADERS:
        request.setHeader(header, value)


def envelope_raw(code: int, message: str, data_json: str, name: str | None = None) -> bytes:
    """
    The envelope around an already encoded C{data} value, so a large,
    partly cached document is not decoded and encoded again.
    """
    head = f'{{"code":{code:d},"message":{_encode(message)}'
    if name is not None:
        head += ',"name":' + _encode(name)
    return (head + ',"data":' + data_json + "}").encode("ascii")


def envelope(code: int, message: str, data: Any = None, name: str | None = None) -> bytes:
    """The envelope as bytes."""
    return envelope_raw(code, message, _encode(data), name)


def success(request: Any, data: Any, message: str = "OK", code: int = 200) -> bytes:
    """Set the headers of a successful response and return its body."""
    set_json_headers(request, code)
    return envelope(code, message, data)


def success_raw(request: Any, data_json: str, message: str = "OK", code: int = 200) -> bytes:
    """L{success} with C{data} already encoded as JSON."""
    set_json_headers(request, code)
    return envelope_raw(code, message, data_json)
