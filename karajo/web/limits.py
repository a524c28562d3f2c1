"""
A C{Site} that caps request bodies and drops slow clients.

Twisted reads a whole request body, into memory or a temporary file, before
any resource sees the request, and it has no size limit of its own: one
C{Content-Length: 1000000000000} would fill the disk.  It also only has an
idle timeout, which a "slowloris" client defeats by sending one header byte
at a time.  L{limited_site} closes both holes:

  - L{LimitedRequest} refuses a body larger than C{max_body_size} with a 413
    as soon as it is known to be too large: from C{Content-Length} before a
    single body byte is read, or while counting a chunked body.  The body is
    never buffered beyond the limit and no temporary file is opened for it.
  - L{LimitedChannel} closes a connection whose request headers are not
    complete within C{header_timeout} seconds of connecting (or of the
    previous response on a keep-alive connection), and answers 408 and
    closes when the body is not complete within C{body_timeout} seconds of
    the end of the headers: Twisted's idle timeout restarts with every
    byte, so a client trickling a byte every 20 s held a connection (and
    the temporary file of a large body) forever.
  - The site closes a new connection at once when its client address
    already holds C{max_per_client} connections, or when the server holds
    C{max_connections} (by default derived from C{RLIMIT_NOFILE} by
    L{connection_limit}, so that descriptors are always left for runs'
    logs and processes: 600 slow connections once exhausted 1,024
    descriptors and scheduled runs failed with "Too many open files").

Every answer given before a request was read whole -- the 413, and the
400, 414 and 431 for requests Twisted's parser refuses -- is followed by a
"lingering" close: on plain TCP our side is shut for writing right after
the answer, and whatever the client still sends is read and thrown away
for at most L{LINGER_SECONDS} / L{LINGER_BYTES}.  Closing a socket with
unread data makes the kernel send a RST, which can destroy the answer
before the client reads it; this is what nginx and Apache do too.  Over
TLS (no half-close) the connection is simply closed after the answer.

Twisted's private channel hooks used here come from
L{karajo.twisted_private.HTTPChannelHooks}.
"""

from __future__ import annotations

import io
import sys
import tempfile
from collections.abc import Callable
from resource import RLIM_INFINITY, RLIMIT_NOFILE, getrlimit
from typing import IO, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ISSLTransport, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource

from karajo.twisted_private import HTTPChannelHooks
from karajo.web import hotpath
from karajo.web.errors import error_response

__all__ = [
    "BODY_TIMEOUT",
    "DESCRIPTOR_RESERVE",
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "MAX_CONNECTIONS_PER_CLIENT",
    "LimitedChannel",
    "LimitedRequest",
    "connection_limit",
    "limited_site",
]

log = Logger()

#: How long, at most, a connection answered early (413, 400, 414, 431) keeps being drained.
LINGER_SECONDS = 2.0
#: How many bytes, at most, are read and discarded after such an answer.
LINGER_BYTES = 256 * 1024

#: Seconds a request body may take to arrive, counted from the end of its headers.
BODY_TIMEOUT = 30.0
#: Connections one client address may hold open at once.
MAX_CONNECTIONS_PER_CLIENT = 64
#: Descriptors never spent on connections: they are for runs' logs, their
#: processes' pipes, the state files and the listening sockets.
DESCRIPTOR_RESERVE = 256


