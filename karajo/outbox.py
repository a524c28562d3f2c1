"""
A cluster node's writes to its database, kept in order and kept while the
database is away (docs/cluster.md, "Failures"): nothing a node ran is lost
to an outage.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from karajo.clusterstore import Unavailable

__all__ = ["Outbox", "within"]

log = Logger()


class Outbox:
    """
    The node's writes to the database, one after the other in the order
    made (a run's begin before its log bytes before its end).  A write
    that fails with L{Unavailable} stays first and the outbox is HELD
    (L{on_unavailable} is told) until L{release}: nothing is lost while
    the database is away.  Other failures are logged and dropped.
    """

    #: what L{put}'s Deferred fires with when its write is held
    HELD = object()

    def __init__(self, on_unavailable: Callable[[], None]) -> None:
        self._queue: collections.deque[tuple[Callable[[], defer.Deferred], defer.Deferred]] = (
            collections.deque())
        self._busy = False
        self.held = False
        self._on_unavailable = on_unavailable

    def __len__(self) -> int:
        return len(self._queue)

    def put(self, write: Callable[[], defer.Deferred]) -> defer.Deferred:
        """Queue C{write}; fires with its result, or L{HELD}."""
        done: defer.Deferred = defer.Deferred()
        self._queue.append((write, done))
        if self.held:
            done.callback(self.HELD)  # sent later; nobody waits for its result
        else:
            self._next()
        return done

    def release(self) -> None:
        """The database is back: send what was held."""
        self.held = False
        self._next()

    def _next(self) -> None:
        if self._busy or self.held or not self._queue:
            return
        write, done = self._queue[0]
        self._busy = True
        d = defer.maybeDeferred(write)
        d.addCallbacks(self._sent, self._failed, callbackArgs=(done,), errbackArgs=(done,))

    def _sent(self, result: object, done: defer.Deferred) -> None:
        self._queue.popleft()
        self._busy = False
        if not done.called:
            done.callback(result)
        self._next()

    def _failed(self, failure: Failure, done: defer.Deferred) -> None:
        self._busy = False
        if failure.check(Unavailable):
            self.held = True
            if not done.called:
                done.callback(self.HELD)
            self._on_unavailable()
            return
        self._queue.popleft()
        log.failure("cluster: a write to the database failed; dropped", failure)
        if not done.called:
            done.callback(None)
        self._next()


def within(clock: IReactorTime, d: defer.Deferred, seconds: float) -> defer.Deferred:
    """C{d}, or None after C{seconds}, whichever comes first (never fails)."""
    out: defer.Deferred = defer.Deferred()

    def late() -> None:
        if not out.called:
            out.callback(None)

    call = clock.callLater(seconds, late)

    def done(_: object) -> None:
        if call.active():
            call.cancel()
        if not out.called:
            out.callback(None)

    d.addBoth(done)
    return out
