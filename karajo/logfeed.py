"""
Following a run's log as it grows: one feed per run, fanned out to every
client that follows it (docs/http-api.md, "Following a run").

The daemon tails a running log once, however many clients follow it: the
bytes L{karajo.runlog.RunLog} writes to the file are known in process, so
it L{LogFeed.publish}es them to the feed instead of anyone re-reading the
file.  A follower that joins late first reads the file up to the size the
feed had when it joined (off the reactor thread, through C{read_range}, a
chunk at a time while its connection takes more), holding the live pieces
that arrive meanwhile, then continues from the live feed: no gap, no
duplicate.  Should those held pieces pass the cap before it is done, they
are let go and it reads them from the file too: a late follower is never
dropped for a slow start, and never holds more than the cap.

Offsets are byte offsets into the log file, and what a feed publishes is
exactly what goes into the file, in order: while the run is live that is
the log's head (once the head is full, later lines wait in memory); at
finish the cut note and the kept tail are published as they are appended.
So the pieces a follower receives always concatenate to the file's bytes
from its offset on.  Pieces are cut on UTF-8 character boundaries (an
incomplete character waits for its rest), so every piece decodes on its own.

A follower never makes the daemon buffer without bound: while its
connection's write buffer is full (the transport paused its producer),
live pieces queue for it up to C{cap} bytes; past that it is dropped (its
connection closed), and it may come back with the offset it got to.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["CAP", "HEARTBEAT", "Follower", "LogFeed", "Subscription", "utf8_cut"]

_log = Logger()

#: Bytes queued for one paused follower before it is dropped.
CAP = 1024 * 1024
#: Seconds between heartbeats to every follower of a feed.
HEARTBEAT = 10.0
#: Bytes of the file read at a time for a late follower (the next read
#: waits while its connection is paused): a 10 MiB log is never held whole.
CHUNK = 256 * 1024


def utf8_cut(data: bytes) -> int:
    """
    Where to cut C{data} so that the part before the cut ends on a UTF-8
    character boundary: an incomplete multi-byte sequence at its end (at
    most 3 bytes) stays for the next piece.  Bytes that are not UTF-8 at
    all are never held back.
    """
    size = len(data)
    for back in range(1, min(4, size) + 1):
        byte = data[size - back]
        if byte < 0x80:
            return size  # ASCII: a boundary
        if byte >= 0xC0:  # a lead byte: is its sequence complete?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4 if byte < 0xF8 else 1
            return size if back >= need else size - back
    return size  # continuation bytes only (or invalid): nothing to wait for


class Follower(Protocol):
    """What a L{Subscription} tells (the SSE stream of L{karajo.web.events})."""

    def piece(self, offset: int, text: str) -> None:
        """Log bytes from C{offset} on, decoded (whole characters)."""

    def ended(self, status: str) -> None:
        """The run ended with C{status}; nothing follows."""

    def ping(self) -> None:
        """Nothing new: a heartbeat keeps the connection alive."""

    def dropped(self) -> None:
        """The follower fell more than the cap behind and is dropped."""


class Subscription:
    """
    One follower of a L{LogFeed}, from byte C{offset} on.  Also the
    follower's push producer: its connection calls L{pauseProducing} when
    its write buffer is full and L{resumeProducing} once it drained.
    """

    def __init__(self, feed: LogFeed, follower: Follower, offset: int, cap: int) -> None:
        self._feed = feed
        self._follower = follower
        self._cap = cap
        #: the offset of the next byte to hand over (held bytes included)
        self.position = offset
        self._carry = b""
        self._catching_up = False
        self._target = 0
        self._reading = False
        self._held: collections.deque[tuple[int, bytes]] = collections.deque()
        self._held_bytes = 0
        self._paused = False
        self._status: str | None = None
        self.done = False

    # --- IPushProducer --------------------------------------------------------

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._catching_up:
            self._read_next()
        else:
            self._drain()

    def stopProducing(self) -> None:
        self.cancel()

    # --- from the feed ----------------------------------------------------------

    def _catch_up(self, target: int) -> None:
        """Read the file from L{position} up to C{target}, a chunk at a time."""
        self._catching_up = True
        self._target = target
        self._read_next()

    def _read_next(self) -> None:
        if self.done or self._paused or self._reading or not self._catching_up:
            return
        start = self.position
        if start >= self._target:
            self._catching_up = False
            self._drain()
            return
        self._reading = True

        def got(data: bytes) -> None:
            self._reading = False
            if self.done:
                return
            if data:
                self._hand(start, data)
            if not data or self.position >= self._target:
                self._catching_up = False  # the live pieces held meanwhile follow
                self._drain()
            else:
                self._read_next()

        def failed(failure: Failure) -> None:
            self._reading = False
            _log.failure("reading a log for a follower failed", failure)
            self.cancel()
            self._follower.dropped()

        self._feed._read_range(start, min(self._target, start + CHUNK)).addCallbacks(got, failed)

    def _offer(self, offset: int, data: bytes) -> None:
        """Take C{data} (log bytes from C{offset}) for this follower."""
        if self.done:
            return
        if self._catching_up and self._held_bytes + len(data) > self._cap:
            # Still reading the file: let what it held go and read it (and
            # this piece, already counted in the feed's size) from there too.
            self._held.clear()
            self._held_bytes = 0
            self._target = self._feed.size
            return
        self._held.append((offset, data))
        self._held_bytes += len(data)
        if self._held_bytes > self._cap:
            self.cancel()
            self._follower.dropped()
            return
        self._drain()

    def _end(self, status: str) -> None:
        self._status = status
        self._drain()

    def _ping(self) -> None:
        if not self.done and not self._paused:
            self._follower.ping()

    def _drain(self) -> None:
        """Hand over what is held, unless the follower is paused or still reading the file."""
        if self.done or self._paused or self._catching_up:
            return
        while self._held:
            offset, data = self._held.popleft()
            self._held_bytes -= len(data)
            self._hand(offset, data)
            if self.done or self._paused:
                return
        if self._status is not None:
            if self._carry:
                start = self.position - len(self._carry)
                self._follower.piece(start, self._carry.decode("utf-8", "replace"))
                self._carry = b""
            self.cancel()
            self._follower.ended(self._status)

    def _hand(self, offset: int, data: bytes) -> None:
        """Give the follower C{data} (from C{offset}) past its position, whole characters only."""
        end = offset + len(data)
        if end <= self.position:
            return  # before the follower's offset
        if offset < self.position:
            data = data[self.position - offset:]
        if not self._carry and offset == self.position:
            # The usual case, a follower that is up to date: the piece is
            # cut and decoded once for all of them.
            cut, text = self._feed.decoded(offset, data)
            if cut:
                self._follower.piece(offset, text)
            self._carry = data[cut:]
            self.position = end
            return
        data = self._carry + data
        cut = utf8_cut(data)
        if cut:
            self._follower.piece(
                self.position - len(self._carry), data[:cut].decode("utf-8", "replace"))
        self._carry = data[cut:]
        self.position = end

    def cancel(self) -> None:
        """Stop following (the client went away, or the stream ended)."""
        if not self.done:
            self.done = True
            self._held.clear()
            self._held_bytes = 0
            self._feed._unsubscribe(self)


class LogFeed:
    """
    The live bytes of one run's log, for its followers.  Created when the
    run is accepted (a queued run's followers wait for it to start), fed by
    the run's L{karajo.runlog.RunLog}, ended once its log is final.

    @param clock: for the heartbeats.
    @param read_range: C{(start, end) -> Deferred[bytes]}: the log file's
        bytes in C{[start, end)}, read off the reactor thread, ordered after
        any pending write of the file (L{karajo.joblog.LogStore}).
    @param size: bytes in the file already (a finished log's size).
    """

    def __init__(
        self,
        clock: IReactorTime,
        read_range: Callable[[int, int], Deferred[bytes]],
        *,
        size: int = 0,
        cap: int = CAP,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self._clock = clock
        self._read_range = read_range
        self._cap = cap
        self._heartbeat = heartbeat
        #: bytes published so far: the file's size once they are written
        self.size = size
        #: the run's final status once its log is final
        self.status: str | None = None
        self._subscriptions: list[Subscription] = []
        #: the last piece decoded for the followers (L{decoded})
        self._decoded: tuple[int, bytes, int, str] | None = None
        self._beat: IDelayedCall | None = None
        #: a cluster node's log shipping (L{karajo.cluster}): hears every
        #: published piece as C{(offset, data)}; None on a single server
        self.tap: Callable[[int, bytes], None] | None = None

    @property
    def followers(self) -> int:
        """How many followers are subscribed (the tests and the metrics)."""
        return len(self._subscriptions)

    def decoded(self, offset: int, data: bytes) -> tuple[int, str]:
        """
        The whole characters of a published piece (up to C{utf8_cut}) as
        text, made once per piece however many followers take it.
        """
        last = self._decoded
        if last is not None and last[0] == offset and last[1] is data:
            return last[2], last[3]
        cut = utf8_cut(data)
        text = data[:cut].decode("utf-8", "replace")
        self._decoded = (offset, data, cut, text)
        return cut, text

    def publish(self, data: bytes) -> None:
        """Bytes just written to the log file, in file order."""
        if not data:
            return
        offset = self.size
        self.size += len(data)
        if self.tap is not None:
            self.tap(offset, data)
        for sub in list(self._subscriptions):
            sub._offer(offset, data)

    def end(self, status: str) -> None:
        """The log is final with C{status}: every follower gets its end."""
        self.status = status
        for sub in list(self._subscriptions):
            sub._end(status)
        self._stop_beat()

    def subscribe(self, follower: Follower, offset: int = 0) -> Subscription:
        """
        Follow from byte C{offset}: what the file holds before the feed's
        current size is read from it, the rest comes live.
        """
        sub = Subscription(self, follower, max(offset, 0), self._cap)
        self._subscriptions.append(sub)
        if sub.position < self.size:
            sub._catch_up(self.size)
        if self.status is not None:
            sub._end(self.status)
        elif self._beat is None and not sub.done:
            self._beat = self._clock.callLater(self._heartbeat, self._ping)
        return sub

    def _ping(self) -> None:
        self._beat = None
        for sub in list(self._subscriptions):
            sub._ping()
        if self._subscriptions and self.status is None:
            self._beat = self._clock.callLater(self._heartbeat, self._ping)

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
        if not self._subscriptions:
            self._stop_beat()

    def _stop_beat(self) -> None:
        if self._beat is not None:
            if self._beat.active():
                self._beat.cancel()
            self._beat = None