def connection_limit(reserve: int = DESCRIPTOR_RESERVE) -> int:
    """
    How many connections the server may hold open: the soft
    C{RLIMIT_NOFILE} less C{reserve}, halved because a connection with a
    large body holds a second descriptor (its temporary file).  At least 1.
    """
    soft, _ = getrlimit(RLIMIT_NOFILE)
    if soft == RLIM_INFINITY or soft < 0:
        soft = 1 << 20
    return max(1, (soft - reserve) // 2)


# No body cap: a limit no body reaches.
_HUGE = sys.maxsize

# Bodies below this size are kept in memory; larger ones (up to the cap) go
# to a temporary file, as Twisted itself does.
_IN_MEMORY_BODY = 100_000


class LimitedRequest(server.Request):
    """
    A request whose body may not exceed C{maxBodySize} bytes.

    L{limited_site} makes a subclass with C{maxBodySize} set; C{None} means
    no limit (plain Twisted behaviour).
    """

    maxBodySize: int | None = None
    _bodyRejected = False
    _bodyReceived = 0

    def gotLength(self, length: int | None) -> None:
        """
        Called once the headers are in, before any body byte is read.

        A declared length over the cap is refused right here, so neither
        memory nor a temporary file is spent on it.  A chunked body
        (C{length is None}) is given a buffer sized for the cap rather than
        Twisted's unconditional temporary file.
        """
        limit = self.maxBodySize
        if limit is None:
            super().gotLength(length)
            return
        if length is not None and length > limit:
            self.content = io.BytesIO()
            self._rejectBody()
            return
        expected = length if length is not None else limit
        self.content = io.BytesIO() if expected < _IN_MEMORY_BODY else _tempfile()

    def handleContentChunk(self, data: bytes) -> None:
        """Count body bytes; refuse the request as soon as they pass the cap."""
        if self._bodyRejected:
            return
        self._bodyReceived += len(data)
        if self.maxBodySize is not None and self._bodyReceived > self.maxBodySize:
            self._rejectBody()
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """A refused request never reaches the resource."""
        if self._bodyRejected:
            return
        super().requestReceived(command, path, version)

    def _rejectBody(self) -> None:
        """
        Answer 413 directly on the transport and close the connection.

        The request has not been dispatched yet (its method and URI are not
        even set), so the normal response machinery cannot be used.
        """
        self._bodyRejected = True
        content, self.content = self.content, io.BytesIO()
        if content is not None:
            content.close()
        channel = self.channel
        peer = channel.getPeer()
        log.info(
            "refused a request body larger than {limit} bytes from {peer}",
            limit=self.maxBodySize,
            peer=getattr(peer, "host", str(peer)),
        )
        channel.persistent = False
        _write(
            channel,
            error_response(
                413,
                b"Payload Too Large",
                "ERR_BODY_TOO_LARGE",
                f"request body is larger than {self.maxBodySize} bytes",
            )
        )
        if isinstance(channel, LimitedChannel):
            channel.lingerClose()
        else:
            channel.loseConnection()


def _write(channel: http.HTTPChannel, data: bytes) -> None:
    """Write straight to C{channel}'s connection, unless it is already gone."""
    if channel.transport is not None:
        channel.transport.write(data)


def _tempfile() -> IO[bytes]:
    """An anonymous temporary file for a body too large to keep in memory."""
    return tempfile.TemporaryFile()



def _cancel(call: Any) -> None:
    """Cancel a deadline if it is still pending."""
    if call is not None and call.active():
        call.cancel()

class LimitedChannel(HTTPChannelHooks):
    """
    An HTTP channel with a deadline for the request headers, and that stops
    parsing once its request body has been refused.

    C{headerTimeout} is set by L{limited_site}; C{callLater} is the site's
    clock (set by C{HTTPFactory.buildProtocol}).
    """

    headerTimeout: float | None = None
    bodyTimeout: float | None = None
    #: the webhook POST's handler for L{karajo.web.hotpath}'s requests, set
    #: by the site; C{None} when it declines one (then Twisted reads it)
    hotRoute: Callable[[hotpath.HotRequest], bytes | None] | None = None
    _headerCall: IDelayedCall | None = None
    _bodyCall: IDelayedCall | None = None
    _released = False
    _lingerCall: IDelayedCall | None = None
    _lingering = False
    _lingerBytes = 0
    _host: Any = None
    _peer: Any = None

    def getHost(self) -> Any:
        """The local address, asked once per connection (a syscall each time otherwise)."""
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        """The client's address, asked once per connection: every request reads it."""
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    # -- header deadline -------------------------------------------------

    def connectionMade(self) -> None:
        """Start the header deadline as soon as the client connects."""
        super().connectionMade()
        self._armHeaderDeadline()

    def _armHeaderDeadline(self) -> None:
        """(Re)start the deadline for the next request's headers."""
        self._cancelHeaderDeadline()
        if self.headerTimeout is not None:
            self._headerCall = self.callLater(self.headerTimeout, self._headerTimedOut)

    def _cancelHeaderDeadline(self) -> None:
        _cancel(self._headerCall)
        self._headerCall = None

    def _headerTimedOut(self) -> None:
        """
        The client has not sent complete headers in time: close.

        A 408 is sent only when the client had started a request; an idle
        keep-alive connection is just closed, as clients expect.
        """
        self._headerCall = None
        started = bool(self.header_bytes_received() or self.has_unparsed_data())
        peer = self.getPeer()
        log.info(
            "closing {peer}: request headers not complete within {timeout}s",
            peer=getattr(peer, "host", str(peer)),
            timeout=self.headerTimeout,
        )
        if started:
            _write(
                self,
                error_response(
                    408,
                    b"Request Timeout",
                    "ERR_REQUEST_TIMEOUT",
                    "request headers were not received in time",
                )
            )
        # Closes cleanly, and aborts after abortTimeout if the client does
        # not read what is left to send.
        self.timeoutConnection()

    def allHeadersReceived(self) -> None:
        """
        The headers are complete: their deadline is met, and the body's
        starts (cancelled at once when there is no body).
        """
        self._cancelHeaderDeadline()
        self._cancelBodyDeadline()
        if self.bodyTimeout is not None:
            self._bodyCall = self.callLater(self.bodyTimeout, self._bodyTimedOut)
        super().allHeadersReceived()

    # -- body deadline ---------------------------------------------------

    def _cancelBodyDeadline(self) -> None:
        _cancel(self._bodyCall)
        self._bodyCall = None

    def _bodyTimedOut(self) -> None:
        """
        The body is not complete in time: answer 408 and close.  The
        request was never dispatched; its body buffer (perhaps a temporary
        file) is let go at once.
        """
        self._bodyCall = None
        peer = self.getPeer()
        log.info(
            "closing {peer}: request body not complete within {timeout}s",
            peer=getattr(peer, "host", str(peer)),
            timeout=self.bodyTimeout,
        )
        for request in list(getattr(self, "requests", ())):
            content = getattr(request, "content", None)
            if content is not None:
                request.content = io.BytesIO()
                content.close()
        self.persistent = False
        _write(
            self,
            error_response(
                408,
                b"Request Timeout",
                "ERR_REQUEST_TIMEOUT",
                "request body was not received in time",
            ),
        )
        self.lingerClose()

    def requestDone(self, request: http.Request) -> None:
        """On keep-alive, the next request's headers get a new deadline."""
        if self.persistent and not self._lingering:
            # Armed before the parent replays pipelined data, which may
            # complete the next request's headers (and cancel it) at once.
            self._armHeaderDeadline()
        super().requestDone(request)

    # -- requests Twisted's parser refuses -------------------------------

    def refuse_malformed_request(self) -> None:
        """
        Twisted's parser refused the request (a malformed request line,
        header or Content-Length, headers over C{totalHeadersSize}): answer
        with the JSON envelope, like every other error, rather than
        Twisted's empty 400.
        """
        if self.header_bytes_received() > self.totalHeadersSize:
            answer = error_response(431, b"Request Header Fields Too Large",
                                     "ERR_HEADERS_TOO_LARGE",
                                     f"request headers are larger than {self.totalHeadersSize} bytes")
        else:
            answer = error_response(400, b"Bad Request", "ERR_BAD_REQUEST", "malformed HTTP request")
        _write(self, answer)
        # Closed like after a 413: what the client still sends must not
        # turn into a reset that destroys the answer before it is read.
        self.lingerClose()

    def headerReceived(self, line: bytes) -> bool:
        """
        Two headers are refused before Twisted reads them: a name longer
        than L{hotpath.MAX_NAME} bytes (431: Twisted would keep every such
        name it saw, up to 10,000 of them, for good), and a Content-Length
        of more than L{hotpath.MAX_LENGTH_DIGITS} digits (413, as any body
        over the cap: Python's C{int()} raises on thousands of digits,
        which Twisted let through as an unhandled error and a dropped
        connection).
        """
        name, colon, value = line.partition(b":")
        if colon and len(name) > hotpath.MAX_NAME:
            _write(self, error_response(431, b"Request Header Fields Too Large",
                                         "ERR_HEADERS_TOO_LARGE",
                                         f"a header name is longer than {hotpath.MAX_NAME} bytes"))
            self.lingerClose()
            return False
        if colon and name.lower() == b"content-length":
            digits = value.strip(b" \t")
            if len(digits) > hotpath.MAX_LENGTH_DIGITS and digits.isdigit() and self.requests:
                if len(digits.lstrip(b"0")) > hotpath.MAX_LENGTH_DIGITS:
                    self.requests[-1]._rejectBody()
                else:  # a small number padded with zeros: no body is too large, the header is odd
                    self.refuse_malformed_request()
                return False
        return bool(super().headerReceived(line))

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        One line of the request head is longer than C{MAX_LENGTH}: a 414
        for the request line (a huge query string), a 431 for a header.
        LineReceiver would just drop the connection without a word.
        """
        if self.header_bytes_received() == 0:  # nothing of this request's head parsed yet
            answer = error_response(414, b"URI Too Long", "ERR_URI_TOO_LONG",
                                     f"request line is longer than {self.MAX_LENGTH} bytes")
        else:
            answer = error_response(431, b"Request Header Fields Too Large",
                                     "ERR_HEADERS_TOO_LARGE",
                                     f"a request header is longer than {self.MAX_LENGTH} bytes")
        _write(self, answer)
        self.lingerClose()

    # -- after an early answer (413, 400, 414, 431) ----------------------

    def lingerClose(self) -> None:
        """
        Stop parsing, shut our side for writing once the answer is sent, and
        drain (discard) the client's data for a bounded time and size.
        """
        if self._lingering:
            return
        self._lingering = True
        self._cancelHeaderDeadline()
        self._cancelBodyDeadline()
        self.setTimeout(None)
        transport = self.transport
        if ITCPTransport.providedBy(transport) and not ISSLTransport.providedBy(transport):
            self._lingerCall = self.callLater(LINGER_SECONDS, self._endLinger)
            transport.loseWriteConnection()
        else:
            self.loseConnection()

    def _endLinger(self) -> None:
        """The drain budget is spent: drop the connection."""
        self._lingerCall = None
        transport = self.transport
        if ITCPTransport.providedBy(transport):  # always: lingering is only done on TCP
            transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        """
        Discard everything once the request body was refused; answer the
        webhook requests at the start of C{data} the short way (L{hotRoute})
        and let Twisted's parser read the rest.
        """
        if self._lingering:
            self._lingerBytes += len(data)
            if self._lingerBytes > LINGER_BYTES and self._lingerCall is not None:
                self._lingerCall.cancel()
                self._endLinger()
            return
        if self.hotRoute is not None and self.at_request_start():
            data = self._answer_hot(data)
            if not data:
                return
        super().dataReceived(data)

    def _answer_hot(self, data: bytes) -> bytes:
        """
        Answer each whole webhook request at the start of C{data}
        (L{karajo.web.hotpath}); return what is left for Twisted's parser.
        """
        route = self.hotRoute
        assert route is not None
        max_body = self.requestFactory.maxBodySize  # type: ignore[attr-defined]
        limits = (_HUGE if max_body is None else max_body,
                  min(self.totalHeadersSize, self.MAX_LENGTH), self.maxHeaders)
        start = 0
        while start < len(data):
            parsed = hotpath.parse(data, self, *limits, start=start)
            if parsed is None:
                break
            request, end = parsed
            try:
                body = route(request)
            except Exception:
                # The handler answers its own errors; this is a bug: the
                # JSON 500 Twisted's way gives, not a dropped connection.
                log.failure("answering a webhook request failed")
                _write(self, error_response(500, b"Internal Server Error", "ERR_INTERNAL",
                                            "internal server error"))
                self.lingerClose()
                return b""
            if body is None:
                break
            self.resetTimeout()
            close = hotpath.wants_close(request)
            transport = self.transport
            if transport is None:
                return b""
            transport.write(hotpath.answer(request, body, self.factory.reactor.seconds(), close))
            self.short_request_answered()
            if close:
                self.persistent = False
                self._cancelHeaderDeadline()
                self.loseConnection()
                return b""
            self._armHeaderDeadline()
            start = end
        return data[start:] if start else data

    def lineReceived(self, line: bytes) -> Any:
        if self._lingering:
            return None
        return super().lineReceived(line)

    def rawDataReceived(self, data: bytes) -> None:
        # Reached for the rest of the buffer that held the refused headers.
        if self._lingering:
            return
        super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        # A chunked decoder may still see the terminal chunk in the same
        # buffer that went over the cap: the request must not be dispatched.
        if self._lingering:
            return
        self._cancelBodyDeadline()
        super().allContentReceived()

    def may_continue(self) -> bool:
        """Never invite the body of a request already refused."""
        return not self._lingering

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Cancel our timers with the connection; it no longer counts."""
        self._cancelHeaderDeadline()
        self._cancelBodyDeadline()
        if not self._released:
            self._released = True
            release = getattr(self.factory, "connection_closed", None)
            if release is not None:
                release(self)
        if self._lingerCall is not None:
            if self._lingerCall.active():
                self._lingerCall.cancel()
            self._lingerCall = None
        super().connectionLost(reason)


class _LimitedSite(server.Site):
    """
    A Site whose channels get the header and body deadlines, and that
    refuses connections over its caps (in all, per client address).
    """

    headerTimeout: float | None = None
    bodyTimeout: float | None = None
    maxConnections: int | None = None
    maxPerClient: int | None = None
    #: given to every channel (L{LimitedChannel.hotRoute})
    hotRoute: Callable[[hotpath.HotRequest], bytes | None] | None = None
    _refusing = False
    # Twisted types this as its HTTP/1.1-or-2 wrapper's factory; a plain
    # HTTPChannel subclass is what a Site served before HTTP/2 and still
    # serves (buildProtocol needs only a protocol).  No HTTP/2 here.
    protocol = LimitedChannel  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_connections = 0
        self._per_client: dict[str, int] = {}

    def buildProtocol(self, addr: Any) -> Any:
        """
        A channel for a new connection, or None (the reactor closes the
        socket at once) when a cap is reached.
        """
        host = str(getattr(addr, "host", addr))
        if self.maxConnections is not None and self.open_connections >= self.maxConnections:
            self._refuse("{count} connections are open, the most karajo accepts", host)
            return None
        if self.maxPerClient is not None and self._per_client.get(host, 0) >= self.maxPerClient:
            self._refuse("{peer} holds {per_client} connections, the most one client may", host)
            return None
        channel = super().buildProtocol(addr)
        if channel is not None:
            channel.headerTimeout = self.headerTimeout
            channel.bodyTimeout = self.bodyTimeout
            channel.hotRoute = self.hotRoute
            channel.client_key = host
            self.open_connections += 1
            self._per_client[host] = self._per_client.get(host, 0) + 1
            self._refusing = False
        return channel

    def _refuse(self, why: str, host: str) -> None:
        """Log the first refusal of a run of them (a flood is one line, not thousands)."""
        if not self._refusing:
            self._refusing = True
            log.warn(
                "refusing new connections: " + why,
                count=self.open_connections,
                peer=host,
                per_client=self.maxPerClient,
            )

    def connection_closed(self, channel: Any) -> None:
        """A channel made by L{buildProtocol} lost its connection."""
        host = getattr(channel, "client_key", None)
        if host is None:
            return
        self.open_connections -= 1
        left = self._per_client.get(host, 1) - 1
        if left > 0:
            self._per_client[host] = left
        else:
            self._per_client.pop(host, None)

    def log(self, request: Any) -> None:
        """
        No access-log line per request: under a flood of forged webhooks it
        was a fifth of the daemon's work and a disk write each.  The API logs
        what matters (refused signatures, runs) itself.
        """


def limited_site(
    resource: IResource,
    max_body_size: int,
    *,
    clock: IReactorTime,
    idle_timeout: float = 60.0,
    header_timeout: float = 10.0,
    body_timeout: float = BODY_TIMEOUT,
    max_connections: int | None = None,
    max_per_client: int = MAX_CONNECTIONS_PER_CLIENT,
    hot_route: Callable[[hotpath.HotRequest], bytes | None] | None = None,
) -> server.Site:
    """
    A C{Site} serving C{resource} with bodies capped at C{max_body_size}
    bytes (413 beyond), idle connections closed after C{idle_timeout}
    seconds, request headers due within C{header_timeout} seconds and the
    body within C{body_timeout} seconds more (408 beyond).  At most
    C{max_connections} connections are open (default L{connection_limit}),
    C{max_per_client} of them from one address; a connection over either
    cap is closed as soon as it is accepted.  C{hot_route}, when given,
    answers the whole webhook requests a connection's bytes start with
    (L{LimitedChannel.hotRoute}).

    C{clock} runs the timeouts (the server's reactor, or a test's clock);
    it is required so that no site silently falls back to the global one.
    """
    if max_body_size < 0:
        raise ValueError("max_body_size must not be negative")
    request_factory = type(
        "LimitedRequest", (LimitedRequest,), {"maxBodySize": max_body_size}
    )
    site = _LimitedSite(
        resource,
        requestFactory=request_factory,
        timeout=idle_timeout,
        reactor=clock,
        # Every route reads the raw body itself (signatures are checked over
        # the exact bytes); Twisted's form parsing into request.args would
        # only cost time (a fifth of a forged webhook's handling).
        parsePOSTFormSubmission=False,
    )
    site.headerTimeout = header_timeout
    site.bodyTimeout = body_timeout
    site.maxConnections = connection_limit() if max_connections is None else max_connections
    site.maxPerClient = max_per_client
    site.hotRoute = hot_route
    return site
