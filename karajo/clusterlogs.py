"""
Log bytes between a cluster node and its database (docs/cluster.md, "Runs
and logs"): a running log's new bytes shipped at most every L{LOG_FLUSH}
(L{LogShipper}, one statement for every running log), and a run of
another node followed from the database (L{remote_feed}).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import attrs
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from karajo.clusterstore import ClusterStore, Unavailable
from karajo.logfeed import LogFeed
from karajo.outbox import Outbox
from karajo.status import RunStatus

__all__ = ["LOG_FLUSH", "LogShipper", "remote_feed"]

log = Logger()

#: How often live log bytes are shipped (and a remote log polled).
LOG_FLUSH = 1.0

#: A run: C{(kind, job_id, counter)}.
Run = tuple[str, str, int]


@attrs.define
class _Chunk:
    """Log bytes of one run not shipped yet: contiguous from C{offset}."""

    offset: int
    data: bytearray


class LogShipper:
    """The live log bytes of this node's running runs, on their way to the database."""

    def __init__(self, store: ClusterStore, outbox: Outbox, clock: IReactorTime) -> None:
        self._store = store
        self._outbox = outbox
        self._clock = clock
        self._chunks: dict[Run, _Chunk] = {}
        self._flush_call: IDelayedCall | None = None

    def tap(self, run: Run, cap: int) -> Callable[[int, bytes], None]:
        """What a running log's feed calls with its new bytes (L{LogFeed.tap})."""
        return functools.partial(self._chunk, run, cap)

    def drop(self, run: Run) -> None:
        """The run ended: its final log replaces the bytes not shipped yet."""
        self._chunks.pop(run, None)

    def stop(self) -> None:
        """Ship what waits now (the node stops)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self.flush()

    def _chunk(self, run: Run, cap: int, offset: int, data: bytes) -> None:
        """A running log's new bytes (its feed's C{tap}): shipped within L{LOG_FLUSH}."""
        pending = self._chunks.get(run)
        if pending is None:
            self._chunks[run] = _Chunk(offset, bytearray(data))
        elif pending.offset + len(pending.data) == offset and len(pending.data) < cap:
            pending.data += data
        # else: more than the run's cap waits (the database is away); the
        # final log carries it all when the run ends.
        if self._flush_call is None:
            self._flush_call = self._clock.callLater(LOG_FLUSH, self.flush)

    def flush(self) -> None:
        """Ship every waiting piece in one statement (held while the database is away)."""
        self._flush_call = None
        if not self._chunks:
            return
        if self._outbox.held:
            self._flush_call = self._clock.callLater(LOG_FLUSH, self.flush)
            return
        chunks = [(kind, job_id, counter, c.offset, bytes(c.data))
                  for (kind, job_id, counter), c in self._chunks.items()]
        self._chunks.clear()
        self._outbox.put(lambda: self._store.append_logs(chunks))


def remote_feed(
    store: ClusterStore, clock: IReactorTime, run: Run, status: Callable[[], str],
) -> LogFeed:
    """
    A feed of run C{run} of another node, fed from the database every
    L{LOG_FLUSH} (so at most about two seconds behind the log) until
    C{status()} (the node's mirror of the run) says it ended, or every
    follower left.
    """
    body = bytearray()
    feed = LogFeed(clock, lambda start, end: defer.succeed(bytes(body[start:end])))

    async def poll() -> None:
        followed = False
        while True:
            now = status()
            try:
                data = await store.read_log(*run, len(body))
            except Unavailable:
                data = b""
            body.extend(data)
            feed.publish(data)
            if now != RunStatus.RUNNING:
                feed.end(now)
                return
            followed = followed or feed.followers > 0
            if followed and not feed.followers:
                return
            await _sleep(clock, LOG_FLUSH)

    defer.ensureDeferred(poll()).addErrback(
        lambda f: log.failure("cluster: following a remote log failed", f))
    return feed


def _sleep(clock: IReactorTime, seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    clock.callLater(seconds, d.callback, None)
    return d
