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
    previous response on a keep-alive connection).

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
import tempfile
from typing import IO, Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ISSLTransport, ITCPTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import IResource

from karajo.twisted_private import HTTPChannelHooks
from karajo.web.errors import error_response

__all__ = [
    "LINGER_BYTES",
    "LINGER_SECONDS",
    "LimitedChannel",
    "LimitedRequest",
    "limited_site",
]

log = Logger()

#: How long, at most, a connection answered early (413, 400, 414, 431) keeps being drained.
LINGER_SECONDS = 2.0
#: How many bytes, at most, are read and discarded after such an answer.
LINGER_BYTES = 256 * 1024

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


class LimitedChannel(HTTPChannelHooks):
    """
    An HTTP channel with a deadline for the request headers, and that stops
    parsing once its request body has been refused.

    C{headerTimeout} is set by L{limited_site}; C{callLater} is the site's
    clock (set by C{HTTPFactory.buildProtocol}).
    """

    headerTimeout: float | None = None
    _headerCall: IDelayedCall | None = None
    _lingerCall: IDelayedCall | None = None
    _lingering = False
    _lingerBytes = 0

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
        if self._headerCall is not None:
            if self._headerCall.active():
                self._headerCall.cancel()
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
        """The headers are complete: the deadline is met."""
        self._cancelHeaderDeadline()
        super().allHeadersReceived()

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
        """Discard everything once the request body was refused."""
        if self._lingering:
            self._lingerBytes += len(data)
            if self._lingerBytes > LINGER_BYTES and self._lingerCall is not None:
                self._lingerCall.cancel()
                self._endLinger()
            return
        super().dataReceived(data)

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
        super().allContentReceived()

    def may_continue(self) -> bool:
        """Never invite the body of a request already refused."""
        return not self._lingering

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Cancel our timers with the connection."""
        self._cancelHeaderDeadline()
        if self._lingerCall is not None:
            if self._lingerCall.active():
                self._lingerCall.cancel()
            self._lingerCall = None
        super().connectionLost(reason)


class _LimitedSite(server.Site):
    """A Site whose channels get the header deadline."""

    headerTimeout: float | None = None
    # Twisted types this as its HTTP/1.1-or-2 wrapper's factory; a plain
    # HTTPChannel subclass is what a Site served before HTTP/2 and still
    # serves (buildProtocol needs only a protocol).  No HTTP/2 here.
    protocol = LimitedChannel  # type: ignore[assignment]

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        if channel is not None:
            channel.headerTimeout = self.headerTimeout
        return channel

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
) -> server.Site:
    """
    A C{Site} serving C{resource} with bodies capped at C{max_body_size}
    bytes (413 beyond), idle connections closed after C{idle_timeout}
    seconds and request headers due within C{header_timeout} seconds.

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
    return site
