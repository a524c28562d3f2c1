"""
The events stream of one run (C{GET /karajo/api/job_exec/events},
docs/http-api.md, "Following a run"): Server-Sent Events carrying the
pieces of a L{karajo.logfeed.LogFeed} to one client.

Each piece is C{event: log} with C{data: {"offset": B, "text": "..."}}
(offsets count bytes of the log file), the last event is C{event: end}
with C{data: {"status": "..."}}, and C{: ping} comments keep an idle
connection alive.  The stream is its follower's push producer's consumer:
while the connection's write buffer is full, the feed holds pieces for it
up to its cap, then drops it (the connection is closed; the client resumes
with the offset it got to).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from karajo.logfeed import LogFeed, Subscription
from karajo.twisted_private import request_gone

__all__ = ["EVENT_HEADERS", "follow"]

log = Logger()

#: The headers of a stream: no caching, no buffering by a proxy.
EVENT_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-accel-buffering", b"no"),
)


def frame(event: str, data: dict[str, Any]) -> bytes:
    """One SSE event; the JSON has no raw newline, so it is one C{data:} line."""
    return b"event: %s\ndata: %s\n\n" % (
        event.encode("ascii"), json.dumps(data, separators=(",", ":")).encode("ascii"))


#: The last C{log} frame made: every follower of a run gets the same text
#: object for a live piece (L{LogFeed.decoded}), so it is encoded once.
_last_frame: tuple[int, str, bytes] | None = None


def _log_frame(offset: int, text: str) -> bytes:
    global _last_frame
    last = _last_frame
    if last is not None and last[0] == offset and last[1] is text:
        return last[2]
    framed = frame("log", {"offset": offset, "text": text})
    _last_frame = (offset, text, framed)
    return framed


class _Stream:
    """The follower writing one client's stream (see the module docstring)."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.done: defer.Deferred[bytes] = defer.Deferred(self._canceled)
        self.subscription: Subscription | None = None
        self._producing = False
        self._over = False

    def piece(self, offset: int, text: str) -> None:
        self._write(_log_frame(offset, text))

    def ping(self) -> None:
        self._write(b": ping\n\n")

    def ended(self, status: str) -> None:
        self._write(frame("end", {"status": str(status)}))
        self._close()
        if not self.done.called:
            self.done.callback(b"")

    def dropped(self) -> None:
        log.info("dropping a follower that fell too far behind")
        self._close()
        transport = getattr(self._request, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def start(self, feed: LogFeed, offset: int) -> None:
        self.subscription = feed.subscribe(self, offset)
        if not self._over:
            self._request.registerProducer(self.subscription, True)
            self._producing = True
            self._request.notifyFinish().addBoth(lambda _: self._gone())

    def _write(self, data: bytes) -> None:
        if not self._over:
            self._request.write(data)

    def _close(self) -> None:
        self._over = True
        if self._producing:
            self._producing = False
            # A client that went away took its channel with it: nothing to
            # unregister from (the request's own unregisterProducer would raise).
            if not request_gone(self._request):
                self._request.unregisterProducer()

    def _gone(self) -> None:
        """The response finished or the client went away."""
        self._close()
        if self.subscription is not None:
            self.subscription.cancel()

    def _canceled(self, _: defer.Deferred[bytes]) -> None:
        self._gone()


def follow(request: Any, feed: LogFeed, offset: int) -> defer.Deferred[bytes]:
    """
    Answer C{request} with the stream of C{feed} from byte C{offset}; fires
    (with nothing more to write) once the end event is sent, and is
    cancelled when the client goes away.
    """
    request.setResponseCode(200)
    for name, value in EVENT_HEADERS:
        request.setHeader(name, value)
    stream = _Stream(request)
    # The headers go out now: a client following a queued run knows it is in.
    request.write(b": following\n\n")
    stream.start(feed, offset)
    return stream.done
