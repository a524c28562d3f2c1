"""
The webhook POST answered straight from the connection's bytes, without
twisted.web's request machinery: the webhook's short way
(docs/architecture.md).

A webhook is the request karajo gets most: every trigger, and every forged
or replayed one an attacker sends.  twisted.web parses a request line by
line and builds a C{Request}, a resource traversal and a chunked answer
around it: on one core of the benchmark machine it answers about 7,900
trivial requests a second, where the same parse and answer written
directly allow several times that (bench/PROFILE.md, "Fourth round").

L{parse} takes a request only when all of it is in hand and it is of the
plainest kind: C{POST /karajo/api/job_exec/run/<path> HTTP/1.1}, a path of
non-empty segments with no escape and no query, header names that are
tokens and values of visible ASCII, one C{Content-Length} within the body
cap, no C{Transfer-Encoding} and no C{Expect}.  Anything else (a request
still arriving, a chunked body, an odd byte) is left to Twisted's parser,
untouched, which answers it as it always did.  What is taken is a strict
subset of what Twisted accepts, read to the same values (header names in
Twisted's canonical case), handed to the same handler through
L{HotRequest}, and answered with the same status, headers and body; the
answer has a C{Content-Length} instead of chunks.
"""

from __future__ import annotations

import io
import re
from typing import Any

from twisted.web.http import RESPONSES, datetimeToString
from twisted.web.http_headers import Headers
from twisted.web.server import version as SERVER_VERSION

from karajo.web.compression import asks_for_gzip, gzip_whole

__all__ = ["HOT_PREFIX", "MAX_LENGTH_DIGITS", "MAX_NAME", "HotRequest", "answer", "parse",
           "wants_close"]

#: The start of every request L{parse} takes.
HOT_PREFIX = b"POST /karajo/api/job_exec/run/"

_HEAD_END = b"\r\n\r\n"
# A target byte Twisted accepts (printable ASCII) minus "%" (an escape,
# which Twisted would decode), "?" (a query) and "#".
_TARGET_REST = re.compile(rb"[!\x24&-\x3e@-\x7e]+\Z")
# A header line: a token, a colon, and a value of visible ASCII, spaces and tabs.
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([\t\x20-\x7e]*)\Z")
#: The longest header name the short way reads (L{karajo.web.limits.
#: LimitedChannel} refuses a longer one before Twisted keeps it for good).
MAX_NAME = 256
#: The most digits of a Content-Length (a longer one is over any body cap;
#: a number of thousands of digits is more than Python's int() takes).
MAX_LENGTH_DIGITS = 18


class HotRequest:
    """
    What the webhook handler reads and writes of a request, as
    C{twisted.web.server.Request} has it: C{method}, C{uri}, C{path},
    C{content}, C{requestHeaders}, C{getClientAddress}, C{getHeader};
    C{setResponseCode}, C{setHeader}.  The answer's headers are kept as
    set, by their names in lower case (L{answer} writes them).
    """

    __slots__ = (
        "channel", "code", "content", "method", "path", "postpath", "prepath",
        "headers_out", "requestHeaders", "uri",
    )

    def __init__(self, channel: Any, target: bytes, headers: Headers, body: bytes) -> None:
        self.channel = channel
        self.method = b"POST"
        self.uri = self.path = target
        self.prepath: list[bytes] = []
        self.postpath = target[1:].split(b"/")
        self.requestHeaders = headers
        self.headers_out: dict[bytes, tuple[bytes, bytes]] = {}
        self.content = io.BytesIO(body)
        self.code = 200

    def getHeader(self, name: bytes) -> bytes | None:
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None

    def getClientAddress(self) -> Any:
        return self.channel.getPeer()

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        # As Twisted's Headers: a value's line breaks become spaces, and
        # the name is written in its canonical case.
        if b"\r" in value or b"\n" in value:
            value = b" ".join(value.splitlines())
        self.headers_out[name.lower()] = (_canonical(name), value)


_canonical_names: dict[bytes, bytes] = {}


def _canonical(name: bytes) -> bytes:
    """
    A header name as Twisted's C{Headers} writes it (C{retry-after} as
    C{Retry-After}); it raises for a name that is no token, as Headers does.
    The names come from karajo's code: a handful, each worked out once.
    """
    canonical = _canonical_names.get(name)
    if canonical is None:
        ((canonical, _),) = Headers({name: [b""]}).getAllRawHeaders()
        if len(_canonical_names) < 256:
            _canonical_names[name] = canonical
    return canonical


def parse(data: bytes, channel: Any, max_body: int, max_head: int,
          max_headers: int, start: int = 0) -> tuple[HotRequest, int] | None:
    """
    The webhook request at offset C{start} of C{data} and the offset after
    it, or C{None} when Twisted's parser must read C{data} from there (see
    the module's docstring).  C{max_head}, C{max_headers} and C{max_body}
    are the channel's limits: a request over one goes Twisted's way, which
    refuses it.
    """
    if not data.startswith(HOT_PREFIX, start):
        return None
    end = data.find(_HEAD_END, start, start + max_head + 4)
    if end < 0:
        return None
    lines = data[start:end].split(b"\r\n")
    if len(lines) - 1 > max_headers:
        return None
    request_line = lines[0]
    if not request_line.endswith(b" HTTP/1.1"):
        return None
    target = request_line[5:-9]
    rest = target[len(HOT_PREFIX) - 5:]
    if not _TARGET_REST.match(rest) or b"" in rest.split(b"/"):
        return None
    headers = Headers()
    length = None
    for line in lines[1:]:
        match = _HEADER.match(line)
        if match is None:
            return None
        name, value = match.groups()
        if len(name) > MAX_NAME:
            return None
        lower = name.lower()
        if lower == b"content-length":
            if length is not None:
                return None
            value = value.strip(b" \t")
            if not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
                return None
            length = int(value)
        elif lower in (b"transfer-encoding", b"expect"):
            return None
        headers.addRawHeader(name, value.strip(b" \t"))
    if length is None or length > max_body:
        return None
    body = end + 4
    if len(data) - body < length:
        return None
    return HotRequest(channel, target, headers, data[body:body + length]), body + length


def wants_close(request: HotRequest) -> bool:
    """
    Whether the client's C{Connection} header says C{close}, read as
    Twisted's C{checkPersistence} reads it (its first value, split at
    spaces), so both ways keep or close a connection alike.
    """
    values = request.requestHeaders.getRawHeaders(b"Connection")
    if not values:
        return False
    return b"close" in values[0].lower().split(b" ")


_dates: dict[int, bytes] = {}


def _date(now: float) -> bytes:
    """The C{Date} header's value, formatted once a second rather than per answer."""
    second = int(now)
    value = _dates.get(second)
    if value is None:
        _dates.clear()
        value = _dates[second] = datetimeToString(second)
    return value


def answer(request: HotRequest, body: bytes, now: float, close: bool) -> bytes:
    """
    The whole HTTP/1.1 response to C{request}: its status and headers as
    the handler set them, with what twisted.web and the site's gzip wrapper
    add (C{Server}, C{Date}, C{Vary}, and a gzip body for a client that
    asks for one).
    """
    headers = request.headers_out
    added = [(b"Vary", b"Accept-Encoding")]
    if asks_for_gzip(request.requestHeaders):
        added.append((b"Content-Encoding", b"gzip"))
        body = gzip_whole(body)
    if close:
        added.append((b"Connection", b"close"))
    code = request.code
    out = [b"HTTP/1.1 %d %s\r\nServer: %s\r\nDate: %s\r\n"
           % (code, RESPONSES.get(code, b"Unknown Status"), SERVER_VERSION, _date(now))]
    for name, value in [*headers.values(), *added]:
        out.append(name + b": " + value + b"\r\n")
    out.append(b"Content-Length: %d\r\n\r\n" % len(body))
    out.append(body)
    return b"".join(out)
